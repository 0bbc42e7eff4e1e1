//! A test-side homeserver simulator: it allocates stream orderings the way a
//! Synapse event persister does and turns client-API-like actions
//! (`create_room`, `join`, `name`, remote invites, state resets, ...) into
//! the feed rows roomcache expects (see `docs/feed.md`), so scenario tests
//! read like the specification's catalogue.
//!
//! Owns: a model of each room's state (the room's own state, and the
//! server's current state, which is emptied when the last local member
//! leaves), the stream position counter, the backfill counter and the rows
//! not yet fed. May not touch: the server (tests feed what [`Homeserver::take`]
//! returns).

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Map, Value};

mod client;
mod federation;
mod resets;

pub(crate) use federation::{stripped, stripped_create};

/// A state key: `(type, state_key)`.
pub(crate) type StateKey = (String, String);

/// A persisted event: its ID and stream ordering (`SO(X)` in the spec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ev {
    pub(crate) id: String,
    pub(crate) so: i64,
}

/// The events of `create_room` (spec §2.14) that tests refer to: create,
/// the owner's join, and the last of the batch of power levels, join rules
/// and history visibility.
#[derive(Debug, Clone)]
pub(crate) struct CreatedRoom {
    pub(crate) room_id: String,
    pub(crate) create: Ev,
    pub(crate) join: Ev,
    pub(crate) history_visibility: Ev,
}

/// One event to persist in a batch.
#[derive(Debug, Clone)]
pub(crate) struct NewEvent {
    pub(crate) event_type: String,
    pub(crate) state_key: Option<String>,
    pub(crate) sender: String,
    pub(crate) content: Value,
    pub(crate) unsigned: Option<Value>,
    pub(crate) redacts: Option<String>,
    pub(crate) outlier: bool,
    pub(crate) out_of_band_membership: bool,
    pub(crate) rejected: bool,
    pub(crate) soft_failed: bool,
}

impl NewEvent {
    pub(crate) fn state(
        event_type: &str,
        state_key: &str,
        sender: &str,
        content: Value,
    ) -> NewEvent {
        NewEvent {
            event_type: event_type.into(),
            state_key: Some(state_key.into()),
            sender: sender.into(),
            content,
            unsigned: None,
            redacts: None,
            outlier: false,
            out_of_band_membership: false,
            rejected: false,
            soft_failed: false,
        }
    }

    pub(crate) fn message(sender: &str, body: &str) -> NewEvent {
        NewEvent {
            state_key: None,
            ..NewEvent::state(
                "m.room.message",
                "",
                sender,
                json!({"msgtype": "m.text", "body": body}),
            )
        }
    }

    pub(crate) fn member(user: &str, sender: &str, membership: &str) -> NewEvent {
        NewEvent::state(
            "m.room.member",
            user,
            sender,
            json!({ "membership": membership }),
        )
    }

    pub(crate) fn rejected(mut self) -> NewEvent {
        self.rejected = true;
        self
    }

    pub(crate) fn soft_failed(mut self) -> NewEvent {
        self.soft_failed = true;
        self
    }

    pub(crate) fn outlier(mut self) -> NewEvent {
        self.outlier = true;
        self
    }
}

/// How a batch changes the server's current state.
#[derive(Debug, Clone)]
pub(crate) enum Delta {
    /// The batch's own (non-outlier, non-rejected, non-soft-failed) state
    /// events are inserted; when the server is not in the room and a local
    /// user joins, the whole room state comes along.
    Natural,
    /// No change to current state.
    None,
    /// An explicit delta (a state reset): keys to insert (event IDs, which
    /// may be old events) and keys to remove.
    Explicit {
        to_insert: Vec<(StateKey, String)>,
        to_delete: Vec<StateKey>,
    },
}

#[derive(Debug, Clone, Default)]
struct RoomModel {
    /// The room's state as the DAG says (kept when the server leaves).
    room_state: BTreeMap<StateKey, String>,
    /// The server's current state (`current_state_events`): empty while
    /// no local user is joined.
    current_state: BTreeMap<StateKey, String>,
}

/// The simulator.
pub(crate) struct Homeserver {
    pub(crate) server_name: String,
    pub(crate) writer: String,
    /// The last stream ordering allocated (stream ids are shared by all writers).
    position: i64,
    /// The last backfill ordering allocated (negative).
    backfill: i64,
    next_event: u64,
    next_remote_room: u64,
    next_local_room: u64,
    rooms: HashMap<String, RoomModel>,
    /// Every event persisted, by ID: `(event JSON, stream ordering)`.
    events: HashMap<String, (Value, i64)>,
    pending: Vec<Value>,
}

