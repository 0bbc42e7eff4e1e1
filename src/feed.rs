//! The feed: the rows a homeserver writer pushes (`POST /v1/feed`) or the
//! Synapse tailer produces, and their validation.
//!
//! Owns: the JSON shape of feed rows and every check that can be made on a
//! batch without knowing any room's state (identifiers, NUL bytes, stream
//! order, field consistency), and [`ValidBatch`], the batch that passed
//! them. May not touch: room state, positions, the database. Everything
//! after this module receives only a `ValidBatch`, which nothing but the
//! checks can make.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use roomcache_core::{WriterName, WriterNameError};

use crate::model::{EventId, RoomId, UserId};

/// One writer's batch, as posted to `POST /v1/feed`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedBatch {
    /// The writer (instance name) whose stream these rows belong to.
    pub writer: WriterName,
    /// Rows in stream order; rows sharing a `stream_id` form one atomic group.
    pub rows: Vec<FeedRow>,
}

/// A batch as the socket receives it: the writer's name is checked by
/// [`FeedBatch::from_wire`], so a bad name is the caller's parameter error,
/// not a JSON shape error.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireBatch {
    writer: String,
    rows: Vec<FeedRow>,
}

impl WireBatch {
    /// The writer's name as sent (not yet checked).
    pub(crate) fn writer(&self) -> &str {
        &self.writer
    }

    pub(crate) fn rows_len(&self) -> usize {
        self.rows.len()
    }
}

impl FeedBatch {
    /// The batch of a wire batch whose writer name follows the rule.
    pub(crate) fn from_wire(wire: WireBatch) -> Result<FeedBatch, FeedError> {
        Ok(FeedBatch {
            writer: WriterName::parse(&wire.writer).map_err(FeedError::BadWriterName)?,
            rows: wire.rows,
        })
    }
}

/// One row of a writer's events stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FeedRow {
    Event(EventRow),
    State(StateRow),
    Forget(ForgetRow),
    Purge(PurgeRow),
    Position(PositionRow),
    AccountData(AccountDataRow),
}

/// A Matrix event as the feed carries it. Content is kept as JSON: the rules
/// read the few fields they need and treat anything unexpected as "no value".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub event_id: EventId,
    pub room_id: RoomId,
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_key: Option<String>,
    pub sender: UserId,
    #[serde(default)]
    pub content: Arc<serde_json::Map<String, Value>>,
    /// `unsigned`, where invites and knocks carry their stripped state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsigned: Option<Value>,
    /// For redactions in room versions before 11 (later versions put it in content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redacts: Option<EventId>,
}

/// A new event persisted by the writer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRow {
    pub stream_id: i64,
    pub event: Event,
    /// The event's own stream ordering when it differs from `stream_id`:
    /// negative for a backfilled event, lower for an event stored earlier as
    /// an outlier and now de-outliered. Such events never bump a room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_ordering: Option<i64>,
    /// The event's topological ordering (`events.topological_ordering`,
    /// its depth): where the initial timeline places it. An event that is
    /// not an outlier without it makes its room's timeline unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topological_ordering: Option<i64>,
    #[serde(default)]
    pub outlier: bool,
    #[serde(default)]
    pub out_of_band_membership: bool,
    #[serde(default)]
    pub rejected: bool,
    #[serde(default)]
    pub soft_failed: bool,
}

impl EventRow {
    /// The stream ordering the event is stored at.
    pub fn event_stream_ordering(&self) -> i64 {
        self.stream_ordering.unwrap_or(self.stream_id)
    }

    /// True when the event is newly persisted at this row's position (not a
    /// backfilled or re-persisted copy), so it may bump its room.
    pub fn is_new_live_event(&self) -> bool {
        self.stream_ordering.is_none_or(|so| so == self.stream_id)
    }
}

/// One change to a room's current state: `event_id` null means the key was
/// removed. A row may carry the event inline (with its stream ordering and
/// writer) when it refers to an event the cache cannot have seen, such as a
/// state reset back to an old event.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateRow {
    pub stream_id: i64,
    pub room_id: RoomId,
    #[serde(rename = "type")]
    pub event_type: String,
    pub state_key: String,
    pub event_id: Option<EventId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<InlineEvent>,
}

