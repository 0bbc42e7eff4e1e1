//! Source mode never takes a position Synapse has not allocated, on the
//! multi-writer fixture (`workers.*`, its sequence at 439): hostile lines on
//! a real redis-server (a row Synapse would not parse, a writer that does
//! not exist, positions far past the sequence, a line over the size limit)
//! and Synapse's own `stream_positions` rows far ahead (as Synapse writes
//! them after adopting a bogus `POSITION`) move nothing, and real rows that
//! follow are applied exactly; a position stored far ahead (by an older
//! roomcache, with or without what it was read up to beside it) is repaired
//! at start-up, and one found ahead while serving (Synapse's database
//! restored behind roomcache) is repaired at once, each without a
//! re-import.

use std::time::{Duration, Instant};

use crate::support::redis::RedisServer;
use crate::support::server::TestServer;
use crate::support::synapse::{
    assert_no_differences, persist_message, source_options, wait_for_writers, SourceOptions,
    SynapseDatabase, Tables, WORKERS_FIXTURE_POSITION, WORKERS_SERVER_NAME, WORKERS_WRITERS,
};

/// Far past anything Synapse allocated (the issue's position).
const FAR: i64 = 9_999_999_999;

fn workers_options(synapse: &SynapseDatabase) -> SourceOptions<'_> {
    source_options(synapse)
        .server_name(WORKERS_SERVER_NAME)
        .writers(&WORKERS_WRITERS)
}

/// The rows a fresh import of the Synapse database gives: the truth to
/// compare with.
async fn imported_tables(synapse: &SynapseDatabase) -> Tables {
    let options = workers_options(synapse).import_on_start(true).build();
    let mut server = TestServer::start_with(options).await;
    let status = server.get("/v1/status").await.body;
    assert_eq!(status["recalculation_queue"], 0, "{status}");
    let tables = Tables::from_rows(&server.rows_in_postgres().await);
    server.stop().await;
    tables
}

/// Sets `writer`'s row of Synapse's `stream_positions` for the events stream.
async fn set_synapse_position(synapse: &SynapseDatabase, writer: &str, position: i64) {
    synapse
        .client()
        .await
        .execute(
            "UPDATE stream_positions SET stream_id = $2
             WHERE stream_name = 'events' AND instance_name = $1",
            &[&writer, &position],
        )
        .await
        .unwrap();
}

