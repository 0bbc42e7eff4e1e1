//! The update rules of the sliding-sync tables (spec `sliding-sync-tables.md`
//! §2), as pure functions: a room's state plus its feed rows in, the room's
//! new state and the changed rows out.
//!
//! Owns: [`RoomState`] (the joined-room row, the local members' snapshots and
//! the few pieces of current state the rules need) and every rule that
//! changes it. May not touch: actors, sockets, the database, clocks. The room
//! actor is a thin shell around [`apply_rows`]; tests call it directly.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::feed::{Event, EventRow, FeedRow, StateRow};
use crate::model::{
    EventId, JoinedRoomRow, Membership, MembershipSnapshot, RoomId, RoomMetadata, RowChange, UserId,
};

/// Event types whose events move a room's `bump_stamp` (Appendix A).
pub const BUMP_EVENT_TYPES: [&str; 7] = [
    "m.room.create",
    "m.room.message",
    "m.room.encrypted",
    "m.sticker",
    "m.call.invite",
    "m.poll.start",
    "m.beacon_info",
];

const MEMBER: &str = "m.room.member";

/// Below this many events in a group, duplicates are found by scanning.
const SMALL_GROUP: usize = 16;
const REDACTION: &str = "m.room.redaction";
const SPACE_CHILD: &str = "m.space.child";

/// The four state keys (all with state key `""`) whose events feed the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelevantKey {
    Create,
    Encryption,
    Name,
    Tombstone,
}

impl RelevantKey {
    /// The relevant key of a state `(type, state_key)`, if it is one.
    pub fn of(event_type: &str, state_key: &str) -> Option<Self> {
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
/// field they read (`None` when absent, e.g. after a redaction).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelevantEvent {
    pub event_id: EventId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// For create events: whether a redaction keeps `content.type`
    /// (room versions 11 and later keep the whole create content).
    #[serde(default)]
    pub keeps_value_when_redacted: bool,
    /// Where the event is stored (for forgetting the oldest remembered events).
    #[serde(default)]
    pub stream_ordering: i64,
}

impl RelevantEvent {
    fn from_event(key: RelevantKey, event: &Event, stream_ordering: i64) -> Self {
        let keeps = key == RelevantKey::Create && create_content_survives_redaction(event);
        RelevantEvent {
            event_id: event.event_id.clone(),
            value: event.content.get(key.field()).cloned(),
            keeps_value_when_redacted: keeps,
            stream_ordering,
        }
    }

