//! The rooms' data (`POST /v1/rooms/data`) against real Synapse databases:
//! each room's held current state (the default held types: Element X's)
//! must be exactly Synapse's `current_state_events` of those types, for
//! every room, whether roomcache followed the database from position 0,
//! imported it, or recomputed rooms changed while it was stopped or by a
//! repair while serving; with one writer and with two.

use std::collections::BTreeMap;

use roomcache::rules::{ELEMENT_X_TYPES, ELEMENT_X_WILDCARD_TYPES};
use serde_json::{json, Value};

use crate::support::fixture_servers::{
    assert_rooms_agree, start_followed_and_imported, start_on_workers,
};
use crate::support::server::TestServer;
use crate::support::synapse::{
    persist_event, source_event, source_options, store_room, wait_for_position, SynapseDatabase,
    FIXTURE_POSITION,
};

/// (type, state key, event ID) of a room, in that order.
type HeldState = Vec<(String, String, String)>;

/// Which state is held: types at key `""`, and wildcard types.
type Held<'a> = (&'a [&'a str], &'a [&'a str]);
/// The held types by default (Element X's: config/roomcache.toml).
const DEFAULT_HELD: Held<'static> = (&ELEMENT_X_TYPES, &ELEMENT_X_WILDCARD_TYPES);

/// Every room of Synapse's database with its held current state (rooms
/// with none included, empty).
async fn synapse_held_state(
    synapse: &SynapseDatabase,
    held: Held<'_>,
) -> BTreeMap<String, HeldState> {
    let client = synapse.client().await;
    let mut rooms: BTreeMap<String, HeldState> = client
        .query("SELECT room_id FROM rooms", &[])
        .await
        .expect("rooms")
        .iter()
        .map(|row| (row.get::<_, String>(0), Vec::new()))
        .collect();
    let rows = client
        .query(
            "SELECT room_id, type, state_key, event_id FROM current_state_events
             WHERE (state_key = '' AND type = ANY($1)) OR type = ANY($2)
             ORDER BY room_id, type, state_key",
            &[&held.0, &held.1],
        )
        .await
        .expect("current_state_events");
    for row in rows {
        rooms
            .entry(row.get(0))
            .or_default()
            .push((row.get(1), row.get(2), row.get(3)));
    }
    rooms
}

/// roomcache's answer for `rooms`: each room's held state, or why unknown.
async fn served_held_state(
    server: &TestServer,
    rooms: impl IntoIterator<Item = &String>,
) -> BTreeMap<String, Result<HeldState, String>> {
    let rooms: Vec<&String> = rooms.into_iter().collect();
    let answer = server
        .post("/v1/rooms/data", &json!({ "rooms": rooms }))
        .await;
    assert!(answer.status.is_success(), "{}", answer.text);
    let served = answer.body["rooms"].as_object().expect("rooms").clone();
    assert_eq!(served.len(), rooms.len(), "one entry per room asked");
    served
        .into_iter()
        .map(|(room, data)| {
            let state = match data["state"].as_array() {
                Some(keys) => Ok(keys
                    .iter()
                    .map(|key| {
                        let text = |i: usize| key[i].as_str().expect("text").to_owned();
                        (text(0), text(1), text(2))
                    })
                    .collect()),
                None => Err(data["unknown"].as_str().unwrap_or("?").to_owned()),
            };
            (room, state)
        })
        .collect()
}

/// Asserts roomcache holds exactly Synapse's current state of the held
/// types for every room; returns how many rooms hold some.
async fn assert_held_state_is_synapses(
    server: &TestServer,
    synapse: &SynapseDatabase,
    what: &str,
) -> usize {
    assert_held_is_synapses(server, synapse, DEFAULT_HELD, what).await
}

async fn assert_held_is_synapses(
    server: &TestServer,
    synapse: &SynapseDatabase,
    held: Held<'_>,
    what: &str,
) -> usize {
    let expected = synapse_held_state(synapse, held).await;
    let served = served_held_state(server, expected.keys()).await;
    let mut differences = Vec::new();
    for (room, state) in &expected {
        match served.get(room) {
            Some(Ok(ours)) if ours == state => {}
            other => differences.push(format!("{room}: Synapse {state:?}, roomcache {other:?}")),
        }
    }
    assert_rooms_agree(&differences, expected.len(), what);
    expected.values().filter(|s| !s.is_empty()).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_held_state_is_synapses_current_state_followed_imported_and_recomputed() {
    let synapse = SynapseDatabase::load("small.sql.gz").await;
    let (mut followed, mut imported) = start_followed_and_imported(&synapse).await;
    let with_state = assert_held_state_is_synapses(&followed, &synapse, "followed from 0").await;
    // Rooms the server left hold nothing, as in Synapse; the rest do.
    assert_eq!(with_state, 63, "rooms with held state");
    let status = followed.get("/v1/status").await.body;
    assert_eq!(status["room_data"]["rooms"], 63, "{status}");
    let bytes = status["room_data"]["bytes"].as_u64().expect("bytes");
    eprintln!(
        "held state: {bytes} bytes for 63 rooms ({} per room)",
        bytes / 63
    );
    assert!(bytes > 63 * 32 && bytes < 63 * 4096, "{bytes}");
    assert_held_state_is_synapses(&imported, &synapse, "imported").await;
    followed.stop().await;

    // While the importer is stopped: a call member joins, the room gets a
    // topic, a space child is removed (state key kept, content emptied).
    imported.stop().await;
    let client = synapse.client().await;
    let (room, sender): (String, String) = {
        let row = client
            .query_one(
                "SELECT c.room_id, c.state_key FROM current_state_events AS c
                 JOIN current_state_events AS n ON n.room_id = c.room_id
                     AND n.type = 'm.room.name' AND n.state_key = ''
                 WHERE c.type = 'm.room.member' AND c.membership = 'join'
                 ORDER BY c.room_id, c.state_key LIMIT 1",
                &[],
            )
            .await
            .expect("a named room with a member");
        (row.get(0), row.get(1))
    };
    let call = source_event(&room, &sender, "org.matrix.msc3401.call.member")
        .state_key(&format!("_{sender}_DEVICE"))
        .content(json!({"application": "m.call"}));
    persist_event(&client, 3030, call).await;
    let topic = source_event(&room, &sender, "m.room.topic")
        .state_key("")
        .content(json!({"topic": "while you were away"}));
    persist_event(&client, 3031, topic).await;
    imported.spawn().await;
    let status = wait_for_position(&imported, 3031).await;
    assert_eq!(status["source"]["invalidated_at_start"], 1, "{status}");
    assert_eq!(status["recalculation_queue"], 0);
    assert_held_state_is_synapses(&imported, &synapse, "recomputed after a restart").await;
    let served = served_held_state(&imported, [&room]).await;
    let keys = served[&room].as_ref().expect("known");
    assert!(keys
        .iter()
        .any(|(t, k, _)| t == "org.matrix.msc3401.call.member" && k.ends_with("_DEVICE")));
    // Postgres holds what is served: a restart serves the same.
    imported.restart().await;
    wait_for_position(&imported, 3031).await;
    assert_held_state_is_synapses(&imported, &synapse, "after a restart").await;
    imported.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_held_state_is_synapses_with_two_event_persisters() {
    let synapse = SynapseDatabase::load("workers.sql.gz").await;
    for import_on_start in [false, true] {
        let mut server = start_on_workers(&synapse, import_on_start).await;
        let what = if import_on_start {
            "imported"
        } else {
            "followed"
        };
        assert!(assert_held_state_is_synapses(&server, &synapse, what).await > 0);
        server.stop().await;
    }
}

/// Feed mode: held keys only; rejected events and outliers change nothing;
/// a state reset back to an older event and a removal apply; the state is
/// emptied when the server leaves; bad requests are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_keeps_held_state_through_rejections_outliers_resets_and_leaving() {
    let mut server = TestServer::start().await;
    let room = "!r:example.org";
    let alice = "@alice:example.org";
    let event = |id: &str, stream: i64, event_type: &str, key: &str, content: Value| {
        json!({"kind": "event", "stream_id": stream, "event": {"event_id": id, "room_id": room,
            "type": event_type, "state_key": key, "sender": alice, "content": content}})
    };
    let state = |stream: i64, event_type: &str, key: &str, id: Option<&str>| {
        json!({"kind": "state", "stream_id": stream, "room_id": room, "type": event_type,
            "state_key": key, "event_id": id})
    };
    let mut rejected = event("$rejected", 6, "m.room.name", "", json!({"name": "no"}));
    rejected["rejected"] = json!(true);
    let mut outlier = event("$outlier", 7, "m.room.topic", "", json!({"topic": "no"}));
    outlier["outlier"] = json!(true);
    server
        .feed(&json!({"writer": "master", "rows": [
            event("$create", 1, "m.room.create", "", json!({"room_version": "10"})),
            state(1, "m.room.create", "", Some("$create")),
            event("$join", 2, "m.room.member", alice, json!({"membership": "join"})),
            state(2, "m.room.member", alice, Some("$join")),
            event("$name1", 3, "m.room.name", "", json!({"name": "one"})),
            state(3, "m.room.name", "", Some("$name1")),
            event("$name2", 4, "m.room.name", "", json!({"name": "two"})),
            state(4, "m.room.name", "", Some("$name2")),
            event("$call", 5, "org.matrix.msc3401.call.member", "_@alice:example.org_D", json!({})),
            state(5, "org.matrix.msc3401.call.member", "_@alice:example.org_D", Some("$call")),
            event("$not_held", 5, "m.room.third_party_invite", "x", json!({})),
            state(5, "m.room.third_party_invite", "x", Some("$not_held")),
            rejected,
            outlier,
            // A state reset back to the first name; the call ends.
            state(8, "m.room.name", "", Some("$name1")),
            state(8, "org.matrix.msc3401.call.member", "_@alice:example.org_D", None),
        ]}))
        .await;
    let held = |answer: &Value| answer["rooms"][room].clone();
    let answer = server
        .post(
            "/v1/rooms/data",
            &json!({"rooms": [room, "!unknown:example.org"], "wait_for": "s8"}),
        )
        .await;
    assert!(answer.status.is_success(), "{}", answer.text);
    assert_eq!(
        held(&answer.body),
        json!({"state": [["m.room.create", "", "$create"], ["m.room.name", "", "$name1"]]})
    );
    assert_eq!(
        answer.body["rooms"]["!unknown:example.org"],
        json!({"state": []})
    );
    assert_eq!(answer.body["token"], "s8");
    let mut wildcard_types = ELEMENT_X_WILDCARD_TYPES.to_vec();
    wildcard_types.sort_unstable();
    assert_eq!(answer.body["held"]["wildcard_types"], json!(wildcard_types));

    // The only local member leaves: the server is no longer in the room.
    server
        .feed(&json!({"writer": "master", "rows": [
            event("$leave", 9, "m.room.member", alice, json!({"membership": "leave"})),
            state(9, "m.room.member", alice, Some("$leave")),
        ]}))
        .await;
    let answer = server
        .post(
            "/v1/rooms/data",
            &json!({"rooms": [room], "wait_for": "s9"}),
        )
        .await;
    assert_eq!(held(&answer.body), json!({"state": []}));
    server.restart().await;
    let answer = server
        .post("/v1/rooms/data", &json!({"rooms": [room]}))
        .await;
    assert_eq!(held(&answer.body), json!({"state": []}));

    for (body, errcode) in [
        (json!({"rooms": ["not a room"]}), "M_INVALID_PARAM"),
        (json!({"rooms": "!r:example.org"}), "M_BAD_JSON"),
        (json!({"rooms": [], "extra": 1}), "M_BAD_JSON"),
    ] {
        server
            .post("/v1/rooms/data", &body)
            .await
            .assert_error(400, errcode);
    }
    server.stop().await;
}

/// Other held types at a restart: source mode recomputes every room for
/// them (the rooms queued meanwhile are unknown); feed mode answers every
/// room as unknown, since it cannot recompute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_held_types_at_a_restart_recompute_every_room_or_make_them_unknown() {
    let synapse = SynapseDatabase::load("small.sql.gz").await;
    let mut server =
        TestServer::start_with(source_options(&synapse).import_on_start(true).build()).await;
    wait_for_position(&server, FIXTURE_POSITION).await;
    assert_held_state_is_synapses(&server, &synapse, "imported").await;
    server.stop().await;
    let other: Held<'_> = (
        &["m.room.topic", "m.room.name"],
        &["m.room.third_party_invite"],
    );
    server.options.extra_args.extend([
        "--room-state-types".into(),
        "m.room.topic,m.room.name".into(),
        "--room-state-wildcard-types".into(),
        "m.room.third_party_invite".into(),
    ]);
    server.spawn().await;
    let status = wait_for_position(&server, FIXTURE_POSITION).await;
    assert_eq!(status["source"]["invalidated_at_start"], 0, "{status}");
    let with_state = assert_held_is_synapses(&server, &synapse, other, "other types").await;
    assert!(with_state > 0);
    // Restarted with the same types: nothing is recomputed.
    server.restart().await;
    wait_for_position(&server, FIXTURE_POSITION).await;
    assert_eq!(server.log().matches("every room was queued").count(), 1);
    assert_held_is_synapses(&server, &synapse, other, "restarted").await;
    server.stop().await;

    let mut fed = TestServer::start().await;
    fed.feed(&json!({"writer": "master", "rows": [
        {"kind": "event", "stream_id": 1, "event": {"event_id": "$c", "room_id": "!f:example.org",
            "type": "m.room.create", "state_key": "", "sender": "@a:example.org", "content": {}}},
        {"kind": "state", "stream_id": 1, "room_id": "!f:example.org", "type": "m.room.create",
            "state_key": "", "event_id": "$c"},
    ]}))
    .await;
    let ask = json!({"rooms": ["!f:example.org"]});
    let answer = fed.post("/v1/rooms/data", &ask).await;
    assert_eq!(
        answer.body["rooms"]["!f:example.org"],
        json!({"state": [["m.room.create", "", "$c"]]})
    );
    fed.stop().await;
    fed.options
        .extra_args
        .extend(["--room-state-types".into(), "m.room.name".into()]);
    fed.spawn().await;
    let answer = fed.post("/v1/rooms/data", &ask).await;
    assert_eq!(
        answer.body["rooms"]["!f:example.org"],
        json!({"unknown": "held_types_changed"})
    );
    fed.stop().await;
}

/// A repair while serving (Synapse's database restored behind roomcache)
/// recomputes the rooms changed since: a room whose held state is gone
/// after the restore holds none afterwards, in memory and in Postgres.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_while_serving_drops_held_state_the_restored_database_does_not_have() {
    let synapse = SynapseDatabase::load("small.sql.gz").await;
    let mut server =
        TestServer::start_with(source_options(&synapse).import_on_start(true).build()).await;
    wait_for_position(&server, FIXTURE_POSITION).await;
    let client = synapse.client().await;
    let room = "!restored-away:oracle.test".to_owned();
    let sender = "@u0001:oracle.test";
    // The room exists in Synapse (its `rooms` row, as Synapse stores it
    // before any event; the backup restored below has it too). Without it
    // the room is a deleted one to roomcache: the follower's first full
    // check, which may run after the event below is applied (under load
    // the start-up position is reached before the follower's first step),
    // would purge it and serve `[]`.
    store_room(&client, &room, sender).await;
    let position = FIXTURE_POSITION + 1;
    let pinned = source_event(&room, sender, "m.room.pinned_events")
        .state_key("")
        .content(json!({"pinned": []}));
    let event_id = persist_event(&client, position, pinned).await;
    wait_for_position(&server, position).await;
    let served = served_held_state(&server, [&room]).await;
    let expected = vec![("m.room.pinned_events".to_owned(), String::new(), event_id)];
    assert_eq!(served[&room], Ok(expected), "{}", server.log());

    // Synapse's database is restored to a backup taken before the event.
    client
        .execute(
            "DELETE FROM current_state_events WHERE room_id = $1",
            &[&room],
        )
        .await
        .unwrap();
    client
        .batch_execute(&format!(
            "DELETE FROM current_state_delta_stream WHERE stream_id = {position};
             DELETE FROM event_json WHERE event_id = '$test{position}';
             DELETE FROM events WHERE event_id = '$test{position}';
             SELECT setval('events_stream_seq', {FIXTURE_POSITION});
             UPDATE stream_positions SET stream_id = {FIXTURE_POSITION}
             WHERE stream_name = 'events';"
        ))
        .await
        .unwrap();
    wait_for_position(&server, FIXTURE_POSITION).await;
    server
        .wait_for_log("positions repaired and the rooms changed since recomputed")
        .await;
    let served = served_held_state(&server, [&room]).await;
    assert_eq!(served[&room], Ok(Vec::new()), "{}", server.log());
    let stored: i64 = server
        .stored_rows(
            "SELECT count(*) FROM room_current_state WHERE room_id = $1",
            &[&room],
        )
        .await[0]
        .get(0);
    assert_eq!(stored, 0);
    assert_held_state_is_synapses(&server, &synapse, "after the repair").await;
    server.stop().await;
}
