//! The read index: what queries read, concurrently, without passing through
//! any actor mailbox and without Postgres.
//!
//! Owns: the published (committed) joined-room rows, membership snapshots,
//! space children and the account data room lists read, in a layout built
//! for room-list queries, and the fast path of those queries. May not touch:
//! the database, actors, the rules. Only the supervisor's commit path calls
//! [`ReadIndex::publish`] (and start-up [`ReadIndex::from_rows`]), and
//! only with changes Postgres has already committed, so readers never see a
//! row that is not durable.
//!
//! Layout (chosen for the question "user U's rooms, filtered, newest first,
//! rows 0–19, and how many"):
//! * rooms and users are interned to dense `u32` slots; room types and
//!   writer names are interned too;
//! * each user keeps, updated on every write, an ordered map of the rooms
//!   listed for them (R1: not forgotten, not self-left) keyed by (recency
//!   descending, room slot) with the few attributes filters read, and a
//!   count of listed rooms per attribute combination, so a list filtered on
//!   attributes is counted without a walk and its top rows are the first
//!   matching entries of the map;
//! * self-leaves are kept by position, to add the newly-left rooms after a
//!   `from_token`;
//! * tags and spaces give candidate sets, so those filters read only their
//!   rooms.
//!
//! Consistency: one `RwLock` over everything, so every read sees whole
//! publications; the API reads through the publish gate
//! ([`crate::publish`]), which makes the rows and the token one snapshot.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hash;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use rustc_hash::{FxHashMap, FxHashSet};

use crate::model::{
    AccountData, EventId, JoinedRoomRow, Membership, MembershipSnapshot, RoomId, RoomMetadata,
    RowChange, UserId, DIRECT_ACCOUNT_DATA, TAG_ACCOUNT_DATA,
};
use crate::positions::StreamToken;
use crate::room_list::{
    answer_ranges, direct_rooms, needed_prefix, tag_names, Filters, ListAnswer, ListRequest,
    NameNeedle, RoomListEntry,
};

/// A room's slot in the index.
type RoomSlot = u32;
/// A local user's slot in the index.
type UserSlot = u32;
/// An interned room type: 0 is "no type", `n > 0` the interner's `n - 1`.
type TypeId = u32;
const NO_TYPE: TypeId = 0;
/// A type id no room has (a filter value never interned).
const UNSEEN_TYPE: TypeId = u32::MAX;

/// Values interned to dense ids (never freed: room types, writer names and
/// senders are few and bounded by what was ever seen).
#[derive(Debug)]
struct Interner<T> {
    ids: FxHashMap<T, u32>,
    values: Vec<T>,
}

impl<T: Clone + Eq + Hash> Interner<T> {
    fn new() -> Self {
        Interner {
            ids: FxHashMap::default(),
            values: Vec::new(),
        }
    }

    fn intern(&mut self, value: &T) -> u32 {
        if let Some(id) = self.ids.get(value) {
            return *id;
        }
        let id = self.values.len() as u32;
        self.values.push(value.clone());
        self.ids.insert(value.clone(), id);
        id
    }

    fn find(&self, value: &T) -> Option<u32> {
        self.ids.get(value).copied()
    }

    fn get(&self, id: u32) -> Option<&T> {
        self.values.get(id as usize)
    }
}

/// A joined-room row, compact.
#[derive(Debug, Clone)]
struct JoinedRecord {
    event_stream_ordering: i64,
    bump_stamp: Option<i64>,
    room_type: TypeId,
    is_encrypted: bool,
    room_name: Option<Arc<str>>,
    tombstone: Option<Arc<str>>,
}

#[derive(Debug)]
struct RoomRecord {
    room_id: RoomId,
    joined: Option<JoinedRecord>,
    /// Users whose snapshot here is a join (their recency follows the joined row).
    joined_members: Vec<UserSlot>,
    /// The room's children as a space.
    space_children: Box<[RoomSlot]>,
}

/// A membership snapshot, compact.
#[derive(Debug, Clone)]
struct SnapshotRecord {
    event_id: EventId,
    position: i64,
    sender: u32,
    instance: u32,
    room_type: TypeId,
    membership: Membership,
    forgotten: bool,
    has_known_state: bool,
    is_encrypted: bool,
    /// Shared with the joined row's value when equal (most joined snapshots).
    room_name: Option<Arc<str>>,
    tombstone: Option<Arc<str>>,
    /// Listed under the key [`IndexData::listing`] computes (every change
    /// to its inputs unlists first, so the key can be recomputed).
    listed: bool,
}

