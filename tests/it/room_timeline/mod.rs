//! The rooms' latest events (`POST /v1/rooms/data` with `timeline`)
//! against real Synapse databases: each room's initial timeline must be
//! exactly what Synapse 1.163.2's query on its `events` table gives
//! (`paginate_room_events_by_topological_ordering` backwards from the
//! token: events that are not outliers at or below the token's highest
//! position, by topological then stream ordering descending, twice the
//! limit fetched, then each writer's position applied), or "not held";
//! followed from position 0, imported, after a restart, with one writer and
//! two; and in feed mode through rejections, outliers, backfill,
//! de-outliering, redactions and purges. Source mode through Synapse's
//! backfill: [`backfill`].

mod backfill;

use std::str::FromStr;

use roomcache_core::StreamToken;
use serde_json::{json, Value};

use crate::support::fixture_servers::{
    assert_rooms_agree, start_followed_and_imported, start_on_workers,
};
use crate::support::server::TestServer;
use crate::support::synapse::{
    insert_event, move_events_position, wait_for_position, SynapseDatabase, FIXTURE_POSITION,
};

/// Latest events a room holds by default (setting `room_timeline_events`).
const HELD: i64 = 8;

/// A timeline's event as answered: (event ID, topological ordering,
/// stream ordering, instance name, rejected).
type Row = (String, i64, i64, String, bool);

/// Events of `room` that are not outliers, at most `limit`, at or below
/// `highest`, newest first in the query's order.
async fn synapse_events(
    client: &tokio_postgres::Client,
    room: &str,
    highest: i64,
    limit: i64,
) -> Vec<Row> {
    client
        .query(
            "SELECT e.event_id, e.topological_ordering, e.stream_ordering,
                    COALESCE(e.instance_name, 'master'),
                    (e.rejection_reason IS NOT NULL
                     OR EXISTS (SELECT 1 FROM rejections r WHERE r.event_id = e.event_id))
             FROM events e
             WHERE e.outlier = FALSE AND e.room_id = $1 AND e.stream_ordering <= $2
             ORDER BY e.topological_ordering DESC, e.stream_ordering DESC LIMIT $3",
            &[&room, &highest, &limit],
        )
        .await
        .expect("events")
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4)))
        .collect()
}

/// Synapse's initial timeline of `room` at `token`: the rows its query
/// keeps (rejected ones included, as the query selects them) and `limited`.
async fn synapse_timeline(
    client: &tokio_postgres::Client,
    room: &str,
    limit: usize,
    token: &StreamToken,
) -> (Vec<Row>, bool) {
    let fetched = synapse_events(client, room, token.max_position(), (limit * 2) as i64).await;
    let count = fetched.len();
    let kept: Vec<Row> = fetched
        .into_iter()
        .filter(|row| row.2 <= token.position(&row.3))
        .collect();
    let limited = count >= limit * 2 || kept.len() > limit;
    (kept.into_iter().take(limit).collect(), limited)
}

/// Whether the cache can answer `room`'s timeline at `token` in source
/// mode (where it cannot know it holds all of a room's events): the events
/// it holds (the room's top [`HELD`] at the cache's position `cached`)
/// that the query selects must be all it fetches, or keep more than asked.
async fn decidable(
    client: &tokio_postgres::Client,
    room: &str,
    limit: usize,
    token: &StreamToken,
    cached: i64,
) -> bool {
    let held = synapse_events(client, room, cached, HELD).await;
    let selectable: Vec<&Row> = held
        .iter()
        .filter(|row| row.2 <= token.max_position())
        .collect();
    let kept = selectable
        .iter()
        .filter(|row| row.2 <= token.position(&row.3))
        .count();
    selectable.len() >= limit * 2 || kept > limit
}

/// A served timeline: its rows and `limited`, or why unknown.
fn served_timeline(data: &Value) -> Result<(Vec<Row>, bool), String> {
    let timeline = &data["timeline"];
    let Some(events) = timeline["events"].as_array() else {
        return Err(timeline["unknown"].as_str().unwrap_or("?").to_owned());
    };
    let rows = events
        .iter()
        .map(|e| {
            (
                e[0].as_str().expect("id").to_owned(),
                e[1].as_i64().expect("topological"),
                e[2].as_i64().expect("stream"),
                e[3].as_str().expect("instance").to_owned(),
                e[4].as_bool().expect("rejected"),
            )
        })
        .collect();
    Ok((rows, timeline["limited"].as_bool().expect("limited")))
}

/// Asks every room of Synapse's database for its timeline with `limit` and
/// asserts each answer is Synapse's, or "not held" only where the cache
/// cannot know ([`decidable`]). Returns the rooms answered.
async fn assert_timelines_are_synapses(
    server: &TestServer,
    synapse: &SynapseDatabase,
    limit: usize,
    what: &str,
) -> usize {
    assert_timelines_at(server, synapse, limit, None, what).await
}

