//! The same properties end to end, over the socket: durable positions in
//! `stream_positions`, resume, waiting.

use std::collections::BTreeMap;

use crate::support::server::{ServerOptions, TestServer};
use roomcache_core::StreamToken;
use serde_json::{json, Value};

fn two_writers() -> ServerOptions {
    ServerOptions {
        writers: vec!["w1".into(), "w2".into()],
        ..ServerOptions::default()
    }
}

/// A room created and joined by `user` at ids `create` and `join`.
fn room_rows(room: &str, user: &str, create: i64, join: i64) -> Vec<Value> {
    vec![
        json!({"kind": "event", "stream_id": create, "event": {"event_id": format!("$create-{room}"),
            "room_id": room, "type": "m.room.create", "state_key": "", "sender": user,
            "content": {"room_version": "10"}}}),
        json!({"kind": "state", "stream_id": create, "room_id": room, "type": "m.room.create",
            "state_key": "", "event_id": format!("$create-{room}")}),
        json!({"kind": "event", "stream_id": join, "event": {"event_id": format!("$join-{room}"),
            "room_id": room, "type": "m.room.member", "state_key": user, "sender": user,
            "content": {"membership": "join"}}}),
        json!({"kind": "state", "stream_id": join, "room_id": room, "type": "m.room.member",
            "state_key": user, "event_id": format!("$join-{room}")}),
    ]
}

fn batch(writer: &str, rows: Vec<Value>) -> Value {
    json!({"writer": writer, "rows": rows})
}

async fn stored_positions(server: &TestServer) -> BTreeMap<String, i64> {
    server
        .rows_in_postgres()
        .await
        .positions
        .into_iter()
        .map(|(writer, position)| (writer.to_string(), position))
        .collect()
}

/// Invariant 17 and durability: each batch's positions are in
/// `stream_positions` with its rows; a batch whose commit fails (a
/// conflict) moves nothing, in memory or in Postgres; an unknown writer
/// gets 400 and changes nothing; idle writers move with position rows.
#[tokio::test]
async fn stream_positions_commit_with_the_rows() {
    let server = TestServer::start_with(two_writers()).await;
    let answer = server
        .feed(&batch(
            "w1",
            room_rows("!a:example.org", "@alice:example.org", 2, 3),
        ))
        .await;
    assert_eq!(
        (answer["position"].clone(), answer["token"].clone()),
        (json!(3), json!("m0~w1.3"))
    );
    assert_eq!(
        stored_positions(&server).await,
        BTreeMap::from([("w1".into(), 3)])
    );

    // w2 reuses stream id 3 for another room: the unique index on
    // event_stream_ordering refuses the group; nothing of it is applied.
    let conflict = server
        .post(
            "/v1/feed",
            &batch("w2", room_rows("!b:example.org", "@bob:example.org", 2, 3)),
        )
        .await;
    conflict.assert_error(409, "ROOMCACHE_CONFLICT");
    assert_eq!(
        stored_positions(&server).await,
        BTreeMap::from([("w1".into(), 3)])
    );
    assert_eq!(
        server.get("/v1/positions").await.body,
        json!({"positions": {"w1": 3, "w2": 0}, "token": "m0~w1.3"})
    );
    assert_eq!(server.get("/v1/rooms/!b:example.org").await.status, 404);

    // The writer fixes its ids and sends again: applied.
    let answer = server
        .feed(&batch(
            "w2",
            room_rows("!b:example.org", "@bob:example.org", 4, 5),
        ))
        .await;
    assert_eq!(
        (answer["position"].clone(), answer["applied_rows"].clone()),
        (json!(5), json!(4))
    );
    assert_eq!(answer["token"], "m3~w2.5");

    // Unknown writer: 400, nothing changes.
    server
        .post(
            "/v1/feed",
            &batch("w3", vec![json!({"kind": "position", "stream_id": 9})]),
        )
        .await
        .assert_error(400, "ROOMCACHE_UNKNOWN_WRITER");

    // An idle writer moves with a position row; ids may have gaps.
    let answer = server
        .feed(&batch(
            "w1",
            vec![json!({"kind": "position", "stream_id": 40})],
        ))
        .await;
    assert_eq!(
        (answer["position"].clone(), answer["token"].clone()),
        (json!(40), json!("m5~w1.40"))
    );
    assert_eq!(
        stored_positions(&server).await,
        BTreeMap::from([("w1".into(), 40), ("w2".into(), 5)])
    );
    assert_eq!(
        server.get("/v1/positions").await.body,
        json!({"positions": {"w1": 40, "w2": 5}, "token": "m5~w1.40"})
    );
    server.assert_postgres_matches_served().await;
}

