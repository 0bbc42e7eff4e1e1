//! The read index's data layout: interned slots and values, the compact
//! records of rooms, users and snapshots, and the per-user listing
//! structures ([`IndexData`]), with the few derivations every part reads
//! (a room's recency key and filter attributes, a user's snapshot record).
//!
//! Owns: the shape of the data and its invariants as documented on each
//! field. May not touch: locks (the [`super::ReadIndex`] holds the one lock),
//! the database, actors; it neither applies changes ([`super::write`]) nor
//! answers queries ([`super::query`]).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hash;
use std::sync::{Arc, OnceLock};

use rustc_hash::{FxHashMap, FxHashSet};

use super::event_id::StoredEventId;
use super::names::{ListedNames, NAME_COPY_MIN_ROOMS};
use super::room_data::{HeldStateRecord, HeldTypeNames};
use crate::model::{Membership, RoomId, UserId};

/// A room's slot in the index.
pub(super) type RoomSlot = u32;
/// A local user's slot in the index.
pub(super) type UserSlot = u32;
/// An interned room type: 0 is "no type", `n > 0` the interner's `n - 1`.
pub(super) type TypeId = u32;
pub(super) const NO_TYPE: TypeId = 0;
/// A type id no room has (a filter value never interned).
pub(super) const UNSEEN_TYPE: TypeId = u32::MAX;

/// The sender id of a snapshot whose sender is its own user (most are:
/// joins, knocks, self-leaves), which then needs no interning.
pub(super) const SELF_SENT: u32 = u32::MAX;

/// Values interned to dense ids (never freed: room types, writer names and
/// senders are few and bounded by what was ever seen).
#[derive(Debug)]
pub(super) struct Interner<T> {
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

    pub(super) fn intern(&mut self, value: &T) -> u32 {
        if let Some(id) = self.ids.get(value) {
            return *id;
        }
        let id = self.values.len() as u32;
        self.values.push(value.clone());
        self.ids.insert(value.clone(), id);
        id
    }

    /// Interns a borrowed value, making the owned one only when new.
    pub(super) fn intern_str(&mut self, value: &str, make: impl FnOnce(&str) -> T) -> u32
    where
        T: std::borrow::Borrow<str>,
    {
        if let Some(id) = self.ids.get(value) {
            return *id;
        }
        self.intern(&make(value))
    }

    pub(super) fn find(&self, value: &T) -> Option<u32> {
        self.ids.get(value).copied()
    }

    pub(super) fn get(&self, id: u32) -> Option<&T> {
        self.values.get(id as usize)
    }
}

/// A joined-room row, compact.
#[derive(Debug, Clone)]
pub(super) struct JoinedRecord {
    pub(super) event_stream_ordering: i64,
    pub(super) bump_stamp: Option<i64>,
    pub(super) room_type: TypeId,
    pub(super) is_encrypted: bool,
    pub(super) room_name: Option<Arc<str>>,
    pub(super) tombstone: Option<Arc<str>>,
}

#[derive(Debug)]
pub(super) struct RoomRecord {
    pub(super) room_id: RoomId,
    pub(super) joined: Option<JoinedRecord>,
    /// Users whose snapshot here is a join (their recency follows the joined row).
    pub(super) joined_members: Vec<UserSlot>,
    /// The room's children as a space.
    pub(super) space_children: Box<[RoomSlot]>,
    /// The room's held current state (the rooms' data); `None`: none held.
    pub(super) held_state: Option<HeldStateRecord>,
}

/// A membership snapshot, compact.
#[derive(Debug, Clone)]
pub(super) struct SnapshotRecord {
    pub(super) event_id: StoredEventId,
    pub(super) position: i64,
    /// Interned in [`IndexData::senders`], or [`SELF_SENT`].
    pub(super) sender: u32,
    pub(super) instance: u32,
    pub(super) room_type: TypeId,
    pub(super) membership: Membership,
    pub(super) forgotten: bool,
    pub(super) has_known_state: bool,
    pub(super) is_encrypted: bool,
    /// Shared with the joined row's value when equal (most joined snapshots).
    pub(super) room_name: Option<Arc<str>>,
    pub(super) tombstone: Option<Arc<str>>,
    /// Listed under the key [`IndexData::listing`] computes (every change
    /// to its inputs unlists first, so the key can be recomputed).
    pub(super) listed: bool,
}

/// What attribute filters read of a listed room (also the key of the
/// per-user counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Attributes {
    pub(super) room_type: TypeId,
    pub(super) membership: Membership,
    pub(super) has_known_state: bool,
    pub(super) is_encrypted: bool,
    pub(super) is_dm: bool,
}

