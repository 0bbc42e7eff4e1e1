//! What arrives over federation: outliers and their de-outliering,
//! backfill, remote invites and knocks (out-of-band memberships) and
//! joins of remote rooms.

use serde_json::{json, Value};

use super::{Delta, Ev, Homeserver, NewEvent, INVITER};

impl Homeserver {
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
