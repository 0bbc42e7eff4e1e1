//! The event rows of a stream range: each event persisted in the range, and
//! each event de-outliered in it, as the [`EventRow`] a writer would post.
//!
//! Owns: that translation (pure, over events already read). May not touch:
//! SQL, state rows (the deltas' modules), roomcache's tables, the rules.

use std::collections::HashSet;

use super::{RangeRow, SourceEvent};
use crate::feed::{EventRow, FeedRow};

/// An event de-outliered in the range: the de-outliering's stream position
/// and writer, and the event (which keeps its old stream ordering).
pub(super) struct ExOutlier {
    pub(super) stream_id: i64,
    pub(super) writer: String,
    pub(super) event: SourceEvent,
}

/// The event rows of a range and the IDs of their events.
pub(super) struct EventRows {
    pub(super) rows: Vec<RangeRow>,
    /// The events the range's rows carry (a state row referring to another
    /// event carries that event inline).
    pub(super) in_range: HashSet<String>,
}

/// The rows of the events persisted in the range, then of those
/// de-outliered in it, each at its stream position.
pub(super) fn event_rows(events: &[SourceEvent], ex_outliers: Vec<ExOutlier>) -> EventRows {
    let mut rows = Vec::with_capacity(events.len() + ex_outliers.len());
    let mut in_range: HashSet<String> = HashSet::new();
    for event in events {
        in_range.insert(event.event.event_id.as_str().to_owned());
        rows.push(RangeRow::event(
            event.stream_ordering,
            event.writer.clone(),
            FeedRow::Event(EventRow {
                stream_id: event.stream_ordering,
                event: event.event.clone(),
                stream_ordering: None,
                topological_ordering: event.topological_ordering,
                outlier: event.outlier,
                out_of_band_membership: event.out_of_band_membership,
                rejected: event.rejected,
                soft_failed: event.soft_failed,
            }),
        ));
    }
    for ExOutlier {
        stream_id,
        writer,
        event,
    } in ex_outliers
    {
        in_range.insert(event.event.event_id.as_str().to_owned());
        // The event's own ordering travels along when it is older than the
        // de-outliering (or a backfilled, negative one).
        let stream_ordering = (event.stream_ordering != stream_id
            && (event.stream_ordering < 0 || event.stream_ordering < stream_id))
            .then_some(event.stream_ordering);
        rows.push(RangeRow::event(
            stream_id,
            writer,
            FeedRow::Event(EventRow {
                stream_id,
                event: event.event,
                stream_ordering,
                topological_ordering: event.topological_ordering,
                outlier: false,
                out_of_band_membership: event.out_of_band_membership,
                rejected: event.rejected,
                soft_failed: event.soft_failed,
            }),
        ));
    }
    EventRows { rows, in_range }
}