    fn redact(&mut self) {
        if !self.keeps_value_when_redacted {
            self.value = None;
        }
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
/// be created correctly later (persisted beside the rows).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoomMemory {
    /// The room's current relevant state; empty while the server is not in
    /// the room (Synapse's `current_state_events` is emptied then).
    #[serde(default)]
    pub relevant_state: Arc<BTreeMap<RelevantKey, RelevantEvent>>,
    /// Stream ordering of the latest bump-type event that is neither an
    /// outlier nor rejected, if positive: a new joined row's `bump_stamp`.
    #[serde(default)]
    pub latest_bump_stamp: Option<i64>,
    /// Highest stream ordering of any event of the room (outliers and
    /// rejected events included): a new joined row's `event_stream_ordering`.
    #[serde(default)]
    pub max_stream_ordering: Option<i64>,
    /// Relevant state events seen (earlier values, backfilled and outlier
    /// events), so a later state row may refer to them without carrying
    /// them: the current ones and the [`MAX_REMEMBERED_RELEVANT_EVENTS`]
    /// latest others. Older ones must be sent inline.
    #[serde(default)]
    pub known_relevant_events: Arc<BTreeMap<EventId, (RelevantKey, RelevantEvent)>>,
    /// Redactions whose target was not known when they arrived, oldest
    /// first, at most [`MAX_PENDING_REDACTIONS`] (most redactions target
    /// messages, which never become known).
    #[serde(default)]
    pub pending_redactions: Vec<EventId>,
    /// True when `max_stream_ordering` and `latest_bump_stamp` equal the
    /// joined row's `event_stream_ordering` and `bump_stamp` (the usual case:
    /// messages move both together). The stored memory is then not rewritten
    /// while they move together, and loading takes them from the joined row
    /// ([`RoomState::restore_counters`]), so restarts stay exact.
    #[serde(default)]
    pub counters_follow_joined_row: bool,
    /// The room's children as a space: each current `m.space.child` state
    /// key that is a room ID and whose event has a non-empty `via` array,
    /// with that event (so a redaction of it removes the child). Empty while
    /// the server is not in the room.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub space_children: BTreeMap<RoomId, EventId>,
}

/// True when an `m.space.child` event makes its state key a child: its
/// `content.via` is a non-empty array.
fn is_valid_space_child(event: &Event) -> bool {
    event
        .content
        .get("via")
        .and_then(Value::as_array)
        .is_some_and(|via| !via.is_empty())
}

/// Whether two memories are equal as stored, comparing shared maps by
/// pointer first (cheap when a batch did not touch them). The two counters
/// are left out of the comparison when both memories follow their joined
/// rows (they are stored in the joined row then). Destructures every field
/// so a new field cannot be forgotten here.
fn same_stored_memory(a: &RoomMemory, b: &RoomMemory) -> bool {
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
pub const MAX_REMEMBERED_RELEVANT_EVENTS: usize = 16;

/// How many redactions of not-yet-seen events a room remembers.
pub const MAX_PENDING_REDACTIONS: usize = 16;

impl RoomMemory {
    /// Forgets the oldest remembered relevant events beyond the limit; the
    /// current ones are always kept.
    fn prune(&mut self) {
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

    fn add_pending_redaction(&mut self, target: EventId) {
        if self.pending_redactions.contains(&target) {
            return;
        }
        self.pending_redactions.push(target);
        if self.pending_redactions.len() > MAX_PENDING_REDACTIONS {
            self.pending_redactions.remove(0);
        }
    }

    fn take_pending_redaction(&mut self, target: &EventId) -> bool {
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

/// Facts about the deployment the rules need.
#[derive(Debug, Clone)]
pub struct RulesContext {
    /// Users of this server are the local users.
    pub server_name: String,
    /// The writer (instance name) whose rows are being applied.
    pub writer: String,
}

impl RulesContext {
    fn is_local(&self, user: &str) -> bool {
        user.split_once(':').map(|(_, s)| s) == Some(self.server_name.as_str())
    }
}

/// Why a room's rows cannot be applied. The whole batch is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("state row at {stream_id} for ({event_type}, {state_key}) refers to event {event_id}, which the cache has not seen; send it inline in the row's `event` field")]
    UnknownEvent {
        stream_id: i64,
        event_type: String,
        state_key: String,
        event_id: EventId,
    },
    #[error("state row at {stream_id} for ({event_type}, {state_key}) refers to event {event_id}, whose type or state key is different")]
    EventMismatch {
        stream_id: i64,
        event_type: String,
        state_key: String,
        event_id: EventId,
    },
    #[error("membership event {event_id} has no valid content.membership")]
    InvalidMembership { event_id: EventId },
    #[error("out-of-band membership event {event_id} has membership {membership}; only invite, knock and leave arrive out of band")]
    InvalidOutOfBandMembership {
        event_id: EventId,
        membership: String,
    },
    #[error("state key of m.room.member event {event_id} is not a valid user ID")]
    InvalidMemberStateKey { event_id: EventId },
}

/// The result of applying a room's rows: its new state and the changed
/// rows, one final value per key.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomOutcome {
    pub state: RoomState,
    pub changes: Vec<RowChange>,
    /// Whether `state.memory` differs from the memory the rules started
    /// from (so it must be persisted).
    pub memory_changed: bool,
}

/// A column value computed from an event: write it, or leave the column as it is.
type Column<T> = Option<T>;

/// Partial metadata: only the columns that were computed are written.
#[derive(Debug, Clone, Default, PartialEq)]
struct MetadataUpdate {
    room_type: Column<Option<String>>,
    room_name: Column<Option<String>>,
    is_encrypted: Column<bool>,
    tombstone: Column<Option<String>>,
    has_known_state: Column<bool>,
}

impl MetadataUpdate {
    fn is_empty(&self) -> bool {
        *self == MetadataUpdate::default()
    }

    fn apply(&self, metadata: &mut RoomMetadata) {
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

    fn apply_to_snapshot(&self, snapshot: &mut MembershipSnapshot) {
        self.apply(&mut snapshot.metadata);
        if let Some(v) = self.has_known_state {
            snapshot.has_known_state = v;
        }
    }
}

/// A text column's value from a JSON field (§2.1): absent or null → NULL; a
/// string without NUL → the string; anything else → not written.
fn text_column(value: Option<&Value>) -> Column<Option<String>> {
    match value {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(s)) if !s.contains('\0') => Some(Some(s.clone())),
        Some(_) => None,
    }
}

/// `is_encrypted` from an encryption event's `algorithm`: any non-null value.
fn encrypted(value: Option<&Value>) -> bool {
    value.is_some_and(|v| !v.is_null())
}

/// §2.1: the column values of a map of relevant state events.
fn metadata_from_state<'a>(
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
fn apply_removals(update: &mut MetadataUpdate, removed: &BTreeSet<RelevantKey>) {
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
fn metadata_from_stripped_state(raw: Option<&Value>) -> MetadataUpdate {
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

/// A membership event as the snapshot needs it.
#[derive(Debug, Clone)]
struct MembershipEvent {
    event_id: EventId,
    user_id: UserId,
    sender: UserId,
    membership: Membership,
    stream_ordering: i64,
    instance_name: String,
}

fn membership_of(event: &Event) -> Result<Membership, RuleError> {
    event
        .content
        .get("membership")
        .and_then(Value::as_str)
        .and_then(Membership::parse)
        .ok_or_else(|| RuleError::InvalidMembership {
            event_id: event.event_id.clone(),
        })
}

fn member_user(event: &Event) -> Result<UserId, RuleError> {
    event
        .state_key
        .as_deref()
        .and_then(|k| UserId::parse(k).ok())
        .ok_or_else(|| RuleError::InvalidMemberStateKey {
            event_id: event.event_id.clone(),
        })
}

/// The target of a redaction event (content in v11+, top level before).
fn redaction_target(event: &Event) -> Option<EventId> {
    event.redacts.clone().or_else(|| {
        event
            .content
            .get("redacts")
            .and_then(Value::as_str)
            .and_then(|s| EventId::parse(s).ok())
    })
}

fn is_bump_event(event: &Event) -> bool {
    BUMP_EVENT_TYPES.contains(&event.event_type.as_str())
}

/// An event available to resolve state rows, with where it was stored.
struct KnownEvent<'a> {
    event: &'a Event,
    stream_ordering: i64,
    instance_name: &'a str,
}

/// Applies a room's rows (all of the same room, in stream order) to its
/// state. Rows sharing a stream id form one group and are applied together,
/// in Synapse's order: out-of-band memberships, then the state delta, then
/// the bumps of the new events.
pub fn apply_rows(
    state: &RoomState,
    room_id: &RoomId,
    rows: &[FeedRow],
    context: &RulesContext,
) -> Result<RoomOutcome, RuleError> {
    let mut working = Working {
        room_id,
        context,
        state: state.clone(),
        dirty_users: BTreeSet::new(),
        memory_changed: false,
        dequeue: false,
    };
    // Every event of the room in this request can resolve a state row, even
    // one in a later group (delta rows carry the batch's smallest id).
    // Only state rows look events up: skip the index when there are none.
    let has_state_rows = rows.iter().any(|row| matches!(row, FeedRow::State(_)));
    let mut request_events: HashMap<&EventId, KnownEvent<'_>> = HashMap::new();
    for row in rows.iter().filter(|_| has_state_rows) {
        if let FeedRow::Event(r) = row {
            request_events
                .entry(&r.event.event_id)
                .or_insert(KnownEvent {
                    event: &r.event,
                    stream_ordering: r.event_stream_ordering(),
                    instance_name: &context.writer,
                });
        }
    }
    for group in rows.chunk_by(|a, b| a.stream_id() == b.stream_id()) {
        working.apply_group(group, &request_events)?;
    }
    Ok(working.finish(state))
}

struct Working<'a> {
    room_id: &'a RoomId,
    context: &'a RulesContext,
    state: RoomState,
    dirty_users: BTreeSet<UserId>,
    memory_changed: bool,
    dequeue: bool,
}

impl Working<'_> {
    fn apply_group(
        &mut self,
        group: &[FeedRow],
        request_events: &HashMap<&EventId, KnownEvent<'_>>,
    ) -> Result<(), RuleError> {
        let mut events: Vec<&EventRow> = Vec::new();
        // Positions in `events` by ID, built only for large groups (most
        // groups hold one event; a scan is cheaper than hashing then).
        let mut index: HashMap<&EventId, usize> = HashMap::new();
        let mut delta: Vec<&StateRow> = Vec::new();
        // A forget refers to a membership that exists: one sharing the
        // group's stream id is applied after that membership (below).
        let mut forgets: Vec<&UserId> = Vec::new();
        for row in group {
            match row {
                FeedRow::Event(r) => {
                    // §2.0 step 1: in-group duplicates keep the first
                    // non-outlier copy, else the first copy.
                    let id = &r.event.event_id;
                    let found = if events.len() < SMALL_GROUP {
                        events.iter().position(|e| &e.event.event_id == id)
                    } else {
                        if index.is_empty() {
                            index = events
                                .iter()
                                .enumerate()
                                .map(|(i, e)| (&e.event.event_id, i))
                                .collect();
                        }
                        index.get(id).copied()
                    };
                    match found {
                        None => {
                            if !index.is_empty() {
                                index.insert(id, events.len());
                            }
                            events.push(r);
                        }
                        Some(position) => {
                            if events[position].outlier && !r.outlier {
                                events[position] = r;
                            }
                        }
                    }
                }
                FeedRow::State(r) => delta.push(r),
                FeedRow::Forget(r) => forgets.push(&r.user_id),
                FeedRow::Purge(_) => self.purge(),
                FeedRow::Position(_) | FeedRow::AccountData(_) => {}
            }
        }
        self.remember_events(&events);
        for row in &events {
            self.apply_out_of_band_membership(row)?;
        }
        if !delta.is_empty() {
            self.apply_delta(&delta, request_events)?;
        }
        self.bump(&events);
        for user_id in forgets {
            self.forget(user_id);
        }
        self.state.memory.prune();
        Ok(())
    }

    /// Records what later rules need from this group's events: the raw
    /// maximum stream ordering, relevant state events, redactions.
    fn remember_events(&mut self, events: &[&EventRow]) {
        for row in events {
            let event = &row.event;
            let so = row.event_stream_ordering();
            let memory = &mut self.state.memory;
            if memory.max_stream_ordering.is_none_or(|m| m < so) {
                memory.max_stream_ordering = Some(so);
                self.memory_changed = true;
            }
            if row.rejected {
                continue;
            }
            if let Some(key) = event
                .state_key
                .as_deref()
                .and_then(|k| RelevantKey::of(&event.event_type, k))
            {
                let mut relevant = RelevantEvent::from_event(key, event, so);
                if memory.take_pending_redaction(&event.event_id) {
                    relevant.redact();
                }
                Arc::make_mut(&mut memory.known_relevant_events)
                    .insert(event.event_id.clone(), (key, relevant));
                self.memory_changed = true;
            }
            if event.event_type == REDACTION {
                if let Some(target) = redaction_target(event) {
                    self.redact(target);
                }
            }
        }
    }

    /// §2.7: a redaction changes no stored value, but every later
    /// computation sees the redacted content.
    fn redact(&mut self, target: EventId) {
        let memory = &mut self.state.memory;
        let mut found = false;
        if memory.relevant_state.values().any(|e| e.event_id == target) {
            for event in Arc::make_mut(&mut memory.relevant_state).values_mut() {
                if event.event_id == target {
                    event.redact();
                }
            }
            found = true;
        }
        if memory.known_relevant_events.contains_key(&target) {
            if let Some((_, event)) =
                Arc::make_mut(&mut memory.known_relevant_events).get_mut(&target)
            {
                event.redact();
            }
            found = true;
        }
        let before = memory.space_children.len();
        memory
            .space_children
            .retain(|_, event_id| *event_id != target);
        found |= memory.space_children.len() != before;
        if !found {
            memory.add_pending_redaction(target);
        }
        self.memory_changed = true;
    }

    /// §2.10: sets `forgotten` on an existing snapshot; never creates one.
    fn forget(&mut self, user_id: &UserId) {
        if let Some(snapshot) = self.state.snapshots.get_mut(user_id) {
            if !snapshot.forgotten {
                snapshot.forgotten = true;
                self.dirty_users.insert(user_id.clone());
            }
        }
    }

    /// §2.11 with the [DECISION]: every row of the room and its queue entry.
    fn purge(&mut self) {
        for user in self.state.snapshots.keys() {
            self.dirty_users.insert(user.clone());
        }
        self.state = RoomState::default();
        self.memory_changed = true;
        self.dequeue = true;
    }

    /// §2.5: remote invites, knocks and the leaves that end them.
    fn apply_out_of_band_membership(&mut self, row: &EventRow) -> Result<(), RuleError> {
        let event = &row.event;
        let applies = event.event_type == MEMBER
            && row.outlier
            && row.out_of_band_membership
            && !row.rejected
            && row.is_new_live_event()
            && row.event_stream_ordering() > 0;
        if !applies {
            return Ok(());
        }
        let user_id = member_user(event)?;
        if !self.context.is_local(user_id.as_str()) {
            return Ok(());
        }
        let membership = membership_of(event)?;
        let update = match membership {
            Membership::Leave => MetadataUpdate::default(),
            Membership::Invite => metadata_from_stripped_state(
                event
                    .unsigned
                    .as_ref()
                    .and_then(|u| u.get("invite_room_state")),
            ),
            Membership::Knock => metadata_from_stripped_state(
                event
                    .unsigned
                    .as_ref()
                    .and_then(|u| u.get("knock_room_state")),
            ),
            other => {
                return Err(RuleError::InvalidOutOfBandMembership {
                    event_id: event.event_id.clone(),
                    membership: other.as_str().to_owned(),
                })
            }
        };
        let membership_event = MembershipEvent {
            event_id: event.event_id.clone(),
            user_id,
            sender: event.sender.clone(),
            membership,
            stream_ordering: row.event_stream_ordering(),
            instance_name: self.context.writer.clone(),
        };
        self.write_snapshot(&membership_event, &update);
        Ok(())
    }

    /// Writes a snapshot: the per-user columns always, the state columns
    /// only where `update` computed them (the rest are inherited).
    fn write_snapshot(&mut self, event: &MembershipEvent, update: &MetadataUpdate) {
        let mut snapshot = self
            .state
            .snapshots
            .get(&event.user_id)
            .cloned()
            .unwrap_or_else(|| MembershipSnapshot {
                room_id: self.room_id.clone(),
                user_id: event.user_id.clone(),
                sender: event.sender.clone(),
                membership_event_id: event.event_id.clone(),
                membership: event.membership,
                forgotten: false,
                event_stream_ordering: event.stream_ordering,
                event_instance_name: event.instance_name.clone(),
                has_known_state: false,
                metadata: RoomMetadata::default(),
            });
        snapshot.sender = event.sender.clone();
        snapshot.membership_event_id = event.event_id.clone();
        snapshot.membership = event.membership;
        snapshot.forgotten = false;
        snapshot.event_stream_ordering = event.stream_ordering;
        // [DECISION] §8.3: the writer is updated together with the position.
        snapshot.event_instance_name = event.instance_name.clone();
        update.apply_to_snapshot(&mut snapshot);
        self.state.snapshots.insert(event.user_id.clone(), snapshot);
        self.dirty_users.insert(event.user_id.clone());
    }

    /// The event a state row refers to: carried inline, or one of the
    /// request's event rows. An event whose type or state key differs from
    /// the row's is refused.
    fn resolve<'e>(
        &'e self,
        row: &'e StateRow,
        event_id: &EventId,
        request_events: &'e HashMap<&EventId, KnownEvent<'e>>,
    ) -> Result<Option<KnownEvent<'e>>, RuleError> {
        let known = if let Some(inline) = &row.event {
            KnownEvent {
                event: &inline.event,
                stream_ordering: inline.stream_ordering,
                instance_name: inline
                    .instance_name
                    .as_deref()
                    .unwrap_or(&self.context.writer),
            }
        } else {
            match request_events.get(event_id) {
                Some(known) => KnownEvent {
                    event: known.event,
                    stream_ordering: known.stream_ordering,
                    instance_name: known.instance_name,
                },
                None => return Ok(None),
            }
        };
        let matches = known.event.event_type == row.event_type
            && known.event.state_key.as_deref() == Some(row.state_key.as_str());
        if !matches {
            return Err(RuleError::EventMismatch {
                stream_id: row.stream_id,
                event_type: row.event_type.clone(),
                state_key: row.state_key.clone(),
                event_id: event_id.clone(),
            });
        }
        Ok(Some(known))
    }

