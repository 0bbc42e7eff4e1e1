//! Loom model (d): a restart of the cache while another writer is in the
//! middle of a batch, and the A.13 restart race of a *writer*.
//!
//! The store commits a batch's rows and its writer's position in one
//! transaction (one critical section here). A crash is a snapshot of the
//! store taken at any instant; the restarted cache builds its tracker from
//! the snapshot's positions, and every writer replays its whole feed from
//! `GET /v1/positions` (here: claims from the new tracker). Checked at every
//! interleaving: the restarted positions are exactly the committed rows'
//! prefix, no row is applied twice, and none is lost.
#![cfg(roomcache_loom)]

mod support;

use std::collections::{BTreeMap, BTreeSet};

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;
use roomcache_core::{PositionTracker, WriterName};

#[derive(Debug, Clone, Default)]
struct Durable {
    rows: BTreeSet<(String, i64)>,
    positions: BTreeMap<WriterName, i64>,
}

/// Each writer's feed, in batches.
const FEED: [(&str, &[&[i64]]); 2] = [("w1", &[&[2, 3], &[6]]), ("w2", &[&[4, 5]])];

fn writers() -> Vec<WriterName> {
    FEED.iter().map(|(w, _)| support::name(w)).collect()
}

/// Applies a batch to `durable`: claim, then rows and position in one
/// transaction (or, for the reintroduced bug, two), then finish.
fn apply(
    tracker: &PositionTracker,
    store: &Mutex<Durable>,
    writer: &str,
    ids: &[i64],
    atomic: bool,
) {
    let up_to = ids.last().copied().unwrap_or_default();
    let claim = tracker.claim(&support::name(writer), up_to).unwrap();
    let new_rows: Vec<(String, i64)> = ids
        .iter()
        .filter(|id| claim.covers(**id))
        .map(|id| (writer.to_string(), *id))
        .collect();
    let write_rows = |durable: &mut Durable| {
        for row in &new_rows {
            assert!(
                durable.rows.insert(row.clone()),
                "row {row:?} applied twice"
            );
        }
    };
    let write_position = |durable: &mut Durable| {
        let entry = durable.positions.entry(support::name(writer)).or_default();
        *entry = (*entry).max(up_to);
    };
    if atomic {
        let mut durable = store.lock().unwrap();
        write_rows(&mut durable);
        write_position(&mut durable);
    } else {
        write_position(&mut store.lock().unwrap());
        write_rows(&mut store.lock().unwrap());
    }
    support::finish(tracker, &claim);
}

fn crash_and_resume(atomic: bool) {
    loom::model(move || {
        let store = Arc::new(Mutex::new(Durable::default()));
        let tracker = Arc::new(support::tracker(&[("w1", 0), ("w2", 0)]));
        let feeders: Vec<_> = FEED
            .into_iter()
            .map(|(writer, batches)| {
                let (store, tracker) = (store.clone(), tracker.clone());
                thread::spawn(move || {
                    for ids in batches {
                        apply(&tracker, &store, writer, ids, atomic);
                    }
                })
            })
            .collect();
        // SIGKILL: whatever is committed at this instant is all that survives.
        let mut survivor = store.lock().unwrap().clone();
        let restarted = PositionTracker::new(&writers(), &survivor.positions);
        for (writer, batches) in FEED {
            let position = restarted.position(writer).unwrap();
            for id in batches.iter().flat_map(|b| b.iter()) {
                let committed = survivor.rows.contains(&(writer.to_string(), *id));
                assert!(
                    *id > position || committed,
                    "({writer}, {id}) is at or below the restarted position {position} but was lost"
                );
                assert!(
                    *id <= position || !committed,
                    "({writer}, {id}) is committed above the restarted position {position}"
                );
            }
        }
        // The writers resume: they replay everything; the cache skips what it has.
        let survivor_store = Mutex::new(std::mem::take(&mut survivor));
        for (writer, batches) in FEED {
            for ids in batches {
                apply(&restarted, &survivor_store, writer, ids, true);
            }
        }
        let replayed = survivor_store.lock().unwrap().clone();
        let expected: BTreeSet<(String, i64)> = FEED
            .iter()
            .flat_map(|(w, batches)| {
                batches
                    .iter()
                    .flat_map(|b| b.iter())
                    .map(|id| (w.to_string(), *id))
            })
            .collect();
        assert_eq!(replayed.rows, expected, "rows were lost");
        for feeder in feeders {
            feeder.join().unwrap();
        }
    });
}

/// Rows and position in one transaction: nothing lost, nothing doubled.
#[test]
fn a_crash_at_any_instant_loses_and_doubles_nothing() {
    crash_and_resume(true);
}

/// Reintroduced bug: the position is written in its own transaction before
/// the rows (as Synapse's separate `stream_positions` upsert would be if it
/// ran first). A crash in between claims rows that were never committed.
#[test]
#[should_panic(expected = "was lost")]
fn loom_finds_a_position_written_apart_from_its_rows() {
    crash_and_resume(false);
}

/// Spec A.13 from a reader's side: writer `a` restarts and announces a
/// position (10) that is `b`'s id still in flight. With option S1 (no
/// gap-free walk over announced positions), the linear position stays below
/// 10 until `b`'s rows are applied, `b`'s position only moves when they are,
/// and `b`'s batch is not dropped as stale.
#[test]
fn a_restarting_writer_cannot_push_the_token_past_an_unapplied_row() {
    loom::model(|| {
        let tracker = Arc::new(support::tracker(&[("a", 9), ("b", 9)]));
        let applied = Arc::new(AtomicBool::new(false));
        let announcer = {
            let tracker = tracker.clone();
            thread::spawn(move || {
                support::advance(&tracker, "a", 10);
            })
        };
        let b = {
            let (tracker, applied) = (tracker.clone(), applied.clone());
            thread::spawn(move || {
                let claim = tracker.claim(&support::name("b"), 10).unwrap();
                assert_eq!((claim.after, claim.up_to), (9, 10), "b's row is not stale");
                applied.store(true, Ordering::SeqCst);
                support::finish(&tracker, &claim);
            })
        };
        for _ in 0..2 {
            let token = tracker.token();
            if token.stream >= 10 || token.position("b") >= 10 {
                assert!(
                    applied.load(Ordering::SeqCst),
                    "token {token} covers b's unapplied row 10"
                );
            }
        }
        announcer.join().unwrap();
        b.join().unwrap();
        assert_eq!(tracker.token().to_string(), "s10");
    });
}
