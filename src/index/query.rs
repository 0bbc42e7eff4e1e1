//! Reading the read index: rows back out of the compact records, and the
//! fast path of room lists (filters compiled against the index's ids,
//! counts from the per-user attribute counts, the top rows from the
//! ordered listing, newly-left rooms after a token).
//!
//! Owns: the read side of [`IndexData`]. May not touch: locks (the caller
//! holds the read lock), the database, actors; it never changes the data.
//! The meaning of filters and ranges is [`crate::room_list`]'s.

use std::cmp::Reverse;

use rustc_hash::FxHashSet;

use super::layout::{
    unboxed, Attributes, IndexData, RoomRecord, RoomSlot, SnapshotRecord, TypeId, UserRecord,
    NO_TYPE, SELF_SENT, UNSEEN_TYPE,
};
use std::collections::BTreeSet;

use roomcache_core::StreamToken;

use crate::model::{JoinedRoomRow, Membership, MembershipSnapshot, RoomId, RoomMetadata, UserId};
use crate::room_list::scan::UserAccountData;
use crate::room_list::{
    answer_ranges, needed_prefix, Filters, ListAnswer, ListRequest, NameNeedle, RoomListEntry,
};

impl IndexData {
    fn room_id_of(&self, slot: RoomSlot) -> Option<RoomId> {
        self.rooms.get(slot as usize).map(|r| r.room_id.clone())
    }

    /// A user's DM rooms and room tags, as plain data.
    pub(super) fn account_of(&self, user_id: &UserId) -> UserAccountData {
        let extras = self
            .user_slots
            .get(user_id)
            .and_then(|u| self.users.get(*u as usize))
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
}

/// A list's filters, resolved against the index's ids.
struct CompiledFilter<'a> {
    filters: &'a Filters,
    room_types: Option<Vec<TypeId>>,
    not_room_types: Option<Vec<TypeId>>,
    spaces: Option<FxHashSet<RoomSlot>>,
    tagged: Option<FxHashSet<RoomSlot>>,
    not_tagged: Option<FxHashSet<RoomSlot>>,
    name: Option<NameNeedle>,
}

impl<'a> CompiledFilter<'a> {
    fn new(filters: &'a Filters, data: &IndexData, user: &UserRecord) -> Self {
        let types = |list: &Option<Vec<Option<String>>>| {
            list.as_ref().map(|types| {
                types
                    .iter()
                    .map(|t| match t {
                        None => NO_TYPE,
                        Some(t) => data.room_types.find(t).map_or(UNSEEN_TYPE, |id| id + 1),
                    })
                    .collect()
            })
        };
        let tagged = |list: &Option<Vec<String>>| {
            list.as_ref().map(|tags| {
                tags.iter()
                    .filter_map(|t| user.extras.as_ref()?.rooms_by_tag.get(t.as_str()))
                    .flatten()
                    .copied()
                    .collect()
            })
        };
        CompiledFilter {
            filters,
            room_types: types(&filters.room_types),
            not_room_types: types(&filters.not_room_types),
            spaces: filters.spaces.as_ref().map(|spaces| {
                spaces
                    .iter()
                    .filter_map(|s| data.room_slots.get(s))
                    .filter_map(|s| data.rooms.get(*s as usize))
                    .flat_map(|r| r.space_children.iter().copied())
                    .collect()
            }),
            tagged: tagged(&filters.tags),
            not_tagged: tagged(&filters.not_tags),
            name: filters.room_name_like.as_deref().map(NameNeedle::new),
        }
    }

    fn matches_attributes(&self, a: &Attributes) -> bool {
        let f = self.filters;
        f.is_dm.is_none_or(|want| a.is_dm == want)
            && f.is_encrypted
                .is_none_or(|want| a.has_known_state && a.is_encrypted == want)
            && f.is_invite
                .is_none_or(|want| (a.membership == Membership::Invite) == want)
            && (!f.filters_room_type() || a.has_known_state)
            && self
                .room_types
                .as_ref()
                .is_none_or(|types| types.contains(&a.room_type))
            && self
                .not_room_types
                .as_ref()
                .is_none_or(|types| !types.contains(&a.room_type))
    }

    /// Every filter, for a room whose attributes matched.
    fn matches_rest(
        &self,
        room: RoomSlot,
        data: &IndexData,
        user: &UserRecord,
        membership: Membership,
    ) -> bool {
        if !self.matches_sets(room) {
            return false;
        }
        let Some(needle) = &self.name else {
            return true;
        };
        data.name_of(user, room, membership)
            .is_some_and(|n| needle.matches(n))
    }

    /// The space and tag filters.
    fn matches_sets(&self, room: RoomSlot) -> bool {
        !(self.spaces.as_ref().is_some_and(|s| !s.contains(&room))
            || self.tagged.as_ref().is_some_and(|t| !t.contains(&room))
            || self.not_tagged.as_ref().is_some_and(|t| t.contains(&room)))
    }

    /// The only rooms that can match, when spaces or tags narrow the list.
    fn candidates(&self) -> Option<Vec<RoomSlot>> {
        match (&self.spaces, &self.tagged) {
            (None, None) => None,
            (Some(set), None) | (None, Some(set)) => Some(set.iter().copied().collect()),
            (Some(a), Some(b)) => {
                let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
                Some(
                    small
                        .iter()
                        .filter(|r| large.contains(*r))
                        .copied()
                        .collect(),
                )
            }
        }
    }
}

/// A listed room of a list: its recency and slot.
type Listed = (i64, RoomSlot);

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

