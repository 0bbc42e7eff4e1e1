//! The update rules of the sliding-sync tables (spec `sliding-sync-tables.md`
//! §2), as pure functions: a room's state plus its feed rows in, the room's
//! new state and the changed rows out.
//!
//! Owns: [`RoomState`] (the joined-room row, the local members' snapshots and
//! the few pieces of current state the rules need) and every rule that
//! changes it. May not touch: actors, sockets, the database, clocks. The room
//! actor is a thin shell around [`apply_rows`]; tests call it directly.
//!
//! This module holds the public entry ([`apply_rows`], [`RulesContext`],
//! [`RuleError`], [`RoomOutcome`]), the order in which a group's rows are
//! applied (§2.0) and purges (§2.11); the rules themselves live in its parts:
//!
//! * `state`: [`RoomState`], [`RoomMemory`] and the relevant state events;
//! * `metadata`: column values from state or stripped state;
//! * `membership`: snapshots from membership events, forgets;
//! * `delta`: a current-state delta, state resets, space children;
//! * `events`: new events, bumps, redactions;
//! * `timeline`: the latest events for the initial timeline;
//! * `tests`: the unit tests.

mod delta;
mod events;
mod membership;
mod metadata;
mod state;
#[cfg(test)]
mod tests;
mod timeline;

use std::collections::{BTreeSet, HashMap};

use crate::feed::{EventRow, FeedRow, StateRow};
use crate::model::{EventId, RoomId, RowChange, UserId};

pub use crate::model::{
    CurrentStateIds, HeldStateTypes, LatestEvents, ELEMENT_X_TYPES, ELEMENT_X_WILDCARD_TYPES,
};
use delta::KnownEvent;
use state::same_stored_memory;
pub(crate) use state::RelevantKey;
pub use state::{RoomMemory, RoomState};

/// Below this many events in a group, duplicates are found by scanning.
const SMALL_GROUP: usize = 16;

/// Facts about the deployment the rules need.
#[derive(Debug, Clone)]
pub struct RulesContext {
    /// Users of this server are the local users.
    pub server_name: String,
    /// The writer (instance name) whose rows are being applied.
    pub writer: String,
    /// The current state each room holds (the rooms' data).
    pub held_state: std::sync::Arc<HeldStateTypes>,
}

impl RulesContext {
    fn is_local(&self, user: &str) -> bool {
        user.split_once(':').map(|(_, s)| s) == Some(self.server_name.as_str())
    }
}

/// Why a room's rows cannot be applied. The whole batch is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("state row at {stream_id} for ({event_type}, {state_key}) refers to event {event_id}, which the cache has not seen; send it inline in the row's `event` field")]
    UnknownEvent {
        stream_id: i64,
        event_type: String,
        state_key: String,
        event_id: EventId,
    },
    #[error("state row at {stream_id} for ({event_type}, {state_key}) refers to event {event_id}, whose type or state key is different")]
    EventMismatch {
        stream_id: i64,
        event_type: String,
        state_key: String,
        event_id: EventId,
    },
    #[error("membership event {event_id} has no valid content.membership")]
    InvalidMembership { event_id: EventId },
    #[error("out-of-band membership event {event_id} has membership {membership}; only invite, knock and leave arrive out of band")]
    InvalidOutOfBandMembership {
        event_id: EventId,
        membership: String,
    },
    #[error("state key of m.room.member event {event_id} is not a valid user ID")]
    InvalidMemberStateKey { event_id: EventId },
    #[error("state row at {stream_id} for m.room.member has state key {state_key:?}, which is not a valid user ID")]
    InvalidMemberStateRow { stream_id: i64, state_key: String },
}

impl RuleError {
    /// True when a state row names an event the cache cannot have seen.
    pub(crate) fn is_unknown_event(&self) -> bool {
        matches!(self, RuleError::UnknownEvent { .. })
    }
}

/// The result of applying a room's rows: its new state and the changed
/// rows, one final value per key.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomOutcome {
    pub state: RoomState,
    pub changes: Vec<RowChange>,
    /// Whether `state.memory` differs from the memory the rules started
    /// from (so it must be persisted).
    pub memory_changed: bool,
}

