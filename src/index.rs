//! The read index: what queries read, concurrently, without passing through
//! any actor mailbox.
//!
//! Owns: the published (committed) joined-room rows and membership
//! snapshots, organised for reads. May not touch: the database, actors, the
//! rules. Only the supervisor's commit path calls [`ReadIndex::publish`], and
//! only with changes Postgres has already committed, so readers never see a
//! row that is not durable.

use std::collections::BTreeMap;

use dashmap::DashMap;

use crate::model::{JoinedRoomRow, MembershipSnapshot, RoomId, RowChange, UserId};
use std::sync::atomic::{AtomicU64, Ordering};

/// Committed rows, organised for reads.
#[derive(Debug, Default)]
pub struct ReadIndex {
    joined_rooms: DashMap<RoomId, JoinedRoomRow>,
    /// Each local user's snapshots, by room.
    snapshots_by_user: DashMap<UserId, BTreeMap<RoomId, MembershipSnapshot>>,
    snapshot_count: AtomicU64,
}

impl ReadIndex {
    /// An index holding the rows loaded at start-up.
    pub fn from_rows(joined: Vec<JoinedRoomRow>, snapshots: Vec<MembershipSnapshot>) -> Self {
        let index = ReadIndex::default();
        for row in joined {
            index.joined_rooms.insert(row.room_id.clone(), row);
        }
        for snapshot in snapshots {
            index.insert_snapshot(snapshot);
        }
        index
    }

    fn insert_snapshot(&self, snapshot: MembershipSnapshot) {
        let previous = self
            .snapshots_by_user
            .entry(snapshot.user_id.clone())
            .or_default()
            .insert(snapshot.room_id.clone(), snapshot);
        if previous.is_none() {
            self.snapshot_count.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn remove_snapshot(&self, room_id: &RoomId, user_id: &UserId) {
        let removed = self
            .snapshots_by_user
            .get_mut(user_id)
            .and_then(|mut rooms| rooms.remove(room_id));
        if removed.is_some() {
            self.snapshot_count.fetch_sub(1, Ordering::Relaxed);
        }
        self.snapshots_by_user
            .remove_if(user_id, |_, rooms| rooms.is_empty());
    }

    /// Makes committed changes visible, in order.
    pub fn publish(&self, changes: &[RowChange]) {
        for change in changes {
            match change {
                RowChange::UpsertJoinedRoom(row) => {
                    self.joined_rooms.insert(row.room_id.clone(), row.clone());
                }
                RowChange::DeleteJoinedRoom(room_id) => {
                    self.joined_rooms.remove(room_id);
                }
                RowChange::UpsertSnapshot(snapshot) => self.insert_snapshot(snapshot.clone()),
                RowChange::DeleteSnapshot(room_id, user_id) => {
                    self.remove_snapshot(room_id, user_id)
                }
                RowChange::Dequeue(_) => {}
            }
        }
    }

    pub fn joined_room(&self, room_id: &RoomId) -> Option<JoinedRoomRow> {
        self.joined_rooms.get(room_id).map(|r| r.clone())
    }

    pub fn snapshot(&self, user_id: &UserId, room_id: &RoomId) -> Option<MembershipSnapshot> {
        self.snapshots_by_user
            .get(user_id)
            .and_then(|rooms| rooms.get(room_id).cloned())
    }

    /// All of a user's snapshots, ordered by room ID.
    pub fn snapshots_of_user(&self, user_id: &UserId) -> Vec<MembershipSnapshot> {
        self.snapshots_by_user
            .get(user_id)
            .map(|rooms| rooms.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn joined_room_count(&self) -> usize {
        self.joined_rooms.len()
    }

    pub fn snapshot_count(&self) -> u64 {
        self.snapshot_count.load(Ordering::Relaxed)
    }
}
