//! Every kind of bad input gets a 4xx JSON error with an errcode, is
//! logged, changes nothing, and the server goes on serving.

use crate::support::server::{post_to, ServerOptions, TestServer};
use serde_json::{json, Value};

/// An event row sent by alice, a builder: `event_row(stream_id, event_id,
/// room_id)`, then `.state(type, key)` (a state event; its content `{}`
/// unless `.content(..)` sets it) or `.message()` (an `m.room.message`
/// whose state key is JSON null), and `.row()`.
struct EventRow {
    stream_id: i64,
    event_id: String,
    room_id: String,
    kind: String,
    state_key: Value,
    content: Value,
}

fn event_row(stream_id: i64, event_id: &str, room_id: &str) -> EventRow {
    EventRow {
        stream_id,
        event_id: event_id.to_owned(),
        room_id: room_id.to_owned(),
        kind: String::new(),
        state_key: Value::Null,
        content: json!({}),
    }
}

impl EventRow {
    fn state(mut self, kind: &str, state_key: &str) -> Self {
        self.kind = kind.to_owned();
        self.state_key = json!(state_key);
        self
    }

    /// A message with the body "x".
    fn message(mut self) -> Self {
        self.kind = "m.room.message".to_owned();
        self.state_key = Value::Null;
        self.content = json!({"body": "x"});
        self
    }

    fn content(mut self, content: Value) -> Self {
        self.content = content;
        self
    }

    fn row(self) -> Value {
        json!({"kind": "event", "stream_id": self.stream_id, "event": {
            "event_id": self.event_id, "room_id": self.room_id, "type": self.kind,
            "state_key": self.state_key, "sender": "@alice:example.org", "content": self.content}})
    }
}

/// A valid batch creating `!good:example.org` with alice joined, at stream ids 2-3.
fn good_batch() -> Value {
    let create = event_row(2, "$c", "!good:example.org").state("m.room.create", "");
    let join = event_row(3, "$j", "!good:example.org")
        .state("m.room.member", "@alice:example.org")
        .content(json!({"membership": "join"}));
    json!({"writer": "master", "rows": [
        create.row(),
        {"kind": "state", "stream_id": 2, "room_id": "!good:example.org", "type": "m.room.create", "state_key": "", "event_id": "$c"},
        join.row(),
        {"kind": "state", "stream_id": 3, "room_id": "!good:example.org", "type": "m.room.member", "state_key": "@alice:example.org", "event_id": "$j"}
    ]})
}

/// A batch that would be valid, with one row spoiled by `spoil`.
fn spoiled(spoil: impl FnOnce(&mut Value)) -> Value {
    let create = event_row(10, "$c2", "!bad:example.org").state("m.room.create", "");
    let join = event_row(11, "$j2", "!bad:example.org")
        .state("m.room.member", "@bob:example.org")
        .content(json!({"membership": "join"}));
    let mut batch = json!({"writer": "master", "rows": [
        create.row(),
        {"kind": "state", "stream_id": 10, "room_id": "!bad:example.org", "type": "m.room.create", "state_key": "", "event_id": "$c2"},
        join.row(),
        {"kind": "state", "stream_id": 11, "room_id": "!bad:example.org", "type": "m.room.member", "state_key": "@bob:example.org", "event_id": "$j2"}
    ]});
    spoil(&mut batch);
    batch
}

/// Asserts that nothing of a refused batch is visible: positions, rows,
/// Postgres, and that a good read still works.
async fn assert_unchanged(server: &TestServer) {
    let positions = server.get("/v1/positions").await;
    assert_eq!(
        positions.body,
        json!({"positions": {"master": 3}, "token": "s3"})
    );
    assert_eq!(server.get("/v1/rooms/!bad:example.org").await.status, 404);
    assert!(server.served_snapshots("@bob:example.org").await.is_empty());
    assert_eq!(server.get("/v1/rooms/!good:example.org").await.status, 200);
    let rows = server.rows_in_postgres().await;
    assert_eq!(rows.joined_rooms.len(), 1);
    assert_eq!(rows.snapshots.len(), 1);
    server.assert_postgres_matches_served().await;
}

