//! The latest events for the initial timeline (the rooms' data): every
//! event of a group that is not an outlier takes its place in the room's
//! [`LatestEvents`](crate::model::LatestEvents) by its topological and
//! stream orderings, as Synapse's `events` table holds it for its query:
//! rejected and soft-failed events included (flagged), backfilled and
//! de-outliered ones at their own stream ordering, redacted ones kept.
//!
//! Owns: which rows of a group reach the window. May not touch: the
//! window's order and bound (the model's), the rows, actors, the database.

use crate::feed::EventRow;
use crate::model::TimelineEvent;

use super::RoomUpdate;

/// Places the group's events that are not outliers in the room's window
/// (none when no latest events are kept: the reads answer every timeline
/// as not held then).
pub(super) fn hold_latest(room: &mut RoomUpdate<'_>, events: &[&EventRow]) {
    let capacity = room.context.held_state.timeline_events;
    if capacity == 0 {
        return;
    }
    for row in events.iter().filter(|row| !row.outlier) {
        let latest = &mut room.state.latest_events;
        let Some(topological_ordering) = row.topological_ordering else {
            latest.lose_order();
            continue;
        };
        latest.insert(
            TimelineEvent {
                event_id: row.event.event_id.clone(),
                topological_ordering,
                stream_ordering: row.event_stream_ordering(),
                instance_name: room.context.writer.as_str().into(),
                rejected: row.rejected,
            },
            capacity,
        );
    }
}
