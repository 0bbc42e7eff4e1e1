//! The client API's actions: each persists its event(s) as a batch of its own.

use serde_json::{json, Value};

use super::{CreatedRoom, Delta, Ev, Homeserver, NewEvent, RoomModel};

impl Homeserver {
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
}
