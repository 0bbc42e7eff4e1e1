//! Connections cannot exhaust the server (issue 12, item 5): a request
//! whose body stalls is answered 408 after `request_body_timeout_ms`, a
//! request head that stalls is dropped after `request_head_timeout_ms`, at
//! most `max_connections` connections are served at once (the rest wait in
//! the backlog, holding no descriptor of the server), and a normal read
//! still answers while the cap is reached.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::server::{ServerOptions, TestServer};

/// A connection that sent a request head announcing a body of 1000 bytes,
/// then one byte of it.
fn stalled_body(socket: &Path) -> UnixStream {
    let mut stream = UnixStream::connect(socket).expect("connect");
    stream
        .write_all(
            b"POST /v1/feed HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
        )
        .expect("write");
    stream
}

/// A connection that sent half a request head.
fn stalled_head(socket: &Path) -> UnixStream {
    let mut stream = UnixStream::connect(socket).expect("connect");
    stream.write_all(b"GET /v1/rooms/").expect("write");
    stream
}

/// Everything the server sends until it closes the connection (or 15 s).
fn read_until_closed(mut stream: UnixStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let mut text = Vec::new();
    let _ = stream.read_to_end(&mut text);
    String::from_utf8_lossy(&text).into_owned()
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| dir.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_requests_time_out_and_connections_are_capped() {
    let mut server = TestServer::start_with(ServerOptions {
        // Environment variables, so a binary without these settings still
        // starts (and shows what it lacks).
        extra_env: [
            ("ROOMCACHE_REQUEST_BODY_TIMEOUT_MS", "1000"),
            ("ROOMCACHE_REQUEST_HEAD_TIMEOUT_MS", "1000"),
            ("ROOMCACHE_MAX_CONNECTIONS", "4"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .to_vec(),
        ..ServerOptions::default()
    })
    .await;
    let pid = server.pid().expect("running");
    let before = open_descriptors(pid);

    // The cap is reached by stalled bodies; a normal read still answers
    // (once the stalled ones time out and free their places).
    let stalled: Vec<UnixStream> = (0..4).map(|_| stalled_body(&server.socket)).collect();
    let started = Instant::now();
    let health = tokio::time::timeout(Duration::from_secs(10), server.get("/health"))
        .await
        .expect("a read answers while the cap is reached");
    assert_eq!(health.status, 200);
    assert!(started.elapsed() < Duration::from_secs(10));
    for stream in stalled {
        let answer = tokio::task::spawn_blocking(move || read_until_closed(stream))
            .await
            .expect("reader");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
        assert!(answer.contains("ROOMCACHE_BODY_TIMEOUT"), "{answer:?}");
    }

    // Many stalled connections hold at most the cap's descriptors.
    let mut many: Vec<UnixStream> = (0..10).map(|_| stalled_body(&server.socket)).collect();
    many.extend((0..10).map(|_| stalled_head(&server.socket)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = open_descriptors(pid);
    assert!(
        during <= before + 4 + 2,
        "{during} descriptors with 20 stalled connections (cap 4), {before} before"
    );
    // Every one of them is closed by the server in the end.
    let closed = tokio::task::spawn_blocking(move || {
        many.into_iter()
            .map(read_until_closed)
            .filter(|answer| answer.is_empty() || answer.starts_with("HTTP/1.1 408"))
            .count()
    })
    .await
    .expect("readers");
    assert_eq!(closed, 20);
    assert_eq!(server.get("/health").await.status, 200);
    server.stop().await;
}
