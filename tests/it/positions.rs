//! Stream positions, tokens and waiting: the catalogue of spec A.14 adapted
//! to a cache that *reads* writers' streams, the Part E invariants that
//! apply to such a reader, and the same properties end to end over the
//! socket (durable positions in `stream_positions`, resume, waiting).
//!
//! Adaptations of the catalogue (see `docs/positions.md`): the cache never
//! allocates ids, so "allocate then finish" becomes "claim a batch's range
//! then finish it once its rows are committed and published"; "replicate
//! w" becomes "w's position reaches the cache" (`advance`, i.e. a position
//! row); the floor of an empty stream is 0 (nothing applied), not 1; there
//! is no shared sequence, so A2-6 becomes "gaps in ids are allowed"; the
//! linear position is the minimum over writers only (option S1 of A.13).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::server::{ServerOptions, TestServer};
use proptest::prelude::*;
use roomcache::positions::{PositionTracker, StreamToken};
use serde_json::{json, Value};

fn tracker(writers: &[&str], stored: &[(&str, i64)]) -> PositionTracker {
    let writers: Vec<String> = writers.iter().map(|w| w.to_string()).collect();
    let stored: BTreeMap<String, i64> = stored.iter().map(|(w, p)| (w.to_string(), *p)).collect();
    PositionTracker::new(&writers, &stored)
}

fn positions(tracker: &PositionTracker) -> Vec<(String, i64)> {
    tracker.positions().into_iter().collect()
}

fn p(pairs: &[(&str, i64)]) -> Vec<(String, i64)> {
    pairs.iter().map(|(w, p)| (w.to_string(), *p)).collect()
}

fn token(text: &str) -> StreamToken {
    text.parse().unwrap()
}

// ---- Catalogue of spec A.14, adapted ----

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
    let worker = PositionTracker::new(&["master".to_string()], &stored);
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
/// ids are refused (end to end in `tests/bad_input.rs`).
#[test]
fn a3_non_positive_stream_ids_are_refused() {
    let batch: roomcache::feed::FeedBatch = serde_json::from_value(
        json!({"writer": "w1", "rows": [{"kind": "position", "stream_id": -4}]}),
    )
    .unwrap();
    assert!(batch.validate().is_err());
}

// A4-1 (rows whose position update was lost) cannot happen here: rows and
// positions commit in one transaction; `tests/crash.rs` kills the server
// at random points and checks that nothing is lost or doubled.

// ---- Part E invariants for a reader ----

/// Invariants 5 and 14: positions never go down; a claim at or below the
/// durable position (a replay) is empty and finishing it changes nothing.
#[test]
fn invariants_5_14_monotonic_and_replays_are_empty() {
    let t = tracker(&["w1"], &[("w1", 10)]);
    assert!(!t.advance("w1", 4));
    assert_eq!(t.position("w1"), Some(10));
    let replay = t.claim("w1", 10).unwrap();
    assert!(replay.is_empty());
    assert!(!replay.covers(10) && !replay.covers(7));
    assert!(!t.finish(&replay));
    assert_eq!(t.position("w1"), Some(10));
    // A replay of a batch still in flight claims nothing, and finishing or
    // abandoning it does not touch the batch in flight.
    let in_flight = t.claim("w1", 12).unwrap();
    let replay = t.claim("w1", 12).unwrap();
    assert_eq!((replay.after, replay.up_to), (12, 12));
    assert!(!t.finish(&replay));
    t.abandon(&replay);
    assert_eq!(t.position("w1"), Some(10));
    assert!(t.finish(&in_flight));
    assert_eq!(t.position("w1"), Some(12));
}

/// Invariants 6 and 13: an abandoned claim (its commit failed) and the
/// claims after it are withdrawn; the position does not pass them, and the
/// next claim covers their rows again.
#[test]
fn invariants_6_13_abandoned_claims_are_applied_again() {
    let t = tracker(&["w1"], &[("w1", 5)]);
    let first = t.claim("w1", 7).unwrap();
    let second = t.claim("w1", 9).unwrap();
    t.abandon(&first);
    assert!(!t.finish(&second), "withdrawn with the first");
    assert_eq!(t.position("w1"), Some(5));
    let again = t.claim("w1", 9).unwrap();
    assert_eq!((again.after, again.up_to), (5, 9));
    t.finish(&again);
    assert_eq!(t.position("w1"), Some(9));
}

