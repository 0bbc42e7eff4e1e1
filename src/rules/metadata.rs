//! Column values from state (spec §2.1, §2.3 B, §2.5): which value each
//! metadata column of a joined row or snapshot takes, computed from relevant
//! state events or from an invite's or knock's stripped state.
//!
//! Owns: [`MetadataUpdate`] (partial metadata: only computed columns are
//! written) and the pure functions producing it. May not touch: the room's
//! state or memory (callers apply an update), feed rows, actors, the
//! database.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

use crate::model::{MembershipSnapshot, RoomMetadata};

use super::state::{RelevantEvent, RelevantKey};

/// What a computed update does to one column: `Some(value)` writes the
/// value (which may itself be `None`, NULL), `None` leaves the column as it
/// is.
pub(super) type ColumnWrite<T> = Option<T>;

/// Partial metadata: only the columns that were computed are written.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct MetadataUpdate {
    pub(super) room_type: ColumnWrite<Option<String>>,
    pub(super) room_name: ColumnWrite<Option<String>>,
    pub(super) is_encrypted: ColumnWrite<bool>,
    pub(super) tombstone: ColumnWrite<Option<String>>,
    pub(super) has_known_state: ColumnWrite<bool>,
}

impl MetadataUpdate {
    pub(super) fn is_empty(&self) -> bool {
        *self == MetadataUpdate::default()
    }

    pub(super) fn apply(&self, metadata: &mut RoomMetadata) {
        if let Some(v) = &self.room_type {
            metadata.room_type.clone_from(v);
        }
        if let Some(v) = &self.room_name {
            metadata.room_name.clone_from(v);
        }
        if let Some(v) = self.is_encrypted {
            metadata.is_encrypted = v;
        }
        if let Some(v) = &self.tombstone {
            metadata.tombstone_successor_room_id.clone_from(v);
        }
    }

    pub(super) fn apply_to_snapshot(&self, snapshot: &mut MembershipSnapshot) {
        self.apply(&mut snapshot.metadata);
        if let Some(v) = self.has_known_state {
            snapshot.has_known_state = v;
        }
    }
}

/// A text column's value from a JSON field (§2.1): absent or null → NULL; a
/// string without NUL → the string; anything else → not written.
pub(super) fn text_column(value: Option<&Value>) -> ColumnWrite<Option<String>> {
    match value {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(s)) if !s.contains('\0') => Some(Some(s.clone())),
        Some(_) => None,
    }
}

/// `is_encrypted` from an encryption event's `algorithm`: any non-null value.
pub(super) fn encrypted(value: Option<&Value>) -> bool {
    value.is_some_and(|v| !v.is_null())
}

/// §2.1: the column values of a map of relevant state events.
pub(super) fn metadata_from_state<'a>(
    state: impl IntoIterator<Item = (RelevantKey, &'a RelevantEvent)>,
) -> MetadataUpdate {
    let mut update = MetadataUpdate::default();
    for (key, event) in state {
        let value = event.value.as_ref();
        match key {
            RelevantKey::Create => update.room_type = text_column(value),
            RelevantKey::Encryption => update.is_encrypted = Some(encrypted(value)),
            RelevantKey::Name => update.room_name = text_column(value),
            RelevantKey::Tombstone => update.tombstone = text_column(value),
        }
    }
    update
}

/// §2.3 B step 3, with the tombstone [DECISION] of §8.1: removals reset the
/// column (the tombstone too).
pub(super) fn apply_removals(update: &mut MetadataUpdate, removed: &BTreeSet<RelevantKey>) {
    for key in removed {
        match key {
            RelevantKey::Create => update.room_type = Some(None),
            RelevantKey::Encryption => update.is_encrypted = Some(false),
            RelevantKey::Name => update.room_name = Some(None),
            RelevantKey::Tombstone => update.tombstone = Some(None),
        }
    }
}

/// §2.5: the snapshot columns of an out-of-band invite or knock, from its
/// stripped state. Never fails: malformed entries are skipped.
pub(super) fn metadata_from_stripped_state(raw: Option<&Value>) -> MetadataUpdate {
    let unknown = MetadataUpdate {
        has_known_state: Some(false),
        room_type: Some(None),
        room_name: Some(None),
        is_encrypted: Some(false),
        tombstone: None,
    };
    let items = match raw {
        None | Some(Value::Null) => return unknown,
        Some(Value::Array(items)) => items.as_slice(),
        Some(_) => &[],
    };
    let mut entries: HashMap<(&str, &str), &serde_json::Map<String, Value>> = HashMap::new();
    for item in items {
        let Some(object) = item.as_object() else {
            continue;
        };
        let (Some(t), Some(k), Some(_), Some(content)) = (
            object.get("type").and_then(Value::as_str),
            object.get("state_key").and_then(Value::as_str),
            object.get("sender").and_then(Value::as_str),
            object.get("content").and_then(Value::as_object),
        ) else {
            continue;
        };
        entries.insert((t, k), content);
    }
    let Some(create) = entries.get(&("m.room.create", "")) else {
        return unknown;
    };
    let field = |event_type: &str, name: &str| {
        entries
            .get(&(event_type, ""))
            .and_then(|content| content.get(name))
    };
    MetadataUpdate {
        has_known_state: Some(true),
        room_type: text_column(create.get("type")),
        is_encrypted: Some(encrypted(field("m.room.encryption", "algorithm"))),
        room_name: text_column(field("m.room.name", "name")),
        tombstone: text_column(field("m.room.tombstone", "replacement_room")),
    }
}
