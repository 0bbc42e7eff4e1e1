//! One event as Synapse stores it (its `events` row, the parts of its
//! `event_json` the rules read), parsed into a [`SourceEvent`]; and the
//! content Synapse serves once it is redacted.
//!
//! Owns: reading the event columns of a row (see
//! [`crate::source::queries::EVENT_COLUMN_COUNT`]), parsing the stored JSON and internal
//! metadata, and redaction. May not touch: SQL, feed rows (the modules
//! beside it build them), roomcache's tables.

use serde_json::{Map, Value};
use tracing::warn;

use super::SourceEvent;
use crate::feed::Event;
use crate::model::{EventId, RoomId, UserId};
use crate::source::database::SourceRow;
use crate::source::SourceError;

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

/// What the rules read of an event's stored JSON.
struct JsonFields {
    content: Map<String, Value>,
    /// `unsigned`, only when it holds stripped state.
    unsigned: Option<Value>,
    redacts: Option<EventId>,
    sender: Option<String>,
}

/// Parses the fields the rules read from an event's stored JSON (empty
/// content and nothing else when there is none, or it does not parse).
/// Signatures, hashes and the rest of the event are skipped.
fn json_fields(json: Option<&str>) -> JsonFields {
    let parsed: Option<StoredEvent> = json.and_then(|j| serde_json::from_str(j).ok());
    let Some(stored) = parsed else {
        return JsonFields {
            content: Map::new(),
            unsigned: None,
            redacts: None,
            sender: None,
        };
    };
    JsonFields {
        content: match stored.content {
            Some(Value::Object(map)) => map,
            _ => Map::new(),
        },
        unsigned: stored
            .unsigned
            .and_then(|u| serde_json::from_value::<StoredUnsigned>(u).ok())
            .filter(|u| u.invite_room_state.is_some() || u.knock_room_state.is_some())
            .and_then(|u| serde_json::to_value(u).ok()),
        redacts: stored
            .redacts
            .as_ref()
            .and_then(Value::as_str)
            .and_then(|s| EventId::parse(s).ok()),
        sender: stored
            .sender
            .as_ref()
            .and_then(Value::as_str)
            .map(str::to_owned),
    }
}

/// The flags the rules read from an event's internal metadata: whether its
/// membership is out of band, and whether it was soft-failed (false when
/// absent or unparsable).
fn metadata_flags(internal_metadata: Option<&str>) -> (bool, bool) {
    let metadata: Option<Value> = internal_metadata.and_then(|m| serde_json::from_str(m).ok());
    let flag = |name: &str| {
        metadata
            .as_ref()
            .and_then(|m| m.get(name))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    (flag("out_of_band_membership"), flag("soft_failed"))
}

/// Parses one row selected with the event columns starting at `offset`.
/// `None` (with a warning) for an event whose identifiers are invalid.
pub(super) fn event_from_row(
    row: &SourceRow,
    offset: usize,
) -> Result<Option<SourceEvent>, SourceError> {
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
    let topological_ordering: Option<i64> = row.column(offset + 11)?;

    let fields = json_fields(json.as_deref());
    let sender = sender.or(fields.sender);
    let (out_of_band_membership, soft_failed) = metadata_flags(internal_metadata.as_deref());
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
        topological_ordering,
        writer,
        event: Event {
            event_id,
            room_id,
            event_type,
            state_key,
            sender,
            content: fields.content.into(),
            unsigned: fields.unsigned,
            redacts: fields.redacts,
        },
        outlier,
        rejected,
        out_of_band_membership,
        soft_failed,
    }))
}

/// The content a client is served after a redaction (only the keys the
/// redaction algorithm keeps that the rules can read).
pub(super) fn redact_content(event: &mut Event) {
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