/// Applies a room's rows (all of the same room, in stream order) to its
/// state. Rows sharing a stream id form one group and are applied together,
/// in Synapse's order: out-of-band memberships, then the state delta, then
/// the bumps of the new events.
pub fn apply_rows(
    state: &RoomState,
    room_id: &RoomId,
    rows: &[FeedRow],
    context: &RulesContext,
) -> Result<RoomOutcome, RuleError> {
    let mut update = RoomUpdate {
        room_id,
        context,
        state: state.clone(),
        dirty_users: BTreeSet::new(),
        memory_changed: false,
        dequeue: false,
    };
    // Every event of the room in this request can resolve a state row, even
    // one in a later group (delta rows carry the batch's smallest id).
    // Only state rows look events up: skip the index when there are none.
    let has_state_rows = rows.iter().any(|row| matches!(row, FeedRow::State(_)));
    let mut request_events: HashMap<&EventId, KnownEvent<'_>> = HashMap::new();
    for row in rows.iter().filter(|_| has_state_rows) {
        if let FeedRow::Event(r) = row {
            request_events
                .entry(&r.event.event_id)
                .or_insert(KnownEvent {
                    event: &r.event,
                    stream_ordering: r.event_stream_ordering(),
                    instance_name: &context.writer,
                });
        }
    }
    for group in rows.chunk_by(|a, b| a.stream_id() == b.stream_id()) {
        update.apply_group(group, &request_events)?;
    }
    Ok(update.finish(state))
}

/// The row of a room's space children when they differ between two of its
/// memories (`None` when they are the same): the one place that turns the
/// children the rules keep into their row, for the live feed ([`apply_rows`])
/// and for rooms computed from their whole history
/// ([`RoomState::rows_from_nothing`]).
fn space_children_change(
    room_id: &RoomId,
    before: &RoomMemory,
    after: &RoomMemory,
) -> Option<RowChange> {
    let children = after.space_children.keys();
    (!children.clone().eq(before.space_children.keys())).then(|| RowChange::SpaceChildren {
        space_room_id: room_id.clone(),
        children: children.cloned().collect(),
    })
}

impl RoomState {
    /// Every row of a room computed from its whole history (the import, the
    /// recalculation, the reads' fallback) as changes from nothing: its
    /// joined row, its snapshots and its space children; and the rules'
    /// memory to store (`None` when there is nothing to remember).
    pub fn rows_from_nothing(self, room_id: &RoomId) -> (Vec<RowChange>, Option<RoomMemory>) {
        let RoomState {
            joined,
            snapshots,
            memory,
            current_state,
            latest_events,
        } = self;
        let mut changes: Vec<RowChange> = joined
            .map(RowChange::UpsertJoinedRoom)
            .into_iter()
            .collect();
        changes.extend(
            snapshots
                .into_iter()
                .map(|(_, s)| RowChange::UpsertSnapshot(s)),
        );
        changes.extend(space_children_change(
            room_id,
            &RoomMemory::default(),
            &memory,
        ));
        if !current_state.is_empty() {
            changes.push(RowChange::CurrentState {
                room_id: room_id.clone(),
                state: current_state,
            });
        }
        if !latest_events.is_empty() {
            changes.push(RowChange::LatestEvents {
                room_id: room_id.clone(),
                events: latest_events,
            });
        }
        let memory = (memory != RoomMemory::default()).then_some(memory);
        (changes, memory)
    }
}

/// A room being updated by one [`apply_rows`] call, while its groups are
/// applied: the room's state so far, the users whose snapshots may have
/// changed, whether the memory changed and whether the room's queue entry
/// goes. Its own methods (here) apply a group, purge and finish; the rules
/// of each part of the spec are functions over it in `membership`, `delta`
/// and `events`.
struct RoomUpdate<'a> {
    room_id: &'a RoomId,
    context: &'a RulesContext,
    state: RoomState,
    dirty_users: BTreeSet<UserId>,
    memory_changed: bool,
    dequeue: bool,
}

