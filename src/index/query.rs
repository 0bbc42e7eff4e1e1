//! One room-list request of one user, over one view of the read index:
//! [`ListQuery`] carries what every list of the request reads — the data,
//! the user's record, the request's options and the rooms those options
//! resolve to, once for all lists. The filters (`filter.rs`), the walks
//! that find a list's rooms (`walks.rs`) and the lists themselves
//! (`lists.rs`) are functions over it.
//!
//! Owns: resolving a request's options against the index (dropped,
//! forgotten and revived rooms) and the per-query reads every part shares
//! (a room's records and listing, its shown name and list entry, the
//! user's copy of listed names). May not touch: locks (the caller holds
//! the read lock for the query's life), the database, actors; it never
//! changes the data (the copy of listed names is built once, through its
//! `OnceLock`).

use rustc_hash::FxHashSet;

use super::indexed_rows::IndexedRows;
use super::names::ListedNames;
use super::records::{listing, RoomRecord, SnapshotRecord, UserRecord};
use super::slots::{Attributes, RoomSlot, SELF_SENT};
use crate::model::Membership;
use crate::room_list::{ListOptions, RoomListEntry};

/// See the module documentation.
pub(super) struct ListQuery<'d, 'o> {
    pub(super) data: &'d IndexedRows,
    pub(super) user: &'d UserRecord,
    pub(super) options: ListOptions<'o>,
    /// Rooms no list shows: forgotten per the caller, invites from ignored users.
    pub(super) dropped: FxHashSet<RoomSlot>,
    /// The caller's forgotten rooms (the `room_ids` entries leave them out).
    pub(super) forgotten: FxHashSet<RoomSlot>,
    /// With `only_forgotten_rooms`: rooms forgotten in the cache but not
    /// for the caller, listed as if not forgotten.
    pub(super) revived: Vec<RoomSlot>,
    /// Rooms whose recency is unknown (`ListOptions::moved_rooms`).
    pub(super) moved: FxHashSet<RoomSlot>,
}

impl<'d, 'o> ListQuery<'d, 'o> {
    /// A request of `user` (a record of `data`), its options resolved.
    pub(super) fn new(
        data: &'d IndexedRows,
        user: &'d UserRecord,
        options: ListOptions<'o>,
    ) -> Self {
        let forgotten = data.slots_of(options.forgotten_rooms);
        let extras = user.extras.as_ref();
        let revived: Vec<RoomSlot> = match (options.only_forgotten_rooms, extras) {
            (true, Some(extras)) => extras
                .forgotten
                .iter()
                .filter(|room| !forgotten.contains(*room))
                .copied()
                .collect(),
            _ => Vec::new(),
        };
        let mut dropped = forgotten.clone();
        let ignored: FxHashSet<u32> = options
            .ignored_inviters
            .iter()
            .filter_map(|u| data.senders.find(u))
            .collect();
        // A user's own membership events are stored as SELF_SENT, not interned.
        let ignores_self = options.ignored_inviters.contains(&user.user_id);
        if !ignored.is_empty() || ignores_self {
            let listed = extras.into_iter().flat_map(|e| e.non_joined.iter());
            dropped.extend(listed.chain(&revived).copied().filter(|room| {
                data.record(user, *room).is_some_and(|s| {
                    s.membership == Membership::Invite
                        && (ignored.contains(&s.sender) || ignores_self && s.sender == SELF_SENT)
                })
            }));
        }
        ListQuery {
            data,
            user,
            options,
            dropped,
            forgotten,
            revived,
            moved: data.slots_of(options.moved_rooms),
        }
    }

    /// The user's snapshot record in `room`.
    pub(super) fn snapshot(&self, room: RoomSlot) -> Option<&'d SnapshotRecord> {
        self.data.record(self.user, room)
    }

    /// The user's snapshot record in `room` and the room's record (a
    /// listed room has both).
    pub(super) fn records(&self, room: RoomSlot) -> Option<(&'d SnapshotRecord, &'d RoomRecord)> {
        Some((self.snapshot(room)?, self.data.rooms.get(room as usize)?))
    }

    /// The recency key and attributes `room` is (or would be) listed under.
    pub(super) fn listing(
        &self,
        room: RoomSlot,
        snapshot: &SnapshotRecord,
        room_record: &RoomRecord,
    ) -> (i64, Attributes) {
        listing(room_record, snapshot, self.user.is_dm(room))
    }

    /// A listed room's name as its list entry shows it.
    pub(super) fn name_of(&self, room: RoomSlot, membership: Membership) -> Option<&'d str> {
        self.data.name_of(self.user, room, membership)
    }

    /// The answer's entry of the user's room.
    pub(super) fn entry(&self, room: RoomSlot) -> Option<RoomListEntry> {
        self.data.entry(self.user, room)
    }

    /// The user's copy of their listed names, built when missing; `None`
    /// for users with few listed rooms.
    pub(super) fn listed_names(&self) -> Option<&'d ListedNames> {
        listed_names(self.data, self.user)
    }
}

fn listed_names<'u>(data: &IndexedRows, user: &'u UserRecord) -> Option<&'u ListedNames> {
    user.listed_names
        .get_or_init(|| {
            (user.order.len() >= data.name_copy_min_rooms)
                .then(|| {
                    // The names first, in a tight pass of independent loads
                    // (the processor overlaps their cache misses), then the
                    // copy.
                    let shown: Vec<Option<&str>> = user
                        .order
                        .iter()
                        .map(|((_, room), attributes)| {
                            data.name_of(user, *room, attributes.membership)
                        })
                        .collect();
                    ListedNames::build(&user.order, shown)
                })
                .flatten()
                .map(Box::new)
        })
        .as_deref()
}

/// Builds every user's copy of listed names that is missing, then checks
/// that every copy holds exactly its user's listing with the names it
/// shows.
#[cfg(test)]
pub(super) fn check_listed_names(data: &IndexedRows) -> Result<(), String> {
    for user in &data.users {
        let Some(names) = listed_names(data, user) else {
            continue;
        };
        let held = names.live_entries()?;
        let listing: Vec<_> = user
            .order
            .iter()
            .map(|(key, attributes)| {
                let name = data.name_of(user, key.1, attributes.membership);
                (*key, *attributes, name.map(str::to_lowercase))
            })
            .collect();
        if held != listing {
            return Err(format!(
                "{}: copy {held:?} listing {listing:?}",
                user.user_id
            ));
        }
    }
    Ok(())
}
