//! What the rules hold for one room: [`RoomState`] (the table rows) and
//! [`RoomMemory`] (the few pieces of current state and history the rules need
//! to create a row later), with the relevant state events they remember and
//! the bounds on what is remembered.
//!
//! Owns: the shapes of the state and memory, their stored (serde) form and
//! their small invariants (pruning, pending redactions, restoring counters).
//! May not touch: feed rows or the rules that apply them (the sibling
//! modules), actors, the database, clocks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::feed::Event;
use crate::model::{CurrentStateIds, LatestEvents};
use crate::model::{EventId, JoinedRoomRow, MembershipSnapshot, RoomId, UserId};

/// The four state keys (all with state key `""`) whose events feed the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RelevantKey {
    Create,
    Encryption,
    Name,
    Tombstone,
}

impl RelevantKey {
    /// The relevant key of a state `(type, state_key)`, if it is one.
    pub(crate) fn of(event_type: &str, state_key: &str) -> Option<Self> {
        if !state_key.is_empty() {
            return None;
        }
        Some(match event_type {
            "m.room.create" => RelevantKey::Create,
            "m.room.encryption" => RelevantKey::Encryption,
            "m.room.name" => RelevantKey::Name,
            "m.room.tombstone" => RelevantKey::Tombstone,
            _ => return None,
        })
    }

    /// The content field the table column is read from.
    fn field(self) -> &'static str {
        match self {
            RelevantKey::Create => "type",
            RelevantKey::Encryption => "algorithm",
            RelevantKey::Name => "name",
            RelevantKey::Tombstone => "replacement_room",
        }
    }
}

/// What the rules remember of one relevant state event: the one content
/// field they read, in the form its column takes (see [`remembered_value`];
/// `None` when absent or null, e.g. after a redaction).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct RelevantEvent {
    pub(super) event_id: EventId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) value: Option<Value>,
    /// For create events: whether a redaction keeps `content.type`
    /// (room versions 11 and later keep the whole create content).
    #[serde(default)]
    pub(super) keeps_value_when_redacted: bool,
    /// Where the event is stored (for forgetting the oldest remembered events).
    #[serde(default)]
    pub(super) stream_ordering: i64,
}

impl RelevantEvent {
    pub(super) fn from_event(key: RelevantKey, event: &Event, stream_ordering: i64) -> Self {
        let keeps = key == RelevantKey::Create && create_content_survives_redaction(event);
        RelevantEvent {
            event_id: event.event_id.clone(),
            value: remembered_value(key, event.content.get(key.field())),
            keeps_value_when_redacted: keeps,
            stream_ordering,
        }
    }

    pub(super) fn redact(&mut self) {
        if !self.keeps_value_when_redacted {
            self.value = None;
        }
    }
}

/// The part of a relevant content field the rules need (spec §2.1), and
/// nothing that Postgres' JSONB cannot hold: for `algorithm`, `true` when
/// it is set (any non-null value); for the text fields, the string when it
/// is one without NUL, else `false`, which the column rule reads as "not
/// written" like any non-string value. Absent and null are both `None`
/// (the column is NULL).
fn remembered_value(key: RelevantKey, value: Option<&Value>) -> Option<Value> {
    match value {
        None | Some(Value::Null) => None,
        Some(_) if key == RelevantKey::Encryption => Some(Value::Bool(true)),
        Some(Value::String(s)) if !s.contains('\0') => Some(Value::String(s.clone())),
        Some(_) => Some(Value::Bool(false)),
    }
}

/// Room versions 1–10 prune a create event's content to `creator` on
/// redaction; later versions keep all of it.
fn create_content_survives_redaction(event: &Event) -> bool {
    match event.content.get("room_version").and_then(Value::as_str) {
        None => false,
        Some(version) => version.parse::<u32>().map(|v| v >= 11).unwrap_or(!matches!(
            version,
            "1" | "2" | "3" | "4" | "5" | "6" | "7" | "8" | "9" | "10"
        )),
    }
}

