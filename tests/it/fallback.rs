//! The one fallback policy of the reads (spec §5, source mode): while a room
//! waits in the recalculation queue, every read endpoint that touches it —
//! the room, a user's snapshot in it, a user's rooms, a user's room lists —
//! answers with its rows computed from Synapse and says `"fallback": true`;
//! reads that touch no queued room carry no flag; once the queue is drained,
//! nothing is flagged and the rows come from the cache.

use serde_json::{json, Value};

use crate::support::fake_synapse::{user, HS};
use crate::support::server::{Answer, TestServer};
use crate::support::synapse::{spawn_holding_recalculation, wait_for_position};
use crate::synapse_catalogue::{tables, Scenario, ROOM_NAME};

/// A room list of every room of `user_id`, first ten.
async fn room_list(server: &TestServer, user_id: &str) -> Answer {
    let request = json!({"lists": {"all": {"ranges": [[0, 9]]}}});
    server
        .post(&format!("/v1/users/{user_id}/room_list"), &request)
        .await
}

/// The room IDs of a room list's first range.
fn listed(answer: &Answer) -> Vec<&str> {
    answer.body["lists"]["all"]["ranges"][0]["rooms"]
        .as_array()
        .map(|rooms| rooms.iter().filter_map(|r| r["room_id"].as_str()).collect())
        .unwrap_or_default()
}

fn assert_flagged(answer: &Answer, flagged: bool) {
    assert_eq!(answer.status, 200, "{}", answer.text);
    let expected = if flagged { json!(true) } else { Value::Null };
    assert_eq!(answer.body["fallback"], expected, "{}", answer.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_rooms_are_served_by_the_fallback_until_recomputed_never_stale() {
    let mut s = Scenario::new().await;
    let (u1, u2) = (user(1), user(2));
    let r = s.fake.create_room(&u1, None).await;
    let other = s.fake.create_room(&u1, None).await;
    let mut server = s.start(true).await;
    let before = tables(&server).await;
    server.stop().await;
    s.fake.name(&r, &u1, ROOM_NAME).await;
    let join = s.fake.member(&r, &u2, &u2, "join").await;
    let status = spawn_holding_recalculation(&mut server).await;
    assert_eq!(status["recalculation_queue"], 1, "{status}");
    // In source mode the socket feed is closed.
    server
        .post("/v1/feed", &json!({"writer": "master", "rows": []}))
        .await
        .assert_error(409, "ROOMCACHE_SOURCE_MODE");
    assert_eq!(status["source"]["invalidated_at_start"], 1, "{status}");

    // The queued room's rows were deleted; every read computes them from Synapse.
    let answer = server.get(&format!("/v1/rooms/{r}")).await;
    assert_flagged(&answer, true);
    assert_eq!(answer.body["room"]["room_name"], ROOM_NAME);
    assert_eq!(
        answer.body["room"]["event_stream_ordering"],
        s.so(&join).await
    );
    let answer = server.get(&format!("/v1/users/{u2}/rooms/{r}")).await;
    assert_flagged(&answer, true);
    assert_eq!(
        answer.body["snapshot"]["membership_event_id"],
        join.as_str()
    );
    assert_eq!(answer.body["snapshot"]["room_name"], ROOM_NAME);
    let answer = server.get(&format!("/v1/users/{u2}/rooms")).await;
    assert_flagged(&answer, true);
    let rooms = server.served_snapshots(&u2).await;
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0].membership_event_id.as_str(), join);
    let answer = room_list(&server, &u2).await;
    assert_flagged(&answer, true);
    assert_eq!(answer.body["lists"]["all"]["count"], 1, "{}", answer.text);
    assert_eq!(listed(&answer), vec![r.as_str()]);
    assert_eq!(
        answer.body["lists"]["all"]["ranges"][0]["rooms"][0]["room_name"],
        ROOM_NAME
    );
    // u1's lists mix the queued room (newest: renamed, joined) with a cached one.
    let answer = room_list(&server, &u1).await;
    assert_flagged(&answer, true);
    assert_eq!(listed(&answer), vec![r.as_str(), other.as_str()]);

    // Reads that touch no queued room are served from the cache, unflagged.
    let untouched = server.get(&format!("/v1/rooms/{other}")).await;
    assert_flagged(&untouched, false);
    assert_eq!(untouched.body["room"]["room_id"], json!(other));
    let nobody = format!("@nobody:{HS}");
    assert_flagged(
        &server.get(&format!("/v1/users/{nobody}/rooms")).await,
        false,
    );
    let answer = room_list(&server, &nobody).await;
    assert_flagged(&answer, false);
    assert_eq!(answer.body["lists"]["all"]["count"], 0);

    // Restarted without the delay, the queue (kept across the restart) drains.
    server.restart().await;
    let status = wait_for_position(&server, s.fake.next_position() - 1).await;
    assert_eq!(status["recalculation_queue"], 0);
    // The position had not moved: the same room is found changed again.
    assert_eq!(status["source"]["invalidated_at_start"], 1, "{status}");
    let answer = server.get(&format!("/v1/rooms/{r}")).await;
    assert_flagged(&answer, false);
    assert_eq!(
        answer.body["room"]["event_stream_ordering"],
        s.so(&join).await
    );
    assert_eq!(answer.body["room"]["room_name"], ROOM_NAME);
    assert_flagged(&server.get(&format!("/v1/users/{u2}/rooms")).await, false);
    let answer = room_list(&server, &u1).await;
    assert_flagged(&answer, false);
    assert_eq!(listed(&answer), vec![r.as_str(), other.as_str()]);
    let t = tables(&server).await;
    assert_eq!(t.joined.get(&other), before.joined.get(&other));
    server.stop().await;
}
