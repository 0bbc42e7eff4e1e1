//! End-to-end checks of the walking skeleton: feed → read back → restart →
//! read back identical, with Postgres equal to what is served.

use crate::support::server::{post_to, ServerOptions, TestServer};
use serde_json::json;

fn create_room_batch() -> serde_json::Value {
    json!({"writer": "master", "rows": [
        {"kind": "event", "stream_id": 2, "event": {"event_id": "$create", "room_id": "!tea:example.org",
            "type": "m.room.create", "state_key": "", "sender": "@alice:example.org",
            "content": {"room_version": "10"}}},
        {"kind": "state", "stream_id": 2, "room_id": "!tea:example.org", "type": "m.room.create",
            "state_key": "", "event_id": "$create"},
        {"kind": "event", "stream_id": 3, "event": {"event_id": "$join", "room_id": "!tea:example.org",
            "type": "m.room.member", "state_key": "@alice:example.org", "sender": "@alice:example.org",
            "content": {"membership": "join"}}},
        {"kind": "state", "stream_id": 3, "room_id": "!tea:example.org", "type": "m.room.member",
            "state_key": "@alice:example.org", "event_id": "$join"},
        {"kind": "event", "stream_id": 4, "event": {"event_id": "$name", "room_id": "!tea:example.org",
            "type": "m.room.name", "state_key": "", "sender": "@alice:example.org",
            "content": {"name": "Tea"}}},
        {"kind": "state", "stream_id": 4, "room_id": "!tea:example.org", "type": "m.room.name",
            "state_key": "", "event_id": "$name"}
    ]})
}

#[tokio::test]
async fn feed_read_restart_read_identical() {
    let mut server = TestServer::start().await;
    let answer = server.feed(&create_room_batch()).await;
    assert_eq!(answer["position"], 4);
    assert_eq!(answer["applied_rows"], 6);
    assert_eq!(answer["token"], "s4");

    let room = server.get("/v1/rooms/!tea:example.org").await;
    assert_eq!(room.status, 200);
    assert_eq!(
        room.body["room"],
        json!({"room_id": "!tea:example.org", "event_stream_ordering": 4, "bump_stamp": 2,
               "room_type": null, "room_name": "Tea", "is_encrypted": false,
               "tombstone_successor_room_id": null})
    );
    let snapshot = server
        .get("/v1/users/@alice:example.org/rooms/!tea:example.org")
        .await;
    assert_eq!(
        snapshot.body["snapshot"],
        json!({"room_id": "!tea:example.org", "user_id": "@alice:example.org",
               "sender": "@alice:example.org", "membership_event_id": "$join",
               "membership": "join", "forgotten": false, "event_stream_ordering": 3,
               "event_instance_name": "master", "has_known_state": true, "room_type": null,
               "room_name": null, "is_encrypted": false, "tombstone_successor_room_id": null})
    );
    server.assert_postgres_matches_served().await;
    let before = (room.body["room"].clone(), snapshot.body["snapshot"].clone());

    server.restart().await;
    let room = server.get("/v1/rooms/!tea:example.org").await;
    let snapshot = server
        .get("/v1/users/@alice:example.org/rooms/!tea:example.org")
        .await;
    assert_eq!(
        (room.body["room"].clone(), snapshot.body["snapshot"].clone()),
        before
    );
    assert_eq!(
        server.get("/v1/positions").await.body,
        json!({"positions": {"master": 4}, "token": "s4"})
    );
    server.assert_postgres_matches_served().await;

    // A replay of the same batch after the restart is ignored (at or below the durable position).
    let replay = server.feed(&create_room_batch()).await;
    assert_eq!(replay["applied_rows"], 0);
    assert_eq!(replay["position"], 4);
    server.stop().await;
    assert!(
        !server.socket.exists(),
        "socket file removed on clean shutdown"
    );
}

/// A batch posting one message per room in `rooms`, at consecutive stream
/// ids from `first_stream_id`.
fn message_batch(first_stream_id: i64, rooms: std::ops::Range<usize>) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = rooms
        .map(|r| {
            let stream_id = first_stream_id + r as i64;
            json!({"kind": "event", "stream_id": stream_id, "event": {
                "event_id": format!("$m{stream_id}_{r}"), "room_id": format!("!room{r}:example.org"),
                "type": "m.room.message", "sender": "@alice:example.org", "content": {"body": "hi"}}})
        })
        .collect();
    json!({"writer": "master", "rows": rows})
}