    fn unknown(row: &StateRow, event_id: &EventId) -> RuleError {
        RuleError::UnknownEvent {
            stream_id: row.stream_id,
            event_type: row.event_type.clone(),
            state_key: row.state_key.clone(),
            event_id: event_id.clone(),
        }
    }

    /// §2.3 and §2.4: one current-state delta.
    fn apply_delta(
        &mut self,
        delta: &[&StateRow],
        request_events: &HashMap<&EventId, KnownEvent<'_>>,
    ) -> Result<(), RuleError> {
        // Collapse the rows into to_insert / to_delete, last row per key wins.
        let mut inserted_relevant: BTreeMap<RelevantKey, RelevantEvent> = BTreeMap::new();
        let mut removed_relevant: BTreeSet<RelevantKey> = BTreeSet::new();
        let mut inserted_members: BTreeMap<UserId, MembershipEvent> = BTreeMap::new();
        let mut removed_members: BTreeSet<UserId> = BTreeSet::new();
        let mut touches_local_member = false;
        // Stream orderings of events carried inline: stored events of the
        // room, so they count in the room's raw maximum (§2.3 C step 4).
        let mut inline_orderings: Vec<i64> = Vec::new();
        for row in delta {
            if let Some(key) = RelevantKey::of(&row.event_type, &row.state_key) {
                match &row.event_id {
                    None => {
                        inserted_relevant.remove(&key);
                        removed_relevant.insert(key);
                    }
                    Some(event_id) => {
                        let relevant = match self.resolve(row, event_id, request_events)? {
                            Some(known) => {
                                inline_orderings
                                    .extend(row.event.as_ref().map(|_| known.stream_ordering));
                                let mut relevant = RelevantEvent::from_event(
                                    key,
                                    known.event,
                                    known.stream_ordering,
                                );
                                if self.state.memory.pending_redactions.contains(event_id) {
                                    relevant.redact();
                                }
                                relevant
                            }
                            None => self
                                .known_relevant(key, event_id)
                                .ok_or_else(|| Self::unknown(row, event_id))?,
                        };
                        removed_relevant.remove(&key);
                        inserted_relevant.insert(key, relevant);
                    }
                }
                continue;
            }
            if row.event_type == SPACE_CHILD {
                self.apply_space_child(row, request_events)?;
                continue;
            }
            if row.event_type != MEMBER || !self.context.is_local(&row.state_key) {
                continue;
            }
            let Ok(user_id) = UserId::parse(&row.state_key) else {
                continue;
            };
            touches_local_member = true;
            match &row.event_id {
                None => {
                    inserted_members.remove(&user_id);
                    removed_members.insert(user_id);
                }
                Some(event_id) => {
                    let member = match self.resolve(row, event_id, request_events)? {
                        Some(known) => {
                            inline_orderings
                                .extend(row.event.as_ref().map(|_| known.stream_ordering));
                            MembershipEvent {
                                event_id: event_id.clone(),
                                user_id: user_id.clone(),
                                sender: known.event.sender.clone(),
                                membership: membership_of(known.event)?,
                                stream_ordering: known.stream_ordering,
                                instance_name: known.instance_name.to_owned(),
                            }
                        }
                        None => self
                            .current_membership_event(&user_id, event_id)
                            .ok_or_else(|| Self::unknown(row, event_id))?,
                    };
                    removed_members.remove(&user_id);
                    inserted_members.insert(user_id, member);
                }
            }
        }
        if let Some(highest) = inline_orderings.into_iter().max() {
            let memory = &mut self.state.memory;
            if memory.max_stream_ordering.is_none_or(|m| m < highest) {
                memory.max_stream_ordering = Some(highest);
                self.memory_changed = true;
            }
        }
        // The relevant state after the whole delta (before any wipe).
        let mut state_after = BTreeMap::clone(&self.state.memory.relevant_state);
        for key in &removed_relevant {
            state_after.remove(key);
        }
        for (key, event) in &inserted_relevant {
            state_after.insert(*key, event.clone());
        }

        // Does any local user remain joined? (Synapse's no_longer_in_room.)
        let still_joined = |user: &UserId, snapshot: &MembershipSnapshot| {
            if removed_members.contains(user) {
                return false;
            }
            match inserted_members.get(user) {
                Some(member) => member.membership == Membership::Join,
                None => snapshot.membership == Membership::Join,
            }
        };
        let newly_joined = inserted_members
            .values()
            .any(|m| m.membership == Membership::Join);
        let no_longer_in_room = touches_local_member
            && !newly_joined
            && !self
                .state
                .snapshots
                .iter()
                .any(|(user, snapshot)| still_joined(user, snapshot));

        // §2.3: the joined-room row.
        if no_longer_in_room {
            self.state.joined = None;
        } else if let Some(joined) = self.state.joined.as_mut() {
            let mut update = metadata_from_state(inserted_relevant.iter().map(|(k, e)| (*k, e)));
            apply_removals(&mut update, &removed_relevant);
            update.apply(&mut joined.metadata);
        } else {
            let mut overlay = BTreeMap::clone(&self.state.memory.relevant_state);
            for (key, event) in &inserted_relevant {
                overlay.insert(*key, event.clone());
            }
            let mut update = metadata_from_state(overlay.iter().map(|(k, e)| (*k, e)));
            apply_removals(&mut update, &removed_relevant);
            if !update.is_empty() {
                // The raw maximum stream ordering of the room's stored
                // events, this group's included. A room the cache knows no
                // event of (only possible when every referenced event was
                // already current) falls back to the delta's position.
                let event_stream_ordering = self
                    .state
                    .memory
                    .max_stream_ordering
                    .unwrap_or(delta[0].stream_id);
                let mut metadata = RoomMetadata::default();
                update.apply(&mut metadata);
                self.state.joined = Some(JoinedRoomRow {
                    room_id: self.room_id.clone(),
                    event_stream_ordering,
                    bump_stamp: self.state.memory.latest_bump_stamp,
                    metadata,
                });
            }
        }

        // §2.4: local members' snapshots.
        for user in &removed_members {
            if self.state.snapshots.remove(user).is_some() {
                self.dirty_users.insert(user.clone());
            }
        }
        let shared = if state_after.is_empty() {
            MetadataUpdate::default()
        } else {
            let mut update = metadata_from_state(state_after.iter().map(|(k, e)| (*k, e)));
            update.has_known_state = Some(true);
            update
        };
        for member in inserted_members.values() {
            self.write_snapshot(member, &shared);
        }

        // The room's current state after the delta (emptied when the server left).
        let new_state = if no_longer_in_room {
            BTreeMap::new()
        } else {
            state_after
        };
        if no_longer_in_room && !self.state.memory.space_children.is_empty() {
            self.state.memory.space_children.clear();
            self.memory_changed = true;
        }
        if *self.state.memory.relevant_state != new_state {
            self.state.memory.relevant_state = Arc::new(new_state);
            self.memory_changed = true;
        }
        Ok(())
    }