/// Resume protocol: after a restart, positions come back from Postgres;
/// rows at or below them are skipped, so replaying from there applies each
/// row exactly once; a batch straddling the position applies only the rest.
#[tokio::test]
async fn writers_resume_from_the_durable_positions() {
    let mut server = TestServer::start_with(two_writers()).await;
    let mut rows = room_rows("!a:example.org", "@alice:example.org", 2, 3);
    server.feed(&batch("w1", rows.clone())).await;
    server.restart().await;
    assert_eq!(
        server.get("/v1/positions").await.body,
        json!({"positions": {"w1": 3, "w2": 0}, "token": "m0~w1.3"})
    );
    rows.extend(room_rows("!c:example.org", "@alice:example.org", 6, 7));
    let answer = server.feed(&batch("w1", rows)).await;
    assert_eq!(
        (answer["position"].clone(), answer["applied_rows"].clone()),
        (json!(7), json!(4))
    );
    let room = server.get("/v1/rooms/!c:example.org").await;
    assert_eq!(room.body["room"]["event_stream_ordering"], 7);
    server.assert_postgres_matches_served().await;
}

/// Waiting: a read with `wait_for` ahead of the cache answers once a batch
/// covers it, with the row and `timed_out: false`; a token that is never
/// reached answers at `timeout_ms` with `timed_out: true` and the cache's
/// token; entries of unknown writers are clamped away; a malformed token
/// is a 400. Every answer's token is exact: the row shows iff it is at or
/// below the token.
#[tokio::test]
async fn reads_wait_for_a_token() {
    let server = std::sync::Arc::new(TestServer::start_with(two_writers()).await);
    let waiting = {
        let server = server.clone();
        tokio::spawn(async move {
            server
                .get("/v1/rooms/!a:example.org?wait_for=m0~w1.3&timeout_ms=30000")
                .await
        })
    };
    // The read must be waiting before the batch is sent; poll the metric-free way:
    // a short read with the same token times out meanwhile.
    let early = server
        .get("/v1/rooms/!a:example.org?wait_for=m0~w1.3&timeout_ms=50")
        .await;
    assert_eq!(early.status, 404, "{}", early.text);
    server
        .feed(&batch(
            "w1",
            room_rows("!a:example.org", "@alice:example.org", 2, 3),
        ))
        .await;
    let answer = waiting.await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["timed_out"], false);
    assert_eq!(answer.body["token"], "m0~w1.3");
    assert_eq!(answer.body["room"]["event_stream_ordering"], 3);

    let never = server
        .get("/v1/users/@alice:example.org/rooms?wait_for=s99&timeout_ms=100")
        .await;
    assert_eq!(never.status, 200, "{}", never.text);
    assert_eq!(never.body["timed_out"], true);
    assert_eq!(never.body["token"], "m0~w1.3");
    assert_eq!(never.body["rooms"].as_array().map(Vec::len), Some(1));

    let clamped = server
        .get("/v1/users/@alice:example.org/rooms/!a:example.org?wait_for=m0~w1.3~ghost.50&timeout_ms=5000")
        .await;
    assert_eq!(clamped.body["timed_out"], false, "{}", clamped.text);
    assert_eq!(clamped.body["snapshot"]["membership"], "join");

    server
        .get("/v1/rooms/!a:example.org?wait_for=x7")
        .await
        .assert_error(400, "M_INVALID_PARAM");
}

/// Exactness under load: while a writer feeds joins of one user into new
/// rooms, every answer's rooms are exactly those whose join is at or below
/// the answer's token, never one more or one fewer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_exact_snapshots_while_rows_flow() {
    let server = std::sync::Arc::new(TestServer::start().await);
    let user = "@alice:example.org";
    let writer = {
        let server = server.clone();
        tokio::spawn(async move {
            for k in 1..=40i64 {
                let room = format!("!r{k}:example.org");
                server
                    .feed(&batch("master", room_rows(&room, user, 2 * k, 2 * k + 1)))
                    .await;
            }
        })
    };
    let mut reads = 0;
    loop {
        let done = writer.is_finished();
        let answer = server.get(&format!("/v1/users/{user}/rooms")).await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        let token: StreamToken = answer.body["token"].as_str().unwrap().parse().unwrap();
        let mut seen: Vec<i64> = answer.body["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["event_stream_ordering"].as_i64().unwrap())
            .collect();
        seen.sort_unstable();
        let expected: Vec<i64> = (1..=40)
            .map(|k| 2 * k + 1)
            .filter(|id| *id <= token.position("master"))
            .collect();
        assert_eq!(seen, expected, "answer at {token} is not exact");
        reads += 1;
        if done {
            break;
        }
    }
    writer.await.unwrap();
    assert!(reads > 1);
}
