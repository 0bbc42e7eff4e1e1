//! End-to-end checks of the walking skeleton: feed → read back → restart →
//! read back identical, with Postgres equal to what is served.
#![cfg(not(loom))]

mod common;

use common::TestServer;
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
