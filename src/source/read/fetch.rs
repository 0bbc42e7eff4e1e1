//! Reading a stream range's rows from Synapse's database: its events, its
//! de-outliered events and its current-state deltas; events by ID (with
//! redactions applied); whether a room was left before a position; the
//! forgotten current memberships.
//!
//! Owns: running those queries of [`queries`] and reading their rows into
//! values (an unreadable column is [`SourceError::Column`]; an event with
//! invalid identifiers is skipped with a warning). May not touch: SQL text
//! (the queries module's), the translation into feed rows (the modules
//! beside it), roomcache's tables.

use std::collections::HashMap;

use super::deltas::DeltaRow;
use super::events::ExOutlier;
use super::stored_event::{event_from_row, redact_content};
use super::SourceEvent;
use crate::model::{EventId, RoomId, UserId};
use crate::source::{queries, SourceDatabase, SourceError};

impl SourceDatabase {
    /// The events persisted in the stream range `(from, to]` (of `rooms`, or
    /// all), in stream order.
    pub(super) async fn events_in_range(
        &self,
        from: i64,
        to: i64,
        rooms: Option<&[String]>,
    ) -> Result<Vec<SourceEvent>, SourceError> {
        let rows = self
            .rows_of_rooms(&queries::EVENTS_IN_RANGE, &[&from, &to], rooms)
            .await?;
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            events.extend(event_from_row(row, 0)?);
        }
        Ok(events)
    }

    /// The events de-outliered in the stream range `(from, to]` (of `rooms`,
    /// or all), in stream order (they keep their old ordering).
    pub(super) async fn ex_outliers_in_range(
        &self,
        from: i64,
        to: i64,
        rooms: Option<&[String]>,
    ) -> Result<Vec<ExOutlier>, SourceError> {
        let rows = self
            .rows_of_rooms(&queries::EX_OUTLIERS_IN_RANGE, &[&from, &to], rooms)
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

    /// The current-state delta rows in the stream range `(from, to]` (of
    /// `rooms`, or all), in stream order.
    pub(super) async fn deltas_in_range(
        &self,
        from: i64,
        to: i64,
        rooms: Option<&[String]>,
    ) -> Result<Vec<DeltaRow>, SourceError> {
        let rows = self
            .rows_of_rooms(&queries::DELTAS_IN_RANGE, &[&from, &to], rooms)
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
        &self,
        ids: &[String],
        to: i64,
    ) -> Result<HashMap<String, SourceEvent>, SourceError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = self.rows(&queries::EVENTS_BY_ID, &[&ids, &to]).await?;
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
        &self,
        room_id: &str,
        position: i64,
    ) -> Result<bool, SourceError> {
        let row = self
            .optional_row(&queries::LAST_DELTA_AT_OR_BEFORE, &[&room_id, &position])
            .await?;
        match row {
            Some(row) => Ok(row.column::<bool>(1)? && row.column::<bool>(2)?),
            None => Ok(false),
        }
    }

    /// Local users' current memberships that are forgotten, with their
    /// event's stream ordering at or below `to` (of the given rooms, or all):
    /// `(room, user, membership event)`.
    pub(crate) async fn forgotten_memberships(
        &self,
        to: i64,
        rooms: Option<&[String]>,
    ) -> Result<Vec<(RoomId, UserId, EventId)>, SourceError> {
        let rows = self
            .rows_of_rooms(&queries::FORGOTTEN_MEMBERSHIPS, &[&to], rooms)
            .await?;
        let mut forgotten = Vec::new();
        for row in &rows {
            let (room_id, user_id, event_id): (&str, &str, &str) =
                (row.column(0)?, row.column(1)?, row.column(2)?);
            // A membership with an invalid identifier is skipped.
            if let (Ok(room_id), Ok(user_id), Ok(event_id)) = (
                RoomId::parse(room_id),
                UserId::parse(user_id),
                EventId::parse(event_id),
            ) {
                forgotten.push((room_id, user_id, event_id));
            }
        }
        Ok(forgotten)
    }
}