    /// An `m.space.child` state row: the state key becomes a child when the
    /// event has a non-empty `via` (and is not redacted), and stops being one
    /// otherwise. An event the cache has not seen keeps the current status
    /// only when it is the event already recorded.
    fn apply_space_child(
        &mut self,
        row: &StateRow,
        request_events: &HashMap<&EventId, KnownEvent<'_>>,
    ) -> Result<(), RuleError> {
        let Ok(child) = RoomId::parse(&row.state_key) else {
            return Ok(());
        };
        let valid = match &row.event_id {
            None => None,
            Some(event_id) => {
                let memory = &self.state.memory;
                let recorded = memory.space_children.get(&child) == Some(event_id);
                let valid = match self.resolve(row, event_id, request_events)? {
                    Some(known) => {
                        is_valid_space_child(known.event)
                            && !memory.pending_redactions.contains(event_id)
                    }
                    None => recorded,
                };
                valid.then(|| event_id.clone())
            }
        };
        let memory = &mut self.state.memory;
        match valid {
            Some(event_id) => {
                memory.space_children.insert(child, event_id);
            }
            None => {
                memory.space_children.remove(&child);
            }
        }
        self.memory_changed = true;
        Ok(())
    }

    /// A relevant event known to the room: current or remembered.
    fn known_relevant(&self, key: RelevantKey, event_id: &EventId) -> Option<RelevantEvent> {
        let memory = &self.state.memory;
        memory
            .relevant_state
            .get(&key)
            .filter(|e| &e.event_id == event_id)
            .cloned()
            .or_else(|| {
                memory
                    .known_relevant_events
                    .get(event_id)
                    .filter(|(k, _)| *k == key)
                    .map(|(_, e)| e.clone())
            })
    }

