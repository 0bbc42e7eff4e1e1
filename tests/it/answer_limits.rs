//! Answers bounded by what they return (issue 12, item 1): a room list
//! whose ranges would return more than `max_room_list_rooms` rooms is
//! refused with 400 `ROOMCACHE_TOO_MANY_ROOMS` (ranges are clamped to each
//! list's count first, so huge ranges over a small list are fine), and a
//! user's rooms come in pages of at most `max_user_rooms_page`.

use serde_json::{json, Value};

use crate::support::server::{ServerOptions, TestServer};

/// `rooms` rooms, each with alice joined (one batch).
fn rooms_batch(rooms: usize) -> Value {
    let mut rows = Vec::new();
    for n in 0..rooms {
        let room = format!("!r{n:03}:example.org");
        let at = 2 + 2 * n as i64;
        rows.push(
            json!({"kind": "event", "stream_id": at, "event": {"event_id": format!("$c{n}"),
            "room_id": room, "type": "m.room.create", "state_key": "",
            "sender": "@alice:example.org", "content": {}}}),
        );
        rows.push(json!({"kind": "state", "stream_id": at, "room_id": room,
            "type": "m.room.create", "state_key": "", "event_id": format!("$c{n}")}));
        rows.push(
            json!({"kind": "event", "stream_id": at + 1, "event": {"event_id": format!("$j{n}"),
            "room_id": room, "type": "m.room.member", "state_key": "@alice:example.org",
            "sender": "@alice:example.org", "content": {"membership": "join"}}}),
        );
        rows.push(
            json!({"kind": "state", "stream_id": at + 1, "room_id": room,
            "type": "m.room.member", "state_key": "@alice:example.org",
            "event_id": format!("$j{n}")}),
        );
    }
    json!({"writer": "master", "rows": rows})
}

#[tokio::test]
async fn answers_are_bounded_by_what_they_return() {
    let mut server = TestServer::start_with(ServerOptions {
        extra_env: vec![
            ("ROOMCACHE_MAX_ROOM_LIST_ROOMS".into(), "100".into()),
            ("ROOMCACHE_MAX_USER_ROOMS_PAGE".into(), "20".into()),
        ],
        ..ServerOptions::default()
    })
    .await;
    server.feed(&rooms_batch(30)).await;
    let huge = u64::MAX >> 1;

    // Huge ranges over a 30-room list: clamped to the count (3 x 30 = 90).
    let request = json!({"lists": {"a": {"ranges": [[0, huge], [0, huge], [10, huge]]},
                                   "b": {"ranges": [[0, 9]]}}});
    let answer = server
        .post("/v1/users/@alice:example.org/room_list", &request)
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["lists"]["a"]["count"], 30);
    let lengths: Vec<usize> = answer.body["lists"]["a"]["ranges"]
        .as_array()
        .expect("ranges")
        .iter()
        .map(|r| r["rooms"].as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(lengths, [30, 30, 20]);
    // 4 x 30 = 120 rooms > 100: refused before any room is built.
    let request = json!({"lists": {"a": {"ranges": [[0, huge], [0, huge], [0, huge], [0, huge]]}}});
    server
        .post("/v1/users/@alice:example.org/room_list", &request)
        .await
        .assert_error(400, "ROOMCACHE_TOO_MANY_ROOMS");

    // With `at`, a list answers its settled and unsettled rooms instead of
    // ranges: they count too (4 lists x 30 rooms > 100; 3 x 30 fit).
    let list = json!({"ranges": [[0, huge]]});
    let request = json!({"at": "s10", "lists": {"a": list, "b": list, "c": list, "d": list}});
    server
        .post("/v1/users/@alice:example.org/room_list", &request)
        .await
        .assert_error(400, "ROOMCACHE_TOO_MANY_ROOMS");
    let request = json!({"at": "s10", "lists": {"a": list, "b": list, "c": list}});
    let answer = server
        .post("/v1/users/@alice:example.org/room_list", &request)
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let a = &answer.body["lists"]["a"];
    let listed =
        a["settled"].as_array().map_or(0, Vec::len) + a["unsettled"].as_array().map_or(0, Vec::len);
    assert_eq!(listed, 30, "{a}");

    // A user's rooms, 20 per page, in room ID order.
    let first = server.get("/v1/users/@alice:example.org/rooms").await;
    assert_eq!(first.status, 200, "{}", first.text);
    let ids = |answer: &Value| -> Vec<String> {
        answer["rooms"]
            .as_array()
            .expect("rooms")
            .iter()
            .map(|r| r["room_id"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let page = ids(&first.body);
    assert_eq!(page.len(), 20);
    assert_eq!(page[0], "!r000:example.org");
    assert_eq!(first.body["next_from"], "!r019:example.org");
    let second = server
        .get("/v1/users/@alice:example.org/rooms?from=!r019:example.org")
        .await;
    let page = ids(&second.body);
    assert_eq!(page.len(), 10);
    assert_eq!(page[0], "!r020:example.org");
    assert!(second.body.get("next_from").is_none(), "{}", second.text);
    let small = server
        .get("/v1/users/@alice:example.org/rooms?limit=5&from=!r027:example.org")
        .await;
    assert_eq!(ids(&small.body), ["!r028:example.org", "!r029:example.org"]);
    server
        .get("/v1/users/@alice:example.org/rooms?limit=21")
        .await
        .assert_error(400, "M_INVALID_PARAM");
    server.stop().await;
}
