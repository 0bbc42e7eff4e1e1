//! The current-state delta (spec §2.3, §2.4, §2.6): a group's state rows resolved
//! to their events, collapsed to the last row per key, and applied to the
//! joined-room row, the local members' snapshots, the relevant state and the
//! room's space children, including the state reset when the server leaves.
//!
//! Owns: resolving state rows (inline events, the request's events, the
//! remembered ones) and refusing the ones it cannot resolve. May not touch:
//! the bumps of new events (the events module), actors, the database.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::Value;

use crate::feed::{Event, StateRow};
use crate::model::{
    EventId, JoinedRoomRow, Membership, MembershipSnapshot, RoomId, RoomMetadata, UserId,
};

use super::membership;
use super::membership::{membership_of, MembershipEvent, MEMBER};
use super::metadata::{apply_removals, metadata_from_state};
use super::state::{RelevantEvent, RelevantKey};
use super::{RoomUpdate, RuleError};

const SPACE_CHILD: &str = "m.space.child";

/// True when an `m.space.child` event makes its state key a child: its
/// `content.via` is a non-empty array.
fn is_valid_space_child(event: &Event) -> bool {
    event
        .content
        .get("via")
        .and_then(Value::as_array)
        .is_some_and(|via| !via.is_empty())
}

/// An event available to resolve state rows, with where it was stored.
pub(super) struct KnownEvent<'a> {
    pub(super) event: &'a Event,
    pub(super) stream_ordering: i64,
    pub(super) instance_name: &'a str,
}

/// A delta's rows collapsed to the last row per key: Synapse's to_insert and
/// to_delete, for the relevant state and the local members.
#[derive(Default)]
struct CollapsedDelta {
    inserted_relevant: BTreeMap<RelevantKey, RelevantEvent>,
    removed_relevant: BTreeSet<RelevantKey>,
    inserted_members: BTreeMap<UserId, MembershipEvent>,
    removed_members: BTreeSet<UserId>,
    touches_local_member: bool,
    /// Stream orderings of events carried inline: stored events of the
    /// room, so they count in the room's raw maximum (§2.3 C step 4).
    inline_orderings: Vec<i64>,
}

impl CollapsedDelta {
    /// The relevant state after the whole delta (before any wipe).
    fn relevant_state_after(
        &self,
        current: &BTreeMap<RelevantKey, RelevantEvent>,
    ) -> BTreeMap<RelevantKey, RelevantEvent> {
        let mut state_after = current.clone();
        for key in &self.removed_relevant {
            state_after.remove(key);
        }
        for (key, event) in &self.inserted_relevant {
            state_after.insert(*key, event.clone());
        }
        state_after
    }

    /// Whether no local user remains joined after the delta (Synapse's
    /// `no_longer_in_room`), given the snapshots before it.
    fn no_longer_in_room(&self, snapshots: &imbl::OrdMap<UserId, MembershipSnapshot>) -> bool {
        let still_joined = |user: &UserId, snapshot: &MembershipSnapshot| {
            if self.removed_members.contains(user) {
                return false;
            }
            match self.inserted_members.get(user) {
                Some(member) => member.membership == Membership::Join,
                None => snapshot.membership == Membership::Join,
            }
        };
        let newly_joined = self
            .inserted_members
            .values()
            .any(|m| m.membership == Membership::Join);
        self.touches_local_member
            && !newly_joined
            && !snapshots
                .iter()
                .any(|(user, snapshot)| still_joined(user, snapshot))
    }
}

/// The event a state row refers to: carried inline, or one of the
/// request's event rows. An event whose type or state key differs from
/// the row's is refused.
fn resolve<'e>(
    room: &'e RoomUpdate<'_>,
    row: &'e StateRow,
    event_id: &EventId,
    request_events: &'e HashMap<&EventId, KnownEvent<'e>>,
) -> Result<Option<KnownEvent<'e>>, RuleError> {
    let known = if let Some(inline) = &row.event {
        KnownEvent {
            event: &inline.event,
            stream_ordering: inline.stream_ordering,
            instance_name: inline
                .instance_name
                .as_deref()
                .unwrap_or(&room.context.writer),
        }
    } else {
        match request_events.get(event_id) {
            Some(known) => KnownEvent {
                event: known.event,
                stream_ordering: known.stream_ordering,
                instance_name: known.instance_name,
            },
            None => return Ok(None),
        }
    };
    let matches = known.event.event_type == row.event_type
        && known.event.state_key.as_deref() == Some(row.state_key.as_str());
    if !matches {
        return Err(RuleError::EventMismatch {
            stream_id: row.stream_id,
            event_type: row.event_type.clone(),
            state_key: row.state_key.clone(),
            event_id: event_id.clone(),
        });
    }
    Ok(Some(known))
}

fn unknown(row: &StateRow, event_id: &EventId) -> RuleError {
    RuleError::UnknownEvent {
        stream_id: row.stream_id,
        event_type: row.event_type.clone(),
        state_key: row.state_key.clone(),
        event_id: event_id.clone(),
    }
}