/// What the rules keep about a room beyond its table rows, so that a row can
/// be created correctly later (persisted beside the rows, as
/// `StoredMemory`: each remembered event once).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredMemory", into = "StoredMemory")]
pub struct RoomMemory {
    /// The room's current relevant state; empty while the server is not in
    /// the room (Synapse's `current_state_events` is emptied then).
    #[serde(default)]
    pub(super) relevant_state: Arc<BTreeMap<RelevantKey, RelevantEvent>>,
    /// Stream ordering of the latest bump-type event that is neither an
    /// outlier nor rejected, if positive: a new joined row's `bump_stamp`.
    #[serde(default)]
    pub(super) latest_bump_stamp: Option<i64>,
    /// Highest stream ordering of any event of the room (outliers and
    /// rejected events included): a new joined row's `event_stream_ordering`.
    #[serde(default)]
    pub(super) max_stream_ordering: Option<i64>,
    /// Relevant state events seen (earlier values, backfilled and outlier
    /// events), so a later state row may refer to them without carrying
    /// them: the current ones and the [`MAX_REMEMBERED_RELEVANT_EVENTS`]
    /// latest others. Older ones must be sent inline.
    #[serde(default)]
    pub(super) known_relevant_events: Arc<BTreeMap<EventId, (RelevantKey, RelevantEvent)>>,
    /// Redactions whose target was not known when they arrived, oldest
    /// first, at most [`MAX_PENDING_REDACTIONS`] (most redactions target
    /// messages, which never become known).
    #[serde(default)]
    pub(super) pending_redactions: Vec<EventId>,
    /// True when `max_stream_ordering` and `latest_bump_stamp` equal the
    /// joined row's `event_stream_ordering` and `bump_stamp` (the usual case:
    /// messages move both together). The stored memory is then not rewritten
    /// while they move together, and loading takes them from the joined row
    /// ([`RoomState::restore_counters`]), so restarts stay exact.
    #[serde(default)]
    pub(super) counters_follow_joined_row: bool,
    /// The room's children as a space: each current `m.space.child` state
    /// key that is a room ID and whose event has a non-empty `via` array,
    /// with that event (so a redaction of it removes the child). Empty while
    /// the server is not in the room.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) space_children: BTreeMap<RoomId, EventId>,
}

/// The stored form of a [`RoomMemory`]: the current relevant events are
/// stored in `relevant_state` only, not again among the remembered ones
/// (memories stored before held them in both; loading accepts either).
#[derive(Serialize, Deserialize)]
struct StoredMemory {
    #[serde(default)]
    relevant_state: Arc<BTreeMap<RelevantKey, RelevantEvent>>,
    #[serde(default)]
    latest_bump_stamp: Option<i64>,
    #[serde(default)]
    max_stream_ordering: Option<i64>,
    /// The remembered events, less the current ones listed in `also_known`.
    #[serde(default)]
    known_relevant_events: BTreeMap<EventId, (RelevantKey, RelevantEvent)>,
    /// The keys whose current event is also remembered (stored once, in
    /// `relevant_state`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    also_known: Vec<RelevantKey>,
    #[serde(default)]
    pending_redactions: Vec<EventId>,
    #[serde(default)]
    counters_follow_joined_row: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    space_children: BTreeMap<RoomId, EventId>,
}

impl From<RoomMemory> for StoredMemory {
    fn from(memory: RoomMemory) -> Self {
        let RoomMemory {
            relevant_state,
            latest_bump_stamp,
            max_stream_ordering,
            known_relevant_events,
            pending_redactions,
            counters_follow_joined_row,
            space_children,
        } = memory;
        let also_known: Vec<RelevantKey> = relevant_state
            .iter()
            .filter(|(key, current)| {
                known_relevant_events
                    .get(&current.event_id)
                    .is_some_and(|(k, e)| k == *key && e == *current)
            })
            .map(|(key, _)| *key)
            .collect();
        let others = known_relevant_events
            .iter()
            .filter(|(id, (key, _))| {
                !(also_known.contains(key)
                    && relevant_state.get(key).is_some_and(|c| c.event_id == **id))
            })
            .map(|(id, entry)| (id.clone(), entry.clone()))
            .collect();
        StoredMemory {
            relevant_state,
            latest_bump_stamp,
            max_stream_ordering,
            known_relevant_events: others,
            also_known,
            pending_redactions,
            counters_follow_joined_row,
            space_children,
        }
    }
}

impl From<StoredMemory> for RoomMemory {
    fn from(stored: StoredMemory) -> Self {
        let mut known = stored.known_relevant_events;
        for key in &stored.also_known {
            if let Some(event) = stored.relevant_state.get(key) {
                known.insert(event.event_id.clone(), (*key, event.clone()));
            }
        }
        RoomMemory {
            relevant_state: stored.relevant_state,
            latest_bump_stamp: stored.latest_bump_stamp,
            max_stream_ordering: stored.max_stream_ordering,
            known_relevant_events: Arc::new(known),
            pending_redactions: stored.pending_redactions,
            counters_follow_joined_row: stored.counters_follow_joined_row,
            space_children: stored.space_children,
        }
    }
}

/// Whether two memories are equal as stored, comparing shared maps by
/// pointer first (cheap when a batch did not touch them). The two counters
/// are left out of the comparison when both memories follow their joined
/// rows (they are stored in the joined row then). Destructures every field
/// so a new field cannot be forgotten here.
pub(super) fn same_stored_memory(a: &RoomMemory, b: &RoomMemory) -> bool {
    let RoomMemory {
        relevant_state,
        latest_bump_stamp,
        max_stream_ordering,
        known_relevant_events,
        pending_redactions,
        counters_follow_joined_row,
        space_children,
    } = a;
    let counters_stored_elsewhere = *counters_follow_joined_row && b.counters_follow_joined_row;
    *counters_follow_joined_row == b.counters_follow_joined_row
        && (counters_stored_elsewhere
            || (*latest_bump_stamp == b.latest_bump_stamp
                && *max_stream_ordering == b.max_stream_ordering))
        && *pending_redactions == b.pending_redactions
        && *space_children == b.space_children
        && (Arc::ptr_eq(relevant_state, &b.relevant_state) || *relevant_state == b.relevant_state)
        && (Arc::ptr_eq(known_relevant_events, &b.known_relevant_events)
            || *known_relevant_events == b.known_relevant_events)
}