/// Invariant 7: L = the minimum over the configured writers.
/// Invariant 10: every map entry is above `stream`.
#[test]
fn invariants_7_10_token_shape() {
    let t = tracker(&["a", "b", "c"], &[("a", 4), ("b", 4), ("c", 9)]);
    let token = t.token();
    assert_eq!(token.stream, 4);
    assert_eq!(token.instance_map, BTreeMap::from([("c".to_string(), 9)]));
    assert!(token.instance_map.values().all(|p| *p > token.stream));
}

/// Invariant 11: for tokens T0 ≤ T1 ≤ … issued by the tracker, every row
/// (w, i) with T0(w) < i ≤ Tn(w) falls in exactly one (Tk, Tk+1].
#[test]
fn invariant_11_exactly_once_range_delivery() {
    let t = tracker(&["a", "b"], &[("a", 1), ("b", 1)]);
    let mut tokens = vec![t.token()];
    let rows: Vec<(&str, i64)> = vec![("b", 3), ("a", 2), ("a", 5), ("b", 4), ("b", 6), ("a", 7)];
    for (writer, id) in &rows {
        t.advance(writer, *id);
        tokens.push(t.token());
    }
    for window in tokens.windows(2) {
        assert!(window[0].is_before_or_eq(&window[1]));
    }
    for (writer, id) in &rows {
        let ranges = tokens
            .windows(2)
            .filter(|w| w[0].position(writer) < *id && *id <= w[1].position(writer))
            .count();
        assert_eq!(ranges, 1, "row ({writer}, {id}) in {ranges} ranges");
    }
}

/// Invariant 20: entries of writers that are not configured are clamped
/// away (the cache can never reach them).
#[test]
fn invariant_20_unknown_writers_are_clamped() {
    let t = tracker(&["a", "b"], &[("a", 1), ("b", 1)]);
    let (clamped, changed) = t.clamp(&token("m2~a.5~ghost.9"));
    assert!(changed);
    assert_eq!(clamped.to_string(), "m2~a.5");
    assert_eq!(t.clamp(&token("m2~a.5")), (token("m2~a.5"), false));
}

/// Invariant 16: a covered target answers at once; a waiter is woken by
/// the finish that covers it, not before; a dropped waiter leaves nothing.
#[tokio::test]
async fn invariant_16_waiters() {
    let t = std::sync::Arc::new(tracker(&["a", "b"], &[("a", 1), ("b", 1)]));
    assert_eq!(t.wait_for(token("s1")).await.to_string(), "s1");
    let waiting = {
        let t = t.clone();
        tokio::spawn(async move { t.wait_for(token("m1~b.3")).await })
    };
    while t.waiter_count() == 0 {
        tokio::task::yield_now().await;
    }
    t.advance("a", 5);
    t.advance("b", 2);
    assert!(!waiting.is_finished());
    t.advance("b", 3);
    assert_eq!(waiting.await.unwrap().to_string(), "m3~a.5");
    assert_eq!(t.waiter_count(), 0);
    let timed_out = tokio::time::timeout(Duration::from_millis(5), t.wait_for(token("s9"))).await;
    assert!(timed_out.is_err());
    assert_eq!(t.waiter_count(), 0, "a timed-out waiter deregisters");
}

fn arb_token() -> impl Strategy<Value = StreamToken> {
    (
        0i64..20,
        proptest::collection::btree_map("[abc]", 0i64..30, 0..3),
    )
        .prop_map(|(stream, map)| StreamToken {
            stream,
            instance_map: map.into_iter().filter(|(_, p)| *p > stream).collect(),
        })
}

proptest! {
    /// Invariant 10: `copy_and_advance` is the least upper bound.
    #[test]
    fn copy_and_advance_is_the_least_upper_bound(a in arb_token(), b in arb_token(), c in arb_token()) {
        let lub = a.copy_and_advance(&b);
        prop_assert!(a.is_before_or_eq(&lub) && b.is_before_or_eq(&lub));
        if a.is_before_or_eq(&c) && b.is_before_or_eq(&c) {
            prop_assert!(lub.is_before_or_eq(&c));
        }
        prop_assert!(lub.instance_map.values().all(|p| *p > lub.stream));
    }

    /// Invariant 10: `bound(max)` is at or below the original, and its
    /// maximum position is at most `max`; the text form round-trips.
    #[test]
    fn bound_and_text_form(a in arb_token(), max in 0i64..30) {
        let bounded = a.bound(max);
        prop_assert!(bounded.is_before_or_eq(&a));
        prop_assert!(bounded.max_position() <= max.max(0) || a.max_position() <= max);
        let text = a.to_string();
        prop_assert_eq!(text.parse::<StreamToken>().unwrap(), a);
    }
}