    /// The user's current membership event, if `event_id` is it.
    fn current_membership_event(
        &self,
        user_id: &UserId,
        event_id: &EventId,
    ) -> Option<MembershipEvent> {
        let snapshot = self.state.snapshots.get(user_id)?;
        (&snapshot.membership_event_id == event_id).then(|| MembershipEvent {
            event_id: event_id.clone(),
            user_id: user_id.clone(),
            sender: snapshot.sender.clone(),
            membership: snapshot.membership,
            stream_ordering: snapshot.event_stream_ordering,
            instance_name: snapshot.event_instance_name.clone(),
        })
    }

    /// §2.2: new events move `event_stream_ordering` and `bump_stamp` of an
    /// existing joined row; the latest qualifying bump is remembered for a
    /// row created later.
    fn bump(&mut self, events: &[&EventRow]) {
        // What a later full insert reads as "the latest bump event that is
        // not an outlier and not rejected" (§2.3 C step 3): de-outliered
        // copies count (the event is no longer an outlier, at its original
        // position); backfilled ones never do (not positive).
        let qualifying = events
            .iter()
            .filter(|r| !r.rejected && !r.outlier && is_bump_event(&r.event))
            .map(|r| r.event_stream_ordering())
            .filter(|so| *so > 0)
            .max();
        if let Some(bump) = qualifying {
            let memory = &mut self.state.memory;
            if memory.latest_bump_stamp.is_none_or(|b| b < bump) {
                memory.latest_bump_stamp = Some(bump);
                self.memory_changed = true;
            }
        }
        // §2.2: only events newly stored at their position and not
        // rejected; outliers and soft-failed events count.
        let live: Vec<&&EventRow> = events
            .iter()
            .filter(|r| !r.rejected && r.is_new_live_event())
            .collect();
        let Some(latest) = live.iter().map(|r| r.event_stream_ordering()).max() else {
            return;
        };
        if latest < 0 {
            return;
        }
        let latest_bump = live
            .iter()
            .filter(|r| is_bump_event(&r.event))
            .map(|r| r.event_stream_ordering())
            .max();
        if let Some(joined) = self.state.joined.as_mut() {
            if joined.event_stream_ordering < latest {
                joined.event_stream_ordering = latest;
            }
            if let Some(bump) = latest_bump {
                if joined.bump_stamp.is_none_or(|b| b < bump) {
                    joined.bump_stamp = Some(bump);
                }
            }
        }
    }