/// An event carried inside a state row, with where it was stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InlineEvent {
    #[serde(flatten)]
    pub event: Event,
    pub stream_ordering: i64,
    /// The writer that stored the event; defaults to the batch's writer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_name: Option<String>,
}

/// A local user forgot a room.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgetRow {
    pub stream_id: i64,
    pub room_id: RoomId,
    pub user_id: UserId,
}

/// A room was purged: every row of it goes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeRow {
    pub stream_id: i64,
    pub room_id: RoomId,
}

/// A local user's account data changed: `m.direct` (global, no `room_id`)
/// or `m.tag` (per room). Other types are accepted and ignored. Not a room
/// row: it goes to the store and the read index, never to a room actor.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountDataRow {
    pub stream_id: i64,
    pub user_id: UserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_id: Option<RoomId>,
    #[serde(rename = "type")]
    pub data_type: String,
    pub content: serde_json::Map<String, Value>,
}

impl AccountDataRow {
    /// The row as a change the store persists and the index publishes, if
    /// room lists read its type (`m.direct` global, `m.tag` per room).
    pub fn change(&self) -> Option<crate::model::AccountData> {
        let wanted = matches!(
            (&self.room_id, self.data_type.as_str()),
            (None, crate::model::DIRECT_ACCOUNT_DATA) | (Some(_), crate::model::TAG_ACCOUNT_DATA)
        );
        wanted.then(|| crate::model::AccountData {
            user_id: self.user_id.clone(),
            room_id: self.room_id.clone(),
            data_type: self.data_type.clone(),
            content: Value::Object(self.content.clone()),
        })
    }
}

/// The writer has nothing more up to `stream_id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PositionRow {
    pub stream_id: i64,
}

impl FeedRow {
    pub fn stream_id(&self) -> i64 {
        match self {
            FeedRow::Event(r) => r.stream_id,
            FeedRow::State(r) => r.stream_id,
            FeedRow::Forget(r) => r.stream_id,
            FeedRow::Purge(r) => r.stream_id,
            FeedRow::Position(r) => r.stream_id,
            FeedRow::AccountData(r) => r.stream_id,
        }
    }

    /// The room whose actor applies the row; `None` for position and
    /// account-data rows (those are not room state).
    pub fn room_id(&self) -> Option<&RoomId> {
        match self {
            FeedRow::Event(r) => Some(&r.event.room_id),
            FeedRow::State(r) => Some(&r.room_id),
            FeedRow::Forget(r) => Some(&r.room_id),
            FeedRow::Purge(r) => Some(&r.room_id),
            FeedRow::Position(_) | FeedRow::AccountData(_) => None,
        }
    }
}

/// Why a batch was refused before anything was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    #[error(transparent)]
    BadWriterName(WriterNameError),
    #[error("row {index}: stream_id {stream_id} must be positive")]
    NonPositiveStreamId { index: usize, stream_id: i64 },
    #[error("row {index}: stream_id {stream_id} comes after {previous}; a writer's rows must be in stream order")]
    OutOfOrder {
        index: usize,
        stream_id: i64,
        previous: i64,
    },
    #[error("row {index}: field `{field}` contains a NUL character")]
    NulInField { index: usize, field: &'static str },
    #[error("row {index}: {reason}")]
    Inconsistent { index: usize, reason: String },
    #[error("row {index}: `{field}` is longer than {MAX_STATE_TEXT_BYTES} bytes (Synapse's events are at most 64 KiB)")]
    TooLarge { index: usize, field: &'static str },
}

/// Longest text value of a relevant state field (`m.room.create`'s
/// `type`, `m.room.name`'s `name`, `m.room.tombstone`'s
/// `replacement_room`, in events and in stripped state) and of an inline
/// event's `instance_name`, in bytes: Synapse refuses events larger than
/// 64 KiB, so no real value is longer.
pub const MAX_STATE_TEXT_BYTES: usize = 65_536;

/// The content field of a relevant state type that becomes a text column.
fn text_field_of(event_type: &str) -> Option<&'static str> {
    match event_type {
        "m.room.create" => Some("type"),
        "m.room.name" => Some("name"),
        "m.room.tombstone" => Some("replacement_room"),
        _ => None,
    }
}