/// What attribute filters read of a listed room (also the key of the
/// per-user counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Attributes {
    room_type: TypeId,
    membership: Membership,
    has_known_state: bool,
    is_encrypted: bool,
    is_dm: bool,
}

#[derive(Debug)]
struct UserRecord {
    user_id: UserId,
    /// The user's snapshots: room → index into [`IndexData::records`].
    snapshots: FxHashMap<RoomSlot, u32>,
    /// Listed rooms (R1), newest first; ties by slot (re-sorted by room ID on read).
    order: BTreeMap<(Reverse<i64>, RoomSlot), Attributes>,
    /// Listed rooms per attribute combination (few combinations: a vector).
    attribute_counts: Vec<(Attributes, u32)>,
    /// What most users lack (self-leaves, DMs, tags), allocated on first use.
    extras: Option<Box<UserExtras>>,
}

#[derive(Debug, Default)]
struct UserExtras {
    /// Self-leaves not forgotten, by position (newly-left candidates).
    self_leaves: BTreeSet<(i64, RoomSlot)>,
    dm_rooms: FxHashSet<RoomSlot>,
    tags: FxHashMap<RoomSlot, Box<[Box<str>]>>,
    rooms_by_tag: FxHashMap<Box<str>, FxHashSet<RoomSlot>>,
}

impl UserRecord {
    fn new(user_id: UserId) -> Self {
        UserRecord {
            user_id,
            snapshots: FxHashMap::default(),
            order: BTreeMap::new(),
            attribute_counts: Vec::new(),
            extras: None,
        }
    }

    fn extras_mut(&mut self) -> &mut UserExtras {
        self.extras.get_or_insert_with(Box::default)
    }

    fn is_dm(&self, room: RoomSlot) -> bool {
        self.extras
            .as_ref()
            .is_some_and(|e| e.dm_rooms.contains(&room))
    }

    fn count(&mut self, attributes: Attributes, delta: i32) {
        match self
            .attribute_counts
            .iter_mut()
            .position(|(a, _)| *a == attributes)
        {
            Some(i) => {
                let count = &mut self.attribute_counts[i].1;
                *count = count.saturating_add_signed(delta);
                if *count == 0 {
                    self.attribute_counts.swap_remove(i);
                }
            }
            None if delta > 0 => self.attribute_counts.push((attributes, delta as u32)),
            None => {}
        }
    }
}

#[derive(Debug)]
struct IndexData {
    room_slots: FxHashMap<RoomId, RoomSlot>,
    rooms: Vec<RoomRecord>,
    user_slots: FxHashMap<UserId, UserSlot>,
    users: Vec<UserRecord>,
    /// Every snapshot, densely (freed slots are reused).
    records: Vec<SnapshotRecord>,
    free_records: Vec<u32>,
    senders: Interner<UserId>,
    instances: Interner<String>,
    /// Room types ([`TypeId`] `n` is entry `n - 1`).
    room_types: Interner<String>,
    joined_room_count: usize,
    snapshot_count: u64,
}

/// A user's record, the room's record and the user's snapshot in the room,
/// borrowed from the index's separate parts at once.
fn locate<'a>(
    users: &'a mut [UserRecord],
    rooms: &'a [RoomRecord],
    records: &'a mut [SnapshotRecord],
    user: UserSlot,
    room: RoomSlot,
) -> Option<(&'a mut UserRecord, &'a RoomRecord, &'a mut SnapshotRecord)> {
    let record = users.get_mut(user as usize)?;
    let room_record = rooms.get(room as usize)?;
    let index = *record.snapshots.get(&room)?;
    let snapshot = records.get_mut(index as usize)?;
    Some((record, room_record, snapshot))
}

/// Committed rows, organised for reads.
#[derive(Debug)]
pub struct ReadIndex {
    data: RwLock<IndexData>,
}

impl Default for ReadIndex {
    fn default() -> Self {
        ReadIndex {
            data: RwLock::new(IndexData {
                room_slots: FxHashMap::default(),
                rooms: Vec::new(),
                user_slots: FxHashMap::default(),
                users: Vec::new(),
                records: Vec::new(),
                free_records: Vec::new(),
                senders: Interner::new(),
                instances: Interner::new(),
                room_types: Interner::new(),
                joined_room_count: 0,
                snapshot_count: 0,
            }),
        }
    }
}

fn shared(value: &Option<String>) -> Option<Arc<str>> {
    value.as_deref().map(Arc::from)
}

