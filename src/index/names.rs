//! `room_name_like` over a user's listed names: a per-user copy of the
//! listing (recency, slot, attributes) in order with every room's name
//! lowercased into one contiguous buffer, built on the first name filter
//! after the listing last changed, and searched in one pass.
//!
//! Why: the walk over the listing reads each room's record and its name
//! string, scattered over the heap; for a user in 10,000 rooms those cache
//! misses are the whole cost. The copy is read sequentially and only the
//! rooms whose name holds the needle are looked at.
//!
//! Owns: the copy ([`ListedNames`]) and the match over it. Invariant: a
//! user's copy is dropped by every change to their listing
//! ([`IndexData`]'s `list` and `unlist`, through which every change to a
//! listed room's key, attributes or name goes: a joined room's rename
//! relists its joined members), so a read never sees a stale copy. May not
//! touch: locks (the caller holds the read lock; the copy is built under it
//! once, through a `OnceLock`), the database, actors.

use std::cmp::Reverse;

use memchr::memmem;

use super::layout::{Attributes, IndexData, RoomSlot, UserRecord};
use super::lists::Found;
use super::query::CompiledFilter;
use crate::room_list::{ListOptions, NameNeedle};

/// Users with fewer listed rooms than this walk their listing instead (it
/// is fast enough, and their copies would cost memory for little).
pub(super) const NAME_COPY_MIN_ROOMS: usize = 256;

/// Ends every name in the buffer: 0xFF is never part of UTF-8, so no match
/// of a needle (a string) spans two names.
const SEPARATOR: u8 = 0xFF;

/// A listed room of the copy: 32 bytes (with its name and separator,
/// the copy costs 33 bytes and the name's length per listed room).
#[derive(Debug, Clone, Copy)]
struct NamedRoom {
    key: i64,
    room: RoomSlot,
    /// The lowercase name is `names[start..end]` (empty without a name).
    start: u32,
    end: u32,
    named: bool,
    attributes: Attributes,
}

const _: () = assert!(std::mem::size_of::<NamedRoom>() == 32);

/// A user's listing in order with the names its entries show, lowercase.
#[derive(Debug)]
pub(super) struct ListedNames {
    rooms: Vec<NamedRoom>,
    names: Vec<u8>,
}

impl ListedNames {
    /// The copy of a user's listing; `None` when the names exceed the
    /// offsets' range (4 GiB: then the walk answers).
    pub(super) fn build(data: &IndexData, user: &UserRecord) -> Option<Self> {
        // The names first, in a tight pass of independent loads (the
        // processor overlaps their cache misses), then the copy.
        let shown: Vec<Option<&str>> = user
            .order
            .iter()
            .map(|((_, room), attributes)| data.name_of(user, *room, attributes.membership))
            .collect();
        let mut names: Vec<u8> =
            Vec::with_capacity(shown.iter().flatten().map(|n| n.len() + 1).sum());
        let mut rooms = Vec::with_capacity(shown.len());
        for (((Reverse(key), room), attributes), name) in user.order.iter().zip(shown) {
            let start = u32::try_from(names.len()).ok()?;
            if let Some(name) = name {
                if name.is_ascii() {
                    names.extend(name.bytes().map(|b| b.to_ascii_lowercase()));
                } else {
                    names.extend_from_slice(name.to_lowercase().as_bytes());
                }
            }
            let end = u32::try_from(names.len()).ok()?;
            if name.is_some() {
                names.push(SEPARATOR);
            }
            rooms.push(NamedRoom {
                key: *key,
                room: *room,
                start,
                end,
                named: name.is_some(),
                attributes: *attributes,
            });
        }
        Some(ListedNames { rooms, names })
    }
}

impl IndexData {
    /// The user's copy of their listed names, built when missing; `None`
    /// for users with few listed rooms.
    pub(super) fn listed_names<'u>(&self, user: &'u UserRecord) -> Option<&'u ListedNames> {
        user.listed_names
            .get_or_init(|| {
                (user.order.len() >= self.name_copy_min_rooms)
                    .then(|| ListedNames::build(self, user))
                    .flatten()
                    .map(Box::new)
            })
            .as_deref()
    }

    /// `room_name_like` over the copy: the needle is searched for in the
    /// whole buffer once; each room holding it, in listing order, is
    /// counted and kept among the first `need` (with ties) when it also
    /// matches the other filters.
    pub(super) fn match_listed_names(
        names: &ListedNames,
        filter: &CompiledFilter,
        needle: &NameNeedle,
        need: usize,
        options: &ListOptions<'_>,
    ) -> Found {
        let mut found = Found::default();
        let mut consider = |entry: &NamedRoom| {
            if filter.matches_attributes(&entry.attributes) && filter.matches_sets(entry.room) {
                found.count += 1;
                Self::place(&mut found, need, (entry.key, entry.room), options);
            }
        };
        let lowercase = needle.lowercase().as_bytes();
        if lowercase.is_empty() {
            // Every name holds the empty string.
            names.rooms.iter().filter(|e| e.named).for_each(consider);
            return found;
        }
        // Rooms before `next` have been considered.
        let mut next = 0;
        for hit in memmem::find_iter(&names.names, lowercase) {
            let rest = names.rooms.get(next..).unwrap_or_default();
            // The room holding the hit: the last whose name starts at or before it.
            let after = next + rest.partition_point(|e| e.start as usize <= hit);
            if after == next {
                continue; // a further hit in a room already considered
            }
            next = after;
            if let Some(entry) = names.rooms.get(after - 1) {
                debug_assert!(entry.named && hit + lowercase.len() <= entry.end as usize);
                consider(entry);
            }
        }
        found
    }
}
