//! The rooms' data through the one read path: each room's held current
//! state at the token, and its initial timeline at the caller's token, or
//! why each is unknown.
//!
//! Owns: the per-room answer and its unknown reasons. A room queued for
//! recalculation is unknown (its state is being recomputed); a room over
//! `max_room_state_keys` is unknown; every room is unknown while the held
//! state was computed for other types than configured (feed mode after a
//! change of the setting). A timeline is unknown when the cache has not
//! reached the caller's token's highest position for every writer (events
//! Synapse's query would fetch may be missing), and where the held events
//! cannot decide it (the model's [`LatestEvents::initial_timeline`]). May
//! not touch: the index's records (it asks the index), the write path.

use std::sync::Arc;

use serde::Serialize;

use roomcache_core::StreamToken;

use super::{Answer, ReadError, Reads, Wait};
use crate::index::HeldKey;
use crate::model::{InitialTimeline, LatestEvents, RoomId, TimelineUnknown};
use crate::rules::HeldStateTypes;

/// What the reads know of the held state.
#[derive(Debug, Clone)]
pub(crate) struct HeldStateSettings {
    /// The types held.
    pub(crate) types: Arc<HeldStateTypes>,
    /// False while the stored state was computed for other types (then
    /// every room is unknown).
    pub(crate) complete: bool,
    /// Whether the rules see every event of a room, so that a window
    /// holding all of a room's events can say so (false in source mode,
    /// where it is not relied on yet: docs/synapse.md A.7).
    pub(crate) every_event_seen: bool,
}

/// The initial timeline asked: how many events, at which token (default:
/// the read's `wait_for`, else the answer's token).
#[derive(Debug, Clone)]
pub(crate) struct TimelineRequest {
    pub(crate) limit: usize,
    pub(crate) at: Option<StreamToken>,
}

/// Why a room's initial timeline is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TimelineUnknownReason {
    /// The room is queued for recalculation.
    Recalculating,
    /// The cache has not reached the token's highest position for every
    /// writer.
    BehindToken,
    /// Fewer events are held than the answer needs.
    NotHeld,
    /// An event of the room came without its topological ordering.
    Unordered,
}

/// One room's initial timeline, or why unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TimelineData {
    Timeline(InitialTimeline),
    Unknown(TimelineUnknownReason),
}

/// Why a room's data is unknown (the homeserver computes it instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Unknown {
    /// The room is queued for recalculation.
    Recalculating,
    /// The room holds more state keys than `max_room_state_keys`.
    TooManyStateKeys,
    /// The held state was computed for other types than configured.
    HeldTypesChanged,
}

/// One room's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RoomData {
    /// The room's held current state: (type, state key, event ID), sorted.
    State(Vec<HeldKey>),
    Unknown(Unknown),
}

impl Reads {
    /// The data of each of `rooms` (at most `max_room_list_rooms`), in
    /// their order, at the token; with `timeline`, each room's initial
    /// timeline too.
    pub(crate) async fn room_data(
        &self,
        rooms: &[RoomId],
        wait: &Wait,
        timeline: Option<&TimelineRequest>,
    ) -> Result<Answer<Vec<(RoomData, Option<TimelineData>)>>, ReadError> {
        let max = self.settings.max_room_list_rooms;
        if rooms.len() > max {
            return Err(ReadError::TooManyRooms {
                asked: rooms.len(),
                max,
            });
        }
        let complete = self.settings.held_state.complete;
        let answer = self
            .read_at_token(wait, |index| {
                let windows = timeline.map(|_| index.latest_events(rooms));
                (index.held_states(rooms), windows)
            })
            .await?;
        let (held_states, windows) = answer.value;
        let timelines: Vec<Option<TimelineData>> = match (timeline, windows) {
            (Some(request), Some(windows)) => {
                let at = request
                    .at
                    .as_ref()
                    .or(wait.target.as_ref())
                    .unwrap_or(&answer.token);
                rooms
                    .iter()
                    .zip(windows)
                    .map(|(room, window)| {
                        Some(self.initial_timeline(room, &window, request.limit, at, &answer.token))
                    })
                    .collect()
            }
            _ => vec![None; rooms.len()],
        };
        let data: Vec<(RoomData, Option<TimelineData>)> = rooms
            .iter()
            .zip(held_states)
            .map(|(room, held)| {
                if !complete {
                    RoomData::Unknown(Unknown::HeldTypesChanged)
                } else if self.fallback.is_queued(room) {
                    RoomData::Unknown(Unknown::Recalculating)
                } else {
                    match held {
                        Some(keys) => RoomData::State(keys),
                        None => RoomData::Unknown(Unknown::TooManyStateKeys),
                    }
                }
            })
            .zip(timelines)
            .collect();
        Ok(Answer {
            value: data,
            token: answer.token,
            timed_out: answer.timed_out,
            fallback: false,
            waited: answer.waited,
        })
    }

    /// One room's initial timeline at `at`, from its window read at `read`.
    fn initial_timeline(
        &self,
        room: &RoomId,
        window: &LatestEvents,
        limit: usize,
        at: &StreamToken,
        read: &StreamToken,
    ) -> TimelineData {
        if self.fallback.is_queued(room) {
            return TimelineData::Unknown(TimelineUnknownReason::Recalculating);
        }
        if self.settings.held_state.types.timeline_events == 0 {
            return TimelineData::Unknown(TimelineUnknownReason::NotHeld);
        }
        if read.stream < at.max_position() {
            return TimelineData::Unknown(TimelineUnknownReason::BehindToken);
        }
        let every_event_seen = self.settings.held_state.every_event_seen;
        match window.initial_timeline(limit, at, every_event_seen) {
            Ok(timeline) => TimelineData::Timeline(timeline),
            Err(TimelineUnknown::NotHeld) => TimelineData::Unknown(TimelineUnknownReason::NotHeld),
            Err(TimelineUnknown::Unordered) => {
                TimelineData::Unknown(TimelineUnknownReason::Unordered)
            }
        }
    }

    /// The types held.
    pub(crate) fn held_state_types(&self) -> &HeldStateTypes {
        &self.settings.held_state.types
    }
}