/// `value`, sharing `existing`'s allocation when equal.
fn shared_like(value: &Option<String>, existing: Option<&Arc<str>>) -> Option<Arc<str>> {
    match (value.as_deref(), existing) {
        (Some(v), Some(e)) if **e == *v => Some(e.clone()),
        _ => shared(value),
    }
}

fn unboxed(value: &Option<Arc<str>>) -> Option<String> {
    value.as_deref().map(str::to_owned)
}

impl IndexData {
    fn room_slot(&mut self, room_id: &RoomId) -> RoomSlot {
        if let Some(slot) = self.room_slots.get(room_id) {
            return *slot;
        }
        let slot = self.rooms.len() as RoomSlot;
        self.rooms.push(RoomRecord {
            room_id: room_id.clone(),
            joined: None,
            joined_members: Vec::new(),
            space_children: Box::new([]),
        });
        self.room_slots.insert(room_id.clone(), slot);
        slot
    }

    fn user_slot(&mut self, user_id: &UserId) -> UserSlot {
        if let Some(slot) = self.user_slots.get(user_id) {
            return *slot;
        }
        let slot = self.users.len() as UserSlot;
        self.users.push(UserRecord::new(user_id.clone()));
        self.user_slots.insert(user_id.clone(), slot);
        slot
    }

    fn type_id(&mut self, room_type: &Option<String>) -> TypeId {
        match room_type {
            None => NO_TYPE,
            Some(t) => self.room_types.intern(t) + 1,
        }
    }

    fn type_name(&self, id: TypeId) -> Option<String> {
        id.checked_sub(1)
            .and_then(|id| self.room_types.get(id))
            .cloned()
    }

    /// The recency key and attributes of a user's room, per §6.1/§6.8.
    fn listing(room: &RoomRecord, snapshot: &SnapshotRecord, is_dm: bool) -> (i64, Attributes) {
        let joined = (snapshot.membership == Membership::Join)
            .then_some(room.joined.as_ref())
            .flatten();
        let room_type = match joined {
            Some(j) if j.room_type != NO_TYPE => j.room_type,
            _ => snapshot.room_type,
        };
        let attributes = Attributes {
            room_type,
            membership: snapshot.membership,
            has_known_state: snapshot.has_known_state,
            is_encrypted: joined.map_or(snapshot.is_encrypted, |j| j.is_encrypted),
            is_dm,
        };
        let recency = joined.map_or(snapshot.position, |j| j.event_stream_ordering);
        (recency, attributes)
    }

    /// The snapshot record of a user's room.
    fn record(&self, user: &UserRecord, room: RoomSlot) -> Option<&SnapshotRecord> {
        user.snapshots
            .get(&room)
            .and_then(|i| self.records.get(*i as usize))
    }

    /// Takes a user's room out of the listing structures.
    fn unlist(&mut self, user: UserSlot, room: RoomSlot) {
        let IndexData {
            users,
            rooms,
            records,
            ..
        } = self;
        let Some((record, room_record, snapshot)) = locate(users, rooms, records, user, room)
        else {
            return;
        };
        if std::mem::take(&mut snapshot.listed) {
            let is_dm = record.is_dm(room);
            let (key, _) = Self::listing(room_record, snapshot, is_dm);
            if let Some(attributes) = record.order.remove(&(Reverse(key), room)) {
                record.count(attributes, -1);
            }
        }
        if let Some(extras) = record.extras.as_mut() {
            extras.self_leaves.remove(&(snapshot.position, room));
        }
    }

    /// Puts a user's room into the listing structures per its snapshot.
    fn list(&mut self, user: UserSlot, room: RoomSlot) {
        let IndexData {
            users,
            rooms,
            records,
            senders,
            ..
        } = self;
        let Some((record, room_record, snapshot)) = locate(users, rooms, records, user, room)
        else {
            return;
        };
        if snapshot.forgotten {
            return;
        }
        let self_sent = senders
            .get(snapshot.sender)
            .is_some_and(|s| *s == record.user_id);
        if snapshot.membership == Membership::Leave && self_sent {
            let position = snapshot.position;
            record.extras_mut().self_leaves.insert((position, room));
            return;
        }
        let is_dm = record.is_dm(room);
        let (key, attributes) = Self::listing(room_record, snapshot, is_dm);
        record.order.insert((Reverse(key), room), attributes);
        record.count(attributes, 1);
        snapshot.listed = true;
    }

