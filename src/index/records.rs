//! The read index's records: the compact forms of rooms, users and
//! snapshots, the interner of repeated values, and the derivations every
//! part reads of them (a listed room's recency key and attributes, the
//! name its list entry shows).
//!
//! Owns: the shape of each record and its invariants as documented on each
//! field. May not touch: the index as a whole (`IndexedRows`, in `indexed_rows.rs`,
//! holds the records and keeps them consistent), locks, the database,
//! actors.

use std::collections::BTreeSet;
use std::hash::Hash;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use super::event_id::StoredEventId;
use super::names::NameCopy;
use super::slots::{Attributes, Listing, RoomSlot, TypeId, UserSlot, NO_TYPE};
use crate::model::{Membership, RoomId, UserId};

/// Values interned to dense ids (never freed: room types, writer names and
/// senders are few and bounded by what was ever seen).
#[derive(Debug)]
pub(super) struct Interner<T> {
    ids: FxHashMap<T, u32>,
    values: Vec<T>,
}

impl<T: Clone + Eq + Hash> Interner<T> {
    pub(super) fn new() -> Self {
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
    // The room's held current state and latest events are not here but in
    // the index's `held_states` and `latest_events`: the room lists' walks
    // read this record for every candidate room, and it stays as small as
    // they need.
}

/// A membership snapshot, compact.
#[derive(Debug, Clone)]
pub(super) struct SnapshotRecord {
    pub(super) event_id: StoredEventId,
    pub(super) position: i64,
    /// Interned in the index's senders, or [`super::slots::SELF_SENT`].
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
    /// Listed under the key [`listing`] computes (every change to its
    /// inputs unlists first, so the key can be recomputed).
    pub(super) listed: bool,
}

#[derive(Debug)]
pub(super) struct UserRecord {
    pub(super) user_id: UserId,
    /// The user's snapshots: room → index into the index's snapshot
    /// records.
    pub(super) snapshots: FxHashMap<RoomSlot, u32>,
    /// Listed rooms (R1), newest first; ties by slot (re-sorted by room ID on read).
    pub(super) order: Listing,
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
    pub(super) listed_names: NameCopy,
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
    pub(super) fn new(user_id: UserId) -> Self {
        UserRecord {
            user_id,
            snapshots: FxHashMap::default(),
            order: Listing::new(),
            attribute_counts: Vec::new(),
            membership_marks: Vec::new(),
            extras: None,
            listed_names: NameCopy::new(),
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

/// The name a listed room's entry shows: the joined row's for a join (when
/// the room has one), the snapshot's otherwise (as the index's `name_of`).
pub(super) fn shown_name<'a>(
    room: &'a RoomRecord,
    snapshot: &'a SnapshotRecord,
) -> Option<&'a str> {
    let joined = (snapshot.membership == Membership::Join)
        .then_some(room.joined.as_ref())
        .flatten();
    match joined {
        Some(joined) => joined.room_name.as_deref(),
        None => snapshot.room_name.as_deref(),
    }
}
