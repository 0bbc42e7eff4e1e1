//! Source mode with Synapse's replication stream over a real redis-server
//! (`support::redis`), the lines published by the test as Synapse's
//! processes publish them, on a copy of the multi-writer fixture: an
//! announcement wakes the follower at once (the poll interval is a minute),
//! a writer's announced position is its safe position, an idle writer's
//! `POSITION` moves it without rows, lines roomcache cannot read are counted
//! and change nothing, a backfill announcement wakes it too, and Redis down at start or mid-run leaves roomcache
//! following by polling until it is back.

use std::time::{Duration, Instant};

use crate::support::redis::RedisServer;
use crate::support::server::TestServer;
use crate::support::synapse::{
    allocate_stream_ordering, persist_backfilled, persist_message, source_options,
    wait_for_writers, SynapseDatabase, WORKERS_FIXTURE_POSITION, WORKERS_SERVER_NAME,
    WORKERS_WRITERS,
};

/// The replication channel: Synapse's server name.
const CHANNEL: &str = WORKERS_SERVER_NAME;

/// Waits until `condition` holds of the server's status (or fails).
async fn wait_for_status(
    server: &TestServer,
    what: &str,
    condition: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = server.get("/v1/status").await.body;
        if condition(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {status}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcements_on_redis_wake_the_follower_and_move_writers() {
    let synapse = SynapseDatabase::load("workers.sql.gz").await;
    let mut redis = RedisServer::stopped();
    redis.start();
    let options = source_options(&synapse)
        .server_name(WORKERS_SERVER_NAME)
        .writers(&WORKERS_WRITERS)
        .poll_interval_ms(60_000)
        .redis_url(&redis.url())
        .build();
    let mut server = TestServer::start_with(options).await;
    wait_for_writers(&server, &WORKERS_WRITERS, WORKERS_FIXTURE_POSITION).await;
    server
        .wait_for_metric("roomcache_source_redis_connected", 1.0)
        .await;

    // p1 persists a message at 441 (440 is still missing, so the walk
    // through consecutive positions stops at 439); its stream_positions row
    // stays at 439. Only its RDATA line tells roomcache, which reads it at
    // once (the next poll is a minute away).
    let room_id = persist_message(&synapse, "p1", 441).await;
    let line = format!(
        r#"RDATA events p1 441 ["ev",["$announced441","{room_id}","m.room.message",null,null,null,null,false,false]]"#
    );
    assert_eq!(redis.publish(CHANNEL, &line), 1);
    let status = wait_for_status(&server, "p1 at 441", |s| s["positions"]["p1"] == 441).await;
    assert_eq!(status["token"], "m439~p1.441");
    let served = server.served_joined_room(&room_id).await.unwrap();
    assert_eq!(
        (served.event_stream_ordering, served.bump_stamp),
        (441, Some(441))
    );

    // p1 takes 442 and 443 from the sequence (events still in flight);
    // the idle p2 announces that it has nothing up to 442: it moves there
    // without rows, and the minimum over writers with it.
    allocate_stream_ordering(&synapse.client().await, 443).await;
    redis.publish(CHANNEL, "POSITION events p2 439 442");
    let status = wait_for_status(&server, "p2 at 442", |s| s["positions"]["p2"] == 442).await;
    assert_eq!(status["token"], "m441~p2.442");

    // Lines roomcache cannot read are counted and change nothing; the next
    // readable one is followed.
    for line in [
        "HELLO world",
        "RDATA events",
        "POSITION events p1 x 12",
        "RDATA events p1 notanumber []",
    ] {
        redis.publish(CHANNEL, line);
    }
    redis.publish(CHANNEL, "LOCK_RELEASED master some_lock some_key");
    redis.publish(CHANNEL, "POSITION events p1 441 443");
    let status = wait_for_status(&server, "p1 at 443", |s| s["positions"]["p1"] == 443).await;
    assert_eq!(status["token"], "m442~p1.443");
    let lines = |kind: &str| format!(r#"roomcache_source_redis_lines_total{{kind="{kind}"}}"#);
    assert_eq!(server.metric(&lines("unknown")).await, Some(1.0));
    assert_eq!(server.metric(&lines("malformed")).await, Some(3.0));
    // LOCK_RELEASED, and roomcache's own REPLICATE coming back to it.
    assert_eq!(server.metric(&lines("other")).await, Some(2.0));
    assert_eq!(server.metric(&lines("rdata")).await, Some(1.0));

    // p1 backfills an event: its RDATA line on the backfill stream wakes
    // the follower, which reads it at once.
    let event = serde_json::json!({"event_id": "$backfilled2", "room_id": room_id,
        "type": "m.room.message", "sender": "@someone:elsewhere", "content": {},
        "origin_server_ts": 0, "unsigned": {}});
    persist_backfilled(&synapse.client().await, "p1", 2, &event, 1).await;
    let line = format!(
        r#"RDATA backfill p1 2 ["$backfilled2","{room_id}","m.room.message",null,null,null]"#
    );
    assert_eq!(redis.publish(CHANNEL, &line), 1);
    server
        .wait_for_metric("roomcache_source_backfilled_events_total", 1.0)
        .await;
    server.assert_postgres_matches_served().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_start_and_mid_run_leaves_roomcache_polling() {
    let synapse = SynapseDatabase::load("workers.sql.gz").await;
    let mut redis = RedisServer::stopped();
    let options = source_options(&synapse)
        .server_name(WORKERS_SERVER_NAME)
        .writers(&WORKERS_WRITERS)
        .poll_interval_ms(100)
        .redis_url(&redis.url())
        .build();
    let mut server = TestServer::start_with(options).await;
    // Redis down at start: a warning, the metric at 0, and polling.
    wait_for_writers(&server, &WORKERS_WRITERS, WORKERS_FIXTURE_POSITION).await;
    server
        .wait_for_metric("roomcache_source_redis_connected", 0.0)
        .await;
    let warning = "Synapse's replication stream over Redis is unavailable; following by polling until it is back";
    assert_eq!(server.log().matches(warning).count(), 1);
    let room_id = persist_message(&synapse, "p1", 440).await;
    synapse
        .client()
        .await
        .execute(
            "UPDATE stream_positions SET stream_id = 440 WHERE stream_name = 'events' AND instance_name = 'p1'",
            &[],
        )
        .await
        .unwrap();
    wait_for_status(&server, "p1 at 440 by polling", |s| {
        s["positions"]["p1"] == 440
    })
    .await;
    assert_eq!(
        server
            .served_joined_room(&room_id)
            .await
            .unwrap()
            .event_stream_ordering,
        440
    );

    // Redis comes up: roomcache subscribes (retrying every 5 s at most).
    redis.start();
    server
        .wait_for_metric("roomcache_source_redis_connected", 1.0)
        .await;
    assert!(server
        .log()
        .contains("Synapse's replication stream over Redis is back; following it again"));
    allocate_stream_ordering(&synapse.client().await, 445).await;
    redis.publish(CHANNEL, "POSITION events p2 439 445");
    wait_for_status(&server, "p2 at 445", |s| s["positions"]["p2"] == 445).await;

    // Down mid-run: one more warning, polling again.
    redis.stop();
    server
        .wait_for_metric("roomcache_source_redis_connected", 0.0)
        .await;
    assert_eq!(server.log().matches(warning).count(), 2);
    assert_eq!(
        server
            .metric("roomcache_source_redis_disconnects_total")
            .await
            .map(|v| v >= 2.0),
        Some(true)
    );
    server.stop().await;
}
