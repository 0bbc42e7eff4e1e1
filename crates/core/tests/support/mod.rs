//! What the loom models share: writer names, trackers, and finishing or
//! advancing inside a publication (the only way the tracker allows).
#![allow(dead_code)]

use std::collections::BTreeMap;

use roomcache_core::{Claim, PositionTracker, WriterName};

pub(crate) fn name(writer: &str) -> WriterName {
    WriterName::parse(writer).unwrap()
}

/// A tracker of the given writers, each at its stored position.
pub(crate) fn tracker(stored: &[(&str, i64)]) -> PositionTracker {
    let writers: Vec<WriterName> = stored.iter().map(|(w, _)| name(w)).collect();
    let stored: BTreeMap<WriterName, i64> = stored.iter().map(|(w, p)| (name(w), *p)).collect();
    PositionTracker::new(&writers, &stored)
}

/// Finishes `claim` in a publication of its own.
pub(crate) fn finish(tracker: &PositionTracker, claim: &Claim) -> bool {
    tracker
        .gate()
        .publish(|publication| tracker.finish(claim, publication))
}

/// Advances `writer` to `position` in a publication of its own.
pub(crate) fn advance(tracker: &PositionTracker, writer: &str, position: i64) -> bool {
    tracker
        .gate()
        .publish(|publication| tracker.advance(&name(writer), position, publication))
}
