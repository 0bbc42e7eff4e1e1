//! Memory of idle room actors: a server touches many rooms (one actor
//! each), then stops the actors that stay idle longer than
//! `room_actor_idle_ms`. Prints the server's RSS with every actor live and
//! after they were stopped, and the difference per actor.
//!
//! Run through `scripts/bench actors` (it builds the server in release,
//! starts a private Postgres and sets the variables below).
//!
//! Environment: `ROOMCACHE_BIN`, `ROOMCACHE_BENCH_DATABASE_URL`,
//! `ACTORS_ROOMS` (default 200000), `ACTORS_IDLE_MS` (default 5000).

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};

mod support;
use support::{Connection, Server};

const SERVER_NAME: &str = "bench.example";
/// Rooms per feed batch.
const ROOMS_PER_BATCH: usize = 500;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A batch creating rooms `first..first + count`: a create event and the
/// owner's join in each, with their current-state rows.
fn batch(first: usize, count: usize) -> Bytes {
    let mut rows: Vec<Value> = Vec::with_capacity(count * 4);
    for room_index in first..first + count {
        let room = format!("!room{room_index}:{SERVER_NAME}");
        let owner = format!("@owner{}:{SERVER_NAME}", room_index % 1000);
        let base = 2 * room_index as i64 + 2;
        for (offset, (kind, key, content)) in [
            ("m.room.create", "", json!({"room_version": "10"})),
            (
                "m.room.member",
                owner.as_str(),
                json!({"membership": "join"}),
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let stream_id = base + offset as i64;
            let event_id = format!("$e{stream_id}");
            rows.push(json!({"kind": "event", "stream_id": stream_id, "event": {
                "event_id": event_id, "room_id": room, "type": kind, "state_key": key,
                "sender": owner, "content": content}}));
            rows.push(
                json!({"kind": "state", "stream_id": stream_id, "room_id": room,
                "type": kind, "state_key": key, "event_id": event_id}),
            );
        }
    }
    Bytes::from(
        serde_json::to_vec(&json!({"writer": "master", "rows": rows})).expect("a JSON batch"),
    )
}

async fn live_actors(connection: &mut Connection) -> u64 {
    let status = connection.get("/v1/status").await.expect("status");
    let status: Value = serde_json::from_slice(&status).expect("status JSON");
    status["room_actors"]
        .as_u64()
        .expect("room_actors in the status")
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

async fn run() {
    let binary = std::env::var("ROOMCACHE_BIN").expect("ROOMCACHE_BIN (run scripts/bench actors)");
    let url = std::env::var("ROOMCACHE_BENCH_DATABASE_URL").expect("ROOMCACHE_BENCH_DATABASE_URL");
    let rooms = env_number("ACTORS_ROOMS", 200_000);
    let idle_ms = env_number("ACTORS_IDLE_MS", 5_000);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let schema = format!("bench_actors_{}", std::process::id());
    let args: Vec<String> = [
        "--server-name",
        SERVER_NAME,
        "--room-actor-idle-ms",
        &idle_ms.to_string(),
    ]
    .map(String::from)
    .to_vec();
    let server = Server::start(binary.as_ref(), dir.path(), &url, &schema, &args).await;
    let mut connection = Connection::open(&server.socket).await.expect("connection");
    let empty_rss = server.rss_bytes();
    let started = Instant::now();
    for first in (0..rooms).step_by(ROOMS_PER_BATCH) {
        let count = ROOMS_PER_BATCH.min(rooms - first);
        connection
            .send("POST", "/v1/feed", batch(first, count))
            .await
            .expect("feed batch");
    }
    let fed = started.elapsed();
    let live = live_actors(&mut connection).await;
    let live_rss = server.rss_bytes();
    let deadline = Instant::now() + Duration::from_millis(idle_ms as u64 * 4 + 30_000);
    while live_actors(&mut connection).await > 0 {
        assert!(Instant::now() < deadline, "idle actors were not stopped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The reaper hands freed memory back after a large reap; let it run.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reaped_rss = server.rss_bytes();
    server.stop();
    println!(
        "rooms touched: {rooms} ({:.1} s to feed)",
        fed.as_secs_f64()
    );
    println!("RSS at start (empty): {:.1} MiB", mib(empty_rss));
    println!("RSS with {live} live room actors: {:.1} MiB", mib(live_rss));
    println!(
        "RSS after the idle actors were stopped: {:.1} MiB",
        mib(reaped_rss)
    );
    println!(
        "memory per idle actor: {:.0} bytes (live - stopped) / actors",
        live_rss.saturating_sub(reaped_rss) as f64 / live.max(1) as f64
    );
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(run());
}
