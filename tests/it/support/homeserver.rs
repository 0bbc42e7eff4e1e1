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
        let (to_insert, to_delete) = match delta {
            Delta::None => (Vec::new(), Vec::new()),
            Delta::Explicit {
                to_insert,
                to_delete,
            } => (to_insert, to_delete),
            Delta::Natural => {
                let mut room_state = model.room_state.clone();
                for (key, id) in &batch_state {
                    room_state.insert(key.clone(), id.clone());
                }
                let joins_now = !model.current_state.is_empty() || self.local_joined(&room_state);
                if model.current_state.is_empty() && joins_now && !batch_state.is_empty() {
                    // The server (re)joins: the whole room state is new.
                    (room_state.into_iter().collect(), Vec::new())
                } else {
                    (batch_state.clone(), Vec::new())
                }
            }
        };
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
        // Update the model.
        let model = self.rooms.entry(room_id.to_owned()).or_default();
        for (key, id) in &batch_state {
            model.room_state.insert(key.clone(), id.clone());
        }
        for (key, id) in &to_insert {
            model.current_state.insert(key.clone(), id.clone());
            model.room_state.insert(key.clone(), id.clone());
        }
        for key in &to_delete {
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
        // Rows in stream order: the first event, the delta, the others.
        let mut rows = rows_by_position.into_iter();
        if let Some(first_row) = rows.next() {
            self.pending.push(first_row);
        }
        self.pending.extend(delta_rows);
        self.pending.extend(rows);
        persisted
    }

    fn persist_one(&mut self, room_id: &str, event: NewEvent) -> Ev {
        self.persist(room_id, vec![event], Delta::Natural)
            .pop()
            .expect("one event")
    }

    /// `createRoom` (spec §2.14): C alone, J(owner) alone, then PL, JR, HV.
    pub(crate) fn create_room(&mut self, owner: &str, room_type: Option<&str>) -> CreatedRoom {
        self.next_local_room += 1;
        let room_id = format!("!r{}:{}", self.next_local_room, self.server_name);
        self.rooms.insert(room_id.clone(), RoomModel::default());
        let mut content = json!({"room_version": "10", "creator": owner});
        if let Some(t) = room_type {
            content["type"] = json!(t);
        }
        let create = self.persist_one(
            &room_id,
            NewEvent::state("m.room.create", "", owner, content),
        );
        let join = self.persist_one(&room_id, NewEvent::member(owner, owner, "join"));
        let mut rest = self.persist(
            &room_id,
            vec![
                NewEvent::state(
                    "m.room.power_levels",
                    "",
                    owner,
                    json!({"users": {owner: 100}}),
                ),
                NewEvent::state(
                    "m.room.join_rules",
                    "",
                    owner,
                    json!({"join_rule": "public"}),
                ),
                NewEvent::state(
                    "m.room.history_visibility",
                    "",
                    owner,
                    json!({"history_visibility": "shared"}),
                ),
            ],
            Delta::Natural,
        );
        let history_visibility = rest.pop().expect("hv");
        CreatedRoom {
            room_id,
            create,
            join,
            history_visibility,
        }
    }

    /// A state event sent through the client API, its own batch.
    pub(crate) fn set_state(
        &mut self,
        room_id: &str,
        sender: &str,
        event_type: &str,
        state_key: &str,
        content: Value,
    ) -> Ev {
        self.persist_one(
            room_id,
            NewEvent::state(event_type, state_key, sender, content),
        )
    }

    pub(crate) fn name(&mut self, room_id: &str, sender: &str, name: &str) -> Ev {
        self.set_state(room_id, sender, "m.room.name", "", json!({ "name": name }))
    }

    pub(crate) fn encrypt(&mut self, room_id: &str, sender: &str) -> Ev {
        self.set_state(
            room_id,
            sender,
            "m.room.encryption",
            "",
            json!({"algorithm": "m.megolm.v1.aes-sha2"}),
        )
    }

    pub(crate) fn tombstone(&mut self, room_id: &str, sender: &str, successor: &str) -> Ev {
        self.set_state(
            room_id,
            sender,
            "m.room.tombstone",
            "",
            json!({"replacement_room": successor, "body": "moved"}),
        )
    }

    pub(crate) fn join(&mut self, room_id: &str, user: &str) -> Ev {
        self.persist_one(room_id, NewEvent::member(user, user, "join"))
    }

    pub(crate) fn leave(&mut self, room_id: &str, user: &str) -> Ev {
        self.persist_one(room_id, NewEvent::member(user, user, "leave"))
    }

    pub(crate) fn invite(&mut self, room_id: &str, sender: &str, user: &str) -> Ev {
        self.persist_one(room_id, NewEvent::member(user, sender, "invite"))
    }

    pub(crate) fn ban(&mut self, room_id: &str, sender: &str, user: &str) -> Ev {
        self.persist_one(room_id, NewEvent::member(user, sender, "ban"))
    }

    /// A kick (or an unban): a leave sent by someone else.
    pub(crate) fn kick(&mut self, room_id: &str, sender: &str, user: &str) -> Ev {
        self.persist_one(room_id, NewEvent::member(user, sender, "leave"))
    }

    /// A display-name change: join → join.
    pub(crate) fn set_displayname(&mut self, room_id: &str, user: &str, displayname: &str) -> Ev {
        self.persist_one(
            room_id,
            NewEvent::state(
                "m.room.member",
                user,
                user,
                json!({"membership": "join", "displayname": displayname}),
            ),
        )
    }

    /// An `m.room.message`, its own batch.
    pub(crate) fn send(&mut self, room_id: &str, sender: &str, body: &str) -> Ev {
        self.persist_one(room_id, NewEvent::message(sender, body))
    }

    /// A redaction (room version 10: `redacts` at the top level).
    pub(crate) fn redact(&mut self, room_id: &str, sender: &str, target: &str) -> Ev {
        let mut event = NewEvent::state("m.room.redaction", "", sender, json!({}));
        event.state_key = None;
        event.redacts = Some(target.into());
        self.persist_one(room_id, event)
    }

    /// An event persisted as an outlier (not out-of-band): no delta.
    pub(crate) fn outlier(&mut self, room_id: &str, event: NewEvent) -> Ev {
        self.persist(room_id, vec![event.outlier()], Delta::None)
            .pop()
            .expect("one event")
    }

    /// Re-persists an outlier as a normal event (same ID): a new position
    /// in the writer's stream, the original stream ordering, and — for a
    /// state event — a delta row at that new position.
    pub(crate) fn deoutlier(&mut self, room_id: &str, outlier: &Ev) -> Ev {
        let (event, so) = self.events[&outlier.id].clone();
        let position = self.next_position();
        self.pending
            .push(json!({"kind": "event", "stream_id": position,
            "stream_ordering": so, "event": event}));
        if let Some(state_key) = event["state_key"].as_str() {
            let key = (
                event["type"].as_str().unwrap_or_default().to_owned(),
                state_key.to_owned(),
            );
            self.pending
                .push(Self::state_row(position, room_id, &key, Some(&outlier.id)));
            let model = self.rooms.entry(room_id.to_owned()).or_default();
            model.current_state.insert(key.clone(), outlier.id.clone());
            model.room_state.insert(key, outlier.id.clone());
        }
        Ev {
            id: outlier.id.clone(),
            so,
        }
    }

    /// Backfilled events (negative stream orderings, no delta), in one
    /// batch at a fresh position of the writer's stream. They enter the
    /// room's DAG state but not the server's current state.
    pub(crate) fn backfill(&mut self, room_id: &str, events: Vec<NewEvent>) -> Vec<Ev> {
        let position = self.next_position();
        let mut persisted = Vec::new();
        let mut orderings = Vec::new();
        for _ in &events {
            self.backfill -= 1;
            orderings.push(self.backfill);
        }
        // Rows of one position in one group; Synapse persists a backfilled
        // batch in ascending (ever more negative) order.
        for (new, so) in events.iter().zip(orderings) {
            let (event_id, event) = self.build_event(room_id, new);
            self.events.insert(event_id.clone(), (event.clone(), so));
            let mut row = Self::event_row(position, &event, new);
            row["stream_ordering"] = json!(so);
            self.pending.push(row);
            if let Some(key) = &new.state_key {
                self.rooms
                    .entry(room_id.to_owned())
                    .or_default()
                    .room_state
                    .insert((new.event_type.clone(), key.clone()), event_id.clone());
            }
            persisted.push(Ev { id: event_id, so });
        }
        persisted
    }

    /// The next remote room ID, `!test_room<n>:remote_server`.
    pub(crate) fn remote_room(&mut self) -> String {
        let room = format!("!test_room{}:remote_server", self.next_remote_room);
        self.next_remote_room += 1;
        self.rooms.entry(room.clone()).or_default();
        room
    }

    fn out_of_band(
        &mut self,
        room_id: &str,
        user: &str,
        sender: &str,
        membership: &str,
        unsigned: Option<Value>,
    ) -> Ev {
        let mut event = NewEvent::member(user, sender, membership);
        event.outlier = true;
        event.out_of_band_membership = true;
        event.unsigned = unsigned;
        self.persist(room_id, vec![event], Delta::None)
            .pop()
            .expect("one event")
    }

    /// A remote invite (out-of-band outlier) from [`INVITER`]; `stripped`
    /// goes to `unsigned.invite_room_state` (`None`: no such field).
    pub(crate) fn remote_invite(
        &mut self,
        room_id: &str,
        user: &str,
        stripped: Option<Value>,
    ) -> Ev {
        let unsigned = stripped.map(|s| json!({ "invite_room_state": s }));
        self.out_of_band(room_id, user, INVITER, "invite", unsigned)
    }

    /// A knock on a remote room; `stripped` goes to `unsigned.knock_room_state`.
    pub(crate) fn remote_knock(
        &mut self,
        room_id: &str,
        user: &str,
        stripped: Option<Value>,
    ) -> Ev {
        let unsigned = stripped.map(|s| json!({ "knock_room_state": s }));
        self.out_of_band(room_id, user, user, "knock", unsigned)
    }

    /// The remote inviter retracts the invite: an out-of-band leave sent by it.
    pub(crate) fn remote_retract(&mut self, room_id: &str, user: &str) -> Ev {
        self.out_of_band(room_id, user, INVITER, "leave", None)
    }

    /// The user rejects a remote invite the remote server could not be
    /// reached for: a local out-of-band leave sent by the user.
    pub(crate) fn reject_remote_invite(&mut self, room_id: &str, user: &str) -> Ev {
        self.out_of_band(room_id, user, user, "leave", None)
    }

    /// Joins a remote room over federation: the room's state (from
    /// `send_join`) is persisted as outliers, then the join with a delta
    /// carrying the whole state.
    pub(crate) fn join_remote(&mut self, room_id: &str, user: &str, state: Vec<NewEvent>) -> Ev {
        let mut to_insert = Vec::new();
        for new in state {
            let key = (
                new.event_type.clone(),
                new.state_key.clone().unwrap_or_default(),
            );
            let ev = self.outlier(room_id, new);
            to_insert.push((key, ev.id));
        }
        let join = NewEvent::member(user, user, "join");
        // The join's own key is added once its ID is known.
        let (event_id, event) = self.build_event(room_id, &join);
        let so = self.next_position();
        self.events.insert(event_id.clone(), (event.clone(), so));
        self.pending.push(Self::event_row(so, &event, &join));
        to_insert.push((("m.room.member".into(), user.into()), event_id.clone()));
        let model = self.rooms.entry(room_id.to_owned()).or_default();
        for (key, id) in &to_insert {
            model.current_state.insert(key.clone(), id.clone());
            model.room_state.insert(key.clone(), id.clone());
        }
        for (key, id) in &to_insert {
            self.pending
                .push(Self::state_row(so, room_id, key, Some(id.as_str())));
        }
        Ev { id: event_id, so }
    }

    /// A local user forgets a room.
    pub(crate) fn forget(&mut self, room_id: &str, user: &str) {
        let position = self.next_position();
        self.pending
            .push(json!({"kind": "forget", "stream_id": position,
            "room_id": room_id, "user_id": user}));
    }

    /// The room is purged.
    pub(crate) fn purge(&mut self, room_id: &str) {
        let position = self.next_position();
        self.pending
            .push(json!({"kind": "purge", "stream_id": position, "room_id": room_id}));
        self.rooms.remove(room_id);
    }

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

/// A stripped state event from [`INVITER`].
pub(crate) fn stripped(event_type: &str, content: Value) -> Value {
    json!({"type": event_type, "state_key": "", "sender": INVITER, "content": content})
}

/// The create event of a remote room, as stripped state.
pub(crate) fn stripped_create(room_type: Option<&str>) -> Value {
    let mut content = json!({"creator": INVITER, "room_version": "10"});
    if let Some(t) = room_type {
        content["type"] = json!(t);
    }
    stripped("m.room.create", content)
}
