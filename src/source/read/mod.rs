//! Reading Synapse's tables as feed rows: events, ex-outliers and
//! current-state deltas of a stream range become the same [`FeedRow`]s a
//! writer would post to the socket.
//!
//! Owns: the SQL that reads `events`, `event_json`, `rejections`,
//! `redactions`, `ex_outlier_stream`, `current_state_delta_stream` and
//! `room_memberships`, and the translation rules (a "no longer in room"
//! wipe becomes the true delta of its persist batch; events not in the
//! range travel inline). May not touch: roomcache's own tables, the rules.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Map, Value};
use tracing::warn;

use super::database::SourceRow;
use super::{queries, SourceDatabase, SourceError};
use crate::feed::{Event, EventRow, FeedRow, ForgetRow, InlineEvent, StateRow};
use crate::model::{EventId, RoomId, UserId};
use crate::rules::RelevantKey;

/// One event read from Synapse, with where and by whom it was stored.
#[derive(Debug, Clone)]
pub(crate) struct SourceEvent {
    pub(crate) stream_ordering: i64,
    pub(crate) writer: String,
    pub(crate) event: Event,
    pub(crate) outlier: bool,
    pub(crate) rejected: bool,
    pub(crate) out_of_band_membership: bool,
    pub(crate) soft_failed: bool,
}

/// The rows of a stream range in stream order, each with its writer.
#[derive(Debug, Default)]
pub(crate) struct RangeRows {
    pub(crate) rows: Vec<(String, FeedRow)>,
    /// Events read (for statistics).
    pub(crate) events: usize,
}

impl RangeRows {
    /// The rows split per writer (each list in stream order).
    pub(crate) fn by_writer(self) -> BTreeMap<String, Vec<FeedRow>> {
        let mut by_writer: BTreeMap<String, Vec<FeedRow>> = BTreeMap::new();
        for (writer, row) in self.rows {
            by_writer.entry(writer).or_default().push(row);
        }
        by_writer
    }
}

/// The fields of a stored event's JSON the rules read.
#[derive(serde::Deserialize)]
struct StoredEvent {
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    unsigned: Option<Value>,
    #[serde(default)]
    redacts: Option<Value>,
    #[serde(default)]
    sender: Option<Value>,
}

/// The parts of `unsigned` the rules read (stripped state).
#[derive(serde::Deserialize, serde::Serialize)]
struct StoredUnsigned {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    invite_room_state: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    knock_room_state: Option<Value>,
}

