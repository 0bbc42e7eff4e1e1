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

use roomcache_core::{Claim, PositionError, PositionTracker, StreamToken, WriterName};

/// A writer's name.
fn name(writer: &str) -> WriterName {
    WriterName::parse(writer).unwrap()
}

/// The tracker as the catalogue drives it: writers by name, and each
/// finish or advance in a publication of its own (the only way the tracker
/// allows).
struct Tracker(PositionTracker);

impl std::ops::Deref for Tracker {
    type Target = PositionTracker;

    fn deref(&self) -> &PositionTracker {
        &self.0
    }
}

impl Tracker {
    fn claim(&self, writer: &str, up_to: i64) -> Result<Claim, PositionError> {
        self.0.claim(&name(writer), up_to)
    }

    fn finish(&self, claim: &Claim) -> bool {
        self.0
            .gate()
            .publish(|publication| self.0.finish(claim, publication))
    }

    fn advance(&self, writer: &str, position: i64) -> bool {
        self.0
            .gate()
            .publish(|publication| self.0.advance(&name(writer), position, publication))
    }
}

/// A tracker of `writers`, started from the `stored` positions.
fn tracker(writers: &[&str], stored: &[(&str, i64)]) -> Tracker {
    let stored: BTreeMap<WriterName, i64> = stored.iter().map(|(w, p)| (name(w), *p)).collect();
    restarted(writers, &stored)
}

/// A tracker of `writers`, started from positions as a restart loads them.
fn restarted(writers: &[&str], stored: &BTreeMap<WriterName, i64>) -> Tracker {
    let writers: Vec<WriterName> = writers.iter().map(|w| name(w)).collect();
    Tracker(PositionTracker::new(&writers, stored))
}

/// Every writer's position.
fn positions(tracker: &PositionTracker) -> Vec<(String, i64)> {
    tracker
        .positions()
        .into_iter()
        .map(|(writer, position)| (writer.to_string(), position))
        .collect()
}

/// Positions written as pairs.
fn p(pairs: &[(&str, i64)]) -> Vec<(String, i64)> {
    pairs.iter().map(|(w, p)| (w.to_string(), *p)).collect()
}

/// A token from its text form.
fn token(text: &str) -> StreamToken {
    text.parse().unwrap()
}
