//! The rooms' data through the one read path: each room's held current
//! state at the token, or why it is unknown.
//!
//! Owns: the per-room answer and its unknown reasons. A room queued for
//! recalculation is unknown (its state is being recomputed); a room over
//! `max_room_state_keys` is unknown; every room is unknown while the held
//! state was computed for other types than configured (feed mode after a
//! change of the setting). May not touch: the index's records (it asks the
//! index), the write path.

use std::sync::Arc;

use serde::Serialize;

use super::{Answer, ReadError, Reads, Wait};
use crate::index::HeldKey;
use crate::model::RoomId;
use crate::rules::HeldStateTypes;

/// What the reads know of the held state.
#[derive(Debug, Clone)]
pub(crate) struct HeldStateSettings {
    /// The types held.
    pub(crate) types: Arc<HeldStateTypes>,
    /// False while the stored state was computed for other types (then
    /// every room is unknown).
    pub(crate) complete: bool,
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
    /// their order, at the token.
    pub(crate) async fn room_data(
        &self,
        rooms: &[RoomId],
        wait: &Wait,
    ) -> Result<Answer<Vec<RoomData>>, ReadError> {
        let max = self.settings.max_room_list_rooms;
        if rooms.len() > max {
            return Err(ReadError::TooManyRooms {
                asked: rooms.len(),
                max,
            });
        }
        let complete = self.settings.held_state.complete;
        let answer = self
            .read_at_token(wait, |index| index.held_states(rooms))
            .await?;
        let data: Vec<RoomData> = rooms
            .iter()
            .zip(answer.value)
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
            .collect();
        Ok(Answer {
            value: data,
            token: answer.token,
            timed_out: answer.timed_out,
            fallback: false,
            waited: answer.waited,
        })
    }

    /// The types held.
    pub(crate) fn held_state_types(&self) -> &HeldStateTypes {
        &self.settings.held_state.types
    }
}