/// How many non-current relevant events a room remembers.
pub(super) const MAX_REMEMBERED_RELEVANT_EVENTS: usize = 16;

/// How many redactions of not-yet-seen events a room remembers.
pub(super) const MAX_PENDING_REDACTIONS: usize = 16;

impl RoomMemory {
    /// Forgets the oldest remembered relevant events beyond the limit; the
    /// current ones are always kept.
    pub(super) fn prune(&mut self) {
        if self.known_relevant_events.len() <= MAX_REMEMBERED_RELEVANT_EVENTS {
            return;
        }
        let current: BTreeSet<&EventId> =
            self.relevant_state.values().map(|e| &e.event_id).collect();
        let others = self
            .known_relevant_events
            .len()
            .saturating_sub(current.len());
        if others <= MAX_REMEMBERED_RELEVANT_EVENTS {
            return;
        }
        let mut orderings: Vec<i64> = self
            .known_relevant_events
            .iter()
            .filter(|(id, _)| !current.contains(id))
            .map(|(_, (_, e))| e.stream_ordering)
            .collect();
        orderings.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&threshold) = orderings.get(MAX_REMEMBERED_RELEVANT_EVENTS - 1) else {
            return;
        };
        let current: BTreeSet<EventId> = current.into_iter().cloned().collect();
        Arc::make_mut(&mut self.known_relevant_events)
            .retain(|id, (_, e)| current.contains(id) || e.stream_ordering >= threshold);
    }

    pub(super) fn add_pending_redaction(&mut self, target: EventId) {
        if self.pending_redactions.contains(&target) {
            return;
        }
        self.pending_redactions.push(target);
        if self.pending_redactions.len() > MAX_PENDING_REDACTIONS {
            self.pending_redactions.remove(0);
        }
    }

    pub(super) fn take_pending_redaction(&mut self, target: &EventId) -> bool {
        let before = self.pending_redactions.len();
        self.pending_redactions.retain(|id| id != target);
        self.pending_redactions.len() != before
    }
}

/// Everything the rules hold for one room.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoomState {
    pub joined: Option<JoinedRoomRow>,
    pub snapshots: imbl::OrdMap<UserId, MembershipSnapshot>,
    pub memory: RoomMemory,
    /// The current state event IDs of the held types (the rooms' data).
    pub current_state: CurrentStateIds,
    /// The latest events for the initial timeline (the rooms' data).
    pub latest_events: LatestEvents,
}

impl RoomState {
    /// After loading a stored memory: takes the counters from the joined row
    /// when the memory says they follow it (they were not rewritten then).
    pub fn restore_counters(&mut self) {
        if !self.memory.counters_follow_joined_row {
            return;
        }
        if let Some(joined) = &self.joined {
            self.memory.max_stream_ordering = Some(joined.event_stream_ordering);
            self.memory.latest_bump_stamp = joined.bump_stamp;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, value: &str, stream_ordering: i64) -> RelevantEvent {
        RelevantEvent {
            event_id: EventId::parse(id).expect("event id"),
            value: Some(Value::String(value.to_owned())),
            keeps_value_when_redacted: false,
            stream_ordering,
        }
    }

    #[test]
    fn stored_memory_keeps_each_event_once_and_round_trips() {
        let current = event("$current", &"n".repeat(1000), 5);
        let older = event("$older", "old name", 3);
        let inline_only = event("$inline", "tombstone", 4);
        let memory = RoomMemory {
            relevant_state: Arc::new(BTreeMap::from([
                (RelevantKey::Name, current.clone()),
                (RelevantKey::Tombstone, inline_only),
            ])),
            known_relevant_events: Arc::new(BTreeMap::from([
                (current.event_id.clone(), (RelevantKey::Name, current)),
                (older.event_id.clone(), (RelevantKey::Name, older)),
            ])),
            ..RoomMemory::default()
        };
        let stored = serde_json::to_string(&memory).expect("serialize");
        assert_eq!(stored.matches(&"n".repeat(1000)).count(), 1, "{stored}");
        let loaded: RoomMemory = serde_json::from_str(&stored).expect("deserialize");
        assert_eq!(loaded, memory);
        // A memory stored before (current events in both maps) loads alike.
        let old_form = serde_json::json!({
            "relevant_state": memory.relevant_state,
            "known_relevant_events": memory.known_relevant_events,
        });
        let loaded: RoomMemory = serde_json::from_value(old_form).expect("old form");
        assert_eq!(loaded, memory);
    }
}