fn room_creation_batch(stream_id: i64, room: usize) -> serde_json::Value {
    let room_id = format!("!room{room}:example.org");
    json!({"writer": "master", "rows": [
        {"kind": "event", "stream_id": stream_id, "event": {"event_id": format!("$c{room}"), "room_id": room_id,
            "type": "m.room.create", "state_key": "", "sender": "@alice:example.org", "content": {}}},
        {"kind": "state", "stream_id": stream_id, "room_id": room_id, "type": "m.room.create",
            "state_key": "", "event_id": format!("$c{room}")},
        {"kind": "event", "stream_id": stream_id + 1, "event": {"event_id": format!("$j{room}"), "room_id": room_id,
            "type": "m.room.member", "state_key": "@alice:example.org", "sender": "@alice:example.org",
            "content": {"membership": "join"}}},
        {"kind": "state", "stream_id": stream_id + 1, "room_id": room_id, "type": "m.room.member",
            "state_key": "@alice:example.org", "event_id": format!("$j{room}")}
    ]})
}

#[tokio::test]
async fn sigterm_drains_in_flight_batches_and_every_acknowledged_batch_survives() {
    let mut server = TestServer::start().await;
    const ROOMS: usize = 20;
    for room in 0..ROOMS {
        server
            .feed(&room_creation_batch(2 + 2 * room as i64, room))
            .await;
    }
    // Writers post message batches back to back; SIGTERM arrives mid-stream.
    let first_message_id = 2 + 2 * ROOMS as i64;
    let socket = server.socket.clone();
    let poster = tokio::spawn({
        let server_socket = socket.clone();
        async move {
            let mut acknowledged = 0i64;
            for i in 0..400 {
                let batch = message_batch(first_message_id + i * ROOMS as i64, 0..ROOMS);
                match post_to(&server_socket, "/v1/feed", &batch).await {
                    Some(answer) if answer.status == 200 => {
                        acknowledged = answer.body["position"].as_i64().unwrap_or_default()
                    }
                    Some(answer) => panic!(
                        "a batch failed during shutdown instead of completing: {}",
                        answer.text
                    ),
                    None => break, // the server stopped accepting connections
                }
            }
            acknowledged
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    server.stop().await;
    let acknowledged = poster.await.unwrap();
    assert!(
        acknowledged >= first_message_id,
        "some batches were acknowledged before the stop"
    );

    server.spawn().await;
    let position = server.get("/v1/positions").await.body["positions"]["master"]
        .as_i64()
        .unwrap();
    assert!(
        position >= acknowledged,
        "durable position {position} < acknowledged {acknowledged}"
    );
    // The last durable batch put message `position - ROOMS + 1 + r` in room r.
    for room in 0..ROOMS {
        let row = server
            .served_joined_room(&format!("!room{room}:example.org"))
            .await
            .unwrap();
        let expected = position - ROOMS as i64 + 1 + room as i64;
        assert_eq!(
            row.event_stream_ordering, expected,
            "room {room} has every acknowledged message"
        );
    }
    server.assert_postgres_matches_served().await;
}

/// Room actors unused for `room_actor_idle_ms` are stopped, and the next
/// batch of their room re-creates them from the committed state in
/// Postgres: the rows it writes are those of the whole room's history, not
/// of an empty room (a rename of a room the server had never seen would
/// leave no joined row).
#[tokio::test]
async fn idle_room_actors_are_stopped_and_recreated_from_committed_state() {
    let server = TestServer::start_with(ServerOptions {
        extra_args: vec!["--room-actor-idle-ms".into(), "300".into()],
        ..Default::default()
    })
    .await;
    server.feed(&create_room_batch()).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let status = server.get("/v1/status").await.body;
        if status["room_actors"] == 0 {
            break;
        }
        assert_eq!(status["room_actors"], 1, "{status}");
        assert!(
            std::time::Instant::now() < deadline,
            "the idle actor was never stopped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let rename = json!({"writer": "master", "rows": [
        {"kind": "event", "stream_id": 5, "event": {"event_id": "$rename", "room_id": "!tea:example.org",
            "type": "m.room.name", "state_key": "", "sender": "@alice:example.org",
            "content": {"name": "Green tea"}}},
        {"kind": "state", "stream_id": 5, "room_id": "!tea:example.org", "type": "m.room.name",
            "state_key": "", "event_id": "$rename"}
    ]});
    assert_eq!(server.feed(&rename).await["applied_rows"], 2);
    assert_eq!(server.get("/v1/status").await.body["room_actors"], 1);
    let room = server.get("/v1/rooms/!tea:example.org").await;
    assert_eq!(
        room.body["room"],
        json!({"room_id": "!tea:example.org", "event_stream_ordering": 5, "bump_stamp": 2,
               "room_type": null, "room_name": "Green tea", "is_encrypted": false,
               "tombstone_successor_room_id": null})
    );
    server.assert_postgres_matches_served().await;
}
