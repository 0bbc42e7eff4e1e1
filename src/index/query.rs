//! Reading the read index: rows back out of the compact records, a list's
//! filters compiled against the index's ids, and the entries room lists
//! answer with (the lists themselves are `lists.rs`).
//!
//! Owns: the read side of [`IndexData`]. May not touch: locks (the caller
//! holds the read lock), the database, actors; it never changes the data.
//! The meaning of filters and ranges is [`crate::room_list`]'s.

use rustc_hash::FxHashSet;

use super::layout::{
    unboxed, Attributes, IndexData, RoomRecord, RoomSlot, SnapshotRecord, TypeId, UserRecord,
    NO_TYPE, SELF_SENT, UNSEEN_TYPE,
};
use std::collections::BTreeSet;

use crate::model::{JoinedRoomRow, Membership, MembershipSnapshot, RoomId, RoomMetadata, UserId};
use crate::room_list::scan::UserAccountData;
use crate::room_list::{rooms_in_spaces, Filters, NameNeedle, RoomListEntry};

impl IndexData {
    fn room_id_of(&self, slot: RoomSlot) -> Option<RoomId> {
        self.rooms.get(slot as usize).map(|r| r.room_id.clone())
    }

    /// A user's record, if the index has one.
    pub(super) fn user_record(&self, user_id: &UserId) -> Option<&UserRecord> {
        let slot = *self.user_slots.get(user_id)?;
        self.users.get(slot as usize)
    }

    /// A user's DM rooms and room tags, as plain data.
    pub(super) fn account_of(&self, user_id: &UserId) -> UserAccountData {
        let extras = self
            .user_record(user_id)
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

    /// Whether the user sent their own membership event (a self-leave when
    /// it is a leave).
    pub(super) fn is_self_sent(&self, user: &UserRecord, snapshot: &SnapshotRecord) -> bool {
        snapshot.sender == SELF_SENT
            || self
                .senders
                .get(snapshot.sender)
                .is_some_and(|s| *s == user.user_id)
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

/// A list's filters, resolved against the index's ids, with the rooms the
/// list leaves out whatever the filters.
pub(super) struct CompiledFilter<'a> {
    filters: &'a Filters,
    /// Rooms left out (the request's dropped rooms and the list's
    /// `exclude_rooms`); `None` when there are none.
    pub(super) excluded: Option<FxHashSet<RoomSlot>>,
    room_types: Option<Vec<TypeId>>,
    not_room_types: Option<Vec<TypeId>>,
    spaces: Option<FxHashSet<RoomSlot>>,
    tagged: Option<FxHashSet<RoomSlot>>,
    not_tagged: Option<FxHashSet<RoomSlot>>,
    pub(super) name: Option<NameNeedle>,
}

impl<'a> CompiledFilter<'a> {
    pub(super) fn new(filters: &'a Filters, data: &IndexData, user: &UserRecord) -> Self {
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
            excluded: None,
            room_types: types(&filters.room_types),
            not_room_types: types(&filters.not_room_types),
            spaces: filters.spaces.as_ref().map(|spaces| {
                let slot = |space: &RoomId| data.room_slots.get(space).copied();
                let membership_in = |space: &RoomId| {
                    let record = data.record(user, slot(space)?)?;
                    Some(record.membership)
                };
                let children_of = |space: &RoomId| {
                    slot(space)
                        .and_then(|s| data.rooms.get(s as usize))
                        .into_iter()
                        .flat_map(|r| r.space_children.iter().copied())
                };
                rooms_in_spaces(spaces, membership_in, children_of)
            }),
            tagged: tagged(&filters.tags),
            not_tagged: tagged(&filters.not_tags),
            name: filters.room_name_like.as_deref().map(NameNeedle::new),
        }
    }

    pub(super) fn is_excluded(&self, room: RoomSlot) -> bool {
        self.excluded.as_ref().is_some_and(|e| e.contains(&room))
    }

    pub(super) fn matches_attributes(&self, a: &Attributes) -> bool {
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

    /// Every filter and the exclusions, for a room whose attributes matched.
    pub(super) fn matches_rest(
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

    /// The exclusions and the space and tag filters.
    pub(super) fn matches_sets(&self, room: RoomSlot) -> bool {
        !(self.is_excluded(room)
            || self.spaces.as_ref().is_some_and(|s| !s.contains(&room))
            || self.tagged.as_ref().is_some_and(|t| !t.contains(&room))
            || self.not_tagged.as_ref().is_some_and(|t| t.contains(&room)))
    }

    /// The only rooms that can match, when spaces or tags narrow the list.
    pub(super) fn candidates(&self) -> Option<Vec<RoomSlot>> {
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

impl IndexData {
    /// A listed room's name as its list entry shows it (the joined row's
    /// for a join, the snapshot's otherwise).
    pub(super) fn name_of(
        &self,
        user: &UserRecord,
        room: RoomSlot,
        membership: Membership,
    ) -> Option<&str> {
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

    /// The answer's entry of a user's room (listed rooms always have both records).
    pub(super) fn entry(&self, user: &UserRecord, room: RoomSlot) -> Option<RoomListEntry> {
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
                    recency: joined.map_or(snapshot.position, |j| j.event_stream_ordering),
                })
            }
            _ => {
                tracing::error!(user_id = %user.user_id, room, "listed room without its records");
                None
            }
        }
    }
}