// ---- End to end, over the socket ----

fn two_writers() -> ServerOptions {
    ServerOptions {
        writers: vec!["w1".into(), "w2".into()],
        ..ServerOptions::default()
    }
}

/// A room created and joined by `user` at ids `create` and `join`.
fn room_rows(room: &str, user: &str, create: i64, join: i64) -> Vec<Value> {
    vec![
        json!({"kind": "event", "stream_id": create, "event": {"event_id": format!("$create-{room}"),
            "room_id": room, "type": "m.room.create", "state_key": "", "sender": user,
            "content": {"room_version": "10"}}}),
        json!({"kind": "state", "stream_id": create, "room_id": room, "type": "m.room.create",
            "state_key": "", "event_id": format!("$create-{room}")}),
        json!({"kind": "event", "stream_id": join, "event": {"event_id": format!("$join-{room}"),
            "room_id": room, "type": "m.room.member", "state_key": user, "sender": user,
            "content": {"membership": "join"}}}),
        json!({"kind": "state", "stream_id": join, "room_id": room, "type": "m.room.member",
            "state_key": user, "event_id": format!("$join-{room}")}),
    ]
}

fn batch(writer: &str, rows: Vec<Value>) -> Value {
    json!({"writer": writer, "rows": rows})
}

async fn stored_positions(server: &TestServer) -> BTreeMap<String, i64> {
    server.rows_in_postgres().await.positions
}

/// Invariant 17 and durability: each batch's positions are in
/// `stream_positions` with its rows; a batch whose commit fails (a
/// conflict) moves nothing, in memory or in Postgres; an unknown writer
/// gets 400 and changes nothing; idle writers move with position rows.
#[tokio::test]
async fn stream_positions_commit_with_the_rows() {
    let server = TestServer::start_with(two_writers()).await;
    let answer = server
        .feed(&batch(
            "w1",
            room_rows("!a:example.org", "@alice:example.org", 2, 3),
        ))
        .await;
    assert_eq!(
        (answer["position"].clone(), answer["token"].clone()),
        (json!(3), json!("m0~w1.3"))
    );
    assert_eq!(
        stored_positions(&server).await,
        BTreeMap::from([("w1".into(), 3)])
    );

    // w2 reuses stream id 3 for another room: the unique index on
    // event_stream_ordering refuses the group; nothing of it is applied.
    let conflict = server
        .post(
            "/v1/feed",
            &batch("w2", room_rows("!b:example.org", "@bob:example.org", 2, 3)),
        )
        .await;
    conflict.assert_error(409, "ROOMCACHE_CONFLICT");
    assert_eq!(
        stored_positions(&server).await,
        BTreeMap::from([("w1".into(), 3)])
    );
    assert_eq!(
        server.get("/v1/positions").await.body,
        json!({"positions": {"w1": 3, "w2": 0}, "token": "m0~w1.3"})
    );
    assert_eq!(server.get("/v1/rooms/!b:example.org").await.status, 404);

    // The writer fixes its ids and sends again: applied.
    let answer = server
        .feed(&batch(
            "w2",
            room_rows("!b:example.org", "@bob:example.org", 4, 5),
        ))
        .await;
    assert_eq!(
        (answer["position"].clone(), answer["applied_rows"].clone()),
        (json!(5), json!(4))
    );
    assert_eq!(answer["token"], "m3~w2.5");

    // Unknown writer: 400, nothing changes.
    server
        .post(
            "/v1/feed",
            &batch("w3", vec![json!({"kind": "position", "stream_id": 9})]),
        )
        .await
        .assert_error(400, "ROOMCACHE_UNKNOWN_WRITER");

    // An idle writer moves with a position row; ids may have gaps.
    let answer = server
        .feed(&batch(
            "w1",
            vec![json!({"kind": "position", "stream_id": 40})],
        ))
        .await;
    assert_eq!(
        (answer["position"].clone(), answer["token"].clone()),
        (json!(40), json!("m5~w1.40"))
    );
    assert_eq!(
        stored_positions(&server).await,
        BTreeMap::from([("w1".into(), 40), ("w2".into(), 5)])
    );
    assert_eq!(
        server.get("/v1/positions").await.body,
        json!({"positions": {"w1": 40, "w2": 5}, "token": "m5~w1.40"})
    );
    server.assert_postgres_matches_served().await;
}