    fn relist_joined_members(&mut self, room: RoomSlot, change: impl FnOnce(&mut RoomRecord)) {
        let members = self
            .rooms
            .get(room as usize)
            .map(|r| r.joined_members.clone())
            .unwrap_or_default();
        for user in &members {
            self.unlist(*user, room);
        }
        if let Some(record) = self.rooms.get_mut(room as usize) {
            change(record);
        }
        for user in &members {
            self.list(*user, room);
        }
    }

    fn upsert_joined(&mut self, row: &JoinedRoomRow) {
        let room = self.room_slot(&row.room_id);
        let record = JoinedRecord {
            event_stream_ordering: row.event_stream_ordering,
            bump_stamp: row.bump_stamp,
            room_type: self.type_id(&row.metadata.room_type),
            is_encrypted: row.metadata.is_encrypted,
            room_name: shared(&row.metadata.room_name),
            tombstone: shared(&row.metadata.tombstone_successor_room_id),
        };
        let mut added = false;
        self.relist_joined_members(room, |r| {
            added = r.joined.is_none();
            r.joined = Some(record);
        });
        if added {
            self.joined_room_count += 1;
        }
    }

    fn delete_joined(&mut self, room_id: &RoomId) {
        let Some(room) = self.room_slots.get(room_id).copied() else {
            return;
        };
        let mut removed = false;
        self.relist_joined_members(room, |r| removed = r.joined.take().is_some());
        if removed {
            self.joined_room_count -= 1;
        }
    }

    fn upsert_snapshot(&mut self, snapshot: &MembershipSnapshot) {
        let room = self.room_slot(&snapshot.room_id);
        let user = self.user_slot(&snapshot.user_id);
        self.unlist(user, room);
        let joined = self
            .rooms
            .get(room as usize)
            .and_then(|r| r.joined.as_ref());
        let room_name = shared_like(
            &snapshot.metadata.room_name,
            joined.and_then(|j| j.room_name.as_ref()),
        );
        let tombstone = shared_like(
            &snapshot.metadata.tombstone_successor_room_id,
            joined.and_then(|j| j.tombstone.as_ref()),
        );
        let record = SnapshotRecord {
            event_id: snapshot.membership_event_id.clone(),
            position: snapshot.event_stream_ordering,
            sender: self.senders.intern(&snapshot.sender),
            instance: self.instances.intern(&snapshot.event_instance_name),
            room_type: self.type_id(&snapshot.metadata.room_type),
            membership: snapshot.membership,
            forgotten: snapshot.forgotten,
            has_known_state: snapshot.has_known_state,
            is_encrypted: snapshot.metadata.is_encrypted,
            room_name,
            tombstone,
            listed: false,
        };
        let joins = record.membership == Membership::Join;
        let existing = self
            .users
            .get(user as usize)
            .and_then(|u| u.snapshots.get(&room))
            .copied();
        let joined_before = match existing {
            Some(i) => match self.records.get_mut(i as usize) {
                Some(slot) => {
                    let before = slot.membership == Membership::Join;
                    *slot = record;
                    before
                }
                None => return,
            },
            None => {
                let i = match self.free_records.pop() {
                    Some(i) => {
                        if let Some(slot) = self.records.get_mut(i as usize) {
                            *slot = record;
                        }
                        i
                    }
                    None => {
                        self.records.push(record);
                        (self.records.len() - 1) as u32
                    }
                };
                if let Some(user_record) = self.users.get_mut(user as usize) {
                    user_record.snapshots.insert(room, i);
                }
                self.snapshot_count += 1;
                false
            }
        };
        if let Some(room_record) = self.rooms.get_mut(room as usize) {
            if joins && !joined_before {
                room_record.joined_members.push(user);
            } else if !joins && joined_before {
                room_record.joined_members.retain(|u| *u != user);
            }
        }
        self.list(user, room);
    }

    fn delete_snapshot(&mut self, room_id: &RoomId, user_id: &UserId) {
        let (Some(room), Some(user)) = (
            self.room_slots.get(room_id).copied(),
            self.user_slots.get(user_id).copied(),
        ) else {
            return;
        };
        self.unlist(user, room);
        let removed = self
            .users
            .get_mut(user as usize)
            .and_then(|r| r.snapshots.remove(&room));
        let Some(removed) = removed else {
            return;
        };
        self.snapshot_count -= 1;
        self.free_records.push(removed);
        let was_join = self.records.get_mut(removed as usize).is_some_and(|slot| {
            // Drop the freed record's allocations now.
            slot.room_name = None;
            slot.tombstone = None;
            slot.membership == Membership::Join
        });
        if was_join {
            if let Some(room_record) = self.rooms.get_mut(room as usize) {
                room_record.joined_members.retain(|u| *u != user);
            }
        }
    }

