//! Reading Synapse's backfill stream as feed rows: its writers' positions,
//! the events each writer backfilled between two of its positions and
//! those it de-outliered while backfilling, and every backfilled event of
//! some rooms, as event rows at their own stream ordering.
//!
//! Owns: running the backfill stream's queries of [`queries`] and turning
//! their rows into [`EventRow`]s (functions over a [`SourceDatabase`]).
//! May not touch: SQL text, roomcache's tables, the rules.

use std::collections::BTreeMap;

use super::fetch::rows_of_events;
use super::SourceEvent;
use crate::feed::{EventRow, FeedRow};
use crate::source::database::Parameters;
use crate::source::{queries, SourceDatabase, SourceError};

/// Each Synapse writer's position on the backfill stream (positive): its
/// `stream_positions` row, below which everything it persisted there is
/// committed.
pub(crate) async fn backfill_positions(
    source: &SourceDatabase,
) -> Result<BTreeMap<String, i64>, SourceError> {
    let rows = source
        .rows(&queries::BACKFILL_WRITER_POSITIONS, &[])
        .await?;
    rows.iter()
        .map(|row| Ok((row.column(0)?, row.column(1)?)))
        .collect()
}

/// One writer's part of a read: its positions after which and up to which
/// (positive backfill positions) its rows are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BackfillBounds {
    pub(crate) after: i64,
    pub(crate) up_to: i64,
}

/// The event rows of the backfill stream within `bounds` (per Synapse
/// writer), per writer that persisted them (the events' instance name;
/// for a de-outliering, the writer that de-outliered), each list in stream
/// order: every event that is not an outlier, at its own stream ordering
/// (negative when backfilled), at stream id 0 (these rows move no
/// events-stream position and bump nothing). Outliers are left out: only
/// the rooms' latest events take anything from backfill.
pub(crate) async fn backfilled_rows(
    source: &SourceDatabase,
    bounds: &BTreeMap<String, BackfillBounds>,
) -> Result<BTreeMap<String, Vec<FeedRow>>, SourceError> {
    let writers: Vec<&str> = bounds.keys().map(String::as_str).collect();
    let after: Vec<i64> = bounds.values().map(|b| b.after).collect();
    let up_to: Vec<i64> = bounds.values().map(|b| b.up_to).collect();
    let parameters: &Parameters<'_> = &[&writers, &after, &up_to];
    let mut by_writer: BTreeMap<String, Vec<FeedRow>> = BTreeMap::new();
    let backfilled = source.rows(&queries::BACKFILLED_EVENTS, parameters).await?;
    for event in rows_of_events(&backfilled, 0)? {
        push(&mut by_writer, event.writer.clone(), event);
    }
    let ex_outliers = source
        .rows(&queries::BACKFILL_EX_OUTLIERS, parameters)
        .await?;
    for row in &ex_outliers {
        let writer: String = row.column(1)?;
        if let Some(event) = super::stored_event::event_from_row(row, 2)? {
            push(
                &mut by_writer,
                writer,
                SourceEvent {
                    outlier: false,
                    ..event
                },
            );
        }
    }
    Ok(by_writer)
}

/// Every backfilled event of `rooms` that is not an outlier (what the
/// positive stream range of a room's history does not hold), as
/// [`backfilled_rows`] gives them, with the writer that persisted each.
pub(crate) async fn backfilled_rows_of_rooms(
    source: &SourceDatabase,
    rooms: &[String],
) -> Result<Vec<(String, FeedRow)>, SourceError> {
    let rows = source
        .rows_of_rooms(&queries::BACKFILLED_EVENTS_OF_ROOMS, &[], Some(rooms))
        .await?;
    Ok(rows_of_events(&rows, 0)?
        .into_iter()
        .filter_map(|event| Some((event.writer.clone(), event_row(event)?)))
        .collect())
}

/// Adds `event`'s row to `writer`'s list, unless it is an outlier.
fn push(by_writer: &mut BTreeMap<String, Vec<FeedRow>>, writer: String, event: SourceEvent) {
    if let Some(row) = event_row(event) {
        by_writer.entry(writer).or_default().push(row);
    }
}

/// A backfilled event's row at its own stream ordering, at stream id 0;
/// none for an outlier.
fn event_row(event: SourceEvent) -> Option<FeedRow> {
    if event.outlier {
        return None;
    }
    Some(FeedRow::Event(EventRow {
        stream_id: 0,
        stream_ordering: Some(event.stream_ordering),
        topological_ordering: event.topological_ordering,
        outlier: false,
        out_of_band_membership: false,
        rejected: event.rejected,
        soft_failed: event.soft_failed,
        event: event.event,
    }))
}
