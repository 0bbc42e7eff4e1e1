//! Source mode through Synapse's backfill: events backfilled (negative
//! stream orderings, from Synapse's backfill stream) among a room's latest
//! events, before the import and while roomcache follows, and one below
//! them; each time every room's timeline is Synapse's, the backfilled
//! events among the held ones included. A restart continues from the
//! stored backfill position: an event backfilled while roomcache was down
//! is applied, nothing before it is read again. A Synapse database restored
//! behind roomcache's backfill position lowers it: the backfilled event
//! Synapse no longer has leaves the held timeline, and the event Synapse
//! backfills again at that position is read.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{assert_timelines_are_synapses, busiest_room, served_timeline};
use crate::support::server::TestServer;
use crate::support::synapse::{
    persist_backfilled, source_options, wait_for_position, SynapseDatabase, FIXTURE_POSITION,
};

/// Counts the backfilled events the follower read.
const BACKFILLED_METRIC: &str = "roomcache_source_backfilled_events_total";

/// Waits (up to 20 s) until `server` has applied `master`'s backfill
/// stream up to `position` (its `stream_positions` row); false if it
/// never does.
async fn reached_backfill_position(server: &TestServer, position: i64) -> bool {
    let (client, connection) = tokio_postgres::connect(&server.database_url, tokio_postgres::NoTls)
        .await
        .expect("connect to roomcache's database");
    tokio::spawn(connection);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let row = client
            .query_opt(
                &format!(
                    "SELECT stream_id FROM \"{}\".stream_positions
                     WHERE stream_name = 'backfill' AND instance_name = 'master'",
                    server.schema
                ),
                &[],
            )
            .await
            .expect("roomcache's backfill position");
        if row.is_some_and(|row| row.get::<_, i64>(0) == position) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The IDs of `room`'s served timeline with `limit`.
async fn served_ids(server: &TestServer, room: &str, limit: usize) -> Vec<String> {
    let answer = server
        .post(
            "/v1/rooms/data",
            &json!({"rooms": [room], "timeline": {"limit": limit}}),
        )
        .await;
    let (rows, _) = served_timeline(&answer.body["rooms"][room]).expect("answered");
    rows.into_iter().map(|row| row.0).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfilled_events_among_the_latest_are_followed_imported_and_kept_over_a_restart() {
    let synapse = SynapseDatabase::load("small.sql.gz").await;
    let client = synapse.client().await;
    let (room, sender, top) = busiest_room(&client).await;
    let message = |n: i64| {
        json!({"event_id": format!("$backfilled{n}"), "room_id": room, "type": "m.room.message",
            "sender": sender, "content": {"msgtype": "m.text", "body": "old"},
            "origin_server_ts": 0, "unsigned": {}})
    };
    // Backfilled before the import, just below the room's newest event.
    persist_backfilled(&client, "master", 2, &message(0), top - 1).await;
    let mut server =
        TestServer::start_with(source_options(&synapse).import_on_start(true).build()).await;
    wait_for_position(&server, FIXTURE_POSITION).await;
    let reached = reached_backfill_position(&server, 2).await;
    assert_timelines_are_synapses(&server, &synapse, 3, "imported with a backfilled event").await;
    assert!(reached, "{}", server.log());

    // Backfilled while following: beside the newest event (same
    // topological ordering, lower stream ordering: it ranks second).
    persist_backfilled(&client, "master", 3, &message(1), top).await;
    let reached = reached_backfill_position(&server, 3).await;
    for limit in [1, 3] {
        assert_timelines_are_synapses(&server, &synapse, limit, "a backfilled event").await;
    }
    assert!(reached, "{}", server.log());
    let held = served_ids(&server, &room, 4).await;
    assert!(
        held.contains(&"$backfilled0".to_owned()) && held.contains(&"$backfilled1".to_owned()),
        "{held:?}"
    );
    // The import read the first; the follower read only the second.
    assert_eq!(server.metric(BACKFILLED_METRIC).await, Some(1.0));

    // Below the held events: the answer does not change.
    persist_backfilled(&client, "master", 4, &message(2), 1).await;
    assert!(reached_backfill_position(&server, 4).await);
    assert_eq!(served_ids(&server, &room, 4).await, held);
    assert_timelines_are_synapses(&server, &synapse, 4, "backfill below the window").await;

    // Backfilled while roomcache is down, newest of the room: read after
    // the restart from the stored position, and nothing before it.
    server.stop().await;
    persist_backfilled(&client, "master", 5, &message(3), top + 1).await;
    server.spawn().await;
    wait_for_position(&server, FIXTURE_POSITION).await;
    let reached = reached_backfill_position(&server, 5).await;
    assert_timelines_are_synapses(&server, &synapse, 3, "backfilled while down").await;
    assert!(reached, "{}", server.log());
    assert_eq!(served_ids(&server, &room, 1).await, ["$backfilled3"]);
    assert_eq!(server.metric(BACKFILLED_METRIC).await, Some(1.0));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restored_behind_the_backfill_position_is_followed_again() {
    let synapse = SynapseDatabase::load("small.sql.gz").await;
    let client = synapse.client().await;
    let (room, sender, top) = busiest_room(&client).await;
    let message = |id: &str| {
        json!({"event_id": id, "room_id": room, "type": "m.room.message",
            "sender": sender, "content": {"msgtype": "m.text", "body": "old"},
            "origin_server_ts": 0, "unsigned": {}})
    };
    let mut server = TestServer::start_with(source_options(&synapse).build()).await;
    wait_for_position(&server, FIXTURE_POSITION).await;
    // Backfilled while following, newest of the room (topological
    // ordering above the newest event's): held.
    persist_backfilled(&client, "master", 1, &message("$kept"), top + 1).await;
    persist_backfilled(&client, "master", 2, &message("$lost"), top + 2).await;
    assert!(
        reached_backfill_position(&server, 2).await,
        "{}",
        server.log()
    );
    assert_eq!(served_ids(&server, &room, 2).await, ["$lost", "$kept"]);

    // Synapse's database restored to before the second one.
    client
        .batch_execute(
            "BEGIN;
             DELETE FROM event_json WHERE event_id = '$lost';
             DELETE FROM events WHERE event_id = '$lost';
             UPDATE stream_positions SET stream_id = -1
                 WHERE stream_name = 'backfill' AND instance_name = 'master';
             SELECT setval('events_backfill_stream_seq', 1);
             COMMIT;",
        )
        .await
        .unwrap();
    let lowered = reached_backfill_position(&server, 1).await;
    assert!(lowered, "the position was not lowered:\n{}", server.log());
    assert_timelines_are_synapses(&server, &synapse, 2, "after the restore").await;
    assert_eq!(served_ids(&server, &room, 1).await, ["$kept"]);
    assert_eq!(
        server
            .metric("roomcache_source_positions_repaired_total{stream=\"backfill\"}")
            .await,
        Some(1.0)
    );

    // Synapse backfills another event at the same position: read.
    persist_backfilled(&client, "master", 2, &message("$again"), top + 3).await;
    assert!(
        reached_backfill_position(&server, 2).await,
        "{}",
        server.log()
    );
    assert_timelines_are_synapses(&server, &synapse, 2, "backfilled again").await;
    assert_eq!(served_ids(&server, &room, 2).await, ["$again", "$kept"]);
    server.stop().await;
}