fn rejected(stream: &str, reason: &str) -> String {
    format!(r#"roomcache_source_rejected_positions_total{{stream="{stream}",reason="{reason}"}}"#)
}

/// The writers' positions as the server shows them.
async fn positions(server: &TestServer) -> (i64, i64) {
    let status = server.get("/v1/status").await.body;
    let position = |writer: &str| status["positions"][writer].as_i64().unwrap();
    (position("p1"), position("p2"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_lines_on_redis_move_nothing_and_real_rows_follow() {
    let synapse = SynapseDatabase::load("workers.sql.gz").await;
    let mut redis = RedisServer::stopped();
    redis.start();
    let options = workers_options(&synapse)
        .poll_interval_ms(60_000)
        .redis_url(&redis.url())
        .build();
    let mut server = TestServer::start_with(options).await;
    wait_for_writers(&server, &WORKERS_WRITERS, WORKERS_FIXTURE_POSITION).await;
    let channel = WORKERS_SERVER_NAME;
    let lines = [
        // Synapse's own processes drop it: the row does not parse.
        format!(r#"RDATA events p2 {FAR} ["not", "a row"]"#),
        // A well-formed row, at a position never allocated.
        format!(
            r#"RDATA events p2 {FAR} ["ev",["$x","!x:localhost","m.room.message",null,null,null,null,false,false]]"#
        ),
        // A writer that does not exist, and a real one far ahead.
        format!("POSITION events p9 1 {FAR}"),
        format!("POSITION events p1 1 {FAR}"),
        // A process roomcache has not found in Synapse's database.
        format!("POSITION caches stranger 1 {FAR}"),
        // Over source_redis_max_line_bytes (64 KiB).
        format!("POSITION events p1 1 {FAR} {}", "x".repeat(100_000)),
    ];
    for line in &lines {
        assert_eq!(redis.publish(channel, line), 1);
    }
    server
        .wait_for_metric(&rejected("events", "beyond_allocated"), 2.0)
        .await;
    assert_eq!(
        server.metric(&rejected("events", "bad_row")).await,
        Some(1.0)
    );
    assert_eq!(
        server.metric(&rejected("events", "unknown_writer")).await,
        Some(1.0)
    );
    assert_eq!(
        server.metric(&rejected("caches", "unknown_writer")).await,
        Some(1.0)
    );
    assert_eq!(
        server
            .metric(r#"roomcache_source_redis_lines_total{kind="oversized"}"#)
            .await,
        Some(1.0)
    );
    assert_eq!(positions(&server).await, (439, 439));

    // Real traffic: p2 persists a message at 440 and says so.
    let room_id = persist_message(&synapse, "p2", 440).await;
    set_synapse_position(&synapse, "p2", 440).await;
    let line = format!(
        r#"RDATA events p2 440 ["ev",["$announced440","{room_id}","m.room.message",null,null,null,null,false,false]]"#
    );
    redis.publish(channel, &line);
    // p1 follows through the committed 440 too (the walk).
    wait_for_writers(&server, &WORKERS_WRITERS, 440).await;
    assert_eq!(
        server
            .metric(r#"roomcache_source_position{writer="p2"}"#)
            .await,
        Some(440.0)
    );
    assert_eq!(
        server
            .metric(r#"roomcache_source_distance_to_allocated{writer="p1"}"#)
            .await,
        Some(0.0)
    );
    let log = server.log();
    assert!(log.contains("refusing a position of Synapse's replication stream"));
    let ours = Tables::from_rows(&server.rows_in_postgres().await);
    server.assert_postgres_matches_served().await;
    server.stop().await;
    assert_no_differences(
        &ours,
        &imported_tables(&synapse).await,
        "after hostile lines",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_s_own_positions_past_its_sequence_move_nothing() {
    let synapse = SynapseDatabase::load("workers.sql.gz").await;
    let mut server = TestServer::start_with(workers_options(&synapse).build()).await;
    wait_for_writers(&server, &WORKERS_WRITERS, WORKERS_FIXTURE_POSITION).await;
    // Synapse adopted `POSITION events p9 1 FAR` and wrote it for both of
    // its persisters.
    set_synapse_position(&synapse, "p1", FAR).await;
    set_synapse_position(&synapse, "p2", FAR).await;
    server
        .wait_for_metric(&rejected("events", "stored_beyond_allocated"), 2.0)
        .await;
    // Polled every 20 ms: never past the sequence, and counted once each.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(positions(&server).await, (439, 439));
    assert_eq!(
        server
            .metric(&rejected("events", "stored_beyond_allocated"))
            .await,
        Some(2.0)
    );
    // Real rows still come in, found by the walk through committed
    // positions (the rows cannot be believed).
    persist_message(&synapse, "p1", 440).await;
    let room_id = persist_message(&synapse, "p2", 441).await;
    wait_for_writers(&server, &WORKERS_WRITERS, 441).await;
    let served = server.served_joined_room(&room_id).await.unwrap();
    assert_eq!(served.event_stream_ordering, 441);
    let ours = Tables::from_rows(&server.rows_in_postgres().await);
    server.stop().await;
    set_synapse_position(&synapse, "p1", 441).await;
    set_synapse_position(&synapse, "p2", 441).await;
    assert_no_differences(&ours, &imported_tables(&synapse).await, "after bogus rows");
}

/// Sets roomcache's stored position of `writer` (and, when given, what it
/// was read up to) behind its back, as an older roomcache or a hand would.
async fn set_stored_position(
    server: &TestServer,
    writer: &str,
    position: i64,
    read_up_to: Option<Option<i64>>,
) {
    let client = server.store().await.client().await.unwrap();
    client
        .execute(
            "UPDATE stream_positions SET stream_id = $2,
                 read_up_to = CASE WHEN $3 THEN $4 ELSE read_up_to END
             WHERE stream_name = 'events' AND instance_name = $1",
            &[
                &writer,
                &position,
                &read_up_to.is_some(),
                &read_up_to.flatten(),
            ],
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_stored_far_ahead_is_repaired_at_start_up() {
    let synapse = SynapseDatabase::load("workers.sql.gz").await;
    let options = workers_options(&synapse).import_on_start(true).build();
    let mut server = TestServer::start_with(options).await;
    wait_for_writers(&server, &WORKERS_WRITERS, WORKERS_FIXTURE_POSITION).await;
    server.stop().await;

    // p2's position was moved far ahead; meanwhile p2 persisted a message
    // roomcache must not skip.
    set_stored_position(&server, "p2", FAR, None).await;
    let room_id = persist_message(&synapse, "p2", 440).await;
    set_synapse_position(&synapse, "p2", 440).await;
    server.spawn().await;
    let status = wait_for_writers(&server, &["p2"], 440).await;
    assert_eq!(status["source"]["invalidated_at_start"], 1, "{status}");
    let ahead = "a writer's position is ahead of what Synapse has allocated";
    assert_eq!(server.log().matches(ahead).count(), 1, "{}", server.log());
    let served = server.served_joined_room(&room_id).await.unwrap();
    assert_eq!(served.event_stream_ordering, 440);
    assert_eq!(
        server
            .metric(r#"roomcache_source_positions_repaired_total{stream="events"}"#)
            .await,
        Some(1.0)
    );
    server.stop().await;

    // Written by an older roomcache: nothing read kept beside it. Lowered
    // to the import's position, and every room changed since recomputed.
    set_stored_position(&server, "p2", FAR, Some(None)).await;
    let room_id = persist_message(&synapse, "p2", 441).await;
    set_synapse_position(&synapse, "p2", 441).await;
    server.spawn().await;
    wait_for_writers(&server, &["p2"], 441).await;
    assert_eq!(server.log().matches(ahead).count(), 2);
    let served = server.served_joined_room(&room_id).await.unwrap();
    assert_eq!(served.event_stream_ordering, 441);
    let ours = Tables::from_rows(&server.rows_in_postgres().await);
    server.assert_postgres_matches_served().await;
    server.stop().await;
    assert_no_differences(&ours, &imported_tables(&synapse).await, "after the repairs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_found_ahead_while_serving_is_repaired_at_once() {
    let synapse = SynapseDatabase::load("workers.sql.gz").await;
    let truth_at_439 = imported_tables(&synapse).await;
    let options = workers_options(&synapse).import_on_start(true).build();
    let mut server = TestServer::start_with(options).await;
    wait_for_writers(&server, &WORKERS_WRITERS, WORKERS_FIXTURE_POSITION).await;
    let room_id = persist_message(&synapse, "p2", 440).await;
    set_synapse_position(&synapse, "p2", 440).await;
    wait_for_writers(&server, &WORKERS_WRITERS, 440).await;
    assert_eq!(
        server
            .served_joined_room(&room_id)
            .await
            .unwrap()
            .event_stream_ordering,
        440
    );

    // Synapse's database is restored to a backup taken at 439: the message
    // and the sequence's move are gone.
    let client = synapse.client().await;
    client
        .batch_execute(
            "DELETE FROM event_json WHERE event_id = '$announced440';
             DELETE FROM events WHERE event_id = '$announced440';
             SELECT setval('events_stream_seq', 439);
             UPDATE stream_positions SET stream_id = 439
             WHERE stream_name = 'events' AND instance_name = 'p2';",
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while positions(&server).await != (439, 439) {
        assert!(Instant::now() < deadline, "not repaired:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_for_writers(&server, &WORKERS_WRITERS, 439).await;
    server
        .wait_for_log("positions repaired and the rooms changed since recomputed")
        .await;
    let ours = Tables::from_rows(&server.rows_in_postgres().await);
    assert_no_differences(&ours, &truth_at_439, "after the repair while serving");
    server.assert_postgres_matches_served().await;

    // And it follows on: a new message at 440.
    let room_id = persist_message(&synapse, "p1", 440).await;
    set_synapse_position(&synapse, "p1", 440).await;
    wait_for_writers(&server, &["p1"], 440).await;
    let served = server.served_joined_room(&room_id).await.unwrap();
    assert_eq!(served.event_stream_ordering, 440);
    server.stop().await;
}