pub(crate) const INVITER: &str = "@inviter:remote_server";

impl Default for Homeserver {
    fn default() -> Self {
        Homeserver::new("example.org")
    }
}

impl Homeserver {
    pub(crate) fn new(server_name: &str) -> Homeserver {
        Homeserver {
            server_name: server_name.into(),
            writer: "master".into(),
            position: 0,
            backfill: 0,
            next_event: 0,
            next_remote_room: 0,
            next_local_room: 0,
            rooms: HashMap::new(),
            events: HashMap::new(),
            pending: Vec::new(),
        }
    }

    /// A local user ID: `user("u1")` → `@u1:example.org`.
    #[allow(
        dead_code,
        reason = "used by benches/rules.rs, which includes this module"
    )]
    pub(crate) fn user(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.server_name)
    }

    fn is_local(&self, user: &str) -> bool {
        user.split_once(':').map(|(_, s)| s) == Some(self.server_name.as_str())
    }

    /// The feed batch of every row produced since the last call.
    pub(crate) fn take(&mut self) -> Value {
        let rows = std::mem::take(&mut self.pending);
        json!({"writer": self.writer, "rows": rows})
    }

    /// Whether rows are waiting to be fed.
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Switches the writer; rows not yet taken are refused (take them first).
    pub(crate) fn set_writer(&mut self, writer: &str) {
        assert!(self.pending.is_empty(), "take the pending rows first");
        self.writer = writer.into();
    }

    fn next_position(&mut self) -> i64 {
        self.position += 1;
        self.position
    }

    fn next_event_id(&mut self) -> String {
        self.next_event += 1;
        format!("$e{}", self.next_event)
    }

    /// Whether the server has current state for the room (is in it).
    pub(crate) fn is_server_in_room(&self, room_id: &str) -> bool {
        self.rooms
            .get(room_id)
            .is_some_and(|m| !m.current_state.is_empty())
    }

    /// The user's membership in the room's state, if any.
    pub(crate) fn membership(&self, room_id: &str, user: &str) -> Option<String> {
        let model = self.rooms.get(room_id)?;
        let id = model
            .room_state
            .get(&("m.room.member".to_owned(), user.to_owned()))?;
        self.events[id].0["content"]["membership"]
            .as_str()
            .map(str::to_owned)
    }

    /// The event currently at a key of the server's current state.
    pub(crate) fn current_event(&self, room_id: &str, key: &StateKey) -> Option<String> {
        self.rooms.get(room_id)?.current_state.get(key).cloned()
    }

    fn build_event(&mut self, room_id: &str, new: &NewEvent) -> (String, Value) {
        let event_id = self.next_event_id();
        let mut event = Map::new();
        event.insert("event_id".into(), json!(event_id));
        event.insert("room_id".into(), json!(room_id));
        event.insert("type".into(), json!(new.event_type));
        if let Some(key) = &new.state_key {
            event.insert("state_key".into(), json!(key));
        }
        event.insert("sender".into(), json!(new.sender));
        event.insert("content".into(), new.content.clone());
        if let Some(unsigned) = &new.unsigned {
            event.insert("unsigned".into(), unsigned.clone());
        }
        if let Some(redacts) = &new.redacts {
            event.insert("redacts".into(), json!(redacts));
        }
        (event_id, Value::Object(event))
    }

    fn event_row(stream_id: i64, event: &Value, new: &NewEvent) -> Value {
        let mut row = json!({"kind": "event", "stream_id": stream_id, "event": event});
        for (flag, set) in [
            ("outlier", new.outlier),
            ("out_of_band_membership", new.out_of_band_membership),
            ("rejected", new.rejected),
            ("soft_failed", new.soft_failed),
        ] {
            if set {
                row[flag] = json!(true);
            }
        }
        row
    }

    fn state_row(stream_id: i64, room_id: &str, key: &StateKey, event_id: Option<&str>) -> Value {
        json!({"kind": "state", "stream_id": stream_id, "room_id": room_id,
               "type": key.0, "state_key": key.1, "event_id": event_id})
    }

    fn local_joined(&self, state: &BTreeMap<StateKey, String>) -> bool {
        state.iter().any(|((t, k), id)| {
            t == "m.room.member"
                && self.is_local(k)
                && self.events[id].0["content"]["membership"] == "join"
        })
    }

    /// Persists one batch of a room: the events get consecutive stream
    /// orderings, the delta rows carry the smallest one (like Synapse's
    /// delta stream). Returns the persisted events, in order.
    pub(crate) fn persist(
        &mut self,
        room_id: &str,
        events: Vec<NewEvent>,
        delta: Delta,
    ) -> Vec<Ev> {
        let model = self.rooms.entry(room_id.to_owned()).or_default().clone();
        let mut persisted = Vec::new();
        let mut rows_by_position: Vec<Value> = Vec::new();
        let mut first = None;
        let mut batch_state: Vec<(StateKey, String)> = Vec::new();
        for new in &events {
            let (event_id, event) = self.build_event(room_id, new);
            let so = self.next_position();
            first.get_or_insert(so);
            self.events.insert(event_id.clone(), (event.clone(), so));
            rows_by_position.push(Self::event_row(so, &event, new));
            if let Some(key) = &new.state_key {
                if !new.outlier && !new.rejected && !new.soft_failed {
                    batch_state.push(((new.event_type.clone(), key.clone()), event_id.clone()));
                }
            }
            persisted.push(Ev { id: event_id, so });
        }
        let delta_position = first.unwrap_or_else(|| self.next_position());
        let (to_insert, to_delete) = self.delta_changes(&model, &batch_state, delta);
        // A row whose event is not part of this batch (a state reset back
        // to an old event, or old state coming back when the server
        // rejoins) carries the event inline: the cache may never have seen it.
        let mut delta_rows = Vec::new();
        for (key, id) in &to_insert {
            if persisted.iter().any(|ev| &ev.id == id) {
                delta_rows.push(Self::state_row(delta_position, room_id, key, Some(id)));
            } else {
                delta_rows.push(self.inline_state_row(delta_position, room_id, id));
            }
        }
        for key in &to_delete {
            delta_rows.push(Self::state_row(delta_position, room_id, key, None));
        }
        self.update_model(room_id, &batch_state, &to_insert, &to_delete);
        // Rows in stream order: the first event, the delta, the others.
        let mut rows = rows_by_position.into_iter();
        if let Some(first_row) = rows.next() {
            self.pending.push(first_row);
        }
        self.pending.extend(delta_rows);
        self.pending.extend(rows);
        persisted
    }

    /// The keys a batch's delta inserts (with their events) and deletes.
    fn delta_changes(
        &self,
        model: &RoomModel,
        batch_state: &[(StateKey, String)],
        delta: Delta,
    ) -> (Vec<(StateKey, String)>, Vec<StateKey>) {
        match delta {
            Delta::None => (Vec::new(), Vec::new()),
            Delta::Explicit {
                to_insert,
                to_delete,
            } => (to_insert, to_delete),
            Delta::Natural => {
                let mut room_state = model.room_state.clone();
                for (key, id) in batch_state {
                    room_state.insert(key.clone(), id.clone());
                }
                let joins_now = !model.current_state.is_empty() || self.local_joined(&room_state);
                if model.current_state.is_empty() && joins_now && !batch_state.is_empty() {
                    // The server (re)joins: the whole room state is new.
                    (room_state.into_iter().collect(), Vec::new())
                } else {
                    (batch_state.to_vec(), Vec::new())
                }
            }
        }
    }

    /// Applies a batch's state and delta to the room's model.
    fn update_model(
        &mut self,
        room_id: &str,
        batch_state: &[(StateKey, String)],
        to_insert: &[(StateKey, String)],
        to_delete: &[StateKey],
    ) {
        let model = self.rooms.entry(room_id.to_owned()).or_default();
        for (key, id) in batch_state {
            model.room_state.insert(key.clone(), id.clone());
        }
        for (key, id) in to_insert {
            model.current_state.insert(key.clone(), id.clone());
            model.room_state.insert(key.clone(), id.clone());
        }
        for key in to_delete {
            model.current_state.remove(key);
        }
        let current = model.current_state.clone();
        let touches_local_member = to_insert
            .iter()
            .map(|(k, _)| k)
            .chain(to_delete.iter())
            .any(|(t, k)| t == "m.room.member" && self.is_local(k));
        if touches_local_member && !self.local_joined(&current) {
            // Synapse empties current_state_events when the server leaves.
            if let Some(model) = self.rooms.get_mut(room_id) {
                model.current_state.clear();
            }
        }
    }

    fn persist_one(&mut self, room_id: &str, event: NewEvent) -> Ev {
        self.persist(room_id, vec![event], Delta::Natural)
            .pop()
            .expect("one event")
    }
}
