//! Loom model (b): publish after commit. The hand-off of a committed group
//! is "commit in the store → publish to the read index → finish the claim
//! in the tracker", the last two inside the publish gate, and a read takes
//! its token and rows through the gate. Checked at every interleaving:
//!
//! * a reader never sees a row the store has not committed;
//! * the token never covers a row the reader cannot see (it never passes
//!   an unapplied row);
//! * the answer is exact: the rows a reader sees are precisely the rows at
//!   or below its token.
//!
//! The same model with the hand-off done wrong (the `#[should_panic]`
//! tests) shows that loom finds each mistake.
#![cfg(roomcache_loom)]

mod support;

use std::collections::BTreeSet;

use loom::sync::{Arc, Mutex};
use loom::thread;
use roomcache_core::{PositionTracker, StreamToken};

type Rows = BTreeSet<(&'static str, i64)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HandOff {
    /// What the supervisor does.
    Correct,
    /// Bug: rows reach the read index (and the position moves) before the
    /// store commits them.
    PublishBeforeCommit,
    /// Bug: the claim is finished (position advanced) in a publication of
    /// its own, before the one that publishes the rows.
    AdvanceBeforePublish,
    /// Bug: the reader reads token and rows without the gate.
    ReadWithoutGate,
}

struct Model {
    tracker: PositionTracker,
    store: Mutex<Rows>,
    index: Mutex<Rows>,
}

/// The rows of the feed: w1 writes 2 and 3 in one batch, w2 writes 4.
const FEED: [(&str, &[i64]); 2] = [("w1", &[2, 3]), ("w2", &[4])];

fn write_batch(model: &Model, writer: &'static str, ids: &[i64], hand_off: HandOff) {
    let up_to = ids.last().copied().unwrap_or_default();
    let claim = model.tracker.claim(&support::name(writer), up_to).unwrap();
    let rows: Vec<(&'static str, i64)> = ids.iter().map(|id| (writer, *id)).collect();
    let commit = || model.store.lock().unwrap().extend(rows.iter().copied());
    let publish = || model.index.lock().unwrap().extend(rows.iter().copied());
    let gate = model.tracker.gate();
    match hand_off {
        HandOff::Correct | HandOff::ReadWithoutGate => {
            commit();
            gate.publish(|publication| {
                publish();
                model.tracker.finish(&claim, publication);
            });
        }
        HandOff::PublishBeforeCommit => {
            gate.publish(|publication| {
                publish();
                model.tracker.finish(&claim, publication);
            });
            commit();
        }
        HandOff::AdvanceBeforePublish => {
            commit();
            support::finish(&model.tracker, &claim);
            gate.publish(|_| publish());
        }
    }
}

fn read(model: &Model, hand_off: HandOff) -> (StreamToken, Rows) {
    let read = || {
        let token = model.tracker.token();
        let rows = model.index.lock().unwrap().clone();
        (token, rows)
    };
    if hand_off == HandOff::ReadWithoutGate {
        read()
    } else {
        model.tracker.gate().read(read)
    }
}

fn check(model: &Model, token: &StreamToken, seen: &Rows) {
    let committed = model.store.lock().unwrap().clone();
    for row in seen {
        assert!(committed.contains(row), "reader saw {row:?}, not committed");
    }
    for (writer, ids) in FEED {
        for id in ids {
            let covered = *id <= token.position(writer);
            let visible = seen.contains(&(writer, *id));
            assert!(
                !covered || visible,
                "token {token} covers ({writer}, {id}) but the reader cannot see it"
            );
            assert!(
                covered || !visible,
                "reader sees ({writer}, {id}) above its token {token}"
            );
        }
    }
}

fn run(hand_off: HandOff) {
    loom::model(move || {
        let model = Arc::new(Model {
            tracker: support::tracker(&[("w1", 0), ("w2", 0)]),
            store: Mutex::new(Rows::new()),
            index: Mutex::new(Rows::new()),
        });
        let publishers: Vec<_> = FEED
            .into_iter()
            .map(|(writer, ids)| {
                let model = model.clone();
                thread::spawn(move || write_batch(&model, writer, ids, hand_off))
            })
            .collect();
        let (token, seen) = read(&model, hand_off);
        check(&model, &token, &seen);
        for publisher in publishers {
            publisher.join().unwrap();
        }
        let (token, seen) = read(&model, hand_off);
        check(&model, &token, &seen);
        assert_eq!(token.to_string(), "m3~w2.4");
    });
}

#[test]
fn commit_then_publish_then_advance_through_the_gate() {
    run(HandOff::Correct);
}

#[test]
#[should_panic(expected = "not committed")]
fn loom_finds_publish_before_commit() {
    run(HandOff::PublishBeforeCommit);
}

#[test]
#[should_panic(expected = "cannot see it")]
fn loom_finds_advance_before_publish() {
    run(HandOff::AdvanceBeforePublish);
}

#[test]
#[should_panic(expected = "above its token")]
fn loom_finds_a_read_outside_the_gate() {
    run(HandOff::ReadWithoutGate);
}
