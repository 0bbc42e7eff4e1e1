//! The read index: what queries read, concurrently, without passing through
//! any actor mailbox and without Postgres.
//!
//! Owns: the published (committed) joined-room rows, membership snapshots,
//! space children and the account data room lists read, in a layout built
//! for room-list queries, and the fast path of those queries. May not touch:
//! the database, actors, the rules. Only the supervisor's write path calls
//! [`ReadIndex::publish`] — it takes the [`Publication`] that only the
//! publish gate hands out — and only with changes Postgres has already
//! committed, so readers never see a row that is not durable.
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
//! publications; reads go through the publish gate (`crate::reads`), which
//! makes the rows and the token one snapshot. Why one lock and not a
//! concurrent map: see `docs/architecture.md`.
//!
//! Files, each depending only on those above it:
//! * `slots.rs`: the dense ids and a listed room's attributes;
//!   `event_id.rs`: membership event IDs as stored;
//! * `names.rs`: the per-user copy of listed names that `room_name_like`
//!   reads; `room_data.rs`: a room's held current state, compact (the
//!   rooms' data);
//! * `records.rs`: the compact records of rooms, users and snapshots;
//! * `indexed_rows.rs`: `IndexedRows`, the committed rows as records with
//!   the per-user listings, and its write side (applying published
//!   changes); `rows_out.rs`: its read side (rows back out, list entries);
//! * `query.rs`: `ListQuery`, one room-list request
//!   over the data; `filter.rs`: a list's compiled filters; `walks.rs`: the
//!   walks that find a list's rooms; `lists.rs`: running a request's lists;
//! * this file: the lock and the methods callers use, each taking the lock
//!   once; `tests.rs`: the unit tests, which hold the fast path to the scan
//!   of `crate::room_list::scan`.

mod event_id;
mod filter;
mod indexed_rows;
mod lists;
mod names;
mod query;
mod records;
mod room_data;
mod rows_out;
mod slots;
mod timeline;
mod walks;

pub(crate) use room_data::HeldKey;

use std::collections::BTreeSet;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use indexed_rows::IndexedRows;
use query::ListQuery;
use slots::RoomSlot;

use roomcache_core::{Publication, StreamToken};

use crate::model::{
    JoinedRoomRow, LatestEvents, MembershipSnapshot, RoomId, RowChange, SnapshotView, UserId,
};
use crate::room_list::scan::UserAccountData;
use crate::room_list::{ListAnswer, ListOptions, ListRequest, RoomLists};

/// Committed rows, organised for reads.
#[derive(Debug)]
pub struct ReadIndex {
    data: RwLock<IndexedRows>,
}

impl Default for ReadIndex {
    fn default() -> Self {
        ReadIndex {
            data: RwLock::new(IndexedRows::new()),
        }
    }
}

