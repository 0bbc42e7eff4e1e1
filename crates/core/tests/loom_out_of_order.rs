//! Loom model (a): out-of-order completion, across writers and within one
//! writer, in the position tracker.
//!
//! Every finisher marks its rows applied *before* finishing its claim (the
//! supervisor publishes before it finishes); readers check, at every step
//! of every interleaving, that no writer's durable position (and so no
//! token) covers a claim whose rows are not applied, that positions never
//! go down, and that the linear position is the minimum over the writers.
#![cfg(roomcache_loom)]

mod support;

use std::collections::BTreeMap;

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use roomcache_core::{Claim, PositionTracker, StreamToken};

fn tracker(stored: &[(&str, i64)]) -> Arc<PositionTracker> {
    Arc::new(support::tracker(stored))
}

/// A claim and the flag its finisher sets once its rows are applied.
struct Tracked {
    claim: Claim,
    applied: AtomicBool,
}

/// The checks a reader makes on one token.
fn check_token(token: &StreamToken, claims: &[Arc<Tracked>], floor: &BTreeMap<&str, i64>) {
    for tracked in claims {
        let claim = &tracked.claim;
        if token.position(claim.writer.as_str()) >= claim.up_to {
            assert!(
                tracked.applied.load(Ordering::SeqCst),
                "token {token} covers {}'s claim up to {} whose rows are not applied",
                claim.writer,
                claim.up_to
            );
        }
    }
    let minimum = floor
        .keys()
        .map(|w| token.position(w))
        .min()
        .unwrap_or_default();
    assert_eq!(
        token.stream, minimum,
        "stream of {token} is not the minimum"
    );
}

/// Spec A.14 A1-3 (`test_out_of_order_finish`) plus a second writer: w1
/// claims 8, 9, 10 and 11 (in this order, as ids are allocated), w2 claims
/// up to 12; every order of finishing them is explored.
#[test]
fn out_of_order_finish_within_and_across_writers() {
    loom::model(|| {
        let tracker = tracker(&[("w1", 7), ("w2", 7)]);
        let mut claims = Vec::new();
        for (writer, up_to) in [("w1", 8), ("w1", 9), ("w1", 10), ("w1", 11), ("w2", 12)] {
            let claim = tracker.claim(&support::name(writer), up_to).unwrap();
            claims.push(Arc::new(Tracked {
                claim,
                applied: AtomicBool::new(false),
            }));
        }
        assert_eq!(claims[1].claim.after, 8, "claims are contiguous");
        assert_eq!(
            tracker.position("w1"),
            Some(7),
            "claims do not move positions"
        );
        let floor: BTreeMap<&str, i64> = [("w1", 7), ("w2", 7)].into_iter().collect();

        // Two finishers per thread keep the model small: (9, 8) and (11, 10)
        // finish in reverse order; w2's claim races with both.
        let mut handles = Vec::new();
        for group in [[1usize, 0], [3, 2]] {
            let tracker = tracker.clone();
            let claims = claims.clone();
            handles.push(thread::spawn(move || {
                for index in group {
                    claims[index].applied.store(true, Ordering::SeqCst);
                    support::finish(&tracker, &claims[index].claim);
                }
            }));
        }
        {
            let tracker = tracker.clone();
            let claims = claims.clone();
            handles.push(thread::spawn(move || {
                claims[4].applied.store(true, Ordering::SeqCst);
                support::finish(&tracker, &claims[4].claim);
            }));
        }
        let mut previous = tracker.token();
        for _ in 0..2 {
            let token = tracker.token();
            check_token(&token, &claims, &floor);
            assert!(previous.is_before_or_eq(&token), "token went back");
            previous = token;
        }
        for handle in handles {
            handle.join().unwrap();
        }
        let token = tracker.token();
        check_token(&token, &claims, &floor);
        assert_eq!(tracker.position("w1"), Some(11));
        assert_eq!(tracker.position("w2"), Some(12));
        assert_eq!(token.to_string(), "m11~w2.12");
    });
}

/// Spec A.14 A2-8 (`test_current_token_gap`): a configured writer that
/// never sends anything pins the linear position, whatever the order of
/// the others' progress; a writer with a claim in flight stays at its last
/// contiguous position.
#[test]
fn a_silent_writer_pins_the_linear_position() {
    loom::model(|| {
        let tracker = tracker(&[("first", 7), ("second", 7), ("third", 7)]);
        let held = tracker.claim(&support::name("second"), 12).unwrap();
        let first = {
            let tracker = tracker.clone();
            thread::spawn(move || {
                support::advance(&tracker, "first", 9);
                support::advance(&tracker, "first", 11);
            })
        };
        let second = {
            let tracker = tracker.clone();
            thread::spawn(move || {
                assert!(tracker.position("second") == Some(7));
                support::finish(&tracker, &held);
            })
        };
        let token = tracker.token();
        assert_eq!(token.stream, 7, "third is silent: L stays 7");
        assert!([7, 9, 11].contains(&token.position("first")));
        assert!([7, 12].contains(&token.position("second")));
        first.join().unwrap();
        second.join().unwrap();
        assert_eq!(tracker.token().to_string(), "m7~first.11~second.12");
    });
}

/// The reader's form of PR #11045: claiming reads the end of the last claim
/// and registers the new one in one step, so two batches of one writer that
/// race never claim the same row, and a finish that races with a claim
/// never moves the position past the new claim.
#[test]
fn concurrent_claims_are_disjoint_and_hold_the_position_back() {
    loom::model(|| {
        let tracker = tracker(&[("w1", 5)]);
        let first = tracker.claim(&support::name("w1"), 6).unwrap();
        let claimers: Vec<_> = [8, 10]
            .into_iter()
            .map(|up_to| {
                let tracker = tracker.clone();
                thread::spawn(move || tracker.claim(&support::name("w1"), up_to).unwrap())
            })
            .collect();
        let finisher = {
            let tracker = tracker.clone();
            thread::spawn(move || {
                support::finish(&tracker, &first);
            })
        };
        let position = tracker.position("w1").unwrap();
        assert!(position == 5 || position == 6, "position {position}");
        let mut claims: Vec<Claim> = claimers.into_iter().map(|h| h.join().unwrap()).collect();
        finisher.join().unwrap();
        assert_eq!(
            tracker.position("w1"),
            Some(6),
            "later claims are not finished"
        );
        claims.sort_by_key(|c| c.up_to);
        // Whichever ran first, no row is claimed twice: either the two
        // ranges are contiguous, or the claim that came second is empty (all
        // its ids were already claimed, as for a replay).
        let ranges: Vec<(i64, i64)> = claims.iter().map(|c| (c.after, c.up_to)).collect();
        assert!(
            ranges == [(6, 8), (8, 10)] || ranges == [(10, 8), (6, 10)],
            "claims {ranges:?}"
        );
        assert!(claims.iter().filter(|c| c.is_empty()).count() <= 1);
    });
}