    fn set_space_children(&mut self, space: &RoomId, children: &[RoomId]) {
        let space = self.room_slot(space);
        let slots: Box<[RoomSlot]> = children.iter().map(|c| self.room_slot(c)).collect();
        if let Some(record) = self.rooms.get_mut(space as usize) {
            record.space_children = slots;
        }
    }

    fn set_account_data(&mut self, data: &AccountData) {
        let user = self.user_slot(&data.user_id);
        match (&data.room_id, data.data_type.as_str()) {
            (None, DIRECT_ACCOUNT_DATA) => {
                let rooms: FxHashSet<RoomSlot> = direct_rooms(&data.content)
                    .iter()
                    .map(|r| self.room_slot(r))
                    .collect();
                let Some(record) = self.users.get(user as usize) else {
                    return;
                };
                let changed: Vec<RoomSlot> = match &record.extras {
                    Some(extras) => extras
                        .dm_rooms
                        .symmetric_difference(&rooms)
                        .copied()
                        .collect(),
                    None => rooms.iter().copied().collect(),
                };
                for room in &changed {
                    self.unlist(user, *room);
                }
                if let Some(record) = self.users.get_mut(user as usize) {
                    record.extras_mut().dm_rooms = rooms;
                }
                for room in &changed {
                    self.list(user, *room);
                }
            }
            (Some(room_id), TAG_ACCOUNT_DATA) => {
                let room = self.room_slot(room_id);
                let Some(user_record) = self.users.get_mut(user as usize) else {
                    return;
                };
                let record = user_record.extras_mut();
                if let Some(old) = record.tags.remove(&room) {
                    for tag in old.iter() {
                        if let Some(rooms) = record.rooms_by_tag.get_mut(tag) {
                            rooms.remove(&room);
                            if rooms.is_empty() {
                                record.rooms_by_tag.remove(tag);
                            }
                        }
                    }
                }
                let tags: Box<[Box<str>]> = tag_names(&data.content)
                    .into_iter()
                    .map(String::into_boxed_str)
                    .collect();
                for tag in tags.iter() {
                    record
                        .rooms_by_tag
                        .entry(tag.clone())
                        .or_default()
                        .insert(room);
                }
                if !tags.is_empty() {
                    record.tags.insert(room, tags);
                }
            }
            _ => {}
        }
    }

    fn apply(&mut self, change: &RowChange) {
        match change {
            RowChange::UpsertJoinedRoom(row) => self.upsert_joined(row),
            RowChange::DeleteJoinedRoom(room_id) => self.delete_joined(room_id),
            RowChange::UpsertSnapshot(snapshot) => self.upsert_snapshot(snapshot),
            RowChange::DeleteSnapshot(room_id, user_id) => self.delete_snapshot(room_id, user_id),
            RowChange::Dequeue(_) => {}
            RowChange::SpaceChildren {
                space_room_id,
                children,
            } => self.set_space_children(space_room_id, children),
            RowChange::AccountData(data) => self.set_account_data(data),
        }
    }

    fn joined_row(&self, room: &RoomRecord) -> Option<JoinedRoomRow> {
        let joined = room.joined.as_ref()?;
        Some(JoinedRoomRow {
            room_id: room.room_id.clone(),
            event_stream_ordering: joined.event_stream_ordering,
            bump_stamp: joined.bump_stamp,
            metadata: RoomMetadata {
                room_type: self.type_name(joined.room_type),
                room_name: unboxed(&joined.room_name),
                is_encrypted: joined.is_encrypted,
                tombstone_successor_room_id: unboxed(&joined.tombstone),
            },
        })
    }

    fn snapshot_row(
        &self,
        user: &UserRecord,
        room: RoomSlot,
        snapshot: &SnapshotRecord,
    ) -> Option<MembershipSnapshot> {
        Some(MembershipSnapshot {
            room_id: self.rooms.get(room as usize)?.room_id.clone(),
            user_id: user.user_id.clone(),
            sender: self.senders.get(snapshot.sender)?.clone(),
            membership_event_id: snapshot.event_id.clone(),
            membership: snapshot.membership,
            forgotten: snapshot.forgotten,
            event_stream_ordering: snapshot.position,
            event_instance_name: self.instances.get(snapshot.instance)?.clone(),
            has_known_state: snapshot.has_known_state,
            metadata: RoomMetadata {
                room_type: self.type_name(snapshot.room_type),
                room_name: unboxed(&snapshot.room_name),
                is_encrypted: snapshot.is_encrypted,
                tombstone_successor_room_id: unboxed(&snapshot.tombstone),
            },
        })
    }
}