/// Malformed JSON, wrong JSON types, unknown row kinds and fields.
async fn refuse_malformed_batches(server: &TestServer) {
    // Malformed JSON.
    server
        .post_raw("/v1/feed", "{\"writer\": \"master\", \"rows\": [")
        .await
        .assert_error(400, "M_NOT_JSON");
    server
        .post_raw("/v1/feed", "not json at all")
        .await
        .assert_error(400, "M_NOT_JSON");
    // Wrong JSON types.
    server
        .post("/v1/feed", &json!({"writer": 5, "rows": []}))
        .await
        .assert_error(400, "M_BAD_JSON");
    server
        .post("/v1/feed", &json!(["a list"]))
        .await
        .assert_error(400, "M_BAD_JSON");
    server
        .post(
            "/v1/feed",
            &spoiled(|b| b["rows"][0]["stream_id"] = json!("10")),
        )
        .await
        .assert_error(400, "M_BAD_JSON");
    server
        .post(
            "/v1/feed",
            &spoiled(|b| b["rows"][2]["event"]["content"] = json!("join")),
        )
        .await
        .assert_error(400, "M_BAD_JSON");
    // Unknown row kinds and unknown fields.
    server
        .post(
            "/v1/feed",
            &spoiled(|b| b["rows"][1]["kind"] = json!("teleport")),
        )
        .await
        .assert_error(400, "M_BAD_JSON");
    server
        .post(
            "/v1/feed",
            &spoiled(|b| b["rows"][1]["colour"] = json!("blue")),
        )
        .await
        .assert_error(400, "M_BAD_JSON");
}

/// Invalid Matrix IDs and NUL in structural fields.
async fn refuse_invalid_strings(server: &TestServer) {
    // Invalid Matrix IDs.
    let message = server
        .post(
            "/v1/feed",
            &spoiled(|b| b["rows"][1]["room_id"] = json!("bad:example.org")),
        )
        .await
        .assert_error(400, "M_BAD_JSON");
    assert!(message.contains("room ID"), "{message}");
    server
        .post(
            "/v1/feed",
            &spoiled(|b| b["rows"][2]["event"]["sender"] = json!("@nobody")),
        )
        .await
        .assert_error(400, "M_BAD_JSON");
    server
        .post(
            "/v1/feed",
            &spoiled(|b| b["rows"][2]["event"]["event_id"] = json!("no-sigil")),
        )
        .await
        .assert_error(400, "M_BAD_JSON");
    // Strings containing NUL in structural fields.
    server
        .post(
            "/v1/feed",
            &spoiled(|b| b["rows"][1]["type"] = json!("m.room.\u{0}create")),
        )
        .await
        .assert_error(400, "M_INVALID_PARAM");
    server
        .post(
            "/v1/feed",
            &spoiled(|b| b["rows"][1]["room_id"] = json!("!a\u{0}b:example.org")),
        )
        .await
        .assert_error(400, "M_BAD_JSON");
    server
        .post("/v1/feed", &spoiled(|b| b["writer"] = json!("mas\u{0}ter")))
        .await
        .assert_error(400, "M_INVALID_PARAM");
}

/// Bodies over the limit, rows out of order, unknown writers and events,
/// invalid memberships.
async fn refuse_invalid_streams(server: &TestServer) {
    // A body over the configured limit.
    let big = spoiled(|b| b["rows"][2]["event"]["content"]["padding"] = json!("x".repeat(8192)));
    server
        .post("/v1/feed", &big)
        .await
        .assert_error(413, "M_TOO_LARGE");
    // A writer's rows out of stream order.
    let message = server
        .post(
            "/v1/feed",
            &spoiled(|b| b["rows"][3]["stream_id"] = json!(9)),
        )
        .await
        .assert_error(400, "ROOMCACHE_OUT_OF_ORDER");
    assert!(message.contains("stream order"), "{message}");
    server
        .post(
            "/v1/feed",
            &spoiled(|b| b["rows"][0]["stream_id"] = json!(0)),
        )
        .await
        .assert_error(400, "M_INVALID_PARAM");
    // An unknown writer.
    server
        .post("/v1/feed", &spoiled(|b| b["writer"] = json!("stranger")))
        .await
        .assert_error(400, "ROOMCACHE_UNKNOWN_WRITER");
    // A state row naming an event the cache never saw, without carrying it.
    let unknown = spoiled(|b| {
        b["rows"][3]["event_id"] = json!("$never-seen");
    });
    server
        .post("/v1/feed", &unknown)
        .await
        .assert_error(400, "ROOMCACHE_UNKNOWN_EVENT");
    // A membership event without a valid membership.
    server
        .post(
            "/v1/feed",
            &spoiled(|b| b["rows"][2]["event"]["content"] = json!({"membership": "dance"})),
        )
        .await
        .assert_error(400, "M_BAD_JSON");
}

