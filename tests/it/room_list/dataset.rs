//! The crafted dataset of the room-list tests: one writer's feed (with the
//! position of each labelled event) and the entries alice's lists hold.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{ALICE, BOB, CAROL};

/// Builds one writer's feed rows with consecutive stream ids and remembers
/// the position of each labelled event.
#[derive(Default)]
pub(super) struct Feed {
    pub(super) next: i64,
    rows: Vec<Value>,
    at: BTreeMap<String, i64>,
}

pub(super) fn room(name: &str) -> String {
    if name.contains(':') {
        format!("!{name}")
    } else {
        format!("!{name}:example.org")
    }
}

/// A state event for [`Feed::state`]: `event(type, content)`, with
/// `.key(..)` for a state key other than "".
pub(super) struct StateEvent {
    kind: String,
    key: String,
    content: Value,
}

pub(super) fn event(kind: &str, content: Value) -> StateEvent {
    StateEvent {
        kind: kind.to_owned(),
        key: String::new(),
        content,
    }
}

/// The membership event of `user`.
fn member(user: &str, membership: &str) -> StateEvent {
    event("m.room.member", json!({ "membership": membership })).key(user)
}

impl StateEvent {
    fn key(mut self, key: &str) -> Self {
        self.key = key.to_owned();
        self
    }
}

impl Feed {
    fn new() -> Self {
        Feed {
            next: 1,
            ..Feed::default()
        }
    }

    /// An empty feed whose ids continue after this one's.
    pub(super) fn continuing(&self) -> Self {
        Feed {
            next: self.next,
            ..Feed::default()
        }
    }

    fn take_id(&mut self, label: &str) -> i64 {
        let id = self.next;
        self.next += 1;
        self.at.insert(label.to_owned(), id);
        id
    }

    /// A state event `sender` sends in the room, labelled `label`.
    pub(super) fn state(&mut self, label: &str, room_name: &str, sender: &str, event: StateEvent) {
        let id = self.take_id(label);
        let room_id = room(room_name);
        let StateEvent { kind, key, content } = event;
        self.rows
            .push(json!({"kind": "event", "stream_id": id, "event": {
            "event_id": format!("$e{id}"), "room_id": room_id, "type": kind, "state_key": key,
            "sender": sender, "content": content}}));
        self.rows
            .push(json!({"kind": "state", "stream_id": id, "room_id": room_id,
            "type": kind, "state_key": key, "event_id": format!("$e{id}")}));
    }

    /// The room's create event (labelled `label`) and its creator's join
    /// (`{label}.join`).
    fn create(&mut self, label: &str, room_name: &str, creator: &str, content: Value) {
        self.state(label, room_name, creator, event("m.room.create", content));
        let join = format!("{label}.join");
        self.state(&join, room_name, creator, member(creator, "join"));
    }

    pub(super) fn message(&mut self, label: &str, room_name: &str, sender: &str) {
        let id = self.take_id(label);
        self.rows
            .push(json!({"kind": "event", "stream_id": id, "event": {
            "event_id": format!("$e{id}"), "room_id": room(room_name), "type": "m.room.message",
            "sender": sender, "content": {"body": "hello", "msgtype": "m.text"}}}));
    }

    fn remote_invite(&mut self, label: &str, room_name: &str, stripped: Option<Value>) {
        let id = self.take_id(label);
        let mut event = json!({"event_id": format!("$e{id}"), "room_id": room(room_name),
            "type": "m.room.member", "state_key": ALICE, "sender": CAROL,
            "content": {"membership": "invite"}});
        if let Some(stripped) = stripped {
            event["unsigned"] = json!({ "invite_room_state": stripped });
        }
        self.rows
            .push(json!({"kind": "event", "stream_id": id, "outlier": true,
            "out_of_band_membership": true, "event": event}));
    }

    fn forget(&mut self, label: &str, room_name: &str, user: &str) {
        let id = self.take_id(label);
        self.rows.push(
            json!({"kind": "forget", "stream_id": id, "room_id": room(room_name), "user_id": user}),
        );
    }

    fn account_data(&mut self, label: &str, room_name: Option<&str>, kind: &str, content: Value) {
        let id = self.take_id(label);
        let mut row = json!({"kind": "account_data", "stream_id": id, "user_id": ALICE,
            "type": kind, "content": content});
        if let Some(name) = room_name {
            row["room_id"] = json!(room(name));
        }
        self.rows.push(row);
    }

    pub(super) fn batch(&mut self) -> Value {
        json!({"writer": "master", "rows": std::mem::take(&mut self.rows)})
    }

    pub(super) fn pos(&self, label: &str) -> i64 {
        self.at[label]
    }
}

fn stripped(sender: &str, events: &[(&str, Value)]) -> Value {
    Value::Array(
        events
            .iter()
            .map(|(kind, content)| json!({"type": kind, "state_key": "", "sender": sender, "content": content}))
            .collect(),
    )
}

