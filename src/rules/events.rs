//! New events (spec §2.2, §2.7–§2.9): what a group's events leave in the
//! room's memory (raw maximum position, relevant state events, redactions)
//! and how they move an existing joined row's `event_stream_ordering` and
//! `bump_stamp`, including rejected, outlier, de-outliered and backfilled
//! copies.
//!
//! Owns: the bump-type events, redaction targets and the bumps it makes
//! to a `RoomUpdate`. May not touch: the current state or snapshots (only
//! the state delta changes those), actors, the database.

use std::sync::Arc;

use serde_json::Value;

use crate::feed::{Event, EventRow};
use crate::model::EventId;

use super::state::{RelevantEvent, RelevantKey};
use super::RoomUpdate;

/// Event types whose events move a room's `bump_stamp` (Appendix A).
const BUMP_EVENT_TYPES: [&str; 7] = [
    "m.room.create",
    "m.room.message",
    "m.room.encrypted",
    "m.sticker",
    "m.call.invite",
    "m.poll.start",
    "m.beacon_info",
];

const REDACTION: &str = "m.room.redaction";

/// The target of a redaction event (content in v11+, top level before).
fn redaction_target(event: &Event) -> Option<EventId> {
    event.redacts.clone().or_else(|| {
        event
            .content
            .get("redacts")
            .and_then(Value::as_str)
            .and_then(|s| EventId::parse(s).ok())
    })
}

fn is_bump_event(event: &Event) -> bool {
    BUMP_EVENT_TYPES.contains(&event.event_type.as_str())
}

/// Records what later rules need from this group's events: the raw
/// maximum stream ordering, relevant state events, redactions.
pub(super) fn remember_events(room: &mut RoomUpdate<'_>, events: &[&EventRow]) {
    for row in events {
        let event = &row.event;
        let so = row.event_stream_ordering();
        let memory = &mut room.state.memory;
        if memory.max_stream_ordering.is_none_or(|m| m < so) {
            memory.max_stream_ordering = Some(so);
            room.memory_changed = true;
        }
        if row.rejected {
            continue;
        }
        if let Some(key) = event
            .state_key
            .as_deref()
            .and_then(|k| RelevantKey::of(&event.event_type, k))
        {
            let mut relevant = RelevantEvent::from_event(key, event, so);
            if memory.take_pending_redaction(&event.event_id) {
                relevant.redact();
            }
            Arc::make_mut(&mut memory.known_relevant_events)
                .insert(event.event_id.clone(), (key, relevant));
            room.memory_changed = true;
        }
        if event.event_type == REDACTION {
            if let Some(target) = redaction_target(event) {
                redact(room, target);
            }
        }
    }
}

/// §2.7: a redaction changes no stored value, but every later
/// computation sees the redacted content.
fn redact(room: &mut RoomUpdate<'_>, target: EventId) {
    let memory = &mut room.state.memory;
    let mut found = false;
    if memory.relevant_state.values().any(|e| e.event_id == target) {
        for event in Arc::make_mut(&mut memory.relevant_state).values_mut() {
            if event.event_id == target {
                event.redact();
            }
        }
        found = true;
    }
    if memory.known_relevant_events.contains_key(&target) {
        if let Some((_, event)) = Arc::make_mut(&mut memory.known_relevant_events).get_mut(&target)
        {
            event.redact();
        }
        found = true;
    }
    let before = memory.space_children.len();
    memory
        .space_children
        .retain(|_, event_id| *event_id != target);
    found |= memory.space_children.len() != before;
    if !found {
        memory.add_pending_redaction(target);
    }
    room.memory_changed = true;
}

/// §2.2: new events move `event_stream_ordering` and `bump_stamp` of an
/// existing joined row; the latest qualifying bump is remembered for a
/// row created later.
pub(super) fn bump(room: &mut RoomUpdate<'_>, events: &[&EventRow]) {
    // What a later full insert reads as "the latest bump event that is
    // not an outlier and not rejected" (§2.3 C step 3): de-outliered
    // copies count (the event is no longer an outlier, at its original
    // position); backfilled ones never do (not positive).
    let qualifying = events
        .iter()
        .filter(|r| !r.rejected && !r.outlier && is_bump_event(&r.event))
        .map(|r| r.event_stream_ordering())
        .filter(|so| *so > 0)
        .max();
    if let Some(bump) = qualifying {
        let memory = &mut room.state.memory;
        if memory.latest_bump_stamp.is_none_or(|b| b < bump) {
            memory.latest_bump_stamp = Some(bump);
            room.memory_changed = true;
        }
    }
    // §2.2: only events newly stored at their position and not
    // rejected; outliers and soft-failed events count.
    let live: Vec<&&EventRow> = events
        .iter()
        .filter(|r| !r.rejected && r.is_new_live_event())
        .collect();
    let Some(latest) = live.iter().map(|r| r.event_stream_ordering()).max() else {
        return;
    };
    if latest < 0 {
        return;
    }
    let latest_bump = live
        .iter()
        .filter(|r| is_bump_event(&r.event))
        .map(|r| r.event_stream_ordering())
        .max();
    if let Some(joined) = room.state.joined.as_mut() {
        if joined.event_stream_ordering < latest {
            joined.event_stream_ordering = latest;
        }
        if let Some(bump) = latest_bump {
            if joined.bump_stamp.is_none_or(|b| b < bump) {
                joined.bump_stamp = Some(bump);
            }
        }
    }
}
