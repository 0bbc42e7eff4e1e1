//! Hostile feed contents (issue 12, items 2, 3, 6 and 7): a bad value is
//! the writer's mistake, never the database's; one poisoned batch fails
//! alone among several writers; string values have a size limit; state rows
//! the docs refuse are refused.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::server::{post_to, ServerOptions, TestServer};

/// Rows creating `room` with `user` joined at stream ids `at` and `at + 1`,
/// the create event carrying `create_content`.
fn room_rows(at: i64, room: &str, user: &str, create_content: Value) -> Vec<Value> {
    let create = format!("$c{at}-{room}");
    let join = format!("$j{at}-{room}");
    vec![
        json!({"kind": "event", "stream_id": at, "event": {"event_id": create, "room_id": room,
            "type": "m.room.create", "state_key": "", "sender": user, "content": create_content}}),
        json!({"kind": "state", "stream_id": at, "room_id": room, "type": "m.room.create",
            "state_key": "", "event_id": create}),
        json!({"kind": "event", "stream_id": at + 1, "event": {"event_id": join, "room_id": room,
            "type": "m.room.member", "state_key": user, "sender": user,
            "content": {"membership": "join"}}}),
        json!({"kind": "state", "stream_id": at + 1, "room_id": room, "type": "m.room.member",
            "state_key": user, "event_id": join}),
    ]
}

/// A relevant state event of `room` at `at`, with its state row.
fn state_rows(at: i64, room: &str, event_type: &str, content: Value) -> Vec<Value> {
    let id = format!("$s{at}-{room}");
    vec![
        json!({"kind": "event", "stream_id": at, "event": {"event_id": id, "room_id": room,
            "type": event_type, "state_key": "", "sender": "@alice:example.org",
            "content": content}}),
        json!({"kind": "state", "stream_id": at, "room_id": room, "type": event_type,
            "state_key": "", "event_id": id}),
    ]
}

fn batch(writer: &str, rows: Vec<Value>) -> Value {
    json!({"writer": writer, "rows": rows})
}

/// Item 2: a NUL inside `content.name`, `content.type` or
/// `content.replacement_room` is Synapse's "not written" (spec §2.1), not a
/// database failure: the batch commits (200) and later batches go on.
#[tokio::test]
async fn nul_in_relevant_values_is_not_written_and_commits() {
    let mut server = TestServer::start().await;
    let alice = "@alice:example.org";
    let room = "!nul:example.org";
    let mut rows = room_rows(2, room, alice, json!({"type": "m.sp\u{0}ace"}));
    rows.extend(state_rows(
        4,
        room,
        "m.room.name",
        json!({"name": "a\u{0}b"}),
    ));
    rows.extend(state_rows(
        5,
        room,
        "m.room.tombstone",
        json!({"replacement_room": "!x\u{0}:example.org"}),
    ));
    let answer = server.post("/v1/feed", &batch("master", rows)).await;
    assert_eq!(answer.status, 200, "{}\n{}", answer.text, server.log());
    assert_eq!(answer.body["position"], 5, "{}", answer.text);
    // No column was written (so no joined row was created, §2.3); alice's
    // snapshot exists with every column NULL.
    assert_eq!(server.served_joined_room(room).await, None);
    let snapshots = server.served_snapshots(alice).await;
    assert_eq!(snapshots.len(), 1);
    assert_eq!(snapshots[0].metadata.room_type, None);
    assert_eq!(snapshots[0].metadata.room_name, None);
    // A name without NUL afterwards is written; the writer was never stuck.
    server
        .feed(&batch(
            "master",
            state_rows(6, room, "m.room.name", json!({"name": "fine"})),
        ))
        .await;
    let joined = server.served_joined_room(room).await.expect("joined row");
    assert_eq!(joined.metadata.room_name.as_deref(), Some("fine"));
    assert_eq!(joined.metadata.room_type, None);
    assert_eq!(joined.metadata.tombstone_successor_room_id, None);
    server.assert_postgres_matches_served().await;
    // The stored memory loads again (no value Postgres cannot hold).
    server.restart().await;
    server.assert_postgres_matches_served().await;
    server.stop().await;
}