/// A list's filters, resolved against the index's ids.
struct CompiledFilter<'a> {
    filters: &'a Filters,
    room_types: Option<Vec<TypeId>>,
    not_room_types: Option<Vec<TypeId>>,
    spaces: Option<FxHashSet<RoomSlot>>,
    tagged: Option<FxHashSet<RoomSlot>>,
    not_tagged: Option<FxHashSet<RoomSlot>>,
    name: Option<NameNeedle>,
}

impl<'a> CompiledFilter<'a> {
    fn new(filters: &'a Filters, data: &IndexData, user: &UserRecord) -> Self {
        let types = |list: &Option<Vec<Option<String>>>| {
            list.as_ref().map(|types| {
                types
                    .iter()
                    .map(|t| match t {
                        None => NO_TYPE,
                        Some(t) => data.room_types.find(t).map_or(UNSEEN_TYPE, |id| id + 1),
                    })
                    .collect()
            })
        };
        let tagged = |list: &Option<Vec<String>>| {
            list.as_ref().map(|tags| {
                tags.iter()
                    .filter_map(|t| user.extras.as_ref()?.rooms_by_tag.get(t.as_str()))
                    .flatten()
                    .copied()
                    .collect()
            })
        };
        CompiledFilter {
            filters,
            room_types: types(&filters.room_types),
            not_room_types: types(&filters.not_room_types),
            spaces: filters.spaces.as_ref().map(|spaces| {
                spaces
                    .iter()
                    .filter_map(|s| data.room_slots.get(s))
                    .filter_map(|s| data.rooms.get(*s as usize))
                    .flat_map(|r| r.space_children.iter().copied())
                    .collect()
            }),
            tagged: tagged(&filters.tags),
            not_tagged: tagged(&filters.not_tags),
            name: filters.room_name_like.as_deref().map(NameNeedle::new),
        }
    }

    fn matches_attributes(&self, a: &Attributes) -> bool {
        let f = self.filters;
        f.is_dm.is_none_or(|want| a.is_dm == want)
            && f.is_encrypted
                .is_none_or(|want| a.has_known_state && a.is_encrypted == want)
            && f.is_invite
                .is_none_or(|want| (a.membership == Membership::Invite) == want)
            && (!f.filters_room_type() || a.has_known_state)
            && self
                .room_types
                .as_ref()
                .is_none_or(|types| types.contains(&a.room_type))
            && self
                .not_room_types
                .as_ref()
                .is_none_or(|types| !types.contains(&a.room_type))
    }

    /// Every filter, for a room whose attributes matched.
    fn matches_rest(
        &self,
        room: RoomSlot,
        data: &IndexData,
        user: &UserRecord,
        membership: Membership,
    ) -> bool {
        if self.spaces.as_ref().is_some_and(|s| !s.contains(&room))
            || self.tagged.as_ref().is_some_and(|t| !t.contains(&room))
            || self.not_tagged.as_ref().is_some_and(|t| t.contains(&room))
        {
            return false;
        }
        let Some(needle) = &self.name else {
            return true;
        };
        let joined = (membership == Membership::Join)
            .then(|| {
                data.rooms
                    .get(room as usize)
                    .and_then(|r| r.joined.as_ref())
            })
            .flatten();
        let name = match joined {
            Some(j) => j.room_name.as_deref(),
            None => data.record(user, room).and_then(|s| s.room_name.as_deref()),
        };
        name.is_some_and(|n| needle.matches(n))
    }

    /// The only rooms that can match, when spaces or tags narrow the list.
    fn candidates(&self) -> Option<Vec<RoomSlot>> {
        match (&self.spaces, &self.tagged) {
            (None, None) => None,
            (Some(set), None) | (None, Some(set)) => Some(set.iter().copied().collect()),
            (Some(a), Some(b)) => {
                let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
                Some(
                    small
                        .iter()
                        .filter(|r| large.contains(*r))
                        .copied()
                        .collect(),
                )
            }
        }
    }
}

/// A listed room of a list: its recency and slot.
type Listed = (i64, RoomSlot);

