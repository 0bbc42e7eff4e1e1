//! Local members' events persisted while the server was not in the room.
//!
//! Such an event (after a "no longer in room" wipe) changes no current
//! state, so Synapse wrote no delta row; its in-memory delta still carried
//! the membership, which is what updated the member's snapshot. Its state
//! row is recreated here.
//!
//! Owns: choosing the candidate events and their state rows (pure; whether
//! the room was left before each one is asked of Synapse's database by the
//! caller). May not touch: SQL, roomcache's tables, the rules.

use std::collections::HashSet;

use super::deltas::Delta;
use super::{is_local_member, SourceEvent, WriterStateRow};
use crate::feed::StateRow;

/// A local member's event of the range that no delta row covers.
pub(super) struct LocalMember<'a> {
    pub(super) event: &'a SourceEvent,
    state_key: &'a str,
}

impl LocalMember<'_> {
    /// The state row the event's in-memory delta carried.
    pub(super) fn state_row(&self) -> WriterStateRow {
        let event = self.event;
        WriterStateRow {
            writer: event.writer.clone(),
            row: StateRow {
                stream_id: event.stream_ordering,
                room_id: event.event.room_id.clone(),
                event_type: event.event.event_type.clone(),
                state_key: self.state_key.to_owned(),
                event_id: Some(event.event.event_id.clone()),
                event: None,
            },
        }
    }
}

/// The range's events (in order) that are a local member's accepted,
/// non-outlier membership with no delta at its position in its room and
/// not part of a wipe's persist batch: a state row is due for each one
/// whose room the server had left before it.
pub(super) fn candidates<'a>(
    events: &'a [SourceEvent],
    deltas: &[Delta],
    in_wipe_batch: &HashSet<String>,
    server_name: &str,
) -> Vec<LocalMember<'a>> {
    let delta_at: HashSet<(&str, i64)> = deltas
        .iter()
        .map(|d| (d.room_id.as_str(), d.stream_id))
        .collect();
    events
        .iter()
        .filter_map(|event| {
            let state_key = event.event.state_key.as_deref()?;
            let candidate = !event.outlier
                && !event.rejected
                && is_local_member(&event.event.event_type, state_key, server_name)
                && !delta_at.contains(&(event.event.room_id.as_str(), event.stream_ordering))
                && !in_wipe_batch.contains(event.event.event_id.as_str());
            candidate.then_some(LocalMember { event, state_key })
        })
        .collect()
}