/// §2.3, §2.4 and §2.6: one current-state delta.
pub(super) fn apply_delta(
    room: &mut RoomUpdate<'_>,
    delta: &[&StateRow],
    request_events: &HashMap<&EventId, KnownEvent<'_>>,
) -> Result<(), RuleError> {
    let collapsed = collapse_delta(room, delta, request_events)?;
    if let Some(highest) = collapsed.inline_orderings.iter().copied().max() {
        let memory = &mut room.state.memory;
        if memory.max_stream_ordering.is_none_or(|m| m < highest) {
            memory.max_stream_ordering = Some(highest);
            room.memory_changed = true;
        }
    }
    let state_after = collapsed.relevant_state_after(&room.state.memory.relevant_state);
    let no_longer_in_room = collapsed.no_longer_in_room(&room.state.snapshots);
    update_joined_row(room, &collapsed, no_longer_in_room, delta);
    membership::apply_member_delta(
        room,
        &collapsed.removed_members,
        &collapsed.inserted_members,
        &state_after,
    );
    replace_current_state(room, state_after, no_longer_in_room);
    Ok(())
}

/// Resolves the delta's rows and collapses them into to_insert /
/// to_delete, last row per key wins. `m.space.child` rows are applied
/// as they come.
fn collapse_delta(
    room: &mut RoomUpdate<'_>,
    delta: &[&StateRow],
    request_events: &HashMap<&EventId, KnownEvent<'_>>,
) -> Result<CollapsedDelta, RuleError> {
    let mut collapsed = CollapsedDelta::default();
    for row in delta {
        room.state.current_state.set(
            &room.context.held_state,
            &row.event_type,
            &row.state_key,
            row.event_id.as_ref(),
        );
        if let Some(key) = RelevantKey::of(&row.event_type, &row.state_key) {
            match &row.event_id {
                None => {
                    collapsed.inserted_relevant.remove(&key);
                    collapsed.removed_relevant.insert(key);
                }
                Some(event_id) => {
                    let relevant =
                        resolve_relevant(room, row, key, event_id, request_events, &mut collapsed)?;
                    collapsed.removed_relevant.remove(&key);
                    collapsed.inserted_relevant.insert(key, relevant);
                }
            }
            continue;
        }
        if row.event_type == SPACE_CHILD {
            apply_space_child(room, row, request_events)?;
            continue;
        }
        if row.event_type != MEMBER {
            // Not read by the rules, but an event it names must match.
            if let Some(event_id) = &row.event_id {
                resolve(room, row, event_id, request_events)?;
            }
            continue;
        }
        let Ok(user_id) = UserId::parse(&row.state_key) else {
            return Err(RuleError::InvalidMemberStateRow {
                stream_id: row.stream_id,
                state_key: row.state_key.clone(),
            });
        };
        if !room.context.is_local(&row.state_key) {
            if let Some(event_id) = &row.event_id {
                resolve(room, row, event_id, request_events)?;
            }
            continue;
        }
        collapsed.touches_local_member = true;
        match &row.event_id {
            None => {
                collapsed.inserted_members.remove(&user_id);
                collapsed.removed_members.insert(user_id);
            }
            Some(event_id) => {
                let member = resolve_member(
                    room,
                    row,
                    &user_id,
                    event_id,
                    request_events,
                    &mut collapsed,
                )?;
                collapsed.removed_members.remove(&user_id);
                collapsed.inserted_members.insert(user_id, member);
            }
        }
    }
    Ok(collapsed)
}

/// The relevant event a state row sets: resolved (and recorded in
/// `collapsed` when carried inline), or one the room knows.
fn resolve_relevant(
    room: &RoomUpdate<'_>,
    row: &StateRow,
    key: RelevantKey,
    event_id: &EventId,
    request_events: &HashMap<&EventId, KnownEvent<'_>>,
    collapsed: &mut CollapsedDelta,
) -> Result<RelevantEvent, RuleError> {
    Ok(match resolve(room, row, event_id, request_events)? {
        Some(known) => {
            collapsed
                .inline_orderings
                .extend(row.event.as_ref().map(|_| known.stream_ordering));
            let mut relevant = RelevantEvent::from_event(key, known.event, known.stream_ordering);
            if room.state.memory.pending_redactions.contains(event_id) {
                relevant.redact();
            }
            relevant
        }
        None => known_relevant(room, key, event_id).ok_or_else(|| unknown(row, event_id))?,
    })
}