/// The crafted dataset (see the module comment), in four batches; returns
/// the feed with its positions.
pub(super) fn dataset() -> (Feed, Vec<Value>) {
    let mut f = Feed::new();
    let batches = vec![
        joined_rooms(&mut f),
        space_and_invites(&mut f),
        rooms_left(&mut f),
        direct_message_and_account_data(&mut f),
    ];
    (f, batches)
}

fn joined_rooms(f: &mut Feed) -> Value {
    // Joined, plain, named, tagged m.favourite, child of the space.
    f.create("plain", "plain", ALICE, json!({"room_version": "10"}));
    let name = event("m.room.name", json!({"name": "Plain Tea"}));
    f.state("plain.name", "plain", ALICE, name);
    // Joined, encrypted, tombstoned; a space child with an empty via (not a child).
    f.create("secret", "secret", ALICE, json!({"room_version": "10"}));
    let encryption = event(
        "m.room.encryption",
        json!({"algorithm": "m.megolm.v1.aes-sha2"}),
    );
    f.state("secret.encryption", "secret", ALICE, encryption);
    let tombstone = event(
        "m.room.tombstone",
        json!({"replacement_room": "!secret2:example.org"}),
    );
    f.state("secret.tombstone", "secret", ALICE, tombstone);
    let name = event("m.room.name", json!({"name": "Secret"}));
    f.state("secret.name", "secret", ALICE, name);
    f.batch()
}

fn space_and_invites(f: &mut Feed) -> Value {
    // A space, with children.
    f.create(
        "space",
        "space",
        ALICE,
        json!({"room_version": "10", "type": "m.space"}),
    );
    let name = event("m.room.name", json!({"name": "Team Space"}));
    f.state("space.name", "space", ALICE, name);
    let children = [
        (
            "space.child1",
            room("plain"),
            json!({"via": ["example.org"]}),
        ),
        ("space.child2", room("secret"), json!({"via": []})),
        (
            "space.child3",
            room("invited:remote"),
            json!({"via": ["remote"]}),
        ),
    ];
    for (label, child, content) in children {
        let child = event("m.space.child", content).key(&child);
        f.state(label, "space", ALICE, child);
    }
    // Remote invites: with stripped state (known, encrypted), and without (unknown state).
    f.remote_invite(
        "invited",
        "invited:remote",
        Some(stripped(
            CAROL,
            &[
                ("m.room.create", json!({"room_version": "10"})),
                ("m.room.name", json!({"name": "Remote Invite"})),
                (
                    "m.room.encryption",
                    json!({"algorithm": "m.megolm.v1.aes-sha2"}),
                ),
            ],
        )),
    );
    f.remote_invite("unknown", "unknown:remote", None);
    f.batch()
}

fn rooms_left(f: &mut Feed) -> Value {
    // Kicked and banned by bob: listed until forgotten.
    f.create("kicked", "kicked", BOB, json!({"room_version": "10"}));
    f.state("kicked.alice", "kicked", ALICE, member(ALICE, "join"));
    let name = event("m.room.name", json!({"name": "Kick Room"}));
    f.state("kicked.name", "kicked", BOB, name);
    f.state("kicked.kick", "kicked", BOB, member(ALICE, "leave"));
    f.create("banned", "banned", BOB, json!({"room_version": "10"}));
    f.state("banned.alice", "banned", ALICE, member(ALICE, "join"));
    f.state("banned.ban", "banned", BOB, member(ALICE, "ban"));
    // Self-left: absent unless newly left after from_token.
    f.create("left", "left", ALICE, json!({"room_version": "10"}));
    let name = event("m.room.name", json!({"name": "Left Behind"}));
    f.state("left.name", "left", ALICE, name);
    f.state("left.leave", "left", ALICE, member(ALICE, "leave"));
    // Self-left then forgotten, and kicked then forgotten: never listed.
    f.create(
        "forgotten",
        "forgotten",
        ALICE,
        json!({"room_version": "10"}),
    );
    let leave = member(ALICE, "leave");
    f.state("forgotten.leave", "forgotten", ALICE, leave);
    f.forget("forgotten.forget", "forgotten", ALICE);
    f.create(
        "kickforgot",
        "kickforgot",
        BOB,
        json!({"room_version": "10"}),
    );
    let join = member(ALICE, "join");
    f.state("kickforgot.alice", "kickforgot", ALICE, join);
    let kick = member(ALICE, "leave");
    f.state("kickforgot.kick", "kickforgot", BOB, kick);
    f.forget("kickforgot.forget", "kickforgot", ALICE);
    f.batch()
}

