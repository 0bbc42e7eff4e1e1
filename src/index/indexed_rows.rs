//! The read index's contents ([`IndexedRows`]: the committed rows as
//! records, the slots and interners, the per-user listings built on them)
//! and its write side: applying published
//! changes — upserts and deletes of joined rows and snapshots, space
//! children and account data — each keeping the per-user listings (ordered
//! map, attribute counts, self-leaves, DMs, tags, copies of listed names)
//! in step.
//!
//! Owns: the data's invariants and the rule that every change to a listing
//! key's inputs unlists the room first and lists it again after. May not
//! touch: locks (the caller holds the write lock), the database, actors; it
//! reads rows Postgres has already committed and never refuses one. Rows
//! back out of the data are `rows_out.rs`'s; room lists read it through
//! `query.rs`.

use std::cmp::Reverse;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use super::event_id::StoredEventId;
use super::names::{self, NAME_COPY_MIN_ROOMS};
use super::records::{
    listing, shared, shared_like, shown_name, Interner, JoinedRecord, RoomRecord, SnapshotRecord,
    UserRecord,
};
use super::room_data::{HeldStateRecord, HeldTypeNames};
use super::slots::{RoomSlot, TypeId, UserSlot, NO_TYPE, SELF_SENT};
use super::timeline::LatestEventsRecord;
use crate::model::{
    AccountData, JoinedRoomRow, Membership, RoomId, RowChange, SnapshotView, UserId,
    DIRECT_ACCOUNT_DATA, TAG_ACCOUNT_DATA,
};
use crate::room_list::{direct_rooms, tag_names};
use crate::rules::{CurrentStateIds, LatestEvents};

/// The committed rows, as compact records with the per-user listings that
/// room-list reads walk (see the module documentation of `index`).
#[derive(Debug)]
pub(super) struct IndexedRows {
    pub(super) room_slots: FxHashMap<RoomId, RoomSlot>,
    pub(super) rooms: Vec<RoomRecord>,
    pub(super) user_slots: FxHashMap<UserId, UserSlot>,
    pub(super) users: Vec<UserRecord>,
    /// Every snapshot, densely (freed slots are reused).
    pub(super) records: Vec<SnapshotRecord>,
    pub(super) free_records: Vec<u32>,
    pub(super) senders: Interner<UserId>,
    pub(super) instances: Interner<String>,
    /// Room types ([`TypeId`] `n` is entry `n - 1`).
    pub(super) room_types: Interner<String>,
    pub(super) joined_room_count: usize,
    pub(super) snapshot_count: u64,
    /// Users with at least this many listed rooms get a copy of their
    /// listed names ([`NAME_COPY_MIN_ROOMS`]; tests change it).
    pub(super) name_copy_min_rooms: usize,
    /// The held state types seen, numbered for [`HeldStateRecord`].
    pub(super) held_types: HeldTypeNames,
    /// The rooms' held current state (the rooms' data), for the rooms
    /// holding some: apart from [`RoomRecord`], which the room lists read
    /// for every candidate room and which is kept as small as they need.
    pub(super) held_states: FxHashMap<RoomSlot, HeldStateRecord>,
    /// The heap bytes of the records in `held_states`.
    pub(super) held_state_bytes: usize,
    /// The rooms' latest events (the rooms' data), for the rooms holding
    /// some: apart from [`RoomRecord`] like `held_states`.
    pub(super) latest_events: FxHashMap<RoomSlot, LatestEventsRecord>,
    /// The heap bytes of the records in `latest_events`.
    pub(super) latest_events_bytes: usize,
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

/// A snapshot's room, user and sender resolved to the index's ids, and its
/// room name and tombstone.
struct Slots {
    room: RoomSlot,
    user: UserSlot,
    sender: u32,
    room_name: Option<Arc<str>>,
    tombstone: Option<Arc<str>>,
}

impl IndexedRows {
    /// An empty index.
    pub(super) fn new() -> Self {
        IndexedRows {
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
            held_types: HeldTypeNames::default(),
            held_states: FxHashMap::default(),
            held_state_bytes: 0,
            latest_events: FxHashMap::default(),
            latest_events_bytes: 0,
            name_copy_min_rooms: NAME_COPY_MIN_ROOMS,
        }
    }

    /// The slot of a room ID (checked by the caller: a model type or a
    /// checked view), made when new.
    pub(super) fn room_slot(&mut self, room_id: &str) -> RoomSlot {
        if let Some(slot) = self.room_slots.get(room_id) {
            return *slot;
        }
        let room_id = RoomId::from_checked(room_id);
        let slot = self.rooms.len() as RoomSlot;
        self.rooms.push(RoomRecord {
            room_id: room_id.clone(),
            joined: None,
            joined_members: Vec::new(),
            space_children: Box::new([]),
        });
        self.room_slots.insert(room_id, slot);
        slot
    }

