//! The update rules of the sliding-sync tables (spec `sliding-sync-tables.md`
//! §2), as pure functions: a room's state plus its feed rows in, the room's
//! new state and the changed rows out.
//!
//! Owns: [`RoomState`] (the joined-room row, the local members' snapshots and
//! the few pieces of current state the rules need) and every rule that
//! changes it. May not touch: actors, sockets, the database, clocks. The room
//! actor is a thin shell around [`apply_rows`]; tests call it directly.

use std::collections::{BTreeMap, BTreeSet, HashMap};

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
const REDACTION: &str = "m.room.redaction";

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
}

impl RelevantEvent {
    fn from_event(key: RelevantKey, event: &Event) -> Self {
        let keeps = key == RelevantKey::Create && create_content_survives_redaction(event);
        RelevantEvent {
            event_id: event.event_id.clone(),
            value: event.content.get(key.field()).cloned(),
            keeps_value_when_redacted: keeps,
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
    pub relevant_state: BTreeMap<RelevantKey, RelevantEvent>,
    /// Stream ordering of the latest bump-type event that is neither an
    /// outlier nor rejected, if positive: a new joined row's `bump_stamp`.
    #[serde(default)]
    pub latest_bump_stamp: Option<i64>,
    /// Highest stream ordering of any event of the room (outliers and
    /// rejected events included): a new joined row's `event_stream_ordering`.
    #[serde(default)]
    pub max_stream_ordering: Option<i64>,
    /// Relevant state events seen but not current (earlier values,
    /// backfilled events), for state resets back to them.
    #[serde(default)]
    pub known_relevant_events: BTreeMap<EventId, (RelevantKey, RelevantEvent)>,
    /// Redactions seen whose target was not known yet.
    #[serde(default)]
    pub pending_redactions: BTreeSet<EventId>,
}

/// Everything the rules hold for one room.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoomState {
    pub joined: Option<JoinedRoomRow>,
    pub snapshots: imbl::OrdMap<UserId, MembershipSnapshot>,
    pub memory: RoomMemory,
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
    /// The new memory when it changed (`None`: unchanged).
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
        purged_users: BTreeSet::new(),
        memory_changed: false,
        dequeue: false,
    };
    // Every event of the room in this request can resolve a state row, even
    // one in a later group (delta rows carry the batch's smallest id).
    let mut request_events: HashMap<&EventId, KnownEvent<'_>> = HashMap::new();
    for row in rows {
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
    purged_users: BTreeSet<UserId>,
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
        let mut seen: BTreeSet<&EventId> = BTreeSet::new();
        let mut delta: Vec<&StateRow> = Vec::new();
        // A forget refers to a membership that exists: one sharing the
        // group's stream id is applied after that membership (below).
        let mut forgets: Vec<&UserId> = Vec::new();
        for row in group {
            match row {
                FeedRow::Event(r) => {
                    if seen.insert(&r.event.event_id) {
                        events.push(r);
                    }
                }
                FeedRow::State(r) => delta.push(r),
                FeedRow::Forget(r) => forgets.push(&r.user_id),
                FeedRow::Purge(_) => self.purge(),
                FeedRow::Position(_) => {}
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
                let mut relevant = RelevantEvent::from_event(key, event);
                if memory.pending_redactions.remove(&event.event_id) {
                    relevant.redact();
                }
                memory
                    .known_relevant_events
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
        for event in memory.relevant_state.values_mut() {
            if event.event_id == target {
                event.redact();
                found = true;
            }
        }
        if let Some((_, event)) = memory.known_relevant_events.get_mut(&target) {
            event.redact();
            found = true;
        }
        if !found {
            memory.pending_redactions.insert(target);
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
            self.purged_users.insert(user.clone());
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
        self.purged_users.remove(&event.user_id);
        self.dirty_users.insert(event.user_id.clone());
    }

    fn resolve<'e>(
        &'e self,
        row: &'e StateRow,
        event_id: &EventId,
        request_events: &'e HashMap<&EventId, KnownEvent<'e>>,
    ) -> Option<KnownEvent<'e>> {
        if let Some(inline) = &row.event {
            return Some(KnownEvent {
                event: &inline.event,
                stream_ordering: inline.stream_ordering,
                instance_name: inline
                    .instance_name
                    .as_deref()
                    .unwrap_or(&self.context.writer),
            });
        }
        request_events.get(event_id).map(|known| KnownEvent {
            event: known.event,
            stream_ordering: known.stream_ordering,
            instance_name: known.instance_name,
        })
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
        for row in delta {
            if let Some(key) = RelevantKey::of(&row.event_type, &row.state_key) {
                match &row.event_id {
                    None => {
                        inserted_relevant.remove(&key);
                        removed_relevant.insert(key);
                    }
                    Some(event_id) => {
                        let relevant = match self.resolve(row, event_id, request_events) {
                            Some(known) => RelevantEvent::from_event(key, known.event),
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
                    let member = match self.resolve(row, event_id, request_events) {
                        Some(known) => MembershipEvent {
                            event_id: event_id.clone(),
                            user_id: user_id.clone(),
                            sender: known.event.sender.clone(),
                            membership: membership_of(known.event)?,
                            stream_ordering: known.stream_ordering,
                            instance_name: known.instance_name.to_owned(),
                        },
                        None => self
                            .current_membership_event(&user_id, event_id)
                            .ok_or_else(|| Self::unknown(row, event_id))?,
                    };
                    removed_members.remove(&user_id);
                    inserted_members.insert(user_id, member);
                }
            }
        }
        // The relevant state after the whole delta (before any wipe).
        let mut state_after = self.state.memory.relevant_state.clone();
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
            let mut overlay = self.state.memory.relevant_state.clone();
            for (key, event) in &inserted_relevant {
                overlay.insert(*key, event.clone());
            }
            let mut update = metadata_from_state(overlay.iter().map(|(k, e)| (*k, e)));
            apply_removals(&mut update, &removed_relevant);
            if !update.is_empty() {
                let event_stream_ordering = self
                    .state
                    .memory
                    .max_stream_ordering
                    .or_else(|| inserted_members.values().map(|m| m.stream_ordering).max())
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
        self.state.memory.relevant_state = if no_longer_in_room {
            BTreeMap::new()
        } else {
            state_after
        };
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
        let is_bump = |r: &&&EventRow| is_bump_event(&r.event);
        let latest_bump = live
            .iter()
            .filter(|r| is_bump(r))
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
        let qualifying = live
            .iter()
            .filter(|r| is_bump(r))
            .filter(|r| !r.outlier && r.event_stream_ordering() > 0)
            .map(|r| r.event_stream_ordering())
            .max();
        if let Some(bump) = qualifying {
            let memory = &mut self.state.memory;
            if memory.latest_bump_stamp.is_none_or(|b| b < bump) {
                memory.latest_bump_stamp = Some(bump);
                self.memory_changed = true;
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
        let memory_changed = self.memory_changed && self.state.memory != before.memory;
        RoomOutcome {
            state: self.state,
            changes,
            memory_changed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_columns_follow_section_2_1() {
        assert_eq!(text_column(None), Some(None));
        assert_eq!(text_column(Some(&Value::Null)), Some(None));
        assert_eq!(text_column(Some(&json!("x"))), Some(Some("x".into())));
        assert_eq!(text_column(Some(&json!(""))), Some(Some("".into())));
        assert_eq!(text_column(Some(&json!("a\u{0}b"))), None);
        assert_eq!(text_column(Some(&json!(3))), None);
        assert_eq!(text_column(Some(&json!({"a": 1}))), None);
    }

    #[test]
    fn any_non_null_algorithm_means_encrypted() {
        assert!(encrypted(Some(&json!(0))));
        assert!(encrypted(Some(&json!(false))));
        assert!(encrypted(Some(&json!({}))));
        assert!(!encrypted(Some(&Value::Null)));
        assert!(!encrypted(None));
    }

    #[test]
    fn stripped_state_without_create_is_unknown_and_keeps_tombstone() {
        let update = metadata_from_stripped_state(Some(&json!([
            {"type": "m.room.name", "state_key": "", "sender": "@a:x", "content": {"name": "n"}}
        ])));
        assert_eq!(update.has_known_state, Some(false));
        assert_eq!(update.room_name, Some(None));
        assert_eq!(update.tombstone, None);
    }

    #[test]
    fn stripped_state_ignores_malformed_entries_and_bad_values() {
        let update = metadata_from_stripped_state(Some(&json!([
            {"type": "m.room.create", "state_key": "", "sender": "@a:x", "content": {"type": 5}},
            {"type": "m.room.name", "state_key": "", "sender": "@a:x", "content": {"name": "a\u{0}"}},
            {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "x"}},
            "garbage"
        ])));
        assert_eq!(update.has_known_state, Some(true));
        assert_eq!(update.room_type, None);
        assert_eq!(update.room_name, None);
        assert_eq!(update.is_encrypted, Some(false));
        assert_eq!(update.tombstone, Some(None));
    }
}