    fn finish(self, before: &RoomState) -> RoomOutcome {
        let mut changes = Vec::new();
        if self.state.joined != before.joined {
            changes.push(match &self.state.joined {
                Some(row) => RowChange::UpsertJoinedRoom(row.clone()),
                None => RowChange::DeleteJoinedRoom(self.room_id.clone()),
            });
        }
        for user in &self.dirty_users {
            let now = self.state.snapshots.get(user);
            if now == before.snapshots.get(user) {
                continue;
            }
            changes.push(match now {
                Some(snapshot) => RowChange::UpsertSnapshot(snapshot.clone()),
                None => RowChange::DeleteSnapshot(self.room_id.clone(), user.clone()),
            });
        }
        if self.dequeue {
            changes.push(RowChange::Dequeue(self.room_id.clone()));
        }
        let children_before = before.memory.space_children.keys();
        if !children_before.eq(self.state.memory.space_children.keys()) {
            changes.push(RowChange::SpaceChildren {
                space_room_id: self.room_id.clone(),
                children: self.state.memory.space_children.keys().cloned().collect(),
            });
        }
        let mut state = self.state;
        let follows = state.joined.as_ref().is_some_and(|joined| {
            state.memory.max_stream_ordering == Some(joined.event_stream_ordering)
                && state.memory.latest_bump_stamp == joined.bump_stamp
        });
        state.memory.counters_follow_joined_row = follows;
        let memory_changed = (self.memory_changed
            || follows != before.memory.counters_follow_joined_row)
            && !same_stored_memory(&state.memory, &before.memory);
        RoomOutcome {
            state,
            changes,
            memory_changed,
        }
    }
}

#[cfg(test)]
mod tests;