#[tokio::test]
async fn every_bad_feed_gets_its_4xx_and_changes_nothing() {
    let server = TestServer::start_with(ServerOptions {
        extra_args: vec!["--request-body-limit".into(), "4096".into()],
        ..Default::default()
    })
    .await;
    server.feed(&good_batch()).await;

    refuse_malformed_batches(&server).await;
    refuse_invalid_strings(&server).await;
    refuse_invalid_streams(&server).await;

    assert_unchanged(&server).await;
    let log = server.log();
    assert!(
        log.contains("request refused"),
        "refusals are logged:\n{log}"
    );
    assert!(
        log.contains("ROOMCACHE_OUT_OF_ORDER"),
        "the errcode is logged:\n{log}"
    );

    // The server goes on serving: the spoiled batch, fixed, is accepted.
    let answer = server.feed(&spoiled(|_| {})).await;
    assert_eq!(answer["position"], 11);
    assert_eq!(server.get("/v1/rooms/!bad:example.org").await.status, 200);
}

#[tokio::test]
async fn a_failing_room_refuses_the_whole_multi_room_batch() {
    let server = TestServer::start().await;
    server.feed(&good_batch()).await;
    // The first room of the batch is fine, the second refers to an unknown event.
    let batch = json!({"writer": "master", "rows": [
        event_row(10, "$c2", "!bad:example.org").state("m.room.create", "").row(),
        {"kind": "state", "stream_id": 10, "room_id": "!bad:example.org", "type": "m.room.create", "state_key": "", "event_id": "$c2"},
        {"kind": "state", "stream_id": 11, "room_id": "!good:example.org", "type": "m.room.name", "state_key": "", "event_id": "$nowhere"}
    ]});
    server
        .post("/v1/feed", &batch)
        .await
        .assert_error(400, "ROOMCACHE_UNKNOWN_EVENT");
    assert_unchanged(&server).await;
    // The same rooms accept later good rows, built on the committed state.
    let name = event_row(12, "$n", "!good:example.org")
        .state("m.room.name", "")
        .content(json!({"name": "Good"}));
    let later = json!({"writer": "master", "rows": [
        name.row(),
        {"kind": "state", "stream_id": 12, "room_id": "!good:example.org", "type": "m.room.name", "state_key": "", "event_id": "$n"}
    ]});
    server.feed(&later).await;
    let room = server.get("/v1/rooms/!good:example.org").await;
    assert_eq!(room.body["room"]["room_name"], "Good");
    assert_eq!(room.body["room"]["event_stream_ordering"], 12);
    assert_eq!(server.get("/v1/rooms/!bad:example.org").await.status, 404);
    server.assert_postgres_matches_served().await;
}

#[tokio::test]
async fn bad_reads_get_4xx() {
    let server = TestServer::start().await;
    server
        .get("/v1/rooms/not-a-room")
        .await
        .assert_error(400, "M_INVALID_PARAM");
    server
        .get("/v1/users/alice/rooms")
        .await
        .assert_error(400, "M_INVALID_PARAM");
    server
        .get("/v1/users/@alice:example.org/rooms/!x")
        .await
        .assert_error(404, "M_NOT_FOUND");
    server
        .get("/v1/rooms/!missing:example.org")
        .await
        .assert_error(404, "M_NOT_FOUND");
    server
        .get("/v1/rooms/!missing:example.org?wait_for=garbage")
        .await
        .assert_error(400, "M_INVALID_PARAM");
    server
        .get("/v1/rooms/!missing:example.org?colour=blue")
        .await
        .assert_error(400, "M_INVALID_PARAM");
    server
        .get("/v1/nowhere")
        .await
        .assert_error(404, "M_UNRECOGNIZED");
    server
        .post("/v1/rooms/!x:example.org", &json!({}))
        .await
        .assert_error(404, "M_UNRECOGNIZED");
    assert_eq!(server.get("/health").await.status, 200);
}

fn create_room(writer: &str, first: i64, room: &str, user: &str) -> Value {
    let create = event_row(first, &format!("$c{first}"), room).state("m.room.create", "");
    let join = event_row(first + 1, &format!("$j{first}"), room)
        .state("m.room.member", user)
        .content(json!({"membership": "join"}));
    json!({"writer": writer, "rows": [
        create.row(),
        {"kind": "state", "stream_id": first, "room_id": room, "type": "m.room.create", "state_key": "", "event_id": format!("$c{first}")},
        join.row(),
        {"kind": "state", "stream_id": first + 1, "room_id": room, "type": "m.room.member", "state_key": user, "event_id": format!("$j{first}")}
    ]})
}