#[derive(Debug)]
pub(super) struct UserRecord {
    pub(super) user_id: UserId,
    /// The user's snapshots: room → index into [`IndexData::records`].
    pub(super) snapshots: FxHashMap<RoomSlot, u32>,
    /// Listed rooms (R1), newest first; ties by slot (re-sorted by room ID on read).
    pub(super) order: BTreeMap<(Reverse<i64>, RoomSlot), Attributes>,
    /// Listed rooms per attribute combination (few combinations: a vector).
    pub(super) attribute_counts: Vec<(Attributes, u32)>,
    /// The highest position of any of the user's membership snapshots ever
    /// stored, per writer (interned instance): a request's `at` is checked
    /// against these before any snapshot is looked at.
    pub(super) membership_marks: Vec<(u32, i64)>,
    /// What most users lack (self-leaves, DMs, tags), allocated on first use.
    pub(super) extras: Option<Box<UserExtras>>,
    /// The copy of the listing with its names that `room_name_like` reads,
    /// built on first use (`None` inside: too few rooms to copy, asked
    /// again after a room is listed) and kept in step by every change to
    /// the listing.
    pub(super) listed_names: OnceLock<Option<Box<ListedNames>>>,
}

#[derive(Debug, Default)]
pub(super) struct UserExtras {
    /// Self-leaves not forgotten, by position (newly-left candidates).
    pub(super) self_leaves: BTreeSet<(i64, RoomSlot)>,
    pub(super) dm_rooms: FxHashSet<RoomSlot>,
    pub(super) tags: FxHashMap<RoomSlot, Box<[Box<str>]>>,
    pub(super) rooms_by_tag: FxHashMap<Box<str>, FxHashSet<RoomSlot>>,
    /// Rooms whose snapshot is forgotten (read only when a caller says
    /// which rooms are forgotten).
    pub(super) forgotten: FxHashSet<RoomSlot>,
    /// Listed rooms whose membership is not a join (invites, knocks, bans,
    /// kicks): few, and what some filters and `other_rooms` look at.
    pub(super) non_joined: FxHashSet<RoomSlot>,
}

impl UserRecord {
    fn new(user_id: UserId) -> Self {
        UserRecord {
            user_id,
            snapshots: FxHashMap::default(),
            order: BTreeMap::new(),
            attribute_counts: Vec::new(),
            membership_marks: Vec::new(),
            extras: None,
            listed_names: OnceLock::new(),
        }
    }

    /// Raises the membership mark of `instance` to `position`.
    pub(super) fn mark_membership(&mut self, instance: u32, position: i64) {
        match self
            .membership_marks
            .iter_mut()
            .find(|(i, _)| *i == instance)
        {
            Some((_, mark)) => *mark = (*mark).max(position),
            None => self.membership_marks.push((instance, position)),
        }
    }

    pub(super) fn extras_mut(&mut self) -> &mut UserExtras {
        self.extras.get_or_insert_with(Box::default)
    }

    pub(super) fn is_dm(&self, room: RoomSlot) -> bool {
        self.extras
            .as_ref()
            .is_some_and(|e| e.dm_rooms.contains(&room))
    }

    pub(super) fn count(&mut self, attributes: Attributes, delta: i32) {
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
pub(super) struct IndexData {
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
    /// The held state types seen, numbered for [`RoomRecord::held_state`].
    pub(super) held_types: HeldTypeNames,
    /// Rooms with a held state record, and the heap bytes of those records.
    pub(super) held_state_rooms: usize,
    pub(super) held_state_bytes: usize,
}

pub(super) fn shared(value: Option<&str>) -> Option<Arc<str>> {
    value.map(Arc::from)
}

/// `value`, sharing `existing`'s allocation when equal.
pub(super) fn shared_like(value: Option<&str>, existing: Option<&Arc<str>>) -> Option<Arc<str>> {
    match (value, existing) {
        (Some(v), Some(e)) if **e == *v => Some(e.clone()),
        _ => shared(value),
    }
}

pub(super) fn unboxed(value: &Option<Arc<str>>) -> Option<String> {
    value.as_deref().map(str::to_owned)
}

impl IndexData {
    /// An empty index.
    pub(super) fn new() -> Self {
        IndexData {
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
            held_state_rooms: 0,
            held_state_bytes: 0,
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
            held_state: None,
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

    pub(super) fn type_name(&self, id: TypeId) -> Option<String> {
        id.checked_sub(1)
            .and_then(|id| self.room_types.get(id))
            .cloned()
    }

    /// The recency key and attributes of a user's room, per §6.1/§6.8.
    pub(super) fn listing(
        room: &RoomRecord,
        snapshot: &SnapshotRecord,
        is_dm: bool,
    ) -> (i64, Attributes) {
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
    pub(super) fn record(&self, user: &UserRecord, room: RoomSlot) -> Option<&SnapshotRecord> {
        user.snapshots
            .get(&room)
            .and_then(|i| self.records.get(*i as usize))
    }
}