fn direct_message_and_account_data(f: &mut Feed) -> Value {
    // A DM: invited by bob, then joined.
    f.create("dm", "dm", BOB, json!({"room_version": "10"}));
    f.state("dm.invite", "dm", BOB, member(ALICE, "invite"));
    f.state("dm.alice", "dm", ALICE, member(ALICE, "join"));
    // Account data: m.direct and tags.
    f.account_data(
        "direct",
        None,
        "m.direct",
        json!({BOB: [room("dm")], CAROL: "not an array"}),
    );
    f.account_data(
        "tag.plain",
        Some("plain"),
        "m.tag",
        json!({"tags": {"m.favourite": {"order": 0.1}}}),
    );
    f.account_data(
        "tag.space",
        Some("space"),
        "m.tag",
        json!({"tags": {"u.work": {}}}),
    );
    f.account_data(
        "tag.kicked",
        Some("kicked"),
        "m.tag",
        json!({"tags": {"u.work": {}, "m.lowpriority": {}}}),
    );
    // The latest activity: a message in the plain room.
    f.message("plain.message", "plain", ALICE);
    f.batch()
}

/// An expected room-list entry of alice's: her snapshot (membership event
/// labelled `at`), the room's bump stamp and its recency (the sort key: a
/// joined room's last event of any type, else the membership event). By
/// default a join sent by alice, bumped and last active at the membership
/// event, with known state and no room type, name or tombstone, not
/// encrypted.
struct Entry {
    room_id: String,
    membership: String,
    sender: String,
    position: i64,
    bump_stamp: i64,
    recency: i64,
    room_type: Value,
    room_name: Value,
    is_encrypted: bool,
    tombstone: Value,
    has_known_state: bool,
}

fn entry(f: &Feed, room_name: &str, at: &str) -> Entry {
    let position = f.pos(at);
    Entry {
        room_id: room(room_name),
        membership: "join".to_owned(),
        sender: ALICE.to_owned(),
        position,
        bump_stamp: position,
        recency: position,
        room_type: Value::Null,
        room_name: Value::Null,
        is_encrypted: false,
        tombstone: Value::Null,
        has_known_state: true,
    }
}

impl Entry {
    fn membership(mut self, membership: &str) -> Self {
        self.membership = membership.to_owned();
        self
    }

    fn by(mut self, sender: &str) -> Self {
        self.sender = sender.to_owned();
        self
    }

    fn bump(mut self, bump_stamp: i64) -> Self {
        self.bump_stamp = bump_stamp;
        self
    }

    /// The room's last event (a joined room sorts by it).
    fn last_event(mut self, recency: i64) -> Self {
        self.recency = recency;
        self
    }

    fn room_type(mut self, room_type: &str) -> Self {
        self.room_type = json!(room_type);
        self
    }

    fn name(mut self, room_name: &str) -> Self {
        self.room_name = json!(room_name);
        self
    }

    fn encrypted(mut self) -> Self {
        self.is_encrypted = true;
        self
    }

    fn tombstone(mut self, successor: &str) -> Self {
        self.tombstone = json!(successor);
        self
    }

    fn unknown_state(mut self) -> Self {
        self.has_known_state = false;
        self
    }

    fn json(self) -> Value {
        let position = self.position;
        json!({"room_id": self.room_id, "membership": self.membership, "sender": self.sender,
               "membership_event_id": format!("$e{position}"), "event_stream_ordering": position,
               "event_instance_name": "master", "bump_stamp": self.bump_stamp,
               "recency": self.recency,
               "room_type": self.room_type, "room_name": self.room_name,
               "is_encrypted": self.is_encrypted, "tombstone_successor_room_id": self.tombstone,
               "has_known_state": self.has_known_state})
    }
}

/// The full expected entry of each listed room.
pub(super) fn expected_entries(f: &Feed) -> BTreeMap<&'static str, Value> {
    let entries = [
        (
            "plain",
            entry(f, "plain", "plain.join")
                .bump(f.pos("plain.message"))
                .last_event(f.pos("plain.message"))
                .name("Plain Tea"),
        ),
        (
            "secret",
            entry(f, "secret", "secret.join")
                .bump(f.pos("secret"))
                .last_event(f.pos("secret.name"))
                .name("Secret")
                .encrypted()
                .tombstone("!secret2:example.org"),
        ),
        (
            "space",
            entry(f, "space", "space.join")
                .bump(f.pos("space"))
                .last_event(f.pos("space.child3"))
                .room_type("m.space")
                .name("Team Space"),
        ),
        (
            "invited",
            entry(f, "invited:remote", "invited")
                .membership("invite")
                .by(CAROL)
                .name("Remote Invite")
                .encrypted(),
        ),
        (
            "unknown",
            entry(f, "unknown:remote", "unknown")
                .membership("invite")
                .by(CAROL)
                .unknown_state(),
        ),
        (
            "kicked",
            entry(f, "kicked", "kicked.kick")
                .membership("leave")
                .by(BOB)
                .name("Kick Room"),
        ),
        (
            "banned",
            entry(f, "banned", "banned.ban").membership("ban").by(BOB),
        ),
        (
            "left",
            entry(f, "left", "left.leave")
                .membership("leave")
                .name("Left Behind"),
        ),
        ("dm", entry(f, "dm", "dm.alice").bump(f.pos("dm"))),
    ];
    entries
        .into_iter()
        .map(|(name, entry)| (name, entry.json()))
        .collect()
}