/// [`assert_timelines_are_synapses`] at the token `at` (default: the
/// answer's).
async fn assert_timelines_at(
    server: &TestServer,
    synapse: &SynapseDatabase,
    limit: usize,
    at: Option<&str>,
    what: &str,
) -> usize {
    let client = synapse.client().await;
    let rooms: Vec<String> = client
        .query("SELECT room_id FROM rooms ORDER BY room_id", &[])
        .await
        .expect("rooms")
        .iter()
        .map(|row| row.get(0))
        .collect();
    let answer = server
        .post(
            "/v1/rooms/data",
            &json!({"rooms": rooms, "timeline": {"limit": limit, "at": at}}),
        )
        .await;
    assert!(answer.status.is_success(), "{}", answer.text);
    let cached = StreamToken::from_str(answer.body["token"].as_str().expect("token")).unwrap();
    let token = at.map_or_else(|| cached.clone(), |at| StreamToken::from_str(at).unwrap());
    let mut differences = Vec::new();
    let mut answered = 0;
    for room in &rooms {
        let expected = synapse_timeline(&client, room, limit, &token).await;
        match served_timeline(&answer.body["rooms"][room]) {
            Ok(ours) if ours == expected => answered += 1,
            Err(reason)
                if reason == "not_held"
                    && !decidable(&client, room, limit, &token, cached.max_position()).await => {}
            other => differences.push(format!("{room}: Synapse {expected:?}, roomcache {other:?}")),
        }
    }
    assert_rooms_agree(&differences, rooms.len(), &format!("{what}, limit {limit}"));
    answered
}

/// Writes an event into Synapse's tables as a writer persists it, with its
/// own topological ordering, outlier and rejected flags, and moves the
/// events stream's position.
async fn persist_flagged(
    client: &tokio_postgres::Client,
    stream_ordering: i64,
    event: &Value,
    topological_ordering: i64,
    outlier: bool,
    rejected: bool,
) {
    client.batch_execute("BEGIN").await.unwrap();
    insert_event(client, "master", stream_ordering, event).await;
    let reason: Option<&str> = rejected.then_some("auth_error");
    client
        .execute(
            "UPDATE events SET topological_ordering = $2, depth = $2, outlier = $3,
                 rejection_reason = $4
             WHERE stream_ordering = $1",
            &[&stream_ordering, &topological_ordering, &outlier, &reason],
        )
        .await
        .unwrap();
    move_events_position(client, stream_ordering).await;
    client.batch_execute("COMMIT").await.unwrap();
}