/// Items 2 and 3: a batch that the database refuses for its content (here a
/// CHECK constraint added to the server's schema: SQLSTATE class 23) is
/// answered 4xx, and only that batch: seven writers sending valid batches
/// at the same time all get 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_poisoned_batch_fails_alone_among_several_writers() {
    let writers: Vec<String> = (0..8).map(|i| format!("w{i}")).collect();
    let mut server = TestServer::start_with(ServerOptions {
        writers: writers.clone(),
        extra_args: vec!["--commit-linger-ms".into(), "2".into()],
        ..ServerOptions::default()
    })
    .await;
    let client = server.store().await.client().await.expect("client");
    client
        .batch_execute(&format!(
            "ALTER TABLE {}.sliding_sync_joined_rooms ADD CONSTRAINT no_poison \
             CHECK (room_name IS DISTINCT FROM 'poison')",
            server.schema
        ))
        .await
        .expect("adding the constraint");
    let per_writer = 30i64;
    let mut tasks = Vec::new();
    for (w, writer) in writers.iter().enumerate() {
        let socket = server.socket.clone();
        let writer = writer.clone();
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for n in 0..per_writer {
                // Stream orderings unique across writers (a unique index).
                let at = 10_000 * (w as i64 + 1) + 10 * n;
                let room = format!("!r{w}-{n}:example.org");
                let name = if w == 0 { "poison" } else { "fine" };
                let mut rows = room_rows(at, &room, "@alice:example.org", json!({}));
                rows.extend(state_rows(
                    at + 2,
                    &room,
                    "m.room.name",
                    json!({"name": name}),
                ));
                let answer = post_to(&socket, "/v1/feed", &batch(&writer, rows))
                    .await
                    .expect("socket reachable");
                outcomes.push((answer.status.as_u16(), answer.body));
            }
            outcomes
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("writer task"));
    }
    for (w, outcomes) in results.iter().enumerate() {
        for (status, body) in outcomes {
            if w == 0 {
                assert_eq!(*status, 400, "poisoned batch: {body}\n{}", server.log());
                assert_eq!(body["errcode"], "ROOMCACHE_REJECTED_CONTENT", "{body}");
            } else {
                assert_eq!(*status, 200, "valid batch of w{w}: {body}");
            }
        }
    }
    let rows = server.rows_in_postgres().await;
    assert_eq!(rows.joined_rooms.len(), 7 * per_writer as usize);
    server.assert_postgres_matches_served().await;
    server.stop().await;
}

/// Item 7: an `m.room.member` state row whose key is not a user ID, and a
/// state row whose event has another state key (irrelevant types too), are
/// refused as `docs/feed.md` says.
#[tokio::test]
async fn state_rows_the_docs_refuse_are_refused() {
    let mut server = TestServer::start().await;
    let room = "!seven:example.org";
    server
        .feed(&batch(
            "master",
            room_rows(2, room, "@alice:example.org", json!({})),
        ))
        .await;
    let member = json!({"kind": "state", "stream_id": 5, "room_id": room,
        "type": "m.room.member", "state_key": "not-a-user", "event_id": "$m5"});
    let event = json!({"kind": "event", "stream_id": 5, "event": {"event_id": "$m5",
        "room_id": room, "type": "m.room.member", "state_key": "not-a-user",
        "sender": "@alice:example.org", "content": {"membership": "join"}}});
    server
        .post("/v1/feed", &batch("master", vec![event, member]))
        .await
        .assert_error(400, "M_BAD_JSON");
    let topic_event = json!({"kind": "event", "stream_id": 6, "event": {"event_id": "$t6",
        "room_id": room, "type": "m.room.topic", "state_key": "other",
        "sender": "@alice:example.org", "content": {"topic": "x"}}});
    let topic_row = json!({"kind": "state", "stream_id": 6, "room_id": room,
        "type": "m.room.topic", "state_key": "", "event_id": "$t6"});
    server
        .post("/v1/feed", &batch("master", vec![topic_event, topic_row]))
        .await
        .assert_error(400, "M_BAD_JSON");
    let positions = server.get("/v1/positions").await;
    assert_eq!(
        positions.body["positions"]["master"], 3,
        "{}",
        positions.text
    );
    // Every error is JSON with an errcode, a long path too.
    let long_path = format!("/v1/rooms/!{}:example.org", "a".repeat(60_000));
    server
        .get(&long_path)
        .await
        .assert_error(400, "M_INVALID_PARAM");
    server.stop().await;
}