/// Resume protocol: after a restart, positions come back from Postgres;
/// rows at or below them are skipped, so replaying from there applies each
/// row exactly once; a batch straddling the position applies only the rest.
#[tokio::test]
async fn writers_resume_from_the_durable_positions() {
    let mut server = TestServer::start_with(two_writers()).await;
    let mut rows = room_rows("!a:example.org", "@alice:example.org", 2, 3);
    server.feed(&batch("w1", rows.clone())).await;
    server.restart().await;
    assert_eq!(
        server.get("/v1/positions").await.body,
        json!({"positions": {"w1": 3, "w2": 0}, "token": "m0~w1.3"})
    );
    rows.extend(room_rows("!c:example.org", "@alice:example.org", 6, 7));
    let answer = server.feed(&batch("w1", rows)).await;
    assert_eq!(
        (answer["position"].clone(), answer["applied_rows"].clone()),
        (json!(7), json!(4))
    );
    let room = server.get("/v1/rooms/!c:example.org").await;
    assert_eq!(room.body["room"]["event_stream_ordering"], 7);
    server.assert_postgres_matches_served().await;
}

/// Waiting: a read with `wait_for` ahead of the cache answers once a batch
/// covers it, with the row and `timed_out: false`; a token that is never
/// reached answers at `timeout_ms` with `timed_out: true` and the cache's
/// token; entries of unknown writers are clamped away; a malformed token
/// is a 400. Every answer's token is exact: the row shows iff it is at or
/// below the token.
#[tokio::test]
async fn reads_wait_for_a_token() {
    let server = std::sync::Arc::new(TestServer::start_with(two_writers()).await);
    let waiting = {
        let server = server.clone();
        tokio::spawn(async move {
            server
                .get("/v1/rooms/!a:example.org?wait_for=m0~w1.3&timeout_ms=30000")
                .await
        })
    };
    // The read must be waiting before the batch is sent; poll the metric-free way:
    // a short read with the same token times out meanwhile.
    let early = server
        .get("/v1/rooms/!a:example.org?wait_for=m0~w1.3&timeout_ms=50")
        .await;
    assert_eq!(early.status, 404, "{}", early.text);
    server
        .feed(&batch(
            "w1",
            room_rows("!a:example.org", "@alice:example.org", 2, 3),
        ))
        .await;
    let answer = waiting.await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["timed_out"], false);
    assert_eq!(answer.body["token"], "m0~w1.3");
    assert_eq!(answer.body["room"]["event_stream_ordering"], 3);

    let never = server
        .get("/v1/users/@alice:example.org/rooms?wait_for=s99&timeout_ms=100")
        .await;
    assert_eq!(never.status, 200, "{}", never.text);
    assert_eq!(never.body["timed_out"], true);
    assert_eq!(never.body["token"], "m0~w1.3");
    assert_eq!(never.body["rooms"].as_array().map(Vec::len), Some(1));

    let clamped = server
        .get("/v1/users/@alice:example.org/rooms/!a:example.org?wait_for=m0~w1.3~ghost.50&timeout_ms=5000")
        .await;
    assert_eq!(clamped.body["timed_out"], false, "{}", clamped.text);
    assert_eq!(clamped.body["snapshot"]["membership"], "join");

    server
        .get("/v1/rooms/!a:example.org?wait_for=x7")
        .await
        .assert_error(400, "M_INVALID_PARAM");
}

/// Exactness under load: while a writer feeds joins of one user into new
/// rooms, every answer's rooms are exactly those whose join is at or below
/// the answer's token, never one more or one fewer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_exact_snapshots_while_rows_flow() {
    let server = std::sync::Arc::new(TestServer::start().await);
    let user = "@alice:example.org";
    let writer = {
        let server = server.clone();
        tokio::spawn(async move {
            for k in 1..=40i64 {
                let room = format!("!r{k}:example.org");
                server
                    .feed(&batch("master", room_rows(&room, user, 2 * k, 2 * k + 1)))
                    .await;
            }
        })
    };
    let mut reads = 0;
    loop {
        let done = writer.is_finished();
        let answer = server.get(&format!("/v1/users/{user}/rooms")).await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        let token: StreamToken = answer.body["token"].as_str().unwrap().parse().unwrap();
        let mut seen: Vec<i64> = answer.body["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["event_stream_ordering"].as_i64().unwrap())
            .collect();
        seen.sort_unstable();
        let expected: Vec<i64> = (1..=40)
            .map(|k| 2 * k + 1)
            .filter(|id| *id <= token.position("master"))
            .collect();
        assert_eq!(seen, expected, "answer at {token} is not exact");
        reads += 1;
        if done {
            break;
        }
    }
    writer.await.unwrap();
    assert!(reads > 1);
}
