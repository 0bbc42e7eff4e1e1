//! Room lists over the socket (`POST /v1/users/{user_id}/room_list`): a
//! crafted dataset covering every filter, their combinations, range edge
//! cases, forgotten / self-left / kicked / banned / newly-left rooms and
//! unknown-state exclusions, with exact answers, before and after a restart.

use std::collections::BTreeMap;

use crate::support::server::TestServer;
use serde_json::{json, Value};

const ALICE: &str = "@alice:example.org";
const BOB: &str = "@bob:example.org";
const CAROL: &str = "@carol:remote";

/// Builds one writer's feed rows with consecutive stream ids and remembers
/// the position of each labelled event.
#[derive(Default)]
struct Feed {
    next: i64,
    rows: Vec<Value>,
    at: BTreeMap<String, i64>,
}

fn room(name: &str) -> String {
    if name.contains(':') {
        format!("!{name}")
    } else {
        format!("!{name}:example.org")
    }
}

impl Feed {
    fn new() -> Self {
        Feed {
            next: 1,
            ..Feed::default()
        }
    }

    fn take_id(&mut self, label: &str) -> i64 {
        let id = self.next;
        self.next += 1;
        self.at.insert(label.to_owned(), id);
        id
    }

    fn state(
        &mut self,
        label: &str,
        room_name: &str,
        kind: &str,
        key: &str,
        sender: &str,
        content: Value,
    ) {
        let id = self.take_id(label);
        let room_id = room(room_name);
        self.rows
            .push(json!({"kind": "event", "stream_id": id, "event": {
            "event_id": format!("$e{id}"), "room_id": room_id, "type": kind, "state_key": key,
            "sender": sender, "content": content}}));
        self.rows
            .push(json!({"kind": "state", "stream_id": id, "room_id": room_id,
            "type": kind, "state_key": key, "event_id": format!("$e{id}")}));
    }

    fn member(&mut self, label: &str, room_name: &str, user: &str, sender: &str, membership: &str) {
        self.state(
            label,
            room_name,
            "m.room.member",
            user,
            sender,
            json!({"membership": membership}),
        );
    }

    fn create(&mut self, label: &str, room_name: &str, creator: &str, content: Value) {
        self.state(label, room_name, "m.room.create", "", creator, content);
        self.member(
            &format!("{label}.join"),
            room_name,
            creator,
            creator,
            "join",
        );
    }