impl RoomUpdate<'_> {
    fn apply_group(
        &mut self,
        group: &[FeedRow],
        request_events: &HashMap<&EventId, KnownEvent<'_>>,
    ) -> Result<(), RuleError> {
        let mut events: Vec<&EventRow> = Vec::new();
        // Positions in `events` by ID, built only for large groups (most
        // groups hold one event; a scan is cheaper than hashing then).
        let mut index: HashMap<&EventId, usize> = HashMap::new();
        let mut delta: Vec<&StateRow> = Vec::new();
        // A forget refers to a membership that exists: one sharing the
        // group's stream id is applied after that membership (below).
        let mut forgets: Vec<&UserId> = Vec::new();
        for row in group {
            match row {
                FeedRow::Event(r) => {
                    // §2.0 step 1: in-group duplicates keep the first
                    // non-outlier copy, else the first copy.
                    let id = &r.event.event_id;
                    let found = if events.len() < SMALL_GROUP {
                        events.iter().position(|e| &e.event.event_id == id)
                    } else {
                        if index.is_empty() {
                            index = events
                                .iter()
                                .enumerate()
                                .map(|(i, e)| (&e.event.event_id, i))
                                .collect();
                        }
                        index.get(id).copied()
                    };
                    match found {
                        None => {
                            if !index.is_empty() {
                                index.insert(id, events.len());
                            }
                            events.push(r);
                        }
                        Some(position) => {
                            if events[position].outlier && !r.outlier {
                                events[position] = r;
                            }
                        }
                    }
                }
                FeedRow::State(r) => delta.push(r),
                FeedRow::Forget(r) => forgets.push(&r.user_id),
                FeedRow::Purge(_) => self.purge(),
                FeedRow::Position(_) | FeedRow::AccountData(_) => {}
            }
        }
        events::remember_events(self, &events);
        timeline::hold_latest(self, &events);
        for row in &events {
            membership::apply_out_of_band_membership(self, row)?;
        }
        if !delta.is_empty() {
            delta::apply_delta(self, &delta, request_events)?;
        }
        events::bump(self, &events);
        for user_id in forgets {
            membership::forget(self, user_id);
        }
        self.state.memory.prune();
        Ok(())
    }

    /// §2.11 with the [DECISION]: every row of the room and its queue entry.
    fn purge(&mut self) {
        for user in self.state.snapshots.keys() {
            self.dirty_users.insert(user.clone());
        }
        self.state = RoomState::default();
        self.memory_changed = true;
        self.dequeue = true;
    }

    fn finish(self, before: &RoomState) -> RoomOutcome {
        let mut changes = Vec::new();
        if self.state.joined != before.joined {
            changes.push(match &self.state.joined {
                Some(row) => RowChange::UpsertJoinedRoom(row.clone()),
                None => RowChange::DeleteJoinedRoom(self.room_id.clone()),
            });
        }
        for user in &self.dirty_users {
            let now = self.state.snapshots.get(user);
            if now == before.snapshots.get(user) {
                continue;
            }
            changes.push(match now {
                Some(snapshot) => RowChange::UpsertSnapshot(snapshot.clone()),
                None => RowChange::DeleteSnapshot(self.room_id.clone(), user.clone()),
            });
        }
        if self.dequeue {
            changes.push(RowChange::Dequeue(self.room_id.clone()));
        }
        changes.extend(space_children_change(
            self.room_id,
            &before.memory,
            &self.state.memory,
        ));
        if !self.state.current_state.same_as(&before.current_state) {
            changes.push(RowChange::CurrentState {
                room_id: self.room_id.clone(),
                state: self.state.current_state.clone(),
            });
        }
        if !self.state.latest_events.same_as(&before.latest_events) {
            changes.push(RowChange::LatestEvents {
                room_id: self.room_id.clone(),
                events: self.state.latest_events.clone(),
            });
        }
        let mut state = self.state;
        let follows = state.joined.as_ref().is_some_and(|joined| {
            state.memory.max_stream_ordering == Some(joined.event_stream_ordering)
                && state.memory.latest_bump_stamp == joined.bump_stamp
        });
        state.memory.counters_follow_joined_row = follows;
        let memory_changed = (self.memory_changed
            || follows != before.memory.counters_follow_joined_row)
            && !same_stored_memory(&state.memory, &before.memory);
        RoomOutcome {
            state,
            changes,
            memory_changed,
        }
    }
}
