//! The catalogue of spec A.14, adapted (see the parent module).

use serde_json::json;

use super::{p, positions, restarted, tracker};

/// A1-1 `test_empty`: nothing stored, nothing applied: position 0.
#[test]
fn a1_1_empty() {
    let t = tracker(&["master"], &[]);
    assert_eq!(positions(&t), p(&[("master", 0)]));
    assert_eq!(t.token().to_string(), "s0");
}

/// A1-2 `test_single_instance`: start from the stored position; a batch's
/// claim moves nothing until it finishes.
#[test]
fn a1_2_single_instance() {
    let t = tracker(&["master"], &[("master", 7)]);
    assert_eq!(positions(&t), p(&[("master", 7)]));
    let claim = t.claim("master", 8).unwrap();
    assert_eq!((claim.after, claim.up_to), (7, 8));
    assert_eq!(t.position("master"), Some(7));
    assert!(t.finish(&claim));
    assert_eq!(t.position("master"), Some(8));
    assert_eq!(t.token().to_string(), "s8");
}

/// A1-3 `test_out_of_order_finish`: the contiguous-prefix rule.
#[test]
fn a1_3_out_of_order_finish() {
    let t = tracker(&["master"], &[("master", 7)]);
    let claims: Vec<_> = (8..=11).map(|id| t.claim("master", id).unwrap()).collect();
    assert_eq!(t.position("master"), Some(7));
    let mut seen = Vec::new();
    for index in [1, 0, 3, 2] {
        t.finish(&claims[index]);
        seen.push(t.position("master").unwrap());
    }
    assert_eq!(seen, vec![7, 9, 9, 11]);
}

/// A1-4 `test_get_next_txn`: the position moves only after the rows are
/// committed (end to end: `stream_positions_commit_with_the_rows`).
#[test]
fn a1_4_position_moves_only_on_finish() {
    let t = tracker(&["master"], &[("master", 7)]);
    let claim = t.claim("master", 8).unwrap();
    assert_eq!(t.position("master"), Some(7));
    assert_eq!(t.claimed_up_to("master"), Some(8));
    t.finish(&claim);
    assert_eq!(t.position("master"), Some(8));
}

/// A1-5 `test_restart_during_out_of_order_persistence`: a view created
/// while 8 is unfinished and 9 finished starts at 7 (what is durable), not 9.
#[test]
fn a1_5_restart_during_out_of_order_persistence() {
    let master = tracker(&["master"], &[("master", 7)]);
    let eight = master.claim("master", 8).unwrap();
    let nine = master.claim("master", 9).unwrap();
    master.finish(&nine);
    assert_eq!(master.position("master"), Some(7));
    // What a restart would load: the durable position.
    let stored = master.positions();
    let worker = restarted(&["master"], &stored);
    assert_eq!(positions(&worker), p(&[("master", 7)]));
    master.finish(&eight);
    assert_eq!(positions(&master), p(&[("master", 9)]));
    worker.advance("master", 9);
    assert_eq!(positions(&worker), p(&[("master", 9)]));
}

/// A2-1 `test_get_persisted_upto_position`, under option S1: the linear
/// position is the minimum over writers only: 3, 5, 6, 6, 8, 11.
#[test]
fn a2_1_linear_position_is_the_minimum_over_writers() {
    let t = tracker(&["first", "second"], &[("first", 3), ("second", 5)]);
    let mut linear = vec![t.linear_position()];
    for (writer, position) in [("first", 6), ("second", 7), ("second", 9), ("first", 8)] {
        t.advance(writer, position);
        linear.push(t.linear_position());
    }
    t.advance("first", 11);
    t.advance("second", 15);
    linear.push(t.linear_position());
    assert_eq!(linear, vec![3, 5, 6, 6, 8, 11]);
    assert_eq!(t.token().to_string(), "m11~second.15");
}

/// A2-2 `test_get_persisted_upto_position_get_next`: the cache is never a
/// writer, so no position comes from a sequence: {first: 3, second: 5},
/// L = 3; after first's batch up to 6, L = 5.
#[test]
fn a2_2_positions_come_only_from_what_was_applied() {
    let t = tracker(&["first", "second"], &[("first", 3), ("second", 5)]);
    assert_eq!(positions(&t), p(&[("first", 3), ("second", 5)]));
    assert_eq!(t.linear_position(), 3);
    let claim = t.claim("first", 6).unwrap();
    assert_eq!(t.linear_position(), 3);
    t.finish(&claim);
    assert_eq!(t.linear_position(), 5);
    assert_eq!(t.token().to_string(), "m5~first.6");
}