    /// The slot of a user ID (checked by the caller), made when new.
    pub(super) fn user_slot(&mut self, user_id: &str) -> UserSlot {
        if let Some(slot) = self.user_slots.get(user_id) {
            return *slot;
        }
        let user_id = UserId::from_checked(user_id);
        let slot = self.users.len() as UserSlot;
        self.users.push(UserRecord::new(user_id.clone()));
        self.user_slots.insert(user_id, slot);
        slot
    }

    pub(super) fn type_id(&mut self, room_type: Option<&str>) -> TypeId {
        match room_type {
            None => NO_TYPE,
            Some(t) => self.room_types.intern_str(t, str::to_owned) + 1,
        }
    }

    /// The snapshot record of a user's room.
    pub(super) fn record(&self, user: &UserRecord, room: RoomSlot) -> Option<&SnapshotRecord> {
        user.snapshots
            .get(&room)
            .and_then(|i| self.records.get(*i as usize))
    }

    /// Takes a user's room out of the listing structures.
    fn unlist(&mut self, user: UserSlot, room: RoomSlot) {
        let IndexedRows {
            users,
            rooms,
            records,
            ..
        } = self;
        let Some((record, room_record, snapshot)) = locate(users, rooms, records, user, room)
        else {
            return;
        };
        names::unlisted(&mut record.listed_names, room);
        if std::mem::take(&mut snapshot.listed) {
            let is_dm = record.is_dm(room);
            let (key, _) = listing(room_record, snapshot, is_dm);
            if let Some(attributes) = record.order.remove(&(Reverse(key), room)) {
                record.count(attributes, -1);
            }
        }
        if let Some(extras) = record.extras.as_mut() {
            extras.self_leaves.remove(&(snapshot.position, room));
            extras.non_joined.remove(&room);
            extras.forgotten.remove(&room);
        }
    }

