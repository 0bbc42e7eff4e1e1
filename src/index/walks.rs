//! The walks that find a list's rooms: over a candidate set (spaces, tags),
//! over the ordered listing by attributes (counted from the per-user
//! attribute counts), by name (over the user's copy of listed names when it
//! has one), or over everything; each keeps the count and the first rows
//! with their ties, and sets apart the rooms sorting after `at`.
//!
//! Owns: [`Found`] and the walks. May not touch: locks (the caller holds
//! the read lock), the database, actors; it never changes the data. Which
//! walk a list takes, and what is done with what it found, is `lists.rs`'s.

use std::cmp::Reverse;

use super::layout::{IndexData, RoomSlot, UserRecord};
use super::query::CompiledFilter;
use crate::model::Membership;
use crate::room_list::{ListOptions, NameNeedle};

/// A listed room of a list: its recency and slot.
pub(super) type Listed = (i64, RoomSlot);

/// Keeps `item` in `top` when it is among the first `need` rows or tied
/// with the last row kept; false when it is neither (nor is any later row
/// of a walk newest first).
fn push_top(top: &mut Vec<Listed>, need: usize, item: Listed) -> bool {
    if top.len() < need || top.last().is_some_and(|last| last.0 == item.0) {
        top.push(item);
        true
    } else {
        false
    }
}

/// What a list's walk found: the count, the first rows (with ties) and,
/// with `at`, the rooms sorting after it.
#[derive(Default)]
pub(super) struct Found {
    pub(super) count: usize,
    pub(super) top: Vec<Listed>,
    pub(super) unsettled: Vec<Listed>,
}

impl IndexData {
    /// Puts a matching room among the top rows or the unsettled ones; false
    /// when no later row of a walk newest first can be among the top.
    pub(super) fn place(
        found: &mut Found,
        need: usize,
        item: Listed,
        options: &ListOptions<'_>,
    ) -> bool {
        if options.is_unsettled(item.0) {
            found.unsettled.push(item);
            true
        } else {
            push_top(&mut found.top, need, item)
        }
    }

    /// When spaces or tags narrow the list: every listed candidate that
    /// matches (count and rows, unsorted).
    pub(super) fn match_candidates(
        &self,
        user: &UserRecord,
        filter: &CompiledFilter,
        candidates: Vec<RoomSlot>,
        options: &ListOptions<'_>,
    ) -> Found {
        let mut found = Found::default();
        for room in candidates {
            let (Some(snapshot), Some(room_record)) =
                (self.record(user, room), self.rooms.get(room as usize))
            else {
                continue;
            };
            if !snapshot.listed {
                continue;
            }
            let (key, attributes) = Self::listing(room_record, snapshot, user.is_dm(room));
            if filter.matches_attributes(&attributes)
                && filter.matches_rest(room, self, user, attributes.membership)
            {
                found.count += 1;
                Self::place(&mut found, usize::MAX, (key, room), options);
            }
        }
        found
    }

    /// When only attributes are filtered on: the count from the per-user
    /// attribute counts (less the excluded rooms that match), and the first
    /// `need` matches (with ties) of the ordered listing.
    pub(super) fn match_by_attributes(
        &self,
        user: &UserRecord,
        filter: &CompiledFilter,
        need: usize,
        options: &ListOptions<'_>,
    ) -> Found {
        let counted: usize = user
            .attribute_counts
            .iter()
            .filter(|(a, _)| filter.matches_attributes(a))
            .map(|(_, n)| *n as usize)
            .sum();
        let excluded = filter.excluded.iter().flatten().filter(|room| {
            let (Some(snapshot), Some(room_record)) =
                (self.record(user, **room), self.rooms.get(**room as usize))
            else {
                return false;
            };
            let (_, attributes) = Self::listing(room_record, snapshot, user.is_dm(**room));
            snapshot.listed && filter.matches_attributes(&attributes)
        });
        let mut found = Found {
            count: counted.saturating_sub(excluded.count()),
            ..Found::default()
        };
        if need == 0 {
            return found;
        }
        for ((Reverse(key), room), attributes) in &user.order {
            if !filter.matches_attributes(attributes) || filter.is_excluded(*room) {
                continue;
            }
            if !Self::place(&mut found, need, (*key, *room), options) {
                break;
            }
        }
        found
    }

    /// `room_name_like` without a candidate set, for users without a copy
    /// of their listed names (`names.rs`): the whole ordered listing
    /// in three passes (the attribute and set filters, then each remaining
    /// room's name, then the match) so that the loads of different rooms'
    /// records and names are independent and the processor overlaps their
    /// cache misses (one pass waits for each in turn). Counts every match
    /// and keeps the first `need` (with ties).
    pub(super) fn match_names(
        &self,
        user: &UserRecord,
        filter: &CompiledFilter,
        needle: &NameNeedle,
        need: usize,
        options: &ListOptions<'_>,
    ) -> Found {
        let candidates: Vec<(i64, RoomSlot, Membership)> = user
            .order
            .iter()
            .filter(|((_, room), attributes)| {
                filter.matches_attributes(attributes) && filter.matches_sets(*room)
            })
            .map(|((Reverse(key), room), attributes)| (*key, *room, attributes.membership))
            .collect();
        // Reading each name's first byte here brings its text into the cache
        // while the loads of other rooms are still in flight.
        let mut first_bytes = 0u8;
        let names: Vec<Option<&str>> = candidates
            .iter()
            .map(|(_, room, membership)| {
                let name = self.name_of(user, *room, *membership);
                first_bytes ^= name
                    .and_then(|n| n.as_bytes().first().copied())
                    .unwrap_or(0);
                name
            })
            .collect();
        std::hint::black_box(first_bytes);
        let mut found = Found::default();
        for ((key, room, _), name) in candidates.iter().zip(names) {
            if name.is_some_and(|n| needle.matches(n)) {
                found.count += 1;
                Self::place(&mut found, need, (*key, *room), options);
            }
        }
        found
    }

    /// Otherwise (`not_tags`, no candidate set): a walk of the whole
    /// ordered listing, counting every match and keeping the first `need`
    /// (with ties).
    pub(super) fn match_in_order(
        &self,
        user: &UserRecord,
        filter: &CompiledFilter,
        need: usize,
        options: &ListOptions<'_>,
    ) -> Found {
        let mut found = Found::default();
        for ((Reverse(key), room), attributes) in &user.order {
            if filter.matches_attributes(attributes)
                && filter.matches_rest(*room, self, user, attributes.membership)
            {
                found.count += 1;
                Self::place(&mut found, need, (*key, *room), options);
            }
        }
        found
    }
}
