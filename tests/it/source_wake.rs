//! `POST /v1/source/wake`: the Synapse module, in the process that has just
//! persisted events, makes the follower read Synapse's database at once
//! rather than at its next poll. On a copy of the multi-writer fixture with
//! a minute-long poll interval and no Redis, a message p1 persists is
//! followed within seconds of a wake, not a minute later; in feed mode
//! there is nothing to wake; a wake leaves its connection open for the next
//! request.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

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

/// The module sends a wake after every batch of events it persists, on its
/// pool of kept-alive connections: the answer must not close the
/// connection (it did when the body was left unread, so every wake, and the
/// room list that followed it, paid for a new connection).
#[tokio::test]
async fn a_wake_keeps_its_connection_open() {
    let mut server = TestServer::start().await;
    let mut stream = UnixStream::connect(&server.socket).await.unwrap();
    let wake = "POST /v1/source/wake HTTP/1.1\r\nHost: x\r\n\
                Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
    for attempt in 1..=3 {
        stream.write_all(wake.as_bytes()).await.unwrap();
        let answer = read_answer(&mut stream).await;
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "wake {attempt}: {answer}"
        );
        assert!(
            !answer.to_ascii_lowercase().contains("connection: close"),
            "wake {attempt} closes its connection: {answer}"
        );
        assert!(
            answer.ends_with(r#"{"woken":false}"#),
            "wake {attempt}: {answer}"
        );
    }
    server.stop().await;
}

/// The body is read up to `request_body_limit` (16 MiB by default), like
/// every other body: a larger one is refused with `M_TOO_LARGE` and wakes
/// nothing, one below it (but above actix's own 256 KiB default) is read.
#[tokio::test]
async fn a_wake_reads_bodies_up_to_the_body_limit() {
    let mut server = TestServer::start().await;
    let read = server
        .post_raw("/v1/source/wake", vec![b' '; 1 << 20])
        .await;
    assert_eq!(
        (read.status.as_u16(), read.body),
        (200, json!({"woken": false}))
    );
    let refused = server
        .post_raw("/v1/source/wake", vec![b' '; 17 << 20])
        .await;
    refused.assert_error(413, "M_TOO_LARGE");
    let after = server.post("/v1/source/wake", &json!({})).await;
    assert_eq!(after.status.as_u16(), 200, "{}", after.text);
    server.stop().await;
}

/// One answer on a kept-alive connection: its head and its body
/// (`content-length` bytes), as text.
async fn read_answer(stream: &mut UnixStream) -> String {
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .expect("an answer with a content-length");
            if body.len() >= length {
                return text;
            }
        }
        let mut buffer = [0_u8; 4096];
        let read = tokio::time::timeout_at(deadline.into(), stream.read(&mut buffer))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        assert!(
            read > 0,
            "the connection closed before the answer ended: {text}"
        );
        received.extend_from_slice(&buffer[..read]);
    }
}
