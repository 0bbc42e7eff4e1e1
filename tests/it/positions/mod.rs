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

mod catalogue;
mod invariants;
mod socket;

use std::collections::BTreeMap;

use roomcache::positions::{PositionTracker, StreamToken};

/// A tracker of `writers`, started from the `stored` positions.
fn tracker(writers: &[&str], stored: &[(&str, i64)]) -> PositionTracker {
    let writers: Vec<String> = writers.iter().map(|w| w.to_string()).collect();
    let stored: BTreeMap<String, i64> = stored.iter().map(|(w, p)| (w.to_string(), *p)).collect();
    PositionTracker::new(&writers, &stored)
}

/// Every writer's position.
fn positions(tracker: &PositionTracker) -> Vec<(String, i64)> {
    tracker.positions().into_iter().collect()
}

/// Positions written as pairs.
fn p(pairs: &[(&str, i64)]) -> Vec<(String, i64)> {
    pairs.iter().map(|(w, p)| (w.to_string(), *p)).collect()
}

/// A token from its text form.
fn token(text: &str) -> StreamToken {
    text.parse().unwrap()
}
