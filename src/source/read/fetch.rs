//! Reading a stream range's rows from Synapse's database: its events, its
//! de-outliered events and its current-state deltas; events by ID (with
//! redactions applied); whether a room was left before a position; the
//! forgotten current memberships.
//!
//! Owns: running those queries of [`queries`] and reading their rows into
//! values, as functions over a [`SourceDatabase`] (the type and its
//! methods are `database.rs`'s; an unreadable column is [`SourceError::Column`]; an event with
//! invalid identifiers is skipped with a warning). May not touch: SQL text
//! (the queries module's), the translation into feed rows (the modules
//! beside it), roomcache's tables.

use std::collections::HashMap;

use roomcache_core::StreamToken;

use super::deltas::DeltaRow;
use super::events::ExOutlier;
use super::stored_event::{event_from_row, redact_content};
use super::SourceEvent;
use crate::model::{EventId, RoomId, UserId};
use crate::source::database::SourceRow;
use crate::source::range::StreamRange;
use crate::source::{queries, SourceDatabase, SourceError};

/// The events persisted in the stream range (of `rooms`, or
/// all), in stream order.
pub(super) async fn events_in_range(
    source: &SourceDatabase,
    range: &StreamRange,
    rooms: Option<&[String]>,
) -> Result<Vec<SourceEvent>, SourceError> {
    let rows = source
        .rows_in_range(&queries::EVENTS_IN_RANGE, range, rooms)
        .await?;
    rows_of_events(&rows, 0)
}

/// The events of `rows`, whose event columns start at `offset` (an event
/// with invalid identifiers is skipped).
pub(super) fn rows_of_events(
    rows: &[SourceRow],
    offset: usize,
) -> Result<Vec<SourceEvent>, SourceError> {
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        events.extend(event_from_row(row, offset)?);
    }
    Ok(events)
}

/// The events de-outliered in the stream range (of `rooms`,
/// or all), in stream order (they keep their old ordering).
pub(super) async fn ex_outliers_in_range(
    source: &SourceDatabase,
    range: &StreamRange,
    rooms: Option<&[String]>,
) -> Result<Vec<ExOutlier>, SourceError> {
    let rows = source
        .rows_in_range(&queries::EX_OUTLIERS_IN_RANGE, range, rooms)
        .await?;
    let mut ex_outliers = Vec::with_capacity(rows.len());
    for row in &rows {
        let stream_id: i64 = row.column(0)?;
        let writer: String = row.column(1)?;
        if let Some(event) = event_from_row(row, 2)? {
            ex_outliers.push(ExOutlier {
                stream_id,
                writer,
                event,
            });
        }
    }
    Ok(ex_outliers)
}

/// The current-state delta rows in the stream range (of
/// `rooms`, or all), in stream order.
pub(super) async fn deltas_in_range(
    source: &SourceDatabase,
    range: &StreamRange,
    rooms: Option<&[String]>,
) -> Result<Vec<DeltaRow>, SourceError> {
    let rows = source
        .rows_in_range(&queries::DELTAS_IN_RANGE, range, rooms)
        .await?;
    let mut deltas = Vec::with_capacity(rows.len());
    for row in &rows {
        deltas.push(DeltaRow {
            stream_id: row.column(0)?,
            room_id: row.column(1)?,
            key: (row.column(2)?, row.column(3)?, row.column(4)?),
            writer: row.column(5)?,
        });
    }
    Ok(deltas)
}

/// Events by ID (for state rows that refer to events outside the range),
/// with redactions at or before `to` applied as Synapse would serve them.
pub(super) async fn events_by_id(
    source: &SourceDatabase,
    ids: &[String],
    to: i64,
) -> Result<HashMap<String, SourceEvent>, SourceError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = source.rows(&queries::EVENTS_BY_ID, &[&ids, &to]).await?;
    let mut found = HashMap::new();
    for row in &rows {
        let redacted: bool = row.column(queries::EVENT_COLUMN_COUNT)?;
        if let Some(mut event) = event_from_row(row, 0)? {
            if redacted {
                redact_content(&mut event.event);
            }
            found.insert(event.event.event_id.as_str().to_owned(), event);
        }
    }
    Ok(found)
}