/// Parses one row selected with the event columns (see
/// [`queries::EVENT_COLUMN_COUNT`]) starting at `offset`. `None` (with a
/// warning) for an event whose identifiers are invalid.
fn event_from_row(row: &SourceRow, offset: usize) -> Result<Option<SourceEvent>, SourceError> {
    let stream_ordering: Option<i64> = row.column(offset)?;
    let event_id: String = row.column(offset + 1)?;
    let room_id: String = row.column(offset + 2)?;
    let event_type: String = row.column(offset + 3)?;
    let state_key: Option<String> = row.column(offset + 4)?;
    let sender: Option<String> = row.column(offset + 5)?;
    let outlier: bool = row.column(offset + 6)?;
    let writer: String = row.column(offset + 7)?;
    let rejected: bool = row.column(offset + 8)?;
    let json: Option<String> = row.column(offset + 9)?;
    let internal_metadata: Option<String> = row.column(offset + 10)?;

    // Only the fields the rules read are parsed; signatures, hashes and the
    // rest of the event are skipped.
    let parsed: Option<StoredEvent> = json.as_deref().and_then(|j| serde_json::from_str(j).ok());
    let (content, unsigned, redacts, json_sender) = match parsed {
        Some(stored) => (
            match stored.content {
                Some(Value::Object(map)) => map,
                _ => Map::new(),
            },
            stored
                .unsigned
                .and_then(|u| serde_json::from_value::<StoredUnsigned>(u).ok())
                .filter(|u| u.invite_room_state.is_some() || u.knock_room_state.is_some())
                .and_then(|u| serde_json::to_value(u).ok()),
            stored
                .redacts
                .as_ref()
                .and_then(Value::as_str)
                .and_then(|s| EventId::parse(s).ok()),
            stored
                .sender
                .as_ref()
                .and_then(Value::as_str)
                .map(str::to_owned),
        ),
        None => (Map::new(), None, None, None),
    };
    let sender = sender.or(json_sender);
    let metadata: Option<Value> = internal_metadata
        .as_deref()
        .and_then(|m| serde_json::from_str(m).ok());
    let flag = |name: &str| {
        metadata
            .as_ref()
            .and_then(|m| m.get(name))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    let parsed_ids = (
        EventId::parse(&event_id),
        RoomId::parse(&room_id),
        sender.as_deref().map(UserId::parse),
    );
    let (Ok(event_id), Ok(room_id), Some(Ok(sender))) = parsed_ids else {
        warn!(
            event_id,
            room_id, "skipping a source event with invalid identifiers"
        );
        return Ok(None);
    };
    let Some(stream_ordering) = stream_ordering else {
        warn!(%event_id, "skipping a source event without a stream ordering");
        return Ok(None);
    };
    Ok(Some(SourceEvent {
        stream_ordering,
        writer,
        event: Event {
            event_id,
            room_id,
            event_type,
            state_key,
            sender,
            content: content.into(),
            unsigned,
            redacts,
        },
        outlier,
        rejected,
        out_of_band_membership: flag("out_of_band_membership"),
        soft_failed: flag("soft_failed"),
    }))
}

/// The content a client is served after a redaction (only the keys the
/// redaction algorithm keeps that the rules can read).
fn redact_content(event: &mut Event) {
    let keep: &[&str] = match event.event_type.as_str() {
        "m.room.member" => &["membership", "join_authorised_via_users_server"],
        "m.room.create" => {
            let modern = event
                .content
                .get("room_version")
                .and_then(Value::as_str)
                .is_some_and(|v| {
                    !matches!(
                        v,
                        "1" | "2" | "3" | "4" | "5" | "6" | "7" | "8" | "9" | "10"
                    )
                });
            if modern {
                return;
            }
            &["creator"]
        }
        "m.room.join_rules" => &["join_rule", "allow"],
        "m.room.history_visibility" => &["history_visibility"],
        _ => &[],
    };
    std::sync::Arc::make_mut(&mut event.content).retain(|k, _| keep.contains(&k.as_str()));
}

impl SourceDatabase {
    /// Events by ID (for state rows that refer to events outside the range),
    /// with redactions at or before `to` applied as Synapse would serve them.
    async fn events_by_id(
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

    /// Every row of the stream range `(from, to]` (of the given rooms, or
    /// all), as the writers' feeds would carry them. `server_name` decides
    /// which members are local.
    pub(crate) async fn read_range(
        &self,
        from: i64,
        to: i64,
        rooms: Option<&[String]>,
        server_name: &str,
    ) -> Result<RangeRows, SourceError> {
        let mut result = RangeRows::default();
        if to <= from {
            return Ok(result);
        }
        // Events newly persisted in the range.
        let event_rows = self
            .rows_of_rooms(&queries::EVENTS_IN_RANGE, &[&from, &to], rooms)
            .await?;
        let mut events: Vec<SourceEvent> = Vec::new();
        for row in &event_rows {
            events.extend(event_from_row(row, 0)?);
        }
        result.events = events.len();

        // Events de-outliered in the range (they keep their old ordering).
        let ex_outlier_rows = self
            .rows_of_rooms(&queries::EX_OUTLIERS_IN_RANGE, &[&from, &to], rooms)
            .await?;

        // Current-state deltas in the range.
        let delta_rows = self
            .rows_of_rooms(&queries::DELTAS_IN_RANGE, &[&from, &to], rooms)
            .await?;

        // (stream id, order within the id, writer, row)
        let mut rows: Vec<(i64, u8, String, FeedRow)> = Vec::new();
        let mut in_range: HashSet<String> = HashSet::new();
        for event in &events {
            in_range.insert(event.event.event_id.as_str().to_owned());
            rows.push((
                event.stream_ordering,
                0,
                event.writer.clone(),
                FeedRow::Event(EventRow {
                    stream_id: event.stream_ordering,
                    event: event.event.clone(),
                    stream_ordering: None,
                    outlier: event.outlier,
                    out_of_band_membership: event.out_of_band_membership,
                    rejected: event.rejected,
                    soft_failed: event.soft_failed,
                }),
            ));
        }
        for row in &ex_outlier_rows {
            let stream_id: i64 = row.column(0)?;
            let writer: String = row.column(1)?;
            let Some(event) = event_from_row(row, 2)? else {
                continue;
            };
            in_range.insert(event.event.event_id.as_str().to_owned());
            let stream_ordering = (event.stream_ordering != stream_id
                && (event.stream_ordering < 0 || event.stream_ordering < stream_id))
                .then_some(event.stream_ordering);
            rows.push((
                stream_id,
                0,
                writer,
                FeedRow::Event(EventRow {
                    stream_id,
                    event: event.event,
                    stream_ordering,
                    outlier: false,
                    out_of_band_membership: event.out_of_band_membership,
                    rejected: event.rejected,
                    soft_failed: event.soft_failed,
                }),
            ));
        }

        // Group the deltas by (stream id, room): one persisted change each.
        struct Delta {
            stream_id: i64,
            room_id: String,
            writer: String,
            keys: Vec<(String, String, Option<String>)>,
        }
        let mut deltas: Vec<Delta> = Vec::new();
        for row in &delta_rows {
            let stream_id: i64 = row.column(0)?;
            let room_id: String = row.column(1)?;
            let key = (row.column(2)?, row.column(3)?, row.column(4)?);
            match deltas.last_mut() {
                Some(last) if last.stream_id == stream_id && last.room_id == room_id => {
                    last.keys.push(key)
                }
                _ => deltas.push(Delta {
                    stream_id,
                    room_id,
                    writer: row.column(5)?,
                    keys: vec![key],
                }),
            }
        }
        // The next delta of each room, to bound a wipe's persist batch.
        let mut next_delta_of_room: HashMap<usize, i64> = HashMap::new();
        let mut last_index_of_room: HashMap<&str, usize> = HashMap::new();
        for (index, delta) in deltas.iter().enumerate() {
            if let Some(previous) = last_index_of_room.insert(&delta.room_id, index) {
                next_delta_of_room.insert(previous, delta.stream_id);
            }
        }
        let is_local_member = |event_type: &str, state_key: &str| {
            event_type == "m.room.member"
                && state_key.split_once(':').map(|(_, s)| s) == Some(server_name)
        };

        let mut state_rows: Vec<(i64, String, StateRow)> = Vec::new();
        let mut in_wipe_batch: HashSet<String> = HashSet::new();
        for (index, delta) in deltas.iter().enumerate() {
            let Ok(room_id) = RoomId::parse(&delta.room_id) else {
                warn!(
                    room_id = delta.room_id,
                    "skipping a delta of an invalid room ID"
                );
                continue;
            };
            let is_wipe = delta.keys.iter().all(|(_, _, e)| e.is_none())
                && delta
                    .keys
                    .iter()
                    .any(|(t, k, _)| t == "m.room.create" && k.is_empty());
            if is_wipe {
                // "No longer in room": Synapse wrote every key as deleted and
                // left out the batch's own state. The true delta is the state
                // events of the persist batch: the room's events from the
                // delta's id on, with consecutive stream orderings, up to
                // the room's next delta.
                let end = next_delta_of_room.get(&index).copied().unwrap_or(i64::MAX);
                let mut batch_state: BTreeMap<(String, String), &SourceEvent> = BTreeMap::new();
                let batch_events = events
                    .iter()
                    .filter(|e| {
                        e.event.room_id == room_id
                            && e.stream_ordering >= delta.stream_id
                            && e.stream_ordering < end
                    })
                    .zip(delta.stream_id..)
                    .take_while(|(event, expected)| event.stream_ordering == *expected)
                    .map(|(event, _)| event);
                for event in batch_events {
                    if event.outlier || event.rejected {
                        continue;
                    }
                    if let Some(state_key) = &event.event.state_key {
                        in_wipe_batch.insert(event.event.event_id.as_str().to_owned());
                        batch_state
                            .insert((event.event.event_type.clone(), state_key.clone()), event);
                    }
                }
                if batch_state.is_empty() {
                    warn!(room_id = %room_id, stream_id = delta.stream_id,
                        "a 'no longer in room' delta without a state event of its batch; ignored");
                }
                for ((event_type, state_key), event) in batch_state {
                    state_rows.push((
                        delta.stream_id,
                        delta.writer.clone(),
                        StateRow {
                            stream_id: delta.stream_id,
                            room_id: room_id.clone(),
                            event_type,
                            state_key,
                            event_id: Some(event.event.event_id.clone()),
                            event: None,
                        },
                    ));
                }
                continue;
            }
            for (event_type, state_key, event_id) in &delta.keys {
                let event_id = match event_id.as_deref().map(EventId::parse) {
                    None => None,
                    Some(Ok(id)) => Some(id),
                    Some(Err(_)) => {
                        warn!(room_id = %room_id, event_type, state_key, "skipping a delta row with an invalid event ID");
                        continue;
                    }
                };
                state_rows.push((
                    delta.stream_id,
                    delta.writer.clone(),
                    StateRow {
                        stream_id: delta.stream_id,
                        room_id: room_id.clone(),
                        event_type: event_type.clone(),
                        state_key: state_key.clone(),
                        event_id,
                        event: None,
                    },
                ));
            }
        }

        // A local member's event persisted while the server was not in the
        // room (after a "no longer in room" wipe) changes no current state,
        // so Synapse wrote no delta row; its in-memory delta still carried
        // the membership, which is what updated the member's snapshot.
        let delta_at: HashSet<(&str, i64)> = deltas
            .iter()
            .map(|d| (d.room_id.as_str(), d.stream_id))
            .collect();
        for event in &events {
            let Some(state_key) = &event.event.state_key else {
                continue;
            };
            let candidate = !event.outlier
                && !event.rejected
                && is_local_member(&event.event.event_type, state_key)
                && !delta_at.contains(&(event.event.room_id.as_str(), event.stream_ordering))
                && !in_wipe_batch.contains(event.event.event_id.as_str());
            if candidate
                && self
                    .room_was_left_before(event.event.room_id.as_str(), event.stream_ordering)
                    .await?
            {
                state_rows.push((
                    event.stream_ordering,
                    event.writer.clone(),
                    StateRow {
                        stream_id: event.stream_ordering,
                        room_id: event.event.room_id.clone(),
                        event_type: event.event.event_type.clone(),
                        state_key: state_key.clone(),
                        event_id: Some(event.event.event_id.clone()),
                        event: None,
                    },
                ));
            }
        }

        // State rows the rules must resolve whose event is not in the range
        // travel with the event inline.
        let needs_inline = |row: &StateRow| {
            row.event_id
                .as_ref()
                .is_some_and(|id| !in_range.contains(id.as_str()))
                && (RelevantKey::of(&row.event_type, &row.state_key).is_some()
                    || is_local_member(&row.event_type, &row.state_key))
        };
        let missing: Vec<String> = state_rows
            .iter()
            .filter(|(_, _, row)| needs_inline(row))
            .filter_map(|(_, _, row)| row.event_id.as_ref().map(|id| id.as_str().to_owned()))
            .collect();
        let found = self.events_by_id(&missing, to).await?;
        for (stream_id, writer, mut row) in state_rows {
            if needs_inline(&row) {
                let Some(event) = row.event_id.as_ref().and_then(|id| found.get(id.as_str()))
                else {
                    warn!(room_id = %row.room_id, event_type = row.event_type, state_key = row.state_key,
                        "a delta row refers to an event missing from the source; skipped");
                    continue;
                };
                row.event = Some(InlineEvent {
                    event: event.event.clone(),
                    stream_ordering: event.stream_ordering,
                    instance_name: Some(event.writer.clone()),
                });
            }
            rows.push((stream_id, 1, writer, FeedRow::State(row)));
        }

        rows.sort_by_key(|(stream_id, order, _, _)| (*stream_id, *order));
        result.rows = rows
            .into_iter()
            .map(|(_, _, writer, row)| (writer, row))
            .collect();
        Ok(result)
    }

    /// True when the room's last current-state delta at or before `position`
    /// is a "no longer in room" wipe (the server had left the room) that is
    /// not the event's own batch.
    async fn room_was_left_before(
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

/// Forget rows at `stream_id` for the given memberships.
pub(crate) fn forget_rows(stream_id: i64, forgotten: &[(RoomId, UserId, EventId)]) -> Vec<FeedRow> {
    forgotten
        .iter()
        .map(|(room_id, user_id, _)| {
            FeedRow::Forget(ForgetRow {
                stream_id,
                room_id: room_id.clone(),
                user_id: user_id.clone(),
            })
        })
        .collect()
}