/// Item 6: relevant string values have a size limit (Synapse's events are
/// at most 64 KiB): a longer room name is refused with a 4xx, a name just
/// under the limit is kept.
#[tokio::test]
async fn oversized_relevant_values_are_refused() {
    let mut server = TestServer::start().await;
    let room = "!big:example.org";
    server
        .feed(&batch(
            "master",
            room_rows(2, room, "@alice:example.org", json!({})),
        ))
        .await;
    let huge = "n".repeat(65_537);
    server
        .post(
            "/v1/feed",
            &batch(
                "master",
                state_rows(4, room, "m.room.name", json!({"name": huge})),
            ),
        )
        .await
        .assert_error(413, "M_TOO_LARGE");
    let large = "n".repeat(60_000);
    server
        .feed(&batch(
            "master",
            state_rows(4, room, "m.room.name", json!({"name": large})),
        ))
        .await;
    let joined = server.served_joined_room(room).await.expect("joined row");
    assert_eq!(joined.metadata.room_name.map(|n| n.len()), Some(60_000));
    // The name is stored once in the rules' memory, not twice.
    let client = server.store().await.client().await.expect("client");
    let row = client
        .query_one(
            &format!(
                "SELECT length(memory::text) FROM {}.room_rules_memory WHERE room_id = $1",
                server.schema
            ),
            &[&room],
        )
        .await
        .expect("memory row");
    let length: i32 = row.get(0);
    assert!(
        (60_000..120_000).contains(&length),
        "memory holds {length} characters"
    );
    tokio::time::sleep(Duration::from_millis(1)).await;
    server.stop().await;
}

/// Item 6: rooms the cache keeps no row of cost no actor once the pipeline
/// is idle: messages to 2,000 unknown rooms, and a refused batch touching
/// 500 more, leave no room actor behind (their counters are in Postgres).
#[tokio::test]
async fn rooms_without_rows_keep_no_actor() {
    let mut server = TestServer::start().await;
    let message = |stream_id: i64, room: usize| {
        json!({"kind": "event", "stream_id": stream_id, "event": {
            "event_id": format!("$m{stream_id}"), "room_id": format!("!u{room}:example.org"),
            "type": "m.room.message", "sender": "@alice:example.org", "content": {"body": "x"}}})
    };
    let rows: Vec<Value> = (0..2000).map(|n| message(2 + n as i64, n)).collect();
    server.feed(&batch("master", rows)).await;
    let mut rows: Vec<Value> = (0..500)
        .map(|n| message(3000 + n as i64, 5000 + n))
        .collect();
    rows.push(
        json!({"kind": "state", "stream_id": 4000, "room_id": "!u1:example.org",
        "type": "m.room.name", "state_key": "", "event_id": "$nowhere"}),
    );
    server
        .post("/v1/feed", &batch("master", rows))
        .await
        .assert_error(400, "ROOMCACHE_UNKNOWN_EVENT");
    // A room with rows keeps its actor.
    server
        .feed(&batch(
            "master",
            room_rows(5000, "!kept:example.org", "@alice:example.org", json!({})),
        ))
        .await;
    let status = server.get("/v1/status").await;
    assert_eq!(status.body["room_actors"], 1, "{}", status.text);
    // A room whose actor was stopped is loaded again for a later batch.
    let room = "!u7:example.org";
    server
        .feed(&batch(
            "master",
            vec![
                json!({"kind": "event", "stream_id": 6000, "event": {"event_id": "$j7",
                    "room_id": room, "type": "m.room.member", "state_key": "@alice:example.org",
                    "sender": "@alice:example.org", "content": {"membership": "join"}}}),
                json!({"kind": "state", "stream_id": 6000, "room_id": room,
                    "type": "m.room.member", "state_key": "@alice:example.org", "event_id": "$j7"}),
            ],
        ))
        .await;
    let snapshots = server.served_snapshots("@alice:example.org").await;
    assert_eq!(snapshots.len(), 2);
    server.assert_postgres_matches_served().await;
    server.stop().await;
}
