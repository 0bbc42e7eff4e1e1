//! State resets and hand-built rows.

use serde_json::{json, Value};

use super::{Ev, Homeserver};

impl Homeserver {
    /// A state row carrying its event inline (for state resets to events
    /// the cache never saw).
    pub(crate) fn inline_state_row(&self, stream_id: i64, room_id: &str, event_id: &str) -> Value {
        let (event, so) = &self.events[event_id];
        let mut row = json!({"kind": "state", "stream_id": stream_id, "room_id": room_id,
            "type": event["type"], "state_key": event["state_key"], "event_id": event_id});
        let mut inline = event.clone();
        inline["stream_ordering"] = json!(so);
        row["event"] = inline;
        row
    }

    /// The user's membership events in the room with positive stream
    /// orderings, oldest first.
    pub(crate) fn member_history(&self, room_id: &str, user: &str) -> Vec<Ev> {
        let mut history: Vec<Ev> = self
            .events
            .iter()
            .filter(|(_, (event, so))| {
                *so > 0
                    && event["room_id"] == room_id
                    && event["type"] == "m.room.member"
                    && event["state_key"] == user
            })
            .map(|(id, (_, so))| Ev {
                id: id.clone(),
                so: *so,
            })
            .collect();
        history.sort_by_key(|ev| ev.so);
        history
    }

    /// A state reset without events (like Synapse's `UpdateCurrentState`):
    /// the key of `event_id` goes back to that (older) event, carried
    /// inline in the row.
    pub(crate) fn reset_to(&mut self, room_id: &str, event_id: &str) {
        let position = self.next_position();
        let row = self.inline_state_row(position, room_id, event_id);
        let event = &self.events[event_id].0;
        let key = (
            event["type"].as_str().unwrap_or_default().to_owned(),
            event["state_key"].as_str().unwrap_or_default().to_owned(),
        );
        self.pending.push(row);
        let model = self.rooms.entry(room_id.to_owned()).or_default();
        model.current_state.insert(key.clone(), event_id.to_owned());
        model.room_state.insert(key.clone(), event_id.to_owned());
        let current = model.current_state.clone();
        if key.0 == "m.room.member" && self.is_local(&key.1) && !self.local_joined(&current) {
            if let Some(model) = self.rooms.get_mut(room_id) {
                model.current_state.clear();
            }
        }
    }

    /// Allocates a position without an event (an `UpdateCurrentState`
    /// delta, or rows built by hand).
    pub(crate) fn allocate_position(&mut self) -> i64 {
        self.next_position()
    }

    /// Appends hand-built rows.
    pub(crate) fn push_rows(&mut self, rows: impl IntoIterator<Item = Value>) {
        self.pending.extend(rows);
    }
}