/// The membership event a local member's state row sets: resolved (and
/// recorded in `collapsed` when carried inline), or the user's current one.
fn resolve_member(
    room: &RoomUpdate<'_>,
    row: &StateRow,
    user_id: &UserId,
    event_id: &EventId,
    request_events: &HashMap<&EventId, KnownEvent<'_>>,
    collapsed: &mut CollapsedDelta,
) -> Result<MembershipEvent, RuleError> {
    Ok(match resolve(room, row, event_id, request_events)? {
        Some(known) => {
            collapsed
                .inline_orderings
                .extend(row.event.as_ref().map(|_| known.stream_ordering));
            MembershipEvent {
                event_id: event_id.clone(),
                user_id: user_id.clone(),
                sender: known.event.sender.clone(),
                membership: membership_of(known.event)?,
                stream_ordering: known.stream_ordering,
                instance_name: known.instance_name.to_owned(),
            }
        }
        None => membership::current_membership_event(room, user_id, event_id)
            .ok_or_else(|| unknown(row, event_id))?,
    })
}

/// §2.3: the joined-room row after a delta: deleted when no local user
/// remains joined, updated with the changed columns when it exists, and
/// created (fully, from the room's memory) when the delta gives it any
/// column.
fn update_joined_row(
    room: &mut RoomUpdate<'_>,
    collapsed: &CollapsedDelta,
    no_longer_in_room: bool,
    delta: &[&StateRow],
) {
    if no_longer_in_room {
        room.state.joined = None;
    } else if let Some(joined) = room.state.joined.as_mut() {
        let mut update =
            metadata_from_state(collapsed.inserted_relevant.iter().map(|(k, e)| (*k, e)));
        apply_removals(&mut update, &collapsed.removed_relevant);
        update.apply(&mut joined.metadata);
    } else {
        let mut overlay = BTreeMap::clone(&room.state.memory.relevant_state);
        for (key, event) in &collapsed.inserted_relevant {
            overlay.insert(*key, event.clone());
        }
        let mut update = metadata_from_state(overlay.iter().map(|(k, e)| (*k, e)));
        apply_removals(&mut update, &collapsed.removed_relevant);
        if !update.is_empty() {
            // The raw maximum stream ordering of the room's stored
            // events, this group's included. A room the cache knows no
            // event of (only possible when every referenced event was
            // already current) falls back to the delta's position.
            let event_stream_ordering = room
                .state
                .memory
                .max_stream_ordering
                .unwrap_or(delta[0].stream_id);
            let mut metadata = RoomMetadata::default();
            update.apply(&mut metadata);
            room.state.joined = Some(JoinedRoomRow {
                room_id: room.room_id.clone(),
                event_stream_ordering,
                bump_stamp: room.state.memory.latest_bump_stamp,
                metadata,
            });
        }
    }
}

/// The room's current state after the delta: emptied, with its space
/// children and its held state, when the server left (§2.6).
fn replace_current_state(
    room: &mut RoomUpdate<'_>,
    state_after: BTreeMap<RelevantKey, RelevantEvent>,
    no_longer_in_room: bool,
) {
    let new_state = if no_longer_in_room {
        BTreeMap::new()
    } else {
        state_after
    };
    if no_longer_in_room {
        room.state.current_state.server_left();
    }
    if no_longer_in_room && !room.state.memory.space_children.is_empty() {
        room.state.memory.space_children.clear();
        room.memory_changed = true;
    }
    if *room.state.memory.relevant_state != new_state {
        room.state.memory.relevant_state = Arc::new(new_state);
        room.memory_changed = true;
    }
}

/// An `m.space.child` state row: the state key becomes a child when the
/// event has a non-empty `via` (and is not redacted), and stops being one
/// otherwise. An event the cache has not seen keeps the current status
/// only when it is the event already recorded.
fn apply_space_child(
    room: &mut RoomUpdate<'_>,
    row: &StateRow,
    request_events: &HashMap<&EventId, KnownEvent<'_>>,
) -> Result<(), RuleError> {
    let Ok(child) = RoomId::parse(&row.state_key) else {
        return Ok(());
    };
    let valid = match &row.event_id {
        None => None,
        Some(event_id) => {
            let memory = &room.state.memory;
            let recorded = memory.space_children.get(&child) == Some(event_id);
            let valid = match resolve(room, row, event_id, request_events)? {
                Some(known) => {
                    is_valid_space_child(known.event)
                        && !memory.pending_redactions.contains(event_id)
                }
                None => recorded,
            };
            valid.then(|| event_id.clone())
        }
    };
    let memory = &mut room.state.memory;
    match valid {
        Some(event_id) => {
            memory.space_children.insert(child, event_id);
        }
        None => {
            memory.space_children.remove(&child);
        }
    }
    room.memory_changed = true;
    Ok(())
}

/// A relevant event known to the room: current or remembered.
fn known_relevant(
    room: &RoomUpdate<'_>,
    key: RelevantKey,
    event_id: &EventId,
) -> Option<RelevantEvent> {
    let memory = &room.state.memory;
    memory
        .relevant_state
        .get(&key)
        .filter(|e| &e.event_id == event_id)
        .cloned()
        .or_else(|| {
            memory
                .known_relevant_events
                .get(event_id)
                .filter(|(k, _)| *k == key)
                .map(|(_, e)| e.clone())
        })
}