/// The room with the most events, its creator and its highest
/// topological ordering.
async fn busiest_room(client: &tokio_postgres::Client) -> (String, String, i64) {
    let row = client
        .query_one(
            "SELECT r.room_id,
                    (SELECT sender FROM events WHERE room_id = r.room_id AND type = 'm.room.create'),
                    (SELECT max(topological_ordering) FROM events WHERE room_id = r.room_id)
             FROM (SELECT room_id FROM events GROUP BY room_id
                   ORDER BY count(*) DESC, room_id LIMIT 1) r",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

/// While `imported` is stopped, and then while it follows: messages (one
/// rejected), an outlier, a redaction, an event arriving late with a low
/// topological ordering, in the room with the most events; every room's
/// timeline is then Synapse's. Returns the last position written.
async fn follow_on_through_flagged_events(
    imported: &mut TestServer,
    synapse: &SynapseDatabase,
) -> i64 {
    imported.stop().await;
    let client = synapse.client().await;
    let (room, sender, top) = busiest_room(&client).await;
    let event = |n: i64, event_type: &str, content: Value| {
        json!({"event_id": format!("$timeline{n}"), "room_id": room, "type": event_type,
            "sender": sender, "content": content, "origin_server_ts": 0, "unsigned": {}})
    };
    let message = |n: i64| {
        event(
            n,
            "m.room.message",
            json!({"msgtype": "m.text", "body": "hi"}),
        )
    };
    let position = FIXTURE_POSITION;
    persist_flagged(&client, position + 1, &message(1), top + 1, false, false).await;
    persist_flagged(&client, position + 2, &message(2), top + 2, false, true).await;
    imported.spawn().await;
    wait_for_position(imported, position + 2).await;
    persist_flagged(&client, position + 3, &message(3), top + 3, true, false).await;
    let redaction = event(4, "m.room.redaction", json!({"redacts": "$timeline1"}));
    persist_flagged(&client, position + 4, &redaction, top + 3, false, false).await;
    persist_flagged(&client, position + 5, &message(5), top - 1, false, false).await;
    wait_for_position(imported, position + 5).await;
    for limit in [1, 2, 3] {
        assert_timelines_are_synapses(imported, synapse, limit, "followed on").await;
    }
    let answer = imported
        .post(
            "/v1/rooms/data",
            &json!({"rooms": [room], "timeline": {"limit": 3}}),
        )
        .await;
    let (rows, limited) = served_timeline(&answer.body["rooms"][&room]).expect("answered");
    let ids: Vec<(&str, bool)> = rows.iter().map(|r| (r.0.as_str(), r.4)).collect();
    assert_eq!(
        ids,
        [
            ("$timeline4", false),
            ("$timeline2", true),
            ("$timeline1", false)
        ]
    );
    assert!(limited);
    position + 5
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timelines_are_synapses_followed_imported_and_after_a_restart() {
    let synapse = SynapseDatabase::load("small.sql.gz").await;
    let (mut followed, mut imported) = start_followed_and_imported(&synapse).await;
    for limit in [1, 3, 20] {
        let answered = assert_timelines_are_synapses(&followed, &synapse, limit, "followed").await;
        let imported_answered =
            assert_timelines_are_synapses(&imported, &synapse, limit, "imported").await;
        assert_eq!(answered, imported_answered);
        eprintln!("limit {limit}: {answered} rooms answered");
        if limit == 1 {
            assert!(answered >= 60, "{answered}");
        }
    }
    let status = imported.get("/v1/status").await.body;
    let latest = &status["room_data"]["latest_events"];
    let (rooms, bytes) = (
        latest["rooms"].as_u64().expect("rooms"),
        latest["bytes"].as_u64().expect("bytes"),
    );
    let state_bytes = status["room_data"]["bytes"].as_u64().expect("bytes");
    eprintln!(
        "latest events: {bytes} bytes for {rooms} rooms ({} per room); held state {state_bytes} \
         bytes; both {} per room",
        bytes / rooms,
        (bytes + state_bytes) / rooms
    );
    // Eight events of 64 bytes, and the room's entry in the index's map
    // (with the map's spare capacity).
    assert!(bytes / rooms <= 8 * 64 + 64, "{status}");
    assert!((bytes + state_bytes) / rooms <= 1024, "{status}");
    followed.stop().await;

    let position = follow_on_through_flagged_events(&mut imported, &synapse).await;
    // Postgres holds what is served: a restart answers the same.
    imported.restart().await;
    wait_for_position(&imported, position).await;
    for limit in [1, 3] {
        assert_timelines_are_synapses(&imported, &synapse, limit, "after a restart").await;
    }
    imported.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timelines_are_synapses_with_two_event_persisters() {
    let synapse = SynapseDatabase::load("workers.sql.gz").await;
    for import_on_start in [false, true] {
        let mut server = start_on_workers(&synapse, import_on_start).await;
        for limit in [1, 4] {
            let answered =
                assert_timelines_are_synapses(&server, &synapse, limit, "two writers").await;
            assert!(answered > 0);
            // Tokens with a writer behind the other: its events between
            // are fetched by the query, then dropped.
            for at in ["m400~p1.439", "m420~p2.430"] {
                assert_timelines_at(&server, &synapse, limit, Some(at), at).await;
            }
        }
        server.stop().await;
    }
}

/// The room of the feed tests.
const FEED_ROOM: &str = "!t:example.org";

/// A message of the feed tests' room at `stream` with its topological
/// ordering, and any other fields of the row (`extra`).
fn feed_event(id: &str, stream: i64, topological: i64, extra: Value) -> Value {
    let mut row = json!({"kind": "event", "stream_id": stream,
        "topological_ordering": topological,
        "event": {"event_id": id, "room_id": FEED_ROOM, "type": "m.room.message",
            "sender": "@alice:example.org", "content": {"body": id}}});
    for (key, value) in extra.as_object().expect("object") {
        row[key] = value.clone();
    }
    row
}

/// The feed tests' room's timeline with `limit`, once the cache has reached
/// `wait_for`, at `at` (default `wait_for`): its event IDs and `limited`,
/// or why unknown.
async fn feed_timeline(
    server: &TestServer,
    limit: usize,
    wait_for: &str,
    at: Option<&str>,
) -> Result<(Vec<String>, bool), String> {
    let body = json!({"rooms": [FEED_ROOM], "wait_for": wait_for,
        "timeline": {"limit": limit, "at": at}});
    let answer = server.post("/v1/rooms/data", &body).await;
    assert!(answer.status.is_success(), "{}", answer.text);
    served_timeline(&answer.body["rooms"][FEED_ROOM])
        .map(|(rows, limited)| (rows.into_iter().map(|r| r.0).collect(), limited))
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// Feed mode (every event seen: a room holding all of its events answers
/// any limit): rejected events are kept and flagged, outliers are not held
/// until de-outliered (at their own stream ordering), backfilled events
/// take their place by topological ordering, a redaction keeps its target;
/// the answer at an earlier token leaves out later events, one beyond the
/// cache is unknown; a restart answers the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_keeps_latest_events_through_rejections_outliers_and_backfill() {
    let mut server = TestServer::start().await;
    let mut redaction = feed_event("$redact", 8, 7, json!({}));
    redaction["event"]["type"] = json!("m.room.redaction");
    redaction["event"]["content"] = json!({"redacts": "$m3"});
    server
        .feed(&json!({"writer": "master", "rows": [
            feed_event("$m1", 1, 1, json!({})),
            feed_event("$m2", 2, 2, json!({})),
            feed_event("$m3", 3, 3, json!({})),
            feed_event("$rejected", 4, 4, json!({"rejected": true})),
            feed_event("$outlier", 5, 9, json!({"outlier": true})),
            // Backfilled: negative stream orderings, below everything.
            feed_event("$b1", 6, 0, json!({"stream_ordering": -1})),
            feed_event("$b2", 7, 0, json!({"stream_ordering": -2})),
            redaction,
        ]}))
        .await;
    let body = json!({"rooms": [FEED_ROOM], "wait_for": "s8", "timeline": {"limit": 3}});
    let answer = server.post("/v1/rooms/data", &body).await;
    let (rows, limited) = served_timeline(&answer.body["rooms"][FEED_ROOM]).expect("answered");
    assert_eq!(rows[1], ("$rejected".into(), 4, 4, "master".into(), true));
    let listed: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        (listed, limited),
        (vec!["$redact", "$rejected", "$m3"], true)
    );
    // Everything: the backfilled ones last (topological 0), newest first.
    assert_eq!(
        feed_timeline(&server, 10, "s8", None).await,
        Ok((
            ids(&["$redact", "$rejected", "$m3", "$m2", "$m1", "$b1", "$b2"]),
            false
        ))
    );
    // At an earlier token the redaction is not there yet.
    assert_eq!(
        feed_timeline(&server, 2, "s8", Some("s4")).await,
        Ok((ids(&["$rejected", "$m3"]), true))
    );
    // Beyond what the cache has reached: unknown.
    assert_eq!(
        feed_timeline(&server, 2, "s8", Some("s9")).await,
        Err("behind_token".into())
    );
    // The outlier is de-outliered (at its own stream ordering, 5).
    server
        .feed(&json!({"writer": "master", "rows": [
            feed_event("$outlier", 9, 9, json!({"stream_ordering": 5})),
        ]}))
        .await;
    let expected = Ok((ids(&["$outlier", "$redact"]), true));
    assert_eq!(feed_timeline(&server, 2, "s9", None).await, expected);
    server.restart().await;
    assert_eq!(feed_timeline(&server, 2, "s9", None).await, expected);
    server.stop().await;
}

/// Feed mode: more events than the window holds (8) answer what the
/// window decides and are "not held" otherwise; a purge empties the room;
/// an event without its topological ordering makes the room's order
/// unknown; bad requests are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_window_is_bounded_purged_and_requests_are_checked() {
    let mut server = TestServer::start().await;
    let events: Vec<Value> = (1..=14)
        .map(|n| feed_event(&format!("$n{n}"), n, n, json!({})))
        .collect();
    server
        .feed(&json!({"writer": "master", "rows": events}))
        .await;
    assert_eq!(
        feed_timeline(&server, 8, "s14", None).await,
        Err("not_held".into())
    );
    let (list, limited) = feed_timeline(&server, 7, "s14", None).await.expect("held");
    assert_eq!(list.first().map(String::as_str), Some("$n14"));
    assert_eq!((list.len(), limited), (7, true));
    assert_eq!(
        feed_timeline(&server, 4, "s14", None).await,
        Ok((ids(&["$n14", "$n13", "$n12", "$n11"]), true))
    );

    server
        .feed(&json!({"writer": "master", "rows": [
            {"kind": "purge", "stream_id": 15, "room_id": FEED_ROOM},
        ]}))
        .await;
    assert_eq!(
        feed_timeline(&server, 8, "s15", None).await,
        Ok((Vec::new(), false))
    );
    let mut unordered = feed_event("$u", 16, 0, json!({}));
    unordered
        .as_object_mut()
        .expect("row")
        .remove("topological_ordering");
    server
        .feed(&json!({"writer": "master", "rows": [unordered]}))
        .await;
    assert_eq!(
        feed_timeline(&server, 1, "s16", None).await,
        Err("unordered".into())
    );
    for timeline in [
        json!({"limit": 0}),
        json!({"limit": 1001}),
        json!({"limit": 1, "x": 1}),
    ] {
        let body = json!({"rooms": [FEED_ROOM], "timeline": timeline});
        let answer = server.post("/v1/rooms/data", &body).await;
        assert_eq!(answer.status.as_u16(), 400, "{timeline}: {}", answer.text);
    }
    server.stop().await;
}
