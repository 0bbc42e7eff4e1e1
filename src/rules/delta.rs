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

use super::membership::{membership_of, MembershipEvent, MEMBER};
use super::metadata::{apply_removals, metadata_from_state, MetadataUpdate};
use super::state::{RelevantEvent, RelevantKey};
use super::{RuleError, Working};

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

impl Working<'_> {
    /// The event a state row refers to: carried inline, or one of the
    /// request's event rows. An event whose type or state key differs from
    /// the row's is refused.
    fn resolve<'e>(
        &'e self,
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
                    .unwrap_or(&self.context.writer),
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

    /// §2.3 and §2.4: one current-state delta.
    pub(super) fn apply_delta(
        &mut self,
        delta: &[&StateRow],
        request_events: &HashMap<&EventId, KnownEvent<'_>>,
    ) -> Result<(), RuleError> {
        // Collapse the rows into to_insert / to_delete, last row per key wins.
        let mut inserted_relevant: BTreeMap<RelevantKey, RelevantEvent> = BTreeMap::new();
        let mut removed_relevant: BTreeSet<RelevantKey> = BTreeSet::new();
        let mut inserted_members: BTreeMap<UserId, MembershipEvent> = BTreeMap::new();
        let mut removed_members: BTreeSet<UserId> = BTreeSet::new();
        let mut touches_local_member = false;
        // Stream orderings of events carried inline: stored events of the
        // room, so they count in the room's raw maximum (§2.3 C step 4).
        let mut inline_orderings: Vec<i64> = Vec::new();
        for row in delta {
            if let Some(key) = RelevantKey::of(&row.event_type, &row.state_key) {
                match &row.event_id {
                    None => {
                        inserted_relevant.remove(&key);
                        removed_relevant.insert(key);
                    }
                    Some(event_id) => {
                        let relevant = match self.resolve(row, event_id, request_events)? {
                            Some(known) => {
                                inline_orderings
                                    .extend(row.event.as_ref().map(|_| known.stream_ordering));
                                let mut relevant = RelevantEvent::from_event(
                                    key,
                                    known.event,
                                    known.stream_ordering,
                                );
                                if self.state.memory.pending_redactions.contains(event_id) {
                                    relevant.redact();
                                }
                                relevant
                            }
                            None => self
                                .known_relevant(key, event_id)
                                .ok_or_else(|| Self::unknown(row, event_id))?,
                        };
                        removed_relevant.remove(&key);
                        inserted_relevant.insert(key, relevant);
                    }
                }
                continue;
            }
            if row.event_type == SPACE_CHILD {
                self.apply_space_child(row, request_events)?;
                continue;
            }
            if row.event_type != MEMBER || !self.context.is_local(&row.state_key) {
                continue;
            }
            let Ok(user_id) = UserId::parse(&row.state_key) else {
                continue;
            };
            touches_local_member = true;
            match &row.event_id {
                None => {
                    inserted_members.remove(&user_id);
                    removed_members.insert(user_id);
                }
                Some(event_id) => {
                    let member = match self.resolve(row, event_id, request_events)? {
                        Some(known) => {
                            inline_orderings
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
                        None => self
                            .current_membership_event(&user_id, event_id)
                            .ok_or_else(|| Self::unknown(row, event_id))?,
                    };
                    removed_members.remove(&user_id);
                    inserted_members.insert(user_id, member);
                }
            }
        }
        if let Some(highest) = inline_orderings.into_iter().max() {
            let memory = &mut self.state.memory;
            if memory.max_stream_ordering.is_none_or(|m| m < highest) {
                memory.max_stream_ordering = Some(highest);
                self.memory_changed = true;
            }
        }
        // The relevant state after the whole delta (before any wipe).
        let mut state_after = BTreeMap::clone(&self.state.memory.relevant_state);
        for key in &removed_relevant {
            state_after.remove(key);
        }
        for (key, event) in &inserted_relevant {
            state_after.insert(*key, event.clone());
        }

        // Does any local user remain joined? (Synapse's no_longer_in_room.)
        let still_joined = |user: &UserId, snapshot: &MembershipSnapshot| {
            if removed_members.contains(user) {
                return false;
            }
            match inserted_members.get(user) {
                Some(member) => member.membership == Membership::Join,
                None => snapshot.membership == Membership::Join,
            }
        };
        let newly_joined = inserted_members
            .values()
            .any(|m| m.membership == Membership::Join);
        let no_longer_in_room = touches_local_member
            && !newly_joined
            && !self
                .state
                .snapshots
                .iter()
                .any(|(user, snapshot)| still_joined(user, snapshot));

        // §2.3: the joined-room row.
        if no_longer_in_room {
            self.state.joined = None;
        } else if let Some(joined) = self.state.joined.as_mut() {
            let mut update = metadata_from_state(inserted_relevant.iter().map(|(k, e)| (*k, e)));
            apply_removals(&mut update, &removed_relevant);
            update.apply(&mut joined.metadata);
        } else {
            let mut overlay = BTreeMap::clone(&self.state.memory.relevant_state);
            for (key, event) in &inserted_relevant {
                overlay.insert(*key, event.clone());
            }
            let mut update = metadata_from_state(overlay.iter().map(|(k, e)| (*k, e)));
            apply_removals(&mut update, &removed_relevant);
            if !update.is_empty() {
                // The raw maximum stream ordering of the room's stored
                // events, this group's included. A room the cache knows no
                // event of (only possible when every referenced event was
                // already current) falls back to the delta's position.
                let event_stream_ordering = self
                    .state
                    .memory
                    .max_stream_ordering
                    .unwrap_or(delta[0].stream_id);
                let mut metadata = RoomMetadata::default();
                update.apply(&mut metadata);
                self.state.joined = Some(JoinedRoomRow {
                    room_id: self.room_id.clone(),
                    event_stream_ordering,
                    bump_stamp: self.state.memory.latest_bump_stamp,
                    metadata,
                });
            }
        }

        // §2.4: local members' snapshots.
        for user in &removed_members {
            if self.state.snapshots.remove(user).is_some() {
                self.dirty_users.insert(user.clone());
            }
        }
        let shared = if state_after.is_empty() {
            MetadataUpdate::default()
        } else {
            let mut update = metadata_from_state(state_after.iter().map(|(k, e)| (*k, e)));
            update.has_known_state = Some(true);
            update
        };
        for member in inserted_members.values() {
            self.write_snapshot(member, &shared);
        }

        // The room's current state after the delta (emptied when the server left).
        let new_state = if no_longer_in_room {
            BTreeMap::new()
        } else {
            state_after
        };
        if no_longer_in_room && !self.state.memory.space_children.is_empty() {
            self.state.memory.space_children.clear();
            self.memory_changed = true;
        }
        if *self.state.memory.relevant_state != new_state {
            self.state.memory.relevant_state = Arc::new(new_state);
            self.memory_changed = true;
        }
        Ok(())
    }

    /// An `m.space.child` state row: the state key becomes a child when the
    /// event has a non-empty `via` (and is not redacted), and stops being one
    /// otherwise. An event the cache has not seen keeps the current status
    /// only when it is the event already recorded.
    fn apply_space_child(
        &mut self,
        row: &StateRow,
        request_events: &HashMap<&EventId, KnownEvent<'_>>,
    ) -> Result<(), RuleError> {
        let Ok(child) = RoomId::parse(&row.state_key) else {
            return Ok(());
        };
        let valid = match &row.event_id {
            None => None,
            Some(event_id) => {
                let memory = &self.state.memory;
                let recorded = memory.space_children.get(&child) == Some(event_id);
                let valid = match self.resolve(row, event_id, request_events)? {
                    Some(known) => {
                        is_valid_space_child(known.event)
                            && !memory.pending_redactions.contains(event_id)
                    }
                    None => recorded,
                };
                valid.then(|| event_id.clone())
            }
        };
        let memory = &mut self.state.memory;
        match valid {
            Some(event_id) => {
                memory.space_children.insert(child, event_id);
            }
            None => {
                memory.space_children.remove(&child);
            }
        }
        self.memory_changed = true;
        Ok(())
    }

    /// A relevant event known to the room: current or remembered.
    fn known_relevant(&self, key: RelevantKey, event_id: &EventId) -> Option<RelevantEvent> {
        let memory = &self.state.memory;
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
}