impl IndexData {
    pub(super) fn run_list(
        &self,
        user: &UserRecord,
        list: &ListRequest,
        from_token: Option<&StreamToken>,
    ) -> ListAnswer {
        let filter = CompiledFilter::new(&list.filters, self, user);
        let need = needed_prefix(&list.ranges);
        let (mut count, mut top) = if let Some(candidates) = filter.candidates() {
            self.match_candidates(user, &filter, candidates)
        } else if list.filters.attributes_only() {
            self.match_by_attributes(user, &filter, need)
        } else if let Some(needle) = &filter.name {
            self.match_names(user, &filter, needle, need)
        } else {
            self.match_in_order(user, &filter, need)
        };
        // §6.3/§6.4: self-leaves after `from_token` are newly left and listed.
        if let Some(token) = from_token {
            for item in self.newly_left(user, &filter, token) {
                count += 1;
                top.push(item);
            }
        }
        top.sort_unstable_by(|a, b| {
            let room_id = |slot: RoomSlot| self.rooms.get(slot as usize).map(|r| &r.room_id);
            (Reverse(a.0), room_id(a.1)).cmp(&(Reverse(b.0), room_id(b.1)))
        });
        top.truncate(need.min(count));
        let ranges = answer_ranges(&list.ranges, count, &top, |(_, room)| {
            self.entry(user, *room)
        });
        ListAnswer { count, ranges }
    }

    /// When spaces or tags narrow the list: every listed candidate that
    /// matches (count and rows, unsorted).
    fn match_candidates(
        &self,
        user: &UserRecord,
        filter: &CompiledFilter,
        candidates: Vec<RoomSlot>,
    ) -> (usize, Vec<Listed>) {
        let mut matched: Vec<Listed> = Vec::new();
        for room in candidates {
            let Some(snapshot) = self.record(user, room) else {
                continue;
            };
            let Some(room_record) = self.rooms.get(room as usize) else {
                continue;
            };
            if !snapshot.listed {
                continue;
            }
            let is_dm = user.is_dm(room);
            let (key, attributes) = Self::listing(room_record, snapshot, is_dm);
            if filter.matches_attributes(&attributes)
                && filter.matches_rest(room, self, user, attributes.membership)
            {
                matched.push((key, room));
            }
        }
        (matched.len(), matched)
    }

    /// When only attributes are filtered on: the count from the per-user
    /// attribute counts, and the first `need` matches (with ties) of the
    /// ordered listing.
    fn match_by_attributes(
        &self,
        user: &UserRecord,
        filter: &CompiledFilter,
        need: usize,
    ) -> (usize, Vec<Listed>) {
        let count = user
            .attribute_counts
            .iter()
            .filter(|(a, _)| filter.matches_attributes(a))
            .map(|(_, n)| *n as usize)
            .sum();
        let mut top: Vec<Listed> = Vec::new();
        if need > 0 {
            for ((Reverse(key), room), attributes) in &user.order {
                if !filter.matches_attributes(attributes) {
                    continue;
                }
                if !push_top(&mut top, need, (*key, *room)) {
                    break;
                }
            }
        }
        (count, top)
    }

    /// A listed room's name as its list entry shows it (the joined row's
    /// for a join, the snapshot's otherwise).
    fn name_of(&self, user: &UserRecord, room: RoomSlot, membership: Membership) -> Option<&str> {
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

    /// `room_name_like` without a candidate set: the whole ordered listing
    /// in three passes — the attribute and set filters, then each
    /// remaining room's name, then the match — so that the loads of
    /// different rooms' records and names are independent and the
    /// processor overlaps their cache misses (one pass waits for each in
    /// turn). Counts every match and keeps the first `need` (with ties).
    fn match_names(
        &self,
        user: &UserRecord,
        filter: &CompiledFilter,
        needle: &NameNeedle,
        need: usize,
    ) -> (usize, Vec<Listed>) {
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
        let mut count = 0;
        let mut top: Vec<Listed> = Vec::new();
        for ((key, room, _), name) in candidates.iter().zip(names) {
            if name.is_some_and(|n| needle.matches(n)) {
                count += 1;
                push_top(&mut top, need, (*key, *room));
            }
        }
        (count, top)
    }

    /// Otherwise (`not_tags`, no candidate set): a walk of the whole
    /// ordered listing, counting every match and keeping the first `need`
    /// (with ties).
    fn match_in_order(
        &self,
        user: &UserRecord,
        filter: &CompiledFilter,
        need: usize,
    ) -> (usize, Vec<Listed>) {
        let mut count = 0;
        let mut top: Vec<Listed> = Vec::new();
        for ((Reverse(key), room), attributes) in &user.order {
            if filter.matches_attributes(attributes)
                && filter.matches_rest(*room, self, user, attributes.membership)
            {
                count += 1;
                push_top(&mut top, need, (*key, *room));
            }
        }
        (count, top)
    }

    /// The user's self-leaves after `token` (by their writer's position)
    /// that match the filter, keyed by their position.
    fn newly_left(
        &self,
        user: &UserRecord,
        filter: &CompiledFilter,
        token: &StreamToken,
    ) -> Vec<Listed> {
        let mut left: Vec<Listed> = Vec::new();
        let start = (token.stream.saturating_add(1), 0);
        let self_leaves = user.extras.as_ref().map(|e| &e.self_leaves);
        for (position, room) in self_leaves.into_iter().flat_map(|s| s.range(start..)) {
            let Some(snapshot) = self.record(user, *room) else {
                continue;
            };
            let instance = self
                .instances
                .get(snapshot.instance)
                .map(String::as_str)
                .unwrap_or_default();
            if *position <= token.position(instance) {
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

    /// The answer's entry of a listed room (listed rooms always have both records).
    fn entry(&self, user: &UserRecord, room: RoomSlot) -> Option<RoomListEntry> {
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
                })
            }
            _ => {
                tracing::error!(user_id = %user.user_id, room, "listed room without its records");
                None
            }
        }
    }
}