impl ReadIndex {
    fn read(&self) -> RwLockReadGuard<'_, IndexedRows> {
        self.data.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, IndexedRows> {
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
                data.upsert_snapshot(&snapshot.into());
            }
        }
        index
    }

    /// Makes snapshots loaded at start-up (committed, identifiers checked)
    /// visible, inside a publication.
    pub(crate) fn publish_loaded_snapshots(
        &self,
        snapshots: &[SnapshotView<'_>],
        _: &Publication<'_>,
    ) {
        self.write().upsert_loaded_snapshots(snapshots);
    }

    /// Makes committed changes visible, in order, inside a publication.
    pub fn publish(&self, changes: &[RowChange], _: &Publication<'_>) {
        let mut data = self.write();
        for change in changes {
            data.apply(change);
        }
    }

    /// The held current state of each of `rooms`, in their order: its
    /// keys (none for a room holding none), or `None` for a room that went
    /// over `max_room_state_keys`.
    pub(crate) fn held_states(&self, rooms: &[RoomId]) -> Vec<Option<Vec<HeldKey>>> {
        let data = self.read();
        rooms
            .iter()
            .map(|room| {
                let record = data
                    .room_slots
                    .get(room)
                    .and_then(|slot| data.held_states.get(slot));
                match record {
                    None => Some(Vec::new()),
                    Some(record) => record.keys(&data.held_types),
                }
            })
            .collect()
    }

    /// The latest events of each of `rooms`, in their order (an empty,
    /// complete window for a room holding none).
    pub(crate) fn latest_events(&self, rooms: &[RoomId]) -> Vec<LatestEvents> {
        let data = self.read();
        rooms
            .iter()
            .map(|room| {
                data.room_slots
                    .get(room)
                    .and_then(|slot| data.latest_events.get(slot))
                    .map_or_else(LatestEvents::default, |record| {
                        record.window(&data.instances)
                    })
            })
            .collect()
    }

    pub(crate) fn joined_room(&self, room_id: &RoomId) -> Option<JoinedRoomRow> {
        let data = self.read();
        let slot = data.room_slots.get(room_id)?;
        data.joined_row(data.rooms.get(*slot as usize)?)
    }

    pub(crate) fn snapshot(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
    ) -> Option<MembershipSnapshot> {
        let data = self.read();
        let room = *data.room_slots.get(room_id)?;
        let user = data.user_record(user_id)?;
        data.snapshot_row(user, room, data.record(user, room)?)
    }

    /// A page of a user's snapshots, ordered by room ID: at most `limit`
    /// of those after `after`, and whether more follow. Only the page's
    /// rows are built.
    pub(crate) fn snapshots_of_user_page(
        &self,
        user_id: &UserId,
        after: Option<&RoomId>,
        limit: usize,
    ) -> (Vec<MembershipSnapshot>, bool) {
        let data = self.read();
        let Some(user) = data.user_record(user_id) else {
            return (Vec::new(), false);
        };
        let mut rooms: Vec<(&RoomId, RoomSlot, u32)> = user
            .snapshots
            .iter()
            .filter_map(|(room, i)| Some((&data.rooms.get(*room as usize)?.room_id, *room, *i)))
            .filter(|(room_id, _, _)| after.is_none_or(|a| *room_id > a))
            .collect();
        let more = rooms.len() > limit;
        if more {
            rooms.select_nth_unstable_by(limit, |a, b| a.0.cmp(b.0));
            rooms.truncate(limit);
        }
        rooms.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let rows = rooms
            .into_iter()
            .filter_map(|(_, room, i)| {
                let record = data.records.get(i as usize)?;
                data.snapshot_row(user, room, record)
            })
            .collect();
        (rows, more)
    }

    /// All of a user's snapshots, ordered by room ID.
    pub(crate) fn snapshots_of_user(&self, user_id: &UserId) -> Vec<MembershipSnapshot> {
        let data = self.read();
        let Some(user) = data.user_record(user_id) else {
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

    pub(crate) fn joined_room_count(&self) -> usize {
        self.read().joined_room_count
    }

    pub(crate) fn snapshot_count(&self) -> u64 {
        self.read().snapshot_count
    }

    /// The rooms' data in memory: rooms holding some state, and the bytes
    /// their records take (records and their heap, and the map's slots
    /// holding them).
    pub(crate) fn held_state_memory(&self) -> (usize, usize) {
        let data = self.read();
        let entry = std::mem::size_of::<(RoomSlot, room_data::HeldStateRecord)>() + 1;
        let slots = data.held_states.capacity() * entry;
        (data.held_states.len(), data.held_state_bytes + slots)
    }

    /// The latest events in memory: rooms holding some, and the bytes
    /// their records take (records and their heap, and the map's slots
    /// holding them).
    pub(crate) fn latest_events_memory(&self) -> (usize, usize) {
        let data = self.read();
        let entry = std::mem::size_of::<(RoomSlot, timeline::LatestEventsRecord)>() + 1;
        let slots = data.latest_events.capacity() * entry;
        (data.latest_events.len(), data.latest_events_bytes + slots)
    }

    /// Computes room lists for a user, from one consistent view of the index.
    pub(crate) fn room_lists<'l>(
        &self,
        user_id: &UserId,
        lists: impl IntoIterator<Item = (&'l String, &'l ListRequest)>,
        options: ListOptions<'_>,
    ) -> RoomLists {
        let data = self.read();
        match data.user_record(user_id) {
            Some(user) => ListQuery::new(&data, user, options).run_lists(lists),
            None => RoomLists::empty(lists, options),
        }
    }

    /// Which of `rooms` concern the user: whether one is among `spaces`,
    /// and those where the user has a membership snapshot (joined, and
    /// not).
    pub(crate) fn touched(
        &self,
        user_id: &UserId,
        rooms: &[RoomId],
        spaces: &BTreeSet<&RoomId>,
    ) -> Touched {
        let data = self.read();
        let mut touched = Touched {
            space: rooms.iter().any(|room| spaces.contains(room)),
            ..Touched::default()
        };
        let Some(user) = data.user_record(user_id) else {
            return touched;
        };
        for room in rooms {
            let Some(snapshot) = data
                .room_slots
                .get(room)
                .and_then(|slot| data.record(user, *slot))
            else {
                continue;
            };
            if snapshot.membership == crate::model::Membership::Join {
                touched.joined.push(room.clone());
            } else {
                touched.other = true;
            }
        }
        touched
    }

    /// A user's DM rooms and room tags.
    pub(crate) fn account_of(&self, user_id: &UserId) -> UserAccountData {
        self.read().account_of(user_id)
    }

    /// The children of the given spaces (spaces without children are absent).
    pub(crate) fn space_children_of(
        &self,
        spaces: &BTreeSet<RoomId>,
    ) -> Vec<(RoomId, Vec<RoomId>)> {
        self.read().space_children_of(spaces)
    }

    /// Gives users with at least `rooms` listed rooms a copy of their
    /// listed names (tests try both paths).
    #[cfg(test)]
    fn copy_names_from(&self, rooms: usize) {
        self.write().name_copy_min_rooms = rooms;
    }

    /// Builds every user's missing copy of listed names, then checks that
    /// each copy holds exactly its user's listing.
    #[cfg(test)]
    fn check_listed_names(&self) -> Result<(), String> {
        query::check_listed_names(&self.read())
    }

    /// One list, for in-process callers (benchmarks, tests).
    pub fn room_list(
        &self,
        user_id: &UserId,
        list: &ListRequest,
        from_token: Option<&StreamToken>,
    ) -> ListAnswer {
        let name = String::new();
        self.room_lists(user_id, [(&name, list)], ListOptions::after(from_token))
            .lists
            .pop_first()
            .map(|(_, answer)| answer)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;

/// What [`ReadIndex::touched`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Touched {
    /// One of the rooms is a space the caller named.
    pub(crate) space: bool,
    /// The rooms where the user's membership is a join.
    pub(crate) joined: Vec<RoomId>,
    /// One of the rooms has another membership of the user.
    pub(crate) other: bool,
}