fn oversized(value: Option<&Value>) -> bool {
    value
        .and_then(Value::as_str)
        .is_some_and(|s| s.len() > MAX_STATE_TEXT_BYTES)
}

/// True when a text column's value in `event` (its content, or the
/// stripped state of an invite or knock) is over the limit.
fn has_oversized_text(event: &Event) -> bool {
    let own = text_field_of(&event.event_type).is_some_and(|f| oversized(event.content.get(f)));
    let stripped = ["invite_room_state", "knock_room_state"]
        .iter()
        .filter_map(|key| event.unsigned.as_ref()?.get(key)?.as_array())
        .flatten()
        .any(|item| {
            let field = item
                .get("type")
                .and_then(Value::as_str)
                .and_then(text_field_of);
            field.is_some_and(|f| oversized(item.get("content").and_then(|c| c.get(f))))
        });
    own || stripped
}

fn has_nul(value: &str) -> bool {
    value.contains('\0')
}

/// True when a string anywhere in the JSON value (keys included) holds a
/// NUL, which Postgres' JSONB refuses.
fn value_has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => has_nul(s),
        Value::Array(items) => items.iter().any(value_has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| has_nul(k) || value_has_nul(v)),
        _ => false,
    }
}

fn check_event(index: usize, event: &Event) -> Result<(), FeedError> {
    if has_nul(&event.event_type) {
        return Err(FeedError::NulInField {
            index,
            field: "event.type",
        });
    }
    if event.state_key.as_deref().is_some_and(has_nul) {
        return Err(FeedError::NulInField {
            index,
            field: "event.state_key",
        });
    }
    if has_oversized_text(event) {
        return Err(FeedError::TooLarge {
            index,
            field: "event.content",
        });
    }
    Ok(())
}

impl FeedBatch {
    /// Every check that needs no room state ([`ValidBatch::parse`] runs
    /// them). On success the rows are in non-decreasing stream order and
    /// internally consistent.
    pub fn validate(&self) -> Result<(), FeedError> {
        let mut previous = 0i64;
        for (index, row) in self.rows.iter().enumerate() {
            let stream_id = row.stream_id();
            if stream_id <= 0 {
                return Err(FeedError::NonPositiveStreamId { index, stream_id });
            }
            if stream_id < previous {
                return Err(FeedError::OutOfOrder {
                    index,
                    stream_id,
                    previous,
                });
            }
            previous = stream_id;
            match row {
                FeedRow::Event(r) => {
                    check_event(index, &r.event)?;
                    if let Some(so) = r.stream_ordering {
                        if so == 0 || so > r.stream_id {
                            return Err(FeedError::Inconsistent {
                                index,
                                reason: format!(
                                    "stream_ordering {so} must be negative (backfilled) or at most stream_id {}",
                                    r.stream_id
                                ),
                            });
                        }
                    }
                }
                FeedRow::State(r) => {
                    if has_nul(&r.event_type) {
                        return Err(FeedError::NulInField {
                            index,
                            field: "type",
                        });
                    }
                    if has_nul(&r.state_key) {
                        return Err(FeedError::NulInField {
                            index,
                            field: "state_key",
                        });
                    }
                    if let Some(inline) = &r.event {
                        check_event(index, &inline.event)?;
                        let consistent = Some(&inline.event.event_id) == r.event_id.as_ref()
                            && inline.event.room_id == r.room_id
                            && inline.event.event_type == r.event_type
                            && inline.event.state_key.as_deref() == Some(r.state_key.as_str())
                            && inline.stream_ordering != 0;
                        if !consistent {
                            return Err(FeedError::Inconsistent {
                                index,
                                reason: "the inline event must match the row's event_id, room_id, type and state_key and have a non-zero stream_ordering".into(),
                            });
                        }
                        if inline.instance_name.as_deref().is_some_and(|n| {
                            n.is_empty() || has_nul(n) || n.len() > MAX_STATE_TEXT_BYTES
                        }) {
                            return Err(FeedError::NulInField {
                                index,
                                field: "event.instance_name",
                            });
                        }
                    }
                }
                FeedRow::AccountData(r) => {
                    if r.data_type.is_empty() || has_nul(&r.data_type) {
                        return Err(FeedError::Inconsistent {
                            index,
                            reason: "account data type must be non-empty and without NUL".into(),
                        });
                    }
                    if r.content.values().any(value_has_nul) {
                        return Err(FeedError::NulInField {
                            index,
                            field: "content",
                        });
                    }
                }
                FeedRow::Forget(_) | FeedRow::Purge(_) | FeedRow::Position(_) => {}
            }
        }
        Ok(())
    }