#[tokio::test]
async fn a_conflicting_batch_is_refused_alone_even_inside_a_group_commit() {
    let server = TestServer::start_with(ServerOptions {
        writers: vec!["w1".into(), "w2".into()],
        extra_args: vec!["--commit-linger-ms".into(), "300".into()],
        ..Default::default()
    })
    .await;
    server
        .feed(&create_room(
            "w1",
            2,
            "!a:example.org",
            "@alice:example.org",
        ))
        .await;
    server
        .feed(&create_room("w2", 4, "!b:example.org", "@bob:example.org"))
        .await;
    // Both writers claim stream ordering 10 for different events; the
    // linger puts both batches in one group commit.
    let message = |writer: &str, room: &str, event_id: &str| json!({"writer": writer, "rows": [event_row(10, event_id, room).message().row()]});
    let first_batch = message("w1", "!a:example.org", "$m1");
    let (first, second) = tokio::join!(server.post("/v1/feed", &first_batch), async {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        server
            .post("/v1/feed", &message("w2", "!b:example.org", "$m2"))
            .await
    });
    assert_eq!(first.status, 200, "{}", first.text);
    let error = second.assert_error(409, "ROOMCACHE_CONFLICT");
    assert!(error.contains("event_stream_ordering"), "{error}");
    assert_eq!(
        server.get("/v1/positions").await.body["positions"],
        json!({"w1": 10, "w2": 5})
    );
    assert_eq!(
        server
            .served_joined_room("!a:example.org")
            .await
            .unwrap()
            .event_stream_ordering,
        10
    );
    assert_eq!(
        server
            .served_joined_room("!b:example.org")
            .await
            .unwrap()
            .event_stream_ordering,
        5
    );
    server.assert_postgres_matches_served().await;
    assert!(server.log().contains("retrying its batches one by one"));
}

#[tokio::test]
async fn a_conflict_amid_concurrent_writers_refuses_only_the_batch_at_fault() {
    let server = TestServer::start_with(ServerOptions {
        writers: vec!["w1".into(), "w2".into(), "w3".into()],
        ..Default::default()
    })
    .await;
    server
        .feed(&create_room(
            "w1",
            2,
            "!a:example.org",
            "@alice:example.org",
        ))
        .await;
    server
        .feed(&create_room("w2", 4, "!b:example.org", "@bob:example.org"))
        .await;
    server
        .feed(&create_room(
            "w3",
            6,
            "!c:example.org",
            "@carol:example.org",
        ))
        .await;
    // w1 and w3 post 40 messages each, one batch at a time, while w2 posts
    // a join whose event claims stream ordering 3, already alice's join in
    // !a. Groups form, commit and are prepared on top of each other meanwhile.
    let messages = |writer: &'static str, room: &'static str, first: i64| {
        let socket = server.socket.clone();
        async move {
            let mut statuses = Vec::new();
            for i in 0..40 {
                let stream_id = first + 3 * i;
                let message = event_row(stream_id, &format!("$m{stream_id}"), room).message();
                let batch = json!({"writer": writer, "rows": [message.row()]});
                let answer = post_to(&socket, "/v1/feed", &batch).await.unwrap();
                statuses.push(answer.status.as_u16());
            }
            statuses
        }
    };
    let clash = async {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let mut join = event_row(40, "$clash", "!b:example.org")
            .state("m.room.member", "@dave:example.org")
            .content(json!({"membership": "join"}))
            .row();
        join["stream_ordering"] = json!(3);
        let batch = json!({"writer": "w2", "rows": [join,
            {"kind": "state", "stream_id": 40, "room_id": "!b:example.org", "type": "m.room.member",
             "state_key": "@dave:example.org", "event_id": "$clash"}]});
        server.post("/v1/feed", &batch).await
    };
    let (first, third, clash) = tokio::join!(
        messages("w1", "!a:example.org", 10),
        messages("w3", "!c:example.org", 11),
        clash
    );
    assert_eq!(first, vec![200; 40], "every batch of w1 commits");
    assert_eq!(third, vec![200; 40], "every batch of w3 commits");
    let error = clash.assert_error(409, "ROOMCACHE_CONFLICT");
    assert!(error.contains("event_stream_ordering"), "{error}");
    assert_eq!(
        server.get("/v1/positions").await.body["positions"],
        json!({"w1": 127, "w2": 5, "w3": 128})
    );
    assert!(server
        .served_snapshots("@dave:example.org")
        .await
        .is_empty());
    assert_eq!(
        server
            .served_joined_room("!a:example.org")
            .await
            .unwrap()
            .event_stream_ordering,
        127
    );
    assert_eq!(
        server
            .served_joined_room("!b:example.org")
            .await
            .unwrap()
            .event_stream_ordering,
        5
    );
    assert_eq!(
        server
            .served_joined_room("!c:example.org")
            .await
            .unwrap()
            .event_stream_ordering,
        128
    );
    server.assert_postgres_matches_served().await;
}
