//! The invariants of Part E that apply to a reader.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use roomcache_core::StreamToken;

use super::{token, tracker};

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
    assert_eq!(token.instance_map, BTreeMap::from([(super::name("c"), 9)]));
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
            instance_map: map
                .into_iter()
                .filter(|(_, p)| *p > stream)
                .map(|(writer, p)| (super::name(&writer), p))
                .collect(),
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