/// True when the room's last current-state delta at or before `position`
/// is a "no longer in room" wipe (the server had left the room) that is
/// not the event's own batch.
pub(super) async fn room_was_left_before(
    source: &SourceDatabase,
    room_id: &str,
    position: i64,
) -> Result<bool, SourceError> {
    let row = source
        .optional_row(&queries::LAST_DELTA_AT_OR_BEFORE, &[&room_id, &position])
        .await?;
    match row {
        Some(row) => Ok(row.column::<bool>(1)? && row.column::<bool>(2)?),
        None => Ok(false),
    }
}

/// Local users' current memberships that are forgotten, with their
/// event at or below `to` for its writer (of the given rooms, or all).
pub(crate) async fn forgotten_memberships(
    source: &SourceDatabase,
    to: &StreamToken,
    rooms: Option<&[String]>,
) -> Result<Vec<ForgottenMembership>, SourceError> {
    let highest = to.max_position();
    let rows = source
        .rows_of_rooms(&queries::FORGOTTEN_MEMBERSHIPS, &[&highest], rooms)
        .await?;
    let mut forgotten = forgotten_from_rows(&rows)?;
    forgotten.retain(|membership| membership.stream_ordering <= to.position(&membership.writer));
    Ok(forgotten)
}

/// Those of the membership events `event_ids` that are a local user's
/// current membership and forgotten.
pub(crate) async fn forgotten_among_events(
    source: &SourceDatabase,
    event_ids: &[&str],
) -> Result<Vec<ForgottenMembership>, SourceError> {
    if event_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = source
        .rows(&queries::FORGOTTEN_AMONG_EVENTS, &[&event_ids])
        .await?;
    forgotten_from_rows(&rows)
}

/// The forgotten current memberships of the (room, user) pairs.
pub(crate) async fn forgotten_among_members(
    source: &SourceDatabase,
    members: &[(String, String)],
) -> Result<Vec<ForgottenMembership>, SourceError> {
    if members.is_empty() {
        return Ok(Vec::new());
    }
    let (rooms, users): (Vec<&str>, Vec<&str>) = members
        .iter()
        .map(|(room, user)| (room.as_str(), user.as_str()))
        .unzip();
    let rows = source
        .rows(&queries::FORGOTTEN_AMONG_MEMBERS, &[&rooms, &users])
        .await?;
    forgotten_from_rows(&rows)
}

/// A local user's current membership that is forgotten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ForgottenMembership {
    pub(crate) room_id: RoomId,
    pub(crate) user_id: UserId,
    pub(crate) event_id: EventId,
    pub(crate) stream_ordering: i64,
    pub(crate) writer: String,
}

/// The memberships of rows shaped as [`queries::FORGOTTEN_MEMBERSHIPS`]'s
/// (one with an invalid identifier is skipped).
fn forgotten_from_rows(rows: &[SourceRow]) -> Result<Vec<ForgottenMembership>, SourceError> {
    let mut forgotten = Vec::new();
    for row in rows {
        let (room_id, user_id, event_id): (&str, &str, &str) =
            (row.column(0)?, row.column(1)?, row.column(2)?);
        let (stream_ordering, writer): (i64, String) = (row.column(3)?, row.column(4)?);
        if let (Ok(room_id), Ok(user_id), Ok(event_id)) = (
            RoomId::parse(room_id),
            UserId::parse(user_id),
            EventId::parse(event_id),
        ) {
            forgotten.push(ForgottenMembership {
                room_id,
                user_id,
                event_id,
                stream_ordering,
                writer,
            });
        }
    }
    Ok(forgotten)
}