    fn message(&mut self, label: &str, room_name: &str, sender: &str) {
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

    fn batch(&mut self) -> Value {
        json!({"writer": "master", "rows": std::mem::take(&mut self.rows)})
    }

    fn pos(&self, label: &str) -> i64 {
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

/// The crafted dataset (see the module comment); returns the feed with its positions.
fn dataset() -> (Feed, Vec<Value>) {
    let mut f = Feed::new();
    let mut batches = Vec::new();
    // Joined, plain, named, tagged m.favourite, child of the space.
    f.create("plain", "plain", ALICE, json!({"room_version": "10"}));
    f.state(
        "plain.name",
        "plain",
        "m.room.name",
        "",
        ALICE,
        json!({"name": "Plain Tea"}),
    );
    // Joined, encrypted, tombstoned; a space child with an empty via (not a child).
    f.create("secret", "secret", ALICE, json!({"room_version": "10"}));
    f.state(
        "secret.encryption",
        "secret",
        "m.room.encryption",
        "",
        ALICE,
        json!({"algorithm": "m.megolm.v1.aes-sha2"}),
    );
    f.state(
        "secret.tombstone",
        "secret",
        "m.room.tombstone",
        "",
        ALICE,
        json!({"replacement_room": "!secret2:example.org"}),
    );
    f.state(
        "secret.name",
        "secret",
        "m.room.name",
        "",
        ALICE,
        json!({"name": "Secret"}),
    );
    batches.push(f.batch());
    // A space, with children.
    f.create(
        "space",
        "space",
        ALICE,
        json!({"room_version": "10", "type": "m.space"}),
    );
    f.state(
        "space.name",
        "space",
        "m.room.name",
        "",
        ALICE,
        json!({"name": "Team Space"}),
    );
    f.state(
        "space.child1",
        "space",
        "m.space.child",
        &room("plain"),
        ALICE,
        json!({"via": ["example.org"]}),
    );
    f.state(
        "space.child2",
        "space",
        "m.space.child",
        &room("secret"),
        ALICE,
        json!({"via": []}),
    );
    f.state(
        "space.child3",
        "space",
        "m.space.child",
        &room("invited:remote"),
        ALICE,
        json!({"via": ["remote"]}),
    );
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
    batches.push(f.batch());
    // Kicked and banned by bob: listed until forgotten.
    f.create("kicked", "kicked", BOB, json!({"room_version": "10"}));
    f.member("kicked.alice", "kicked", ALICE, ALICE, "join");
    f.state(
        "kicked.name",
        "kicked",
        "m.room.name",
        "",
        BOB,
        json!({"name": "Kick Room"}),
    );
    f.member("kicked.kick", "kicked", ALICE, BOB, "leave");
    f.create("banned", "banned", BOB, json!({"room_version": "10"}));
    f.member("banned.alice", "banned", ALICE, ALICE, "join");
    f.member("banned.ban", "banned", ALICE, BOB, "ban");
    // Self-left: absent unless newly left after from_token.
    f.create("left", "left", ALICE, json!({"room_version": "10"}));
    f.state(
        "left.name",
        "left",
        "m.room.name",
        "",
        ALICE,
        json!({"name": "Left Behind"}),
    );
    f.member("left.leave", "left", ALICE, ALICE, "leave");
    // Self-left then forgotten, and kicked then forgotten: never listed.
    f.create(
        "forgotten",
        "forgotten",
        ALICE,
        json!({"room_version": "10"}),
    );
    f.member("forgotten.leave", "forgotten", ALICE, ALICE, "leave");
    f.forget("forgotten.forget", "forgotten", ALICE);
    f.create(
        "kickforgot",
        "kickforgot",
        BOB,
        json!({"room_version": "10"}),
    );
    f.member("kickforgot.alice", "kickforgot", ALICE, ALICE, "join");
    f.member("kickforgot.kick", "kickforgot", ALICE, BOB, "leave");
    f.forget("kickforgot.forget", "kickforgot", ALICE);
    batches.push(f.batch());
    // A DM: invited by bob, then joined.
    f.create("dm", "dm", BOB, json!({"room_version": "10"}));
    f.member("dm.invite", "dm", ALICE, BOB, "invite");
    f.member("dm.alice", "dm", ALICE, ALICE, "join");
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
    batches.push(f.batch());
    (f, batches)
}

/// The full expected entry of each listed room.
fn expected_entries(f: &Feed) -> BTreeMap<&'static str, Value> {
    let entry = |room_name: &str,
                 membership: &str,
                 sender: &str,
                 at: &str,
                 bump: i64,
                 room_type: Value,
                 name: Value,
                 encrypted: bool,
                 tombstone: Value,
                 known: bool| {
        let position = f.pos(at);
        json!({"room_id": room(room_name), "membership": membership, "sender": sender,
               "membership_event_id": format!("$e{position}"), "event_stream_ordering": position,
               "event_instance_name": "master", "bump_stamp": bump, "room_type": room_type,
               "room_name": name, "is_encrypted": encrypted,
               "tombstone_successor_room_id": tombstone, "has_known_state": known})
    };
    let n = Value::Null;
    BTreeMap::from([
        (
            "plain",
            entry(
                "plain",
                "join",
                ALICE,
                "plain.join",
                f.pos("plain.message"),
                n.clone(),
                json!("Plain Tea"),
                false,
                n.clone(),
                true,
            ),
        ),
        (
            "secret",
            entry(
                "secret",
                "join",
                ALICE,
                "secret.join",
                f.pos("secret"),
                n.clone(),
                json!("Secret"),
                true,
                json!("!secret2:example.org"),
                true,
            ),
        ),
        (
            "space",
            entry(
                "space",
                "join",
                ALICE,
                "space.join",
                f.pos("space"),
                json!("m.space"),
                json!("Team Space"),
                false,
                n.clone(),
                true,
            ),
        ),
        (
            "invited",
            entry(
                "invited:remote",
                "invite",
                CAROL,
                "invited",
                f.pos("invited"),
                n.clone(),
                json!("Remote Invite"),
                true,
                n.clone(),
                true,
            ),
        ),
        (
            "unknown",
            entry(
                "unknown:remote",
                "invite",
                CAROL,
                "unknown",
                f.pos("unknown"),
                n.clone(),
                n.clone(),
                false,
                n.clone(),
                false,
            ),
        ),
        (
            "kicked",
            entry(
                "kicked",
                "leave",
                BOB,
                "kicked.kick",
                f.pos("kicked.kick"),
                n.clone(),
                json!("Kick Room"),
                false,
                n.clone(),
                true,
            ),
        ),
        (
            "banned",
            entry(
                "banned",
                "ban",
                BOB,
                "banned.ban",
                f.pos("banned.ban"),
                n.clone(),
                n.clone(),
                false,
                n.clone(),
                true,
            ),
        ),
        (
            "left",
            entry(
                "left",
                "leave",
                ALICE,
                "left.leave",
                f.pos("left.leave"),
                n.clone(),
                json!("Left Behind"),
                false,
                n.clone(),
                true,
            ),
        ),
        (
            "dm",
            entry(
                "dm",
                "join",
                ALICE,
                "dm.alice",
                f.pos("dm"),
                n.clone(),
                n.clone(),
                false,
                n.clone(),
                true,
            ),
        ),
    ])
}

async fn room_list(server: &TestServer, user: &str, body: Value) -> Value {
    let answer = server
        .post(&format!("/v1/users/{user}/room_list"), &body)
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    answer.body
}

/// One list with one range covering everything: (count, room names in order).
async fn names(
    server: &TestServer,
    filters: Value,
    from_token: Option<&str>,
) -> (u64, Vec<String>) {
    let mut body = json!({"lists": {"l": {"ranges": [[0, 99]], "filters": filters}}});
    if let Some(token) = from_token {
        body["from_token"] = json!(token);
    }
    let answer = room_list(server, ALICE, body).await;
    let list = &answer["lists"]["l"];
    let rooms = list["ranges"][0]["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let id = e["room_id"].as_str().unwrap();
            id.trim_start_matches('!')
                .trim_end_matches(":example.org")
                .trim_end_matches(":remote")
                .to_owned()
        })
        .collect();
    (list["count"].as_u64().unwrap(), rooms)
}

fn list(names: &[&str]) -> (u64, Vec<String>) {
    (
        names.len() as u64,
        names.iter().map(|s| s.to_string()).collect(),
    )
}

async fn assert_filters(server: &TestServer, f: &Feed) {
    let all = [
        "plain", "dm", "banned", "kicked", "unknown", "invited", "space", "secret",
    ];
    assert_eq!(names(server, json!({}), None).await, list(&all));
    // Newly left: a self-leave after from_token is listed; at or before it, not.
    let before_leave = format!("s{}", f.pos("left.leave") - 1);
    let at_leave = format!("s{}", f.pos("left.leave"));
    assert_eq!(
        names(server, json!({}), Some(&before_leave)).await,
        list(&["plain", "dm", "left", "banned", "kicked", "unknown", "invited", "space", "secret"])
    );
    assert_eq!(names(server, json!({}), Some(&at_leave)).await, list(&all));
    // A multi-writer token: master's own position counts.
    let vector = format!("m1~master.{}", f.pos("left.leave"));
    assert_eq!(names(server, json!({}), Some(&vector)).await, list(&all));
    // Forgotten rooms stay out even when newly left.
    assert_eq!(names(server, json!({}), Some("s0")).await.0, 9);

    let cases: Vec<(Value, Vec<&str>)> = vec![
        (json!({"is_encrypted": true}), vec!["invited", "secret"]),
        (
            json!({"is_encrypted": false}),
            vec!["plain", "dm", "banned", "kicked", "space"],
        ),
        (json!({"is_invite": true}), vec!["unknown", "invited"]),
        (
            json!({"is_invite": false}),
            vec!["plain", "dm", "banned", "kicked", "space", "secret"],
        ),
        (
            json!({"room_types": [null]}),
            vec!["plain", "dm", "banned", "kicked", "invited", "secret"],
        ),
        (json!({"room_types": ["m.space"]}), vec!["space"]),
        (json!({"room_types": []}), vec![]),
        (json!({"room_types": ["never.seen"]}), vec![]),
        (
            json!({"not_room_types": ["m.space"]}),
            vec!["plain", "dm", "banned", "kicked", "invited", "secret"],
        ),
        (
            json!({"not_room_types": []}),
            vec![
                "plain", "dm", "banned", "kicked", "invited", "space", "secret",
            ],
        ),
        (
            json!({"room_types": [null, "m.space"], "not_room_types": ["m.space"]}),
            vec!["plain", "dm", "banned", "kicked", "invited", "secret"],
        ),
        (json!({"room_name_like": "TEA"}), vec!["plain", "space"]),
        (json!({"room_name_like": "remote"}), vec!["invited"]),
        (json!({"room_name_like": "zzz"}), vec![]),
        (json!({"spaces": [room("space")]}), vec!["plain", "invited"]),
        (json!({"spaces": [room("plain")]}), vec![]),
        (json!({"spaces": []}), vec![]),
        (json!({"is_dm": true}), vec!["dm"]),
        (
            json!({"is_dm": false}),
            vec![
                "plain", "banned", "kicked", "unknown", "invited", "space", "secret",
            ],
        ),
        (json!({"tags": ["u.work"]}), vec!["kicked", "space"]),
        (json!({"tags": []}), vec![]),
        (
            json!({"not_tags": ["m.lowpriority"]}),
            vec![
                "plain", "dm", "banned", "unknown", "invited", "space", "secret",
            ],
        ),
        (
            json!({"tags": ["u.work", "m.favourite"], "not_tags": ["m.lowpriority"]}),
            vec!["plain", "space"],
        ),
        (
            json!({"is_encrypted": false, "is_invite": false, "not_room_types": ["m.space"], "is_dm": false}),
            vec!["plain", "banned", "kicked"],
        ),
        (
            json!({"spaces": [room("space")], "room_name_like": "tea"}),
            vec!["plain"],
        ),
        (
            json!({"spaces": [room("space")], "is_invite": true, "is_encrypted": true}),
            vec!["invited"],
        ),
        (
            json!({"tags": ["u.work"], "room_types": ["m.space"]}),
            vec!["space"],
        ),
        (json!({"is_dm": null, "spaces": null}), all.to_vec()),
    ];
    for (filters, expected) in cases {
        assert_eq!(
            names(server, filters.clone(), None).await,
            list(&expected),
            "filters {filters}"
        );
    }
}

async fn assert_ranges_and_entries(server: &TestServer, f: &Feed) {
    let entries = expected_entries(f);
    let answer = room_list(
        server,
        ALICE,
        json!({"lists": {
            "all": {"ranges": [[0, 2], [5, 100], [8, 9], [3, 1], [1, 1], [0, 1]]},
            "count_only": {"filters": {"is_invite": true}},
            "combined": {"ranges": [[0, 0], [1, 5], [2, 1], [10, 12], [0, 1]],
                         "filters": {"is_encrypted": false, "is_invite": false,
                                     "not_room_types": ["m.space"], "is_dm": false}}
        }}),
    )
    .await;
    let pick = |names: &[&str]| Value::Array(names.iter().map(|n| entries[n].clone()).collect());
    assert_eq!(
        answer["lists"]["all"],
        json!({"count": 8, "ranges": [
            {"range": [0, 2], "rooms": pick(&["plain", "dm", "banned"])},
            {"range": [5, 100], "rooms": pick(&["invited", "space", "secret"])},
            {"range": [8, 9], "rooms": []},
            {"range": [3, 1], "rooms": []},
            {"range": [1, 1], "rooms": pick(&["dm"])},
            {"range": [0, 1], "rooms": pick(&["plain", "dm"])},
        ]})
    );
    assert_eq!(
        answer["lists"]["count_only"],
        json!({"count": 2, "ranges": []})
    );
    assert_eq!(
        answer["lists"]["combined"],
        json!({"count": 3, "ranges": [
            {"range": [0, 0], "rooms": pick(&["plain"])},
            {"range": [1, 5], "rooms": pick(&["banned", "kicked"])},
            {"range": [2, 1], "rooms": []},
            {"range": [10, 12], "rooms": []},
            {"range": [0, 1], "rooms": pick(&["plain", "banned"])},
        ]})
    );
    assert_eq!(answer["token"], json!(format!("s{}", f.next - 1)));
    assert_eq!(answer["timed_out"], json!(false));
    // The newly-left entry, complete.
    let left = room_list(
        server,
        ALICE,
        json!({"from_token": "s0",
        "lists": {"l": {"ranges": [[2, 2]], "filters": {"room_name_like": "behind"}}}}),
    )
    .await;
    assert_eq!(
        left["lists"]["l"],
        json!({"count": 1, "ranges": [{"range": [2, 2], "rooms": []}]})
    );
    let left = room_list(
        server,
        ALICE,
        json!({"from_token": "s0",
        "lists": {"l": {"ranges": [[0, 0]], "filters": {"room_name_like": "behind"}}}}),
    )
    .await;
    assert_eq!(left["lists"]["l"]["ranges"][0]["rooms"], pick(&["left"]));
}

#[tokio::test]
async fn room_lists_filter_sort_and_range_exactly() {
    let mut server = TestServer::start().await;
    let (f, batches) = dataset();
    for batch in &batches {
        server.feed(batch).await;
    }
    assert_filters(&server, &f).await;
    assert_ranges_and_entries(&server, &f).await;
    // A user with no rooms has empty lists; bob sees his own rooms.
    let nobody = room_list(
        &server,
        "@nobody:example.org",
        json!({"lists": {"l": {"ranges": [[0, 5]]}}}),
    )
    .await;
    assert_eq!(
        nobody["lists"]["l"],
        json!({"count": 0, "ranges": [{"range": [0, 5], "rooms": []}]})
    );
    let bob = room_list(&server, BOB, json!({"lists": {"l": {"ranges": [[0, 9]]}}})).await;
    let bob_rooms: Vec<&str> = bob["lists"]["l"]["ranges"][0]["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["room_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        bob_rooms,
        [
            room("dm"),
            room("kickforgot"),
            room("banned"),
            room("kicked")
        ]
    );

    // Everything is durable: identical answers after a restart.
    server.restart().await;
    assert_filters(&server, &f).await;
    assert_ranges_and_entries(&server, &f).await;

    // A later message moves its room to the top; encryption of a joined
    // room shows at once (the joined row wins over the snapshot).
    let mut g = Feed {
        next: f.next,
        ..Feed::default()
    };
    g.state(
        "plain.encryption",
        "plain",
        "m.room.encryption",
        "",
        ALICE,
        json!({"algorithm": "m.megolm.v1.aes-sha2"}),
    );
    g.message("space.message", "space", ALICE);
    server.feed(&g.batch()).await;
    assert_eq!(
        names(&server, json!({"is_encrypted": true}), None).await,
        list(&["plain", "invited", "secret"])
    );
    assert_eq!(
        names(&server, json!({}), None).await,
        list(&["space", "plain", "dm", "banned", "kicked", "unknown", "invited", "secret"])
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_room_list_requests_are_refused_with_4xx() {
    let server = TestServer::start().await;
    let path = format!("/v1/users/{ALICE}/room_list");
    let cases = [
        (
            json!({"lists": {"l": {"filters": {"is_favourite": true}}}}),
            "M_BAD_JSON",
        ),
        (
            json!({"lists": {"l": {"filters": {"is_dm": "yes"}}}}),
            "M_BAD_JSON",
        ),
        (json!({"lists": {"l": {"ranges": [[0, -1]]}}}), "M_BAD_JSON"),
        (json!({"lists": {"l": {"ranges": [[0]]}}}), "M_BAD_JSON"),
        (json!({"lists": {"l": {"timeline_limit": 5}}}), "M_BAD_JSON"),
        (
            json!({"lists": {"l": {"filters": {"spaces": ["not a room"]}}}}),
            "M_BAD_JSON",
        ),
        (json!({"lists": {}}), "M_INVALID_PARAM"),
        (
            json!({"lists": {"l": {}}, "from_token": "x1"}),
            "M_BAD_JSON",
        ),
        (json!({"lists": {"l": {}}, "unknown": 1}), "M_BAD_JSON"),
    ];
    for (body, errcode) in cases {
        server.post(&path, &body).await.assert_error(400, errcode);
    }
    server
        .post("/v1/users/alice/room_list", &json!({"lists": {"l": {}}}))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    server
        .post_raw(&path, "{not json")
        .await
        .assert_error(400, "M_NOT_JSON");
    // wait_for a position not reached yet: answers at the timeout, saying so.
    let answer = server
        .post(
            &path,
            &json!({"lists": {"l": {}}, "wait_for": "s5", "timeout_ms": 50}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["timed_out"], json!(true));
    assert_eq!(answer.body["lists"]["l"], json!({"count": 0, "ranges": []}));
}