impl IndexData {
    fn run_list(
        &self,
        user: &UserRecord,
        list: &ListRequest,
        from_token: Option<&StreamToken>,
    ) -> ListAnswer {
        let filter = CompiledFilter::new(&list.filters, self, user);
        let need = needed_prefix(&list.ranges);
        let mut top: Vec<Listed> = Vec::new();
        let mut count: usize;
        let push_top = |top: &mut Vec<Listed>, item: Listed| -> bool {
            // Keep the first `need` rows and every row tied with the last kept.
            if top.len() < need || top.last().is_some_and(|last| last.0 == item.0) {
                top.push(item);
                true
            } else {
                false
            }
        };
        if let Some(candidates) = filter.candidates() {
            let mut matched: Vec<Listed> = Vec::new();
            for room in candidates {
                let Some(snapshot) = self.record(user, room) else {
                    continue;
                };
                let Some(room_record) = self.rooms.get(room as usize) else {
                    continue;
                };
                if !snapshot.listed {
                    continue;
                }
                let is_dm = user.is_dm(room);
                let (key, attributes) = Self::listing(room_record, snapshot, is_dm);
                if filter.matches_attributes(&attributes)
                    && filter.matches_rest(room, self, user, attributes.membership)
                {
                    matched.push((key, room));
                }
            }
            count = matched.len();
            top = matched;
        } else if list.filters.attributes_only() {
            count = user
                .attribute_counts
                .iter()
                .filter(|(a, _)| filter.matches_attributes(a))
                .map(|(_, n)| *n as usize)
                .sum();
            if need > 0 {
                for ((Reverse(key), room), attributes) in &user.order {
                    if !filter.matches_attributes(attributes) {
                        continue;
                    }
                    if !push_top(&mut top, (*key, *room)) {
                        break;
                    }
                }
            }
        } else {
            count = 0;
            for ((Reverse(key), room), attributes) in &user.order {
                if filter.matches_attributes(attributes)
                    && filter.matches_rest(*room, self, user, attributes.membership)
                {
                    count += 1;
                    push_top(&mut top, (*key, *room));
                }
            }
        }
        // §6.3/§6.4: self-leaves after `from_token` are newly left and listed.
        if let Some(token) = from_token {
            let start = (token.stream.saturating_add(1), 0);
            let self_leaves = user.extras.as_ref().map(|e| &e.self_leaves);
            for (position, room) in self_leaves.into_iter().flat_map(|s| s.range(start..)) {
                let Some(snapshot) = self.record(user, *room) else {
                    continue;
                };
                let instance = self
                    .instances
                    .get(snapshot.instance)
                    .map(String::as_str)
                    .unwrap_or_default();
                if *position <= token.position(instance) {
                    continue;
                }
                let Some(room_record) = self.rooms.get(*room as usize) else {
                    continue;
                };
                let (_, attributes) = Self::listing(room_record, snapshot, user.is_dm(*room));
                if filter.matches_attributes(&attributes)
                    && filter.matches_rest(*room, self, user, attributes.membership)
                {
                    count += 1;
                    top.push((*position, *room));
                }
            }
        }
        top.sort_unstable_by(|a, b| {
            let room_id = |slot: RoomSlot| self.rooms.get(slot as usize).map(|r| &r.room_id);
            (Reverse(a.0), room_id(a.1)).cmp(&(Reverse(b.0), room_id(b.1)))
        });
        top.truncate(need.min(count));
        let ranges = answer_ranges(&list.ranges, count, &top, |(_, room)| {
            self.entry(user, *room)
        });
        ListAnswer { count, ranges }
    }