    /// The highest stream id of the batch, if it has rows.
    pub fn last_stream_id(&self) -> Option<i64> {
        self.rows.last().map(FeedRow::stream_id)
    }
}

/// A writer's batch that passed every check needing no room state: its
/// rows are in non-decreasing stream order and internally consistent. Only
/// [`ValidBatch::parse`] makes one, so what takes a `ValidBatch` (the
/// supervisor's queue, the preparation in room actors) need not check again.
#[derive(Debug, Clone)]
pub(crate) struct ValidBatch {
    batch: FeedBatch,
}

impl ValidBatch {
    /// The batch, once [`FeedBatch::validate`]'s checks passed.
    pub(crate) fn parse(batch: FeedBatch) -> Result<ValidBatch, FeedError> {
        batch.validate()?;
        Ok(ValidBatch { batch })
    }

    pub(crate) fn writer(&self) -> &WriterName {
        &self.batch.writer
    }

    /// The rows, in stream order.
    pub(crate) fn rows(&self) -> &[FeedRow] {
        &self.batch.rows
    }

    /// The highest stream id of the batch, if it has rows.
    pub(crate) fn last_stream_id(&self) -> Option<i64> {
        self.batch.last_stream_id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<FeedBatch, serde_json::Error> {
        serde_json::from_value(value)
    }

    #[test]
    fn a_well_formed_batch_parses_and_validates() {
        let batch = parse(json!({
            "writer": "master",
            "rows": [
                {"kind": "event", "stream_id": 2, "event": {
                    "event_id": "$c", "room_id": "!r:hs", "type": "m.room.create",
                    "state_key": "", "sender": "@a:hs", "content": {}}},
                {"kind": "state", "stream_id": 2, "room_id": "!r:hs",
                 "type": "m.room.create", "state_key": "", "event_id": "$c"},
                {"kind": "position", "stream_id": 9}
            ]
        }))
        .unwrap();
        assert_eq!(batch.validate(), Ok(()));
        assert_eq!(batch.last_stream_id(), Some(9));
        let valid = ValidBatch::parse(batch).unwrap();
        assert_eq!((valid.writer().as_str(), valid.rows().len()), ("master", 3));
        assert_eq!(valid.last_stream_id(), Some(9));
    }

    #[test]
    fn unknown_kinds_and_fields_do_not_parse() {
        assert!(parse(json!({"writer": "m", "rows": [{"kind": "nope", "stream_id": 1}]})).is_err());
        assert!(parse(
            json!({"writer": "m", "rows": [{"kind": "position", "stream_id": 1, "x": 1}]})
        )
        .is_err());
        assert!(
            parse(json!({"writer": "m", "rows": [{"kind": "position", "stream_id": "1"}]}))
                .is_err()
        );
        assert!(parse(
            json!({"writer": "m", "rows": [{"kind": "purge", "stream_id": 1, "room_id": "r"}]})
        )
        .is_err());
    }

    #[test]
    fn out_of_order_rows_are_refused() {
        let batch = parse(json!({"writer": "m", "rows": [
            {"kind": "position", "stream_id": 5},
            {"kind": "position", "stream_id": 4}
        ]}))
        .unwrap();
        assert!(matches!(
            batch.validate(),
            Err(FeedError::OutOfOrder {
                index: 1,
                stream_id: 4,
                previous: 5
            })
        ));
        assert!(matches!(
            ValidBatch::parse(batch),
            Err(FeedError::OutOfOrder { index: 1, .. })
        ));
    }

    #[test]
    fn nul_in_structural_fields_is_refused() {
        let batch = parse(json!({"writer": "m", "rows": [
            {"kind": "state", "stream_id": 1, "room_id": "!r:hs", "type": "m.room.name",
             "state_key": "a\u{0000}", "event_id": null}
        ]}))
        .unwrap();
        assert!(matches!(
            batch.validate(),
            Err(FeedError::NulInField {
                field: "state_key",
                ..
            })
        ));
    }
}