/// A2-3 `test_multi_instance`: two caches (views) of the same writers are
/// independent; each moves only with what reaches it.
#[test]
fn a2_3_views_are_independent() {
    let one = tracker(&["first", "second"], &[("first", 3), ("second", 7)]);
    let two = tracker(&["first", "second"], &[("first", 3), ("second", 7)]);
    let claim = one.claim("first", 8).unwrap();
    assert_eq!(positions(&one), p(&[("first", 3), ("second", 7)]));
    one.finish(&claim);
    assert_eq!(positions(&one), p(&[("first", 8), ("second", 7)]));
    assert_eq!(positions(&two), p(&[("first", 3), ("second", 7)]));
    two.advance("second", 9);
    assert_eq!(positions(&two), p(&[("first", 3), ("second", 9)]));
    two.advance("first", 8);
    assert_eq!(positions(&two), p(&[("first", 8), ("second", 9)]));
    assert_eq!(two.token().to_string(), "m8~second.9");
}

/// A2-4 `test_multi_instance_empty_row`, adapted: a configured writer with
/// no stored position starts at 0, not at the linear position: the cache
/// has applied none of its rows and must not skip any (a reader's view of
/// invariant 18d). Such a writer moves itself forward with a position row.
#[test]
fn a2_4_a_writer_without_a_stored_position_starts_at_zero() {
    let t = tracker(
        &["first", "second", "third"],
        &[("first", 3), ("second", 7)],
    );
    assert_eq!(
        positions(&t),
        p(&[("first", 3), ("second", 7), ("third", 0)])
    );
    assert_eq!(t.linear_position(), 0);
    let claim = t.claim("third", 8).unwrap();
    assert_eq!(claim.after, 0);
    assert_eq!(t.position("third"), Some(0));
    t.finish(&claim);
    assert_eq!(t.position("third"), Some(8));
    assert_eq!(t.linear_position(), 3);
}

/// A2-5 `test_writer_config_change`: stored positions of writers that are
/// not configured are ignored (kept in the table: a writer added back
/// resumes from what the cache really applied for it).
#[test]
fn a2_5_writer_config_change() {
    let stored = [("first", 3), ("second", 5)];
    let a = tracker(&["first", "second"], &stored);
    assert_eq!(a.linear_position(), 3);
    let b = tracker(&["second"], &stored);
    assert_eq!((b.linear_position(), b.is_configured("first")), (5, false));
    let c = tracker(&["third"], &stored);
    assert_eq!(positions(&c), p(&[("third", 0)]));
    c.advance("third", 6);
    let stored = [("first", 3), ("second", 5), ("third", 6)];
    let f = tracker(&["first", "third"], &stored);
    assert_eq!(positions(&f), p(&[("first", 3), ("third", 6)]));
    assert!(f.claim("second", 9).is_err(), "second is not configured");
}

/// A2-6 `test_sequence_consistency`: there is no sequence; ids may jump
/// (gaps are allowed) and the next claim starts after the jump.
#[test]
fn a2_6_gaps_in_ids_are_allowed() {
    let t = tracker(&["master"], &[("master", 3)]);
    t.advance("master", 26);
    let claim = t.claim("master", 27).unwrap();
    assert_eq!((claim.after, claim.up_to), (26, 27));
}

/// A2-7 `test_minimal_local_token`: the published position is the
/// contiguous one; an open claim never shows in positions or tokens.
#[test]
fn a2_7_open_claims_never_show() {
    let t = tracker(&["first", "second"], &[("first", 3), ("second", 7)]);
    let _open = t.claim("first", 9).unwrap();
    assert_eq!(positions(&t), p(&[("first", 3), ("second", 7)]));
    assert_eq!(t.token().to_string(), "m3~second.7");
}

/// A2-8 `test_current_token_gap`: a silent configured writer pins L; a
/// writer with a claim open stays at its last contiguous position.
#[test]
fn a2_8_a_silent_writer_pins_the_linear_position() {
    let t = tracker(
        &["first", "second", "third"],
        &[("first", 7), ("second", 7), ("third", 7)],
    );
    t.advance("first", 9);
    assert_eq!(t.token().to_string(), "m7~first.9");
    t.advance("first", 11);
    let twelve = t.claim("second", 12).unwrap();
    assert_eq!(t.token().to_string(), "m7~first.11");
    t.finish(&twelve);
    assert_eq!(t.token().to_string(), "m7~first.11~second.12");
}

/// A3-1/A3-2 (negative backfill streams): not applicable: the feed carries
/// the events stream only; backfilled events arrive as rows with a positive
/// `stream_id` and a negative `stream_ordering`, and non-positive stream
/// ids are refused (end to end in `bad_input`).
#[test]
fn a3_non_positive_stream_ids_are_refused() {
    let batch: roomcache::feed::FeedBatch = serde_json::from_value(
        json!({"writer": "w1", "rows": [{"kind": "position", "stream_id": -4}]}),
    )
    .unwrap();
    assert!(batch.validate().is_err());
}

// A4-1 (rows whose position update was lost) cannot happen here: rows and
// positions commit in one transaction; `crash` kills the server
// at random points and checks that nothing is lost or doubled.