    /// The answer's entry of a listed room (listed rooms always have both records).
    fn entry(&self, user: &UserRecord, room: RoomSlot) -> Option<RoomListEntry> {
        let room_record = self.rooms.get(room as usize);
        let snapshot = self.record(user, room);
        match (room_record, snapshot) {
            (Some(room_record), Some(snapshot)) => {
                let joined = (snapshot.membership == Membership::Join)
                    .then_some(room_record.joined.as_ref())
                    .flatten();
                let room_type = match joined {
                    Some(j) if j.room_type != NO_TYPE => j.room_type,
                    _ => snapshot.room_type,
                };
                Some(RoomListEntry {
                    room_id: room_record.room_id.clone(),
                    membership: snapshot.membership,
                    sender: self
                        .senders
                        .get(snapshot.sender)
                        .cloned()
                        .unwrap_or_else(|| user.user_id.clone()),
                    membership_event_id: snapshot.event_id.clone(),
                    event_stream_ordering: snapshot.position,
                    event_instance_name: self
                        .instances
                        .get(snapshot.instance)
                        .cloned()
                        .unwrap_or_default(),
                    bump_stamp: joined
                        .and_then(|j| j.bump_stamp)
                        .unwrap_or(snapshot.position)
                        .max(0),
                    room_type: self.type_name(room_type),
                    room_name: unboxed(joined.map_or(&snapshot.room_name, |j| &j.room_name)),
                    is_encrypted: joined.map_or(snapshot.is_encrypted, |j| j.is_encrypted),
                    tombstone_successor_room_id: unboxed(
                        joined.map_or(&snapshot.tombstone, |j| &j.tombstone),
                    ),
                    has_known_state: snapshot.has_known_state,
                })
            }
            _ => {
                tracing::error!(user_id = %user.user_id, room, "listed room without its records");
                None
            }
        }
    }
}

impl ReadIndex {
    fn read(&self) -> RwLockReadGuard<'_, IndexData> {
        self.data.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, IndexData> {
        self.data.write().unwrap_or_else(|e| e.into_inner())
    }

    /// An index holding the rows loaded at start-up.
    pub fn from_rows(joined: Vec<JoinedRoomRow>, snapshots: Vec<MembershipSnapshot>) -> Self {
        let index = ReadIndex::default();
        {
            let mut data = index.write();
            for row in &joined {
                data.upsert_joined(row);
            }
            drop(joined);
            for snapshot in &snapshots {
                data.upsert_snapshot(snapshot);
            }
        }
        index
    }

    /// Makes committed changes visible, in order.
    pub fn publish(&self, changes: &[RowChange]) {
        let mut data = self.write();
        for change in changes {
            data.apply(change);
        }
    }

    pub fn joined_room(&self, room_id: &RoomId) -> Option<JoinedRoomRow> {
        let data = self.read();
        let slot = data.room_slots.get(room_id)?;
        data.joined_row(data.rooms.get(*slot as usize)?)
    }

    pub fn snapshot(&self, user_id: &UserId, room_id: &RoomId) -> Option<MembershipSnapshot> {
        let data = self.read();
        let room = *data.room_slots.get(room_id)?;
        let user = data.users.get(*data.user_slots.get(user_id)? as usize)?;
        data.snapshot_row(user, room, data.record(user, room)?)
    }

    /// All of a user's snapshots, ordered by room ID.
    pub fn snapshots_of_user(&self, user_id: &UserId) -> Vec<MembershipSnapshot> {
        let data = self.read();
        let Some(user) = data
            .user_slots
            .get(user_id)
            .and_then(|u| data.users.get(*u as usize))
        else {
            return Vec::new();
        };
        let mut rows: Vec<MembershipSnapshot> = user
            .snapshots
            .iter()
            .filter_map(|(room, i)| {
                let record = data.records.get(*i as usize)?;
                data.snapshot_row(user, *room, record)
            })
            .collect();
        rows.sort_by(|a, b| a.room_id.cmp(&b.room_id));
        rows
    }

    pub fn joined_room_count(&self) -> usize {
        self.read().joined_room_count
    }

    pub fn snapshot_count(&self) -> u64 {
        self.read().snapshot_count
    }

    /// Computes room lists for a user, from one consistent view of the index.
    pub fn room_lists<'a, T>(
        &self,
        user_id: &UserId,
        lists: impl IntoIterator<Item = (T, &'a ListRequest)>,
        from_token: Option<&StreamToken>,
    ) -> Vec<(T, ListAnswer)> {
        let data = self.read();
        let user = data
            .user_slots
            .get(user_id)
            .and_then(|u| data.users.get(*u as usize));
        lists
            .into_iter()
            .map(|(name, list)| {
                let answer = match user {
                    Some(user) => data.run_list(user, list, from_token),
                    None => ListAnswer {
                        count: 0,
                        ranges: answer_ranges(&list.ranges, 0, &[] as &[()], |_| None),
                    },
                };
                (name, answer)
            })
            .collect()
    }

    /// One list, for in-process callers (benchmarks, tests).
    pub fn room_list(
        &self,
        user_id: &UserId,
        list: &ListRequest,
        from_token: Option<&StreamToken>,
    ) -> ListAnswer {
        self.room_lists(user_id, [((), list)], from_token)
            .pop()
            .map(|(_, answer)| answer)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
