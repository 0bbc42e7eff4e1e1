//! The fast path of room lists: counts from the per-user attribute counts,
//! the top rows from the ordered listing, newly-left rooms after a token,
//! and what a caller answering at its own token needs (rooms sorting after
//! `at` set apart, memberships after `at`, rooms beyond the ranges).
//!
//! Owns: running one request's lists over [`IndexData`] (the walks that
//! find a list's rooms are `walks.rs`'s). May not touch:
//! locks (the caller holds the read lock), the database, actors; it never
//! changes the data. The meaning of filters, ranges and options is
//! [`crate::room_list`]'s; the scan ([`crate::room_list::scan`]) is the
//! reference the tests hold this to.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use rustc_hash::FxHashSet;

use super::layout::{IndexData, RoomSlot, SnapshotRecord, UserRecord, SELF_SENT};
use super::query::CompiledFilter;
use super::walks::{Found, Listed};
use crate::model::{Membership, RoomId};
use crate::room_list::{
    answer_ranges, needed_prefix, within_budget, ListAnswer, ListOptions, ListRequest, OtherRooms,
    RoomBudget, RoomListEntry, RoomLists,
};

/// A request's options resolved against the index once for all its lists.
struct Resolved<'a> {
    options: ListOptions<'a>,
    /// Rooms no list shows: forgotten per the caller, invites from ignored users.
    dropped: FxHashSet<RoomSlot>,
    /// The caller's forgotten rooms (the `room_ids` entries leave them out).
    forgotten: FxHashSet<RoomSlot>,
    /// With `only_forgotten_rooms`: rooms forgotten in the cache but not
    /// for the caller, listed as if not forgotten.
    revived: Vec<RoomSlot>,
    /// Rooms whose recency is unknown (`ListOptions::moved_rooms`).
    moved: FxHashSet<RoomSlot>,
}

