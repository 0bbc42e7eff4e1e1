//! The state rows of a stream range's current-state deltas: the rows of
//! `current_state_delta_stream` grouped into persisted changes, and each
//! change translated into [`StateRow`]s, a "no longer in room" wipe into the
//! true delta of its persist batch.
//!
//! Owns: that grouping and translation (pure, over rows already read). May
//! not touch: SQL, inline events (see `inline`), roomcache's tables, the
//! rules.

use std::collections::{BTreeMap, HashMap, HashSet};

use tracing::warn;

use super::{SourceEvent, WriterStateRow};
use crate::feed::StateRow;
use crate::model::{EventId, RoomId};

/// One row of `current_state_delta_stream`.
pub(super) struct DeltaRow {
    pub(super) stream_id: i64,
    pub(super) room_id: String,
    pub(super) key: DeltaKey,
    pub(super) writer: String,
}

/// One key of a delta: type, state key, and the event now at that key
/// (`None` when the key was deleted).
pub(super) type DeltaKey = (String, String, Option<String>);

/// One persisted change of a room's current state: the delta rows of one
/// (stream id, room).
pub(super) struct Delta {
    pub(super) stream_id: i64,
    pub(super) room_id: String,
    pub(super) writer: String,
    pub(super) keys: Vec<DeltaKey>,
}

/// Groups delta rows (in stream order) by (stream id, room); a group's
/// writer is its first row's.
pub(super) fn group(rows: Vec<DeltaRow>) -> Vec<Delta> {
    let mut deltas: Vec<Delta> = Vec::new();
    for row in rows {
        match deltas.last_mut() {
            Some(last) if last.stream_id == row.stream_id && last.room_id == row.room_id => {
                last.keys.push(row.key)
            }
            _ => deltas.push(Delta {
                stream_id: row.stream_id,
                room_id: row.room_id,
                writer: row.writer,
                keys: vec![row.key],
            }),
        }
    }
    deltas
}

/// What the deltas of a range translate to.
pub(super) struct DeltaStateRows {
    /// In delta order.
    pub(super) rows: Vec<WriterStateRow>,
    /// The state events of the persist batches of "no longer in room"
    /// wipes (their rows are the wipes' true deltas).
    pub(super) in_wipe_batch: HashSet<String>,
}

/// The state rows of `deltas` (`events` are the range's events, which hold
/// a wipe's persist batch). A delta of an invalid room ID, and a key with an
/// invalid event ID, are skipped with a warning.
pub(super) fn state_rows(deltas: &[Delta], events: &[SourceEvent]) -> DeltaStateRows {
    let next_delta_of_room = next_delta_of_room(deltas);
    let mut translated = DeltaStateRows {
        rows: Vec::new(),
        in_wipe_batch: HashSet::new(),
    };
    for (index, delta) in deltas.iter().enumerate() {
        let Ok(room_id) = RoomId::parse(&delta.room_id) else {
            warn!(
                room_id = delta.room_id,
                "skipping a delta of an invalid room ID"
            );
            continue;
        };
        if is_wipe(delta) {
            let end = next_delta_of_room.get(&index).copied().unwrap_or(i64::MAX);
            wipe_state_rows(delta, &room_id, end, events, &mut translated);
        } else {
            key_state_rows(delta, &room_id, &mut translated.rows);
        }
    }
    translated
}

/// For each delta's index, the stream id of its room's next delta (which
/// bounds a wipe's persist batch).
fn next_delta_of_room(deltas: &[Delta]) -> HashMap<usize, i64> {
    let mut next_delta_of_room: HashMap<usize, i64> = HashMap::new();
    let mut last_index_of_room: HashMap<&str, usize> = HashMap::new();
    for (index, delta) in deltas.iter().enumerate() {
        if let Some(previous) = last_index_of_room.insert(&delta.room_id, index) {
            next_delta_of_room.insert(previous, delta.stream_id);
        }
    }
    next_delta_of_room
}

/// Whether a delta is a "no longer in room" wipe: every key deleted, the
/// create event's among them.
fn is_wipe(delta: &Delta) -> bool {
    delta.keys.iter().all(|(_, _, e)| e.is_none())
        && delta
            .keys
            .iter()
            .any(|(t, k, _)| t == "m.room.create" && k.is_empty())
}

/// The rows of an ordinary delta: one per key.
fn key_state_rows(delta: &Delta, room_id: &RoomId, rows: &mut Vec<WriterStateRow>) {
    for (event_type, state_key, event_id) in &delta.keys {
        let event_id = match event_id.as_deref().map(EventId::parse) {
            None => None,
            Some(Ok(id)) => Some(id),
            Some(Err(_)) => {
                warn!(room_id = %room_id, event_type, state_key, "skipping a delta row with an invalid event ID");
                continue;
            }
        };
        rows.push(WriterStateRow {
            writer: delta.writer.clone(),
            row: StateRow {
                stream_id: delta.stream_id,
                room_id: room_id.clone(),
                event_type: event_type.clone(),
                state_key: state_key.clone(),
                event_id,
                event: None,
            },
        });
    }
}

/// "No longer in room": Synapse wrote every key as deleted and left out the
/// batch's own state. The true delta is the state events of the persist
/// batch: the room's events from the delta's id on, with consecutive stream
/// orderings, up to the room's next delta (`end`).
fn wipe_state_rows(
    delta: &Delta,
    room_id: &RoomId,
    end: i64,
    events: &[SourceEvent],
    translated: &mut DeltaStateRows,
) {
    let mut batch_state: BTreeMap<(String, String), &SourceEvent> = BTreeMap::new();
    let batch_events = events
        .iter()
        .filter(|e| {
            &e.event.room_id == room_id
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
            translated
                .in_wipe_batch
                .insert(event.event.event_id.as_str().to_owned());
            batch_state.insert((event.event.event_type.clone(), state_key.clone()), event);
        }
    }
    if batch_state.is_empty() {
        warn!(room_id = %room_id, stream_id = delta.stream_id,
            "a 'no longer in room' delta without a state event of its batch; ignored");
    }
    for ((event_type, state_key), event) in batch_state {
        translated.rows.push(WriterStateRow {
            writer: delta.writer.clone(),
            row: StateRow {
                stream_id: delta.stream_id,
                room_id: room_id.clone(),
                event_type,
                state_key,
                event_id: Some(event.event.event_id.clone()),
                event: None,
            },
        });
    }
}
