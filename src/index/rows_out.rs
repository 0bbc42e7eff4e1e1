//! Reading the read index's contents: rows back out of the compact records,
//! a user's account data and the space children the reads need, and the
//! parts of a room-list entry (the name a listed room shows, the entry
//! itself).
//!
//! Owns: the read side of [`IndexedRows`] (its write side is
//! `indexed_rows.rs`'s). May not touch: locks (the caller holds the read lock), the database,
//! actors; it never changes the data.

use std::collections::BTreeSet;

use rustc_hash::FxHashSet;

use super::indexed_rows::IndexedRows;
use super::records::{unboxed, RoomRecord, SnapshotRecord, UserRecord};
use super::slots::{RoomSlot, TypeId, NO_TYPE, SELF_SENT};
use crate::model::{JoinedRoomRow, Membership, MembershipSnapshot, RoomId, RoomMetadata, UserId};
use crate::room_list::scan::UserAccountData;
use crate::room_list::RoomListEntry;

impl IndexedRows {
    fn room_id_of(&self, slot: RoomSlot) -> Option<RoomId> {
        self.rooms.get(slot as usize).map(|r| r.room_id.clone())
    }

    /// A user's record, if the index has one.
    pub(super) fn user_record(&self, user_id: &UserId) -> Option<&UserRecord> {
        let slot = *self.user_slots.get(user_id)?;
        self.users.get(slot as usize)
    }

    /// A user's DM rooms and room tags, as plain data.
    pub(super) fn account_of(&self, user_id: &UserId) -> UserAccountData {
        let extras = self
            .user_record(user_id)
            .and_then(|user| user.extras.as_ref());
        let Some(extras) = extras else {
            return UserAccountData::default();
        };
        UserAccountData {
            dm: extras
                .dm_rooms
                .iter()
                .filter_map(|slot| self.room_id_of(*slot))
                .collect(),
            tags: extras
                .tags
                .iter()
                .filter_map(|(slot, tags)| {
                    let names = tags.iter().map(|t| t.to_string()).collect();
                    Some((self.room_id_of(*slot)?, names))
                })
                .collect(),
        }
    }

    /// The children of the given spaces (spaces without children are absent).
    pub(super) fn space_children_of(
        &self,
        spaces: &BTreeSet<RoomId>,
    ) -> Vec<(RoomId, Vec<RoomId>)> {
        spaces
            .iter()
            .filter_map(|space| {
                let record = self.rooms.get(*self.room_slots.get(space)? as usize)?;
                let children: Vec<RoomId> = record
                    .space_children
                    .iter()
                    .filter_map(|slot| self.room_id_of(*slot))
                    .collect();
                (!children.is_empty()).then(|| (space.clone(), children))
            })
            .collect()
    }

    fn sender(&self, user: &UserRecord, snapshot: &SnapshotRecord) -> Option<UserId> {
        if snapshot.sender == SELF_SENT {
            return Some(user.user_id.clone());
        }
        self.senders.get(snapshot.sender).cloned()
    }

    /// Whether the user sent their own membership event (a self-leave when
    /// it is a leave).
    pub(super) fn is_self_sent(&self, user: &UserRecord, snapshot: &SnapshotRecord) -> bool {
        snapshot.sender == SELF_SENT
            || self
                .senders
                .get(snapshot.sender)
                .is_some_and(|s| *s == user.user_id)
    }

    pub(super) fn joined_row(&self, room: &RoomRecord) -> Option<JoinedRoomRow> {
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

    pub(super) fn snapshot_row(
        &self,
        user: &UserRecord,
        room: RoomSlot,
        snapshot: &SnapshotRecord,
    ) -> Option<MembershipSnapshot> {
        Some(MembershipSnapshot {
            room_id: self.rooms.get(room as usize)?.room_id.clone(),
            user_id: user.user_id.clone(),
            sender: self.sender(user, snapshot)?,
            membership_event_id: snapshot.event_id.event_id(),
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

    fn type_name(&self, id: TypeId) -> Option<String> {
        id.checked_sub(1)
            .and_then(|id| self.room_types.get(id))
            .cloned()
    }

    /// The slots of those of `rooms` the index knows.
    pub(super) fn slots_of<'r>(
        &self,
        rooms: impl IntoIterator<Item = &'r RoomId>,
    ) -> FxHashSet<RoomSlot> {
        rooms
            .into_iter()
            .filter_map(|r| self.room_slots.get(r).copied())
            .collect()
    }

    /// A listed room's name as its list entry shows it (the joined row's
    /// for a join, the snapshot's otherwise).
    pub(super) fn name_of(
        &self,
        user: &UserRecord,
        room: RoomSlot,
        membership: Membership,
    ) -> Option<&str> {
        let joined = (membership == Membership::Join)
            .then(|| {
                self.rooms
                    .get(room as usize)
                    .and_then(|r| r.joined.as_ref())
            })
            .flatten();
        match joined {
            Some(j) => j.room_name.as_deref(),
            None => self.record(user, room).and_then(|s| s.room_name.as_deref()),
        }
    }

    /// The answer's entry of a user's room (listed rooms always have both records).
    pub(super) fn entry(&self, user: &UserRecord, room: RoomSlot) -> Option<RoomListEntry> {
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
                        .sender(user, snapshot)
                        .unwrap_or_else(|| user.user_id.clone()),
                    membership_event_id: snapshot.event_id.event_id(),
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
                    recency: joined.map_or(snapshot.position, |j| j.event_stream_ordering),
                })
            }
            _ => {
                tracing::error!(user_id = %user.user_id, room, "listed room without its records");
                None
            }
        }
    }
}
