//! `POST /v1/source/wake`: the Synapse module, in the process that has just
//! persisted events, makes the follower read Synapse's database at once
//! rather than at its next poll. On a copy of the multi-writer fixture with
//! a minute-long poll interval and no Redis, a message p1 persists is
//! followed within seconds of a wake, not a minute later; in feed mode
//! there is nothing to wake.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::server::TestServer;
use crate::support::synapse::{
    persist_message, source_options, wait_for_writers, SynapseDatabase, WORKERS_FIXTURE_POSITION,
    WORKERS_SERVER_NAME, WORKERS_WRITERS,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wake_makes_the_follower_read_now() {
    let synapse = SynapseDatabase::load("workers.sql.gz").await;
    let options = source_options(&synapse)
        .server_name(WORKERS_SERVER_NAME)
        .writers(&WORKERS_WRITERS)
        .poll_interval_ms(60_000)
        .build();
    let mut server = TestServer::start_with(options).await;
    wait_for_writers(&server, &WORKERS_WRITERS, WORKERS_FIXTURE_POSITION).await;

    // p1 persists a message right after the fixture's last position: the
    // next poll is a minute away.
    let next = WORKERS_FIXTURE_POSITION + 1;
    let room_id = persist_message(&synapse, "p1", next).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        server.get("/v1/status").await.body["positions"]["p1"],
        json!(WORKERS_FIXTURE_POSITION),
        "followed without a wake"
    );
    let woken = server.post("/v1/source/wake", &json!({})).await;
    assert_eq!(
        (woken.status.as_u16(), woken.body.clone()),
        (202, json!({"woken": true}))
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.get("/v1/status").await.body["positions"]["p1"] != json!(next) {
        assert!(
            Instant::now() < deadline,
            "not followed after a wake:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let served = server.served_joined_room(&room_id).await.unwrap();
    assert_eq!(served.event_stream_ordering, next);
    server.stop().await;
}

#[tokio::test]
async fn in_feed_mode_there_is_nothing_to_wake() {
    let mut server = TestServer::start().await;
    let answer = server.post("/v1/source/wake", &json!({})).await;
    assert_eq!(
        (answer.status.as_u16(), answer.body),
        (200, json!({"woken": false}))
    );
    server.stop().await;
}