    /// Puts a user's room into the listing structures per its snapshot.
    fn list(&mut self, user: UserSlot, room: RoomSlot) {
        let IndexedRows {
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
            record.extras_mut().forgotten.insert(room);
            return;
        }
        let self_sent = snapshot.sender == SELF_SENT
            || senders
                .get(snapshot.sender)
                .is_some_and(|s| *s == record.user_id);
        if snapshot.membership == Membership::Leave && self_sent {
            let position = snapshot.position;
            record.extras_mut().self_leaves.insert((position, room));
            return;
        }
        let is_dm = record.is_dm(room);
        let (key, attributes) = listing(room_record, snapshot, is_dm);
        let name = shown_name(room_record, snapshot);
        names::listed(&mut record.listed_names, key, room, attributes, name);
        record.order.insert((Reverse(key), room), attributes);
        record.count(attributes, 1);
        if snapshot.membership != Membership::Join {
            record.extras_mut().non_joined.insert(room);
        }
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

    pub(super) fn upsert_joined(&mut self, row: &JoinedRoomRow) {
        let room = self.room_slot(row.room_id.as_str());
        let metadata = &row.metadata;
        let record = JoinedRecord {
            event_stream_ordering: row.event_stream_ordering,
            bump_stamp: row.bump_stamp,
            room_type: self.type_id(metadata.room_type.as_deref()),
            is_encrypted: metadata.is_encrypted,
            room_name: shared(metadata.room_name.as_deref()),
            tombstone: shared(metadata.tombstone_successor_room_id.as_deref()),
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

    /// Upserts a snapshot whose identifiers are checked (a model row or a
    /// checked view).
    pub(super) fn upsert_snapshot(&mut self, snapshot: &SnapshotView<'_>) {
        let slots = self.snapshot_slots(snapshot);
        self.upsert_snapshot_at(slots, snapshot);
    }

    /// Start-up loading: upserts a chunk of snapshots, their slots looked up
    /// first in one tight pass (independent hash-table lookups, which the
    /// processor overlaps instead of waiting for each cache miss in turn).
    pub(super) fn upsert_loaded_snapshots(&mut self, snapshots: &[SnapshotView<'_>]) {
        let slots: Vec<Slots> = snapshots.iter().map(|s| self.snapshot_slots(s)).collect();
        for (snapshot, slots) in snapshots.iter().zip(slots) {
            self.upsert_snapshot_at(slots, snapshot);
        }
    }

    /// A snapshot's ids, and its texts shared with the joined row's when
    /// equal (reading the joined row here, in the tight pass, too).
    fn snapshot_slots(&mut self, snapshot: &SnapshotView<'_>) -> Slots {
        let room = self.room_slot(snapshot.room_id);
        let joined = self
            .rooms
            .get(room as usize)
            .and_then(|r| r.joined.as_ref());
        Slots {
            room_name: shared_like(
                snapshot.room_name,
                joined.and_then(|j| j.room_name.as_ref()),
            ),
            tombstone: shared_like(
                snapshot.tombstone_successor_room_id,
                joined.and_then(|j| j.tombstone.as_ref()),
            ),
            room,
            user: self.user_slot(snapshot.user_id),
            sender: if snapshot.sender == snapshot.user_id {
                SELF_SENT
            } else {
                self.senders
                    .intern_str(snapshot.sender, UserId::from_checked)
            },
        }
    }

    fn upsert_snapshot_at(&mut self, slots: Slots, snapshot: &SnapshotView<'_>) {
        let Slots {
            room,
            user,
            sender,
            room_name,
            tombstone,
        } = slots;
        self.unlist(user, room);
        let record = SnapshotRecord {
            event_id: StoredEventId::new(snapshot.membership_event_id),
            position: snapshot.event_stream_ordering,
            sender,
            instance: self
                .instances
                .intern_str(snapshot.event_instance_name, str::to_owned),
            room_type: self.type_id(snapshot.room_type),
            membership: snapshot.membership,
            forgotten: snapshot.forgotten,
            has_known_state: snapshot.has_known_state,
            is_encrypted: snapshot.is_encrypted,
            room_name,
            tombstone,
            listed: false,
        };
        let joins = record.membership == Membership::Join;
        let (instance, position) = (record.instance, record.position);
        if let Some(user_record) = self.users.get_mut(user as usize) {
            user_record.mark_membership(instance, position);
        }
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
        let space = self.room_slot(space.as_str());
        let slots: Box<[RoomSlot]> = children
            .iter()
            .map(|c| self.room_slot(c.as_str()))
            .collect();
        if let Some(record) = self.rooms.get_mut(space as usize) {
            record.space_children = slots;
        }
    }

    fn set_held_state(&mut self, room: &RoomId, state: &CurrentStateIds) {
        let record = HeldStateRecord::new(state, &mut self.held_types);
        if let Some(slot) = self.slot_for_record(room, record.is_some()) {
            let bytes = &mut self.held_state_bytes;
            replace_record(&mut self.held_states, bytes, slot, record, |r| {
                r.heap_bytes()
            });
        }
    }

    fn set_latest_events(&mut self, room: &RoomId, window: &LatestEvents) {
        let record = LatestEventsRecord::new(window, &mut self.instances);
        if let Some(slot) = self.slot_for_record(room, record.is_some()) {
            let bytes = &mut self.latest_events_bytes;
            replace_record(&mut self.latest_events, bytes, slot, record, |r| {
                r.heap_bytes()
            });
        }
    }

    /// The room's slot for a record of the rooms' data: none when there is
    /// no record to keep for a room the index does not know.
    fn slot_for_record(&mut self, room: &RoomId, has_record: bool) -> Option<RoomSlot> {
        if !has_record && !self.room_slots.contains_key(room) {
            return None;
        }
        Some(self.room_slot(room.as_str()))
    }

    fn set_account_data(&mut self, data: &AccountData) {
        let user = self.user_slot(data.user_id.as_str());
        match (&data.room_id, data.data_type.as_str()) {
            (None, DIRECT_ACCOUNT_DATA) => {
                let rooms: FxHashSet<RoomSlot> = direct_rooms(&data.content)
                    .iter()
                    .map(|r| self.room_slot(r.as_str()))
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
                let room = self.room_slot(room_id.as_str());
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

    pub(super) fn apply(&mut self, change: &RowChange) {
        match change {
            RowChange::UpsertJoinedRoom(row) => self.upsert_joined(row),
            RowChange::DeleteJoinedRoom(room_id) => self.delete_joined(room_id),
            RowChange::UpsertSnapshot(snapshot) => self.upsert_snapshot(&snapshot.into()),
            RowChange::DeleteSnapshot(room_id, user_id) => self.delete_snapshot(room_id, user_id),
            RowChange::Dequeue(_) => {}
            RowChange::SpaceChildren {
                space_room_id,
                children,
            } => self.set_space_children(space_room_id, children),
            RowChange::AccountData(data) => self.set_account_data(data),
            RowChange::CurrentState { room_id, state } => self.set_held_state(room_id, state),
            RowChange::LatestEvents { room_id, events } => self.set_latest_events(room_id, events),
        }
    }
}

/// Puts a room's record into one of the index's per-room maps of the
/// rooms' data (`None`: takes it out), keeping the count of their heap bytes.
fn replace_record<R>(
    map: &mut FxHashMap<RoomSlot, R>,
    heap_bytes: &mut usize,
    slot: RoomSlot,
    record: Option<R>,
    bytes_of: impl Fn(&R) -> usize,
) {
    let old = match record {
        Some(new) => {
            *heap_bytes += bytes_of(&new);
            map.insert(slot, new)
        }
        None => map.remove(&slot),
    };
    if let Some(old) = old {
        *heap_bytes -= bytes_of(&old);
    }
}
