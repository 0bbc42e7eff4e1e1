//! The fast path of room lists: counts from the per-user attribute counts,
//! the top rows from the ordered listing, newly-left rooms after a token,
//! and what a caller answering at its own token needs (rooms sorting after
//! `at` set apart, memberships after `at`, rooms beyond the ranges).
//!
//! Owns: running one request's lists ([`ListQuery::run_lists`]); the walks
//! that find a list's rooms are `walks.rs`'s. May not touch: locks (the
//! caller holds the read lock), the database, actors; it never changes the
//! data. The meaning of filters, ranges and options is
//! [`crate::room_list`]'s; the scan ([`crate::room_list::scan`]) is the
//! reference the tests hold this to.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use rustc_hash::FxHashSet;

use super::filter::CompiledFilter;
use super::query::ListQuery;
use super::records::SnapshotRecord;
use super::slots::{Attributes, RoomSlot};
use super::walks::{self, Found, Listed};
use crate::model::{Membership, RoomId};
use crate::room_list::{
    answer_ranges, needed_prefix, within_budget, ListAnswer, ListRequest, OtherRooms, RoomBudget,
    RoomListEntry, RoomLists,
};

impl ListQuery<'_, '_> {
    /// Every list of a request for one user, from one view of the index.
    pub(super) fn run_lists<'l>(
        &self,
        lists: impl IntoIterator<Item = (&'l String, &'l ListRequest)>,
    ) -> RoomLists {
        let mut other: FxHashSet<RoomSlot> = FxHashSet::default();
        let lists: BTreeMap<String, ListAnswer> = lists
            .into_iter()
            .map(|(name, list)| (name.clone(), self.run_list(list, &mut other)))
            .collect();
        let options = &self.options;
        RoomLists {
            lists,
            memberships_after_at: options.at.map(|at| self.memberships_after(at)),
            other_rooms: (!options.other_rooms.is_none()).then(|| self.sorted_ids(&other)),
            rooms: (!options.room_ids.is_empty()).then(|| self.entries_of()),
            account_data_position: None,
            unaffected: false,
            waited_us: None,
        }
    }

    fn sorted_ids(&self, slots: &FxHashSet<RoomSlot>) -> Vec<RoomId> {
        let mut ids: Vec<RoomId> = slots
            .iter()
            .filter_map(|s| self.data.rooms.get(*s as usize).map(|r| r.room_id.clone()))
            .collect();
        ids.sort();
        ids
    }

    /// The user's rooms whose membership is after `at` for its writer.
    fn memberships_after(&self, at: &roomcache_core::StreamToken) -> Vec<RoomId> {
        let (data, user) = (self.data, self.user);
        let after = |instance: u32, position: i64| {
            let name = data.instances.get(instance).map_or("", String::as_str);
            position > at.position(name)
        };
        if !user.membership_marks.iter().any(|(i, p)| after(*i, *p)) {
            return Vec::new();
        }
        let slots: FxHashSet<RoomSlot> = user
            .snapshots
            .iter()
            .filter(|(_, i)| {
                data.records
                    .get(**i as usize)
                    .is_some_and(|s| after(s.instance, s.position))
            })
            .map(|(room, _)| *room)
            .collect();
        self.sorted_ids(&slots)
    }

    /// The user's entries in the request's `room_ids`, where not forgotten.
    fn entries_of(&self) -> BTreeMap<RoomId, RoomListEntry> {
        let options = &self.options;
        options
            .room_ids
            .iter()
            .filter_map(|room_id| {
                let slot = *self.data.room_slots.get(room_id)?;
                let snapshot = self.snapshot(slot)?;
                let forgotten = self.forgotten.contains(&slot)
                    || (snapshot.forgotten && !options.only_forgotten_rooms);
                if forgotten {
                    return None;
                }
                Some((room_id.clone(), self.entry(slot)?))
            })
            .collect()
    }

    fn run_list(&self, list: &ListRequest, other: &mut FxHashSet<RoomSlot>) -> ListAnswer {
        let options = &self.options;
        let mut filter = CompiledFilter::new(&list.filters, self);
        if !self.dropped.is_empty() || !list.exclude_rooms.is_empty() {
            let mut excluded = self.data.slots_of(&list.exclude_rooms);
            excluded.extend(self.dropped.iter().copied());
            filter.excluded = Some(excluded);
        }
        let need = needed_prefix(&list.ranges);
        // Moved rooms found by the walk are set apart below: the walk keeps
        // as many more rows.
        let walk_need = need.saturating_add(self.moved.len().min(need));
        let mut found = if let Some(candidates) = filter.candidates() {
            walks::match_candidates(self, &filter, candidates)
        } else if list.filters.attributes_only() {
            walks::match_by_attributes(self, &filter, walk_need)
        } else if let Some(needle) = &filter.name {
            match self.listed_names() {
                Some(names) => walks::match_listed_names(self, names, &filter, needle, walk_need),
                None => walks::match_names(self, &filter, needle, walk_need),
            }
        } else {
            walks::match_in_order(self, &filter, walk_need)
        };
        let moved = self.set_apart_moved(&filter, &mut found);
        // §6.3/§6.4: self-leaves after `from_token` are newly left and listed.
        let mut newly_left = self.newly_left(&filter);
        let revived = self.revived(&filter);
        for item in newly_left.iter().chain(&revived) {
            found.count += 1;
            if options.is_unsettled(item.0) || self.moved.contains(&item.1) {
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
                    .filter_map(|(_, room)| self.moved.contains(room).then_some(*room)),
            );
        }
        match options.other_rooms {
            OtherRooms::None => {}
            OtherRooms::All => {
                other.extend(self.matching_since(&filter, None));
                other.extend(newly_left.iter().map(|(_, room)| *room));
            }
            OtherRooms::Changed => {
                let since = options.from_token.map_or(i64::MIN, |t| t.stream);
                other.extend(self.matching_since(&filter, Some(since)));
                let changed = newly_left.iter().filter(|(key, room)| {
                    *key > since
                        || self.data.rooms.get(*room as usize).is_some_and(|r| {
                            r.joined
                                .as_ref()
                                .is_some_and(|j| j.event_stream_ordering > since)
                        })
                });
                other.extend(changed.map(|(_, room)| *room));
            }
        }
        self.list_answer(list, found, need, options.budget)
    }

    /// Sorts and cuts what a list's walk found into its answer.
    fn list_answer(
        &self,
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
        let room_id = |slot: RoomSlot| self.data.rooms.get(slot as usize).map(|r| &r.room_id);
        let order = |a: &Listed, b: &Listed| {
            (Reverse(a.0), room_id(a.1)).cmp(&(Reverse(b.0), room_id(b.1)))
        };
        top.sort_unstable_by(order);
        top.truncate(need);
        // `entries: changed_only`: the entries the answer leaves out are
        // not made (their room sorts and its membership are at or before
        // `from_token`).
        let left_out = |(key, room): &Listed| {
            self.options.left_out_unchanged_after.is_some_and(|since| {
                *key <= since && self.snapshot(*room).is_some_and(|s| s.position <= since)
            })
        };
        let shown_entry = |listed: &Listed| {
            if left_out(listed) {
                None
            } else {
                self.entry(listed.1)
            }
        };
        let entries = |rows: &[Listed]| -> Vec<RoomListEntry> {
            rows.iter()
                .filter_map(|(_, room)| self.entry(*room))
                .collect()
        };
        if need == 0 || unsettled.is_empty() {
            let ranges = answer_ranges(&list.ranges, count, &top, shown_entry, budget);
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
            settled: Some(top.iter().filter_map(shown_entry).collect()),
            unsettled: Some(entries(&unsettled)),
            entries_since: None,
        }
    }

    /// Sets the moved rooms (`ListOptions::moved_rooms`) that the list
    /// shows apart as unsettled, wherever the walk put them; returns those
    /// it placed.
    fn set_apart_moved(&self, filter: &CompiledFilter, found: &mut Found) -> Vec<Listed> {
        let moved = &self.moved;
        if moved.is_empty() {
            return Vec::new();
        }
        found.top.retain(|(_, room)| !moved.contains(room));
        found.unsettled.retain(|(_, room)| !moved.contains(room));
        let mut placed = Vec::new();
        for room in moved {
            let Some((snapshot, room_record)) = self.records(*room) else {
                continue;
            };
            let (key, attributes) = self.listing(*room, snapshot, room_record);
            if snapshot.listed
                && !filter.is_excluded(*room)
                && filter.matches_attributes(&attributes)
                && filter.matches_rest(*room, self, attributes.membership)
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
    fn matching_since(&self, filter: &CompiledFilter, since: Option<i64>) -> Vec<RoomSlot> {
        let user = self.user;
        let matches = |room: RoomSlot, attributes: &Attributes| {
            filter.matches_attributes(attributes)
                && filter.matches_rest(room, self, attributes.membership)
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
            let Some((snapshot, room_record)) = self.records(*room) else {
                continue;
            };
            let room_changed = room_record
                .joined
                .as_ref()
                .is_some_and(|j| j.event_stream_ordering > since);
            let (key, attributes) = self.listing(*room, snapshot, room_record);
            if room_changed && key <= since && matches(*room, &attributes) {
                rooms.push(*room);
            }
        }
        rooms
    }

    /// With `only_forgotten_rooms`, the rooms forgotten in the cache but
    /// not for the caller that match the filter, listed as if not forgotten
    /// (a self-leave only when newly left), with their keys.
    fn revived(&self, filter: &CompiledFilter) -> Vec<Listed> {
        let mut listed: Vec<Listed> = Vec::new();
        for room in &self.revived {
            let Some((snapshot, room_record)) = self.records(*room) else {
                continue;
            };
            if filter.is_excluded(*room) {
                continue;
            }
            let self_leave = snapshot.membership == Membership::Leave
                && self.data.is_self_sent(self.user, snapshot);
            if self_leave && !self.is_newly_left(snapshot) {
                continue;
            }
            let (key, attributes) = self.listing(*room, snapshot, room_record);
            if filter.matches_attributes(&attributes)
                && filter.matches_rest(*room, self, attributes.membership)
            {
                listed.push((key, *room));
            }
        }
        listed
    }

    /// Whether a self-leave is after `from_token` (for its writer).
    fn is_newly_left(&self, snapshot: &SnapshotRecord) -> bool {
        let Some(token) = self.options.from_token else {
            return false;
        };
        let instance = self
            .data
            .instances
            .get(snapshot.instance)
            .map(String::as_str)
            .unwrap_or_default();
        snapshot.position > token.position(instance)
    }

    /// The user's self-leaves after `from_token` (by their writer's
    /// position) that match the filter, keyed by their position.
    fn newly_left(&self, filter: &CompiledFilter) -> Vec<Listed> {
        let Some(token) = self.options.from_token else {
            return Vec::new();
        };
        let mut left: Vec<Listed> = Vec::new();
        let start = (token.stream.saturating_add(1), 0);
        let self_leaves = self.user.extras.as_ref().map(|e| &e.self_leaves);
        for (position, room) in self_leaves.into_iter().flat_map(|s| s.range(start..)) {
            let Some(snapshot) = self.snapshot(*room) else {
                continue;
            };
            if !self.is_newly_left(snapshot) {
                continue;
            }
            let Some(room_record) = self.data.rooms.get(*room as usize) else {
                continue;
            };
            let (_, attributes) = self.listing(*room, snapshot, room_record);
            if filter.matches_attributes(&attributes)
                && filter.matches_rest(*room, self, attributes.membership)
            {
                left.push((*position, *room));
            }
        }
        left
    }
}
