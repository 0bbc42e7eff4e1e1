//! A list's filters compiled against the read index's ids, for one
//! request ([`CompiledFilter`]): room types interned, spaces and tags
//! turned into candidate sets, the rooms the list leaves out.
//!
//! Owns: what each filter means for a listed room of the index. May not
//! touch: locks, the database, actors; it never changes the data. The
//! meaning of the filters themselves is [`crate::room_list`]'s.

use rustc_hash::FxHashSet;

use super::query::ListQuery;
use super::slots::{Attributes, RoomSlot, TypeId, NO_TYPE, UNSEEN_TYPE};
use crate::model::{Membership, RoomId};
use crate::room_list::{rooms_in_spaces, Filters, NameNeedle};

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
    pub(super) fn new(filters: &'a Filters, query: &ListQuery<'_, '_>) -> Self {
        let (data, user) = (query.data, query.user);
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
        query: &ListQuery<'_, '_>,
        membership: Membership,
    ) -> bool {
        if !self.matches_sets(room) {
            return false;
        }
        let Some(needle) = &self.name else {
            return true;
        };
        query
            .name_of(room, membership)
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