impl IndexData {
    fn slots_of<'r>(&self, rooms: impl IntoIterator<Item = &'r RoomId>) -> FxHashSet<RoomSlot> {
        rooms
            .into_iter()
            .filter_map(|r| self.room_slots.get(r).copied())
            .collect()
    }

    fn resolve<'a>(&self, user: &UserRecord, options: ListOptions<'a>) -> Resolved<'a> {
        let forgotten = self.slots_of(options.forgotten_rooms);
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
            .filter_map(|u| self.senders.find(u))
            .collect();
        // A user's own membership events are stored as SELF_SENT, not interned.
        let ignores_self = options.ignored_inviters.contains(&user.user_id);
        if !ignored.is_empty() || ignores_self {
            let listed = extras.into_iter().flat_map(|e| e.non_joined.iter());
            dropped.extend(listed.chain(&revived).copied().filter(|room| {
                self.record(user, *room).is_some_and(|s| {
                    s.membership == Membership::Invite
                        && (ignored.contains(&s.sender) || ignores_self && s.sender == SELF_SENT)
                })
            }));
        }
        Resolved {
            options,
            dropped,
            forgotten,
            revived,
            moved: self.slots_of(options.moved_rooms),
        }
    }

    /// Every list of a request for one user, from one view of the index.
    pub(super) fn run_lists<'a, 'l>(
        &self,
        user: &UserRecord,
        lists: impl IntoIterator<Item = (&'l String, &'l ListRequest)>,
        options: ListOptions<'a>,
    ) -> RoomLists {
        let resolved = self.resolve(user, options);
        let mut other: FxHashSet<RoomSlot> = FxHashSet::default();
        let lists: BTreeMap<String, ListAnswer> = lists
            .into_iter()
            .map(|(name, list)| {
                (
                    name.clone(),
                    self.run_list(user, list, &resolved, &mut other),
                )
            })
            .collect();
        let options = resolved.options;
        RoomLists {
            lists,
            memberships_after_at: options.at.map(|at| self.memberships_after(user, at)),
            other_rooms: (!options.other_rooms.is_none()).then(|| self.sorted_ids(&other)),
            rooms: (!options.room_ids.is_empty()).then(|| self.entries_of(user, &resolved)),
            account_data_position: None,
            unaffected: false,
            waited_us: None,
        }
    }

    fn sorted_ids(&self, slots: &FxHashSet<RoomSlot>) -> Vec<RoomId> {
        let mut ids: Vec<RoomId> = slots
            .iter()
            .filter_map(|s| self.rooms.get(*s as usize).map(|r| r.room_id.clone()))
            .collect();
        ids.sort();
        ids
    }

    /// The user's rooms whose membership is after `at` for its writer.
    fn memberships_after(
        &self,
        user: &UserRecord,
        at: &roomcache_core::StreamToken,
    ) -> Vec<RoomId> {
        let after = |instance: u32, position: i64| {
            let name = self.instances.get(instance).map_or("", String::as_str);
            position > at.position(name)
        };
        if !user.membership_marks.iter().any(|(i, p)| after(*i, *p)) {
            return Vec::new();
        }
        let slots: FxHashSet<RoomSlot> = user
            .snapshots
            .iter()
            .filter(|(_, i)| {
                self.records
                    .get(**i as usize)
                    .is_some_and(|s| after(s.instance, s.position))
            })
            .map(|(room, _)| *room)
            .collect();
        self.sorted_ids(&slots)
    }

    /// The user's entries in the request's `room_ids`, where not forgotten.
    fn entries_of(
        &self,
        user: &UserRecord,
        resolved: &Resolved<'_>,
    ) -> BTreeMap<RoomId, RoomListEntry> {
        let options = &resolved.options;
        options
            .room_ids
            .iter()
            .filter_map(|room_id| {
                let slot = *self.room_slots.get(room_id)?;
                let snapshot = self.record(user, slot)?;
                let forgotten = resolved.forgotten.contains(&slot)
                    || (snapshot.forgotten && !options.only_forgotten_rooms);
                if forgotten {
                    return None;
                }
                Some((room_id.clone(), self.entry(user, slot)?))
            })
            .collect()
    }

    fn run_list(
        &self,
        user: &UserRecord,
        list: &ListRequest,
        resolved: &Resolved<'_>,
        other: &mut FxHashSet<RoomSlot>,
    ) -> ListAnswer {
        let options = &resolved.options;
        let mut filter = CompiledFilter::new(&list.filters, self, user);
        if !resolved.dropped.is_empty() || !list.exclude_rooms.is_empty() {
            let mut excluded = self.slots_of(&list.exclude_rooms);
            excluded.extend(resolved.dropped.iter().copied());
            filter.excluded = Some(excluded);
        }
        let need = needed_prefix(&list.ranges);
        // Moved rooms found by the walk are set apart below: the walk keeps
        // as many more rows.
        let walk_need = need.saturating_add(resolved.moved.len().min(need));
        let mut found = if let Some(candidates) = filter.candidates() {
            self.match_candidates(user, &filter, candidates, options)
        } else if list.filters.attributes_only() {
            self.match_by_attributes(user, &filter, walk_need, options)
        } else if let Some(needle) = &filter.name {
            match self.listed_names(user) {
                Some(names) => Self::match_listed_names(names, &filter, needle, walk_need, options),
                None => self.match_names(user, &filter, needle, walk_need, options),
            }
        } else {
            self.match_in_order(user, &filter, walk_need, options)
        };
        let moved = self.set_apart_moved(user, &filter, &resolved.moved, &mut found);
        // §6.3/§6.4: self-leaves after `from_token` are newly left and listed.
        let mut newly_left = self.newly_left(user, &filter, options);
        let revived = self.revived(user, &filter, &resolved.revived, options);
        for item in newly_left.iter().chain(&revived) {
            found.count += 1;
            if options.is_unsettled(item.0) || resolved.moved.contains(&item.1) {
                found.unsettled.push(*item);
            } else {
                found.top.push(*item);
            }
        }
        newly_left.extend(revived);
        if !options.other_rooms.is_none() {
            other.extend(
                moved
                    .iter()
                    .chain(&newly_left)
                    .filter_map(|(_, room)| resolved.moved.contains(room).then_some(*room)),
            );
        }
        match options.other_rooms {
            OtherRooms::None => {}
            OtherRooms::All => {
                other.extend(self.matching_since(user, &filter, None));
                other.extend(newly_left.iter().map(|(_, room)| *room));
            }
            OtherRooms::Changed => {
                let since = options.from_token.map_or(i64::MIN, |t| t.stream);
                other.extend(self.matching_since(user, &filter, Some(since)));
                let changed = newly_left.iter().filter(|(key, room)| {
                    *key > since
                        || self.rooms.get(*room as usize).is_some_and(|r| {
                            r.joined
                                .as_ref()
                                .is_some_and(|j| j.event_stream_ordering > since)
                        })
                });
                other.extend(changed.map(|(_, room)| *room));
            }
        }
        self.list_answer(user, list, found, need, options.budget)
    }

    /// Sorts and cuts what a list's walk found into its answer.
    fn list_answer(
        &self,
        user: &UserRecord,
        list: &ListRequest,
        found: Found,
        need: usize,
        budget: Option<&RoomBudget>,
    ) -> ListAnswer {
        let Found {
            count,
            mut top,
            mut unsettled,
        } = found;
        let room_id = |slot: RoomSlot| self.rooms.get(slot as usize).map(|r| &r.room_id);
        let order = |a: &Listed, b: &Listed| {
            (Reverse(a.0), room_id(a.1)).cmp(&(Reverse(b.0), room_id(b.1)))
        };
        top.sort_unstable_by(order);
        top.truncate(need);
        let entries = |rows: &[Listed]| -> Vec<RoomListEntry> {
            rows.iter()
                .filter_map(|(_, room)| self.entry(user, *room))
                .collect()
        };
        if need == 0 || unsettled.is_empty() {
            let ranges = answer_ranges(
                &list.ranges,
                count,
                &top,
                |(_, room)| self.entry(user, *room),
                budget,
            );
            return ListAnswer {
                count,
                ranges,
                ..ListAnswer::default()
            };
        }
        unsettled.sort_unstable_by(order);
        if !within_budget(budget, top.len().saturating_add(unsettled.len())) {
            return ListAnswer {
                count,
                ..ListAnswer::default()
            };
        }
        ListAnswer {
            count,
            ranges: Vec::new(),
            settled: Some(entries(&top)),
            unsettled: Some(entries(&unsettled)),
            entries_since: None,
        }
    }

    /// Sets the moved rooms (`ListOptions::moved_rooms`) that the list
    /// shows apart as unsettled, wherever the walk put them; returns those
    /// it placed.
    fn set_apart_moved(
        &self,
        user: &UserRecord,
        filter: &CompiledFilter,
        moved: &FxHashSet<RoomSlot>,
        found: &mut Found,
    ) -> Vec<Listed> {
        if moved.is_empty() {
            return Vec::new();
        }
        found.top.retain(|(_, room)| !moved.contains(room));
        found.unsettled.retain(|(_, room)| !moved.contains(room));
        let mut placed = Vec::new();
        for room in moved {
            let (Some(snapshot), Some(room_record)) =
                (self.record(user, *room), self.rooms.get(*room as usize))
            else {
                continue;
            };
            let (key, attributes) = Self::listing(room_record, snapshot, user.is_dm(*room));
            if snapshot.listed
                && !filter.is_excluded(*room)
                && filter.matches_attributes(&attributes)
                && filter.matches_rest(*room, self, user, attributes.membership)
            {
                placed.push((key, *room));
            }
        }
        found.unsettled.extend(&placed);
        placed
    }

    /// The listed rooms that match the filter (without newly-left rooms):
    /// all of them, or (`since`) those whose recency or room's latest event
    /// is after `since` (a superset of the rooms that changed after it).
    fn matching_since(
        &self,
        user: &UserRecord,
        filter: &CompiledFilter,
        since: Option<i64>,
    ) -> Vec<RoomSlot> {
        let matches = |room: RoomSlot, attributes: &super::layout::Attributes| {
            filter.matches_attributes(attributes)
                && filter.matches_rest(room, self, user, attributes.membership)
        };
        let mut rooms: Vec<RoomSlot> = Vec::new();
        for ((Reverse(key), room), attributes) in &user.order {
            if since.is_some_and(|since| *key <= since) {
                break;
            }
            if matches(*room, attributes) {
                rooms.push(*room);
            }
        }
        let (Some(since), Some(extras)) = (since, user.extras.as_ref()) else {
            return rooms;
        };
        for room in &extras.non_joined {
            let (Some(snapshot), Some(room_record)) =
                (self.record(user, *room), self.rooms.get(*room as usize))
            else {
                continue;
            };
            let room_changed = room_record
                .joined
                .as_ref()
                .is_some_and(|j| j.event_stream_ordering > since);
            let (key, attributes) = Self::listing(room_record, snapshot, user.is_dm(*room));
            if room_changed && key <= since && matches(*room, &attributes) {
                rooms.push(*room);
            }
        }
        rooms
    }

    /// With `only_forgotten_rooms`, the rooms forgotten in the cache but
    /// not for the caller that match the filter, listed as if not forgotten
    /// (a self-leave only when newly left), with their keys.
    fn revived(
        &self,
        user: &UserRecord,
        filter: &CompiledFilter,
        rooms: &[RoomSlot],
        options: &ListOptions<'_>,
    ) -> Vec<Listed> {
        let mut listed: Vec<Listed> = Vec::new();
        for room in rooms {
            let (Some(snapshot), Some(room_record)) =
                (self.record(user, *room), self.rooms.get(*room as usize))
            else {
                continue;
            };
            if filter.is_excluded(*room) {
                continue;
            }
            let self_leave =
                snapshot.membership == Membership::Leave && self.is_self_sent(user, snapshot);
            if self_leave && !self.is_newly_left(snapshot, options) {
                continue;
            }
            let (key, attributes) = Self::listing(room_record, snapshot, user.is_dm(*room));
            if filter.matches_attributes(&attributes)
                && filter.matches_rest(*room, self, user, attributes.membership)
            {
                listed.push((key, *room));
            }
        }
        listed
    }

    /// Whether a self-leave is after `from_token` (for its writer).
    fn is_newly_left(&self, snapshot: &SnapshotRecord, options: &ListOptions<'_>) -> bool {
        let Some(token) = options.from_token else {
            return false;
        };
        let instance = self
            .instances
            .get(snapshot.instance)
            .map(String::as_str)
            .unwrap_or_default();
        snapshot.position > token.position(instance)
    }

    /// The user's self-leaves after `from_token` (by their writer's
    /// position) that match the filter, keyed by their position.
    fn newly_left(
        &self,
        user: &UserRecord,
        filter: &CompiledFilter,
        options: &ListOptions<'_>,
    ) -> Vec<Listed> {
        let Some(token) = options.from_token else {
            return Vec::new();
        };
        let mut left: Vec<Listed> = Vec::new();
        let start = (token.stream.saturating_add(1), 0);
        let self_leaves = user.extras.as_ref().map(|e| &e.self_leaves);
        for (position, room) in self_leaves.into_iter().flat_map(|s| s.range(start..)) {
            let Some(snapshot) = self.record(user, *room) else {
                continue;
            };
            if !self.is_newly_left(snapshot, options) {
                continue;
            }
            let Some(room_record) = self.rooms.get(*room as usize) else {
                continue;
            };
            let (_, attributes) = Self::listing(room_record, snapshot, user.is_dm(*room));
            if filter.matches_attributes(&attributes)
                && filter.matches_rest(*room, self, user, attributes.membership)
            {
                left.push((*position, *room));
            }
        }
        left
    }
}
