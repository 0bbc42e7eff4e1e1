//! Feed ingest with write-through, measured end to end, beside a raw
//! Postgres peer writing the same rows.
//!
//! Run through `scripts/bench ingest` (it builds the server in release,
//! starts a private Postgres with default durability, fsync on, and sets the
//! variables below). The workload: rooms created as a homeserver creates
//! them, then messages with occasional joins of new local users and renames,
//! split over several writers that post their batches concurrently.
//!
//! Environment: `ROOMCACHE_BIN` (server binary), `ROOMCACHE_BENCH_DATABASE_URL`,
//! `INGEST_EVENTS` (default 200000), `INGEST_BATCH_EVENTS` (default 500),
//! `INGEST_WRITERS` (default 4).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use roomcache::feed::{FeedBatch, FeedRow};
use roomcache::model::{JoinedRoomRow, MembershipSnapshot, RoomId, RowChange};
use roomcache::rules::{apply_rows, HeldStateTypes, RoomState, RulesContext};
use serde_json::{json, Value};
use tokio::net::UnixStream;

const SERVER_NAME: &str = "bench.example";

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Generates one writer's events, room by room, with stream ids drawn from a
/// shared sequence so writers interleave like a homeserver's persisters.
struct Workload {
    next_stream_id: i64,
    writers: Vec<Vec<Value>>,
    events: usize,
}

impl Workload {
    fn event(
        &mut self,
        writer: usize,
        room: &str,
        kind: &str,
        state_key: Option<&str>,
        sender: &str,
        content: Value,
    ) -> String {
        let stream_id = self.next_stream_id;
        self.next_stream_id += 1;
        let event_id = format!("$e{stream_id}");
        let mut event = json!({"event_id": event_id, "room_id": room, "type": kind,
            "sender": sender, "content": content});
        if let Some(key) = state_key {
            event["state_key"] = json!(key);
        }
        self.writers[writer].push(
            json!({"kind": "event", "stream_id": stream_id, "topological_ordering": stream_id, "event": event}),
        );
        if let Some(key) = state_key {
            self.writers[writer].push(
                json!({"kind": "state", "stream_id": stream_id, "room_id": room,
                "type": kind, "state_key": key, "event_id": event_id}),
            );
        }
        self.events += 1;
        event_id
    }

    fn generate(total_events: usize, writers: usize) -> Workload {
        let mut workload = Workload {
            next_stream_id: 2,
            writers: vec![Vec::new(); writers],
            events: 0,
        };
        let events_per_room = 200;
        let rooms = total_events.div_ceil(events_per_room);
        // Rooms progress in rounds so every writer's stream interleaves.
        let mut progress = vec![0usize; rooms];
        while workload.events < total_events {
            for (room_index, done) in progress.iter_mut().enumerate() {
                if workload.events >= total_events || *done >= events_per_room {
                    continue;
                }
                let writer = room_index % writers;
                let room = format!("!room{room_index}:{SERVER_NAME}");
                let owner = format!("@owner{room_index}:{SERVER_NAME}");
                for _ in 0..20 {
                    let step = *done;
                    *done += 1;
                    match step {
                        0 => {
                            workload.event(
                                writer,
                                &room,
                                "m.room.create",
                                Some(""),
                                &owner,
                                json!({"room_version": "10"}),
                            );
                        }
                        1 => {
                            workload.event(
                                writer,
                                &room,
                                "m.room.member",
                                Some(&owner),
                                &owner,
                                json!({"membership": "join"}),
                            );
                        }
                        2 => {
                            workload.event(
                                writer,
                                &room,
                                "m.room.power_levels",
                                Some(""),
                                &owner,
                                json!({"users": {}}),
                            );
                        }
                        s if s % 50 == 0 => {
                            let user = format!("@user{room_index}_{s}:{SERVER_NAME}");
                            workload.event(
                                writer,
                                &room,
                                "m.room.member",
                                Some(&user),
                                &user,
                                json!({"membership": "join"}),
                            );
                        }
                        s if s % 97 == 0 => {
                            workload.event(
                                writer,
                                &room,
                                "m.room.name",
                                Some(""),
                                &owner,
                                json!({"name": format!("Room {room_index} v{s}")}),
                            );
                        }
                        s => {
                            workload.event(
                                writer,
                                &room,
                                "m.room.message",
                                None,
                                &owner,
                                json!({"msgtype": "m.text", "body": format!("message {s}")}),
                            );
                        }
                    }
                    if workload.events >= total_events {
                        break;
                    }
                }
            }
        }
        workload
    }

    /// Each writer's rows cut into batches of about `batch_events` events,
    /// never splitting rows that share a stream id.
    fn batches(&self, batch_events: usize) -> Vec<Vec<FeedBatch>> {
        self.writers
            .iter()
            .enumerate()
            .map(|(writer, rows)| {
                let mut batches = Vec::new();
                let mut current: Vec<Value> = Vec::new();
                let mut events = 0;
                for row in rows {
                    let boundary = current
                        .last()
                        .is_none_or(|last| last["stream_id"] != row["stream_id"]);
                    if events >= batch_events && boundary {
                        batches.push(std::mem::take(&mut current));
                        events = 0;
                    }
                    if row["kind"] == "event" {
                        events += 1;
                    }
                    current.push(row.clone());
                }
                if !current.is_empty() {
                    batches.push(current);
                }
                batches
                    .into_iter()
                    .map(|rows| {
                        serde_json::from_value(
                            json!({"writer": format!("w{writer}"), "rows": rows}),
                        )
                        .expect("generated batch is valid")
                    })
                    .collect()
            })
            .collect()
    }
}

/// The rows the cache writes for one batch, as the raw peer writes them.
type RawBatch = (Vec<JoinedRoomRow>, Vec<MembershipSnapshot>);

/// The rows the cache writes for each batch, computed with the rules, for the raw peer.
fn rows_per_batch(batches: &[Vec<FeedBatch>]) -> Vec<Vec<RawBatch>> {
    let mut states: BTreeMap<RoomId, RoomState> = BTreeMap::new();
    batches
        .iter()
        .map(|writer_batches| {
            writer_batches
                .iter()
                .map(|batch| {
                    let context = RulesContext {
                        server_name: SERVER_NAME.into(),
                        writer: batch.writer.to_string(),
                        held_state: std::sync::Arc::new(HeldStateTypes::element_x(1000)),
                    };
                    let mut by_room: BTreeMap<RoomId, Vec<FeedRow>> = BTreeMap::new();
                    for row in &batch.rows {
                        if let Some(room) = row.room_id() {
                            by_room.entry(room.clone()).or_default().push(row.clone());
                        }
                    }
                    let mut joined = Vec::new();
                    let mut snapshots = Vec::new();
                    for (room, rows) in by_room {
                        let state = states.entry(room.clone()).or_default();
                        let outcome = apply_rows(state, &room, &rows, &context)
                            .expect("rules accept the workload");
                        for change in &outcome.changes {
                            match change {
                                RowChange::UpsertJoinedRoom(row) => joined.push(row.clone()),
                                RowChange::UpsertSnapshot(row) => snapshots.push(row.clone()),
                                _ => {}
                            }
                        }
                        *state = outcome.state;
                    }
                    (joined, snapshots)
                })
                .collect()
        })
        .collect()
}

struct Server {
    child: Child,
    socket: PathBuf,
}

impl Server {
    fn start(
        binary: &Path,
        database_url: &str,
        schema: &str,
        writers: usize,
        dir: &Path,
    ) -> Server {
        let socket = dir.join("ingest.sock");
        let writer_names: Vec<String> = (0..writers).map(|w| format!("w{w}")).collect();
        let child = Command::new(binary)
            .args(["serve", "--config", "/dev/null", "--socket-path"])
            .arg(&socket)
            .args(["--database-url", database_url, "--schema", schema])
            .args([
                "--server-name",
                SERVER_NAME,
                "--writers",
                &writer_names.join(","),
            ])
            .args(["--log-level", "warn"])
            .stdout(Stdio::null())
            .spawn()
            .expect("starting roomcache");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "roomcache did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Server { child, socket }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

async fn feed_writer(socket: PathBuf, bodies: Vec<Bytes>) -> Histogram<u64> {
    let mut histogram = Histogram::<u64>::new(3).expect("histogram");
    let stream = UnixStream::connect(&socket).await.expect("socket");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    for body in bodies {
        let request = Request::post("http://localhost/v1/feed")
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(body))
            .expect("request");
        let started = Instant::now();
        let response = sender.send_request(request).await.expect("feed request");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert!(
            status.is_success(),
            "feed refused: {}",
            String::from_utf8_lossy(&bytes)
        );
        histogram
            .record(started.elapsed().as_micros() as u64)
            .expect("record");
    }
    histogram
}

async fn raw_writer(
    database_url: String,
    schema: String,
    batches: Vec<RawBatch>,
) -> Histogram<u64> {
    let mut histogram = Histogram::<u64>::new(3).expect("histogram");
    let (mut client, connection) = tokio_postgres::connect(&database_url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .batch_execute(&format!("SET search_path TO {schema}"))
        .await
        .expect("search path");
    for (joined, snapshots) in batches {
        let started = Instant::now();
        let transaction = client.transaction().await.expect("transaction");
        if !joined.is_empty() {
            let ids: Vec<&str> = joined.iter().map(|r| r.room_id.as_str()).collect();
            let orderings: Vec<i64> = joined.iter().map(|r| r.event_stream_ordering).collect();
            let bumps: Vec<Option<i64>> = joined.iter().map(|r| r.bump_stamp).collect();
            let types: Vec<Option<&str>> = joined
                .iter()
                .map(|r| r.metadata.room_type.as_deref())
                .collect();
            let names: Vec<Option<&str>> = joined
                .iter()
                .map(|r| r.metadata.room_name.as_deref())
                .collect();
            let encrypted: Vec<bool> = joined.iter().map(|r| r.metadata.is_encrypted).collect();
            let tombstones: Vec<Option<&str>> = joined
                .iter()
                .map(|r| r.metadata.tombstone_successor_room_id.as_deref())
                .collect();
            transaction
                .execute(
                    "INSERT INTO sliding_sync_joined_rooms AS j
                     SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::bool[], $7::text[])
                     ON CONFLICT (room_id) DO UPDATE SET event_stream_ordering = EXCLUDED.event_stream_ordering,
                       bump_stamp = EXCLUDED.bump_stamp, room_type = EXCLUDED.room_type, room_name = EXCLUDED.room_name,
                       is_encrypted = EXCLUDED.is_encrypted, tombstone_successor_room_id = EXCLUDED.tombstone_successor_room_id",
                    &[&ids, &orderings, &bumps, &types, &names, &encrypted, &tombstones],
                )
                .await
                .expect("raw joined upsert");
        }
        if !snapshots.is_empty() {
            let rooms: Vec<&str> = snapshots.iter().map(|r| r.room_id.as_str()).collect();
            let users: Vec<&str> = snapshots.iter().map(|r| r.user_id.as_str()).collect();
            let senders: Vec<&str> = snapshots.iter().map(|r| r.sender.as_str()).collect();
            let events: Vec<&str> = snapshots
                .iter()
                .map(|r| r.membership_event_id.as_str())
                .collect();
            let memberships: Vec<&str> = snapshots.iter().map(|r| r.membership.as_str()).collect();
            let forgotten: Vec<i32> = snapshots.iter().map(|r| i32::from(r.forgotten)).collect();
            let orderings: Vec<i64> = snapshots.iter().map(|r| r.event_stream_ordering).collect();
            let instances: Vec<&str> = snapshots
                .iter()
                .map(|r| r.event_instance_name.as_str())
                .collect();
            let known: Vec<bool> = snapshots.iter().map(|r| r.has_known_state).collect();
            let types: Vec<Option<&str>> = snapshots
                .iter()
                .map(|r| r.metadata.room_type.as_deref())
                .collect();
            let names: Vec<Option<&str>> = snapshots
                .iter()
                .map(|r| r.metadata.room_name.as_deref())
                .collect();
            let encrypted: Vec<bool> = snapshots.iter().map(|r| r.metadata.is_encrypted).collect();
            let tombstones: Vec<Option<&str>> = snapshots
                .iter()
                .map(|r| r.metadata.tombstone_successor_room_id.as_deref())
                .collect();
            transaction
                .execute(
                    "INSERT INTO sliding_sync_membership_snapshots
                     SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[],
                       $7::bigint[], $8::text[], $9::bool[], $10::text[], $11::text[], $12::bool[], $13::text[])
                     ON CONFLICT (room_id, user_id) DO UPDATE SET sender = EXCLUDED.sender,
                       membership_event_id = EXCLUDED.membership_event_id, membership = EXCLUDED.membership,
                       forgotten = EXCLUDED.forgotten, event_stream_ordering = EXCLUDED.event_stream_ordering,
                       event_instance_name = EXCLUDED.event_instance_name, has_known_state = EXCLUDED.has_known_state,
                       room_type = EXCLUDED.room_type, room_name = EXCLUDED.room_name,
                       is_encrypted = EXCLUDED.is_encrypted, tombstone_successor_room_id = EXCLUDED.tombstone_successor_room_id",
                    &[&rooms, &users, &senders, &events, &memberships, &forgotten, &orderings, &instances,
                      &known, &types, &names, &encrypted, &tombstones],
                )
                .await
                .expect("raw snapshot upsert");
        }
        transaction.commit().await.expect("commit");
        histogram
            .record(started.elapsed().as_micros() as u64)
            .expect("record");
    }
    histogram
}

fn merge(histograms: Vec<Histogram<u64>>) -> Histogram<u64> {
    let mut total = Histogram::<u64>::new(3).expect("histogram");
    for h in histograms {
        total.add(h).expect("merge");
    }
    total
}

/// roomcache over the socket: each writer posts its batches in turn.
fn run_roomcache(
    runtime: &tokio::runtime::Runtime,
    binary: &std::path::Path,
    database_url: &str,
    schema: &str,
    writers: usize,
    bodies: Vec<Vec<Bytes>>,
) -> (Duration, Histogram<u64>) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = Server::start(binary, database_url, schema, writers, dir.path());
    let socket = Arc::new(server.socket.clone());
    let started = Instant::now();
    let histograms = runtime.block_on(async {
        let tasks: Vec<_> = bodies
            .into_iter()
            .map(|b| tokio::spawn(feed_writer(socket.to_path_buf(), b)))
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("writer task"));
        }
        out
    });
    let elapsed = started.elapsed();
    drop(server);
    (elapsed, merge(histograms))
}

/// The raw peer: the same rows, one batched upsert per batch, same concurrency.
fn run_raw_peer(
    runtime: &tokio::runtime::Runtime,
    database_url: &str,
    schema: &str,
    raw_rows: Vec<Vec<RawBatch>>,
) -> (Duration, Histogram<u64>) {
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(connection);
        let migrations = include_str!("../migrations/V1__sliding_sync_tables.sql");
        client
            .batch_execute(&format!(
                "CREATE SCHEMA {schema}; SET search_path TO {schema}; {migrations}"
            ))
            .await
            .expect("raw schema");
        let started = Instant::now();
        let tasks: Vec<_> = raw_rows
            .into_iter()
            .map(|b| tokio::spawn(raw_writer(database_url.to_owned(), schema.to_owned(), b)))
            .collect();
        let mut histograms = Vec::new();
        for t in tasks {
            histograms.push(t.await.expect("raw task"));
        }
        (started.elapsed(), merge(histograms))
    })
}

fn main() {
    let binary = PathBuf::from(
        std::env::var("ROOMCACHE_BIN").expect("ROOMCACHE_BIN: run through scripts/bench ingest"),
    );
    let database_url = std::env::var("ROOMCACHE_BENCH_DATABASE_URL")
        .expect("ROOMCACHE_BENCH_DATABASE_URL: run through scripts/bench ingest");
    let total_events = env_number("INGEST_EVENTS", 200_000);
    let batch_events = env_number("INGEST_BATCH_EVENTS", 500);
    let writers = env_number("INGEST_WRITERS", 4).max(1);

    let workload = Workload::generate(total_events, writers);
    let batches = workload.batches(batch_events);
    let batch_count: usize = batches.iter().map(Vec::len).sum();
    let raw_rows = rows_per_batch(&batches);
    let bodies: Vec<Vec<Bytes>> = batches
        .iter()
        .map(|bs| {
            bs.iter()
                .map(|b| Bytes::from(serde_json::to_vec(b).expect("json")))
                .collect()
        })
        .collect();
    println!(
        "ingest: {} events in {} batches of ~{} events from {} concurrent writers (Postgres with default durability, fsync on)",
        workload.events, batch_count, batch_events, writers
    );

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let cache_schema = format!("bench_ingest_{stamp}");
    let raw_schema = format!("bench_raw_{stamp}");

    let (cache_elapsed, cache_latency) = run_roomcache(
        &runtime,
        &binary,
        &database_url,
        &cache_schema,
        writers,
        bodies,
    );
    let cache_rate = workload.events as f64 / cache_elapsed.as_secs_f64();
    let (raw_elapsed, raw_latency) = run_raw_peer(&runtime, &database_url, &raw_schema, raw_rows);
    let raw_rate = workload.events as f64 / raw_elapsed.as_secs_f64();

    println!(
        "roomcache (socket, write-through): {:>9.0} events/s  batch p50 {:>6.2} ms  p99 {:>6.2} ms  ({:.2} s)",
        cache_rate,
        cache_latency.value_at_quantile(0.5) as f64 / 1000.0,
        cache_latency.value_at_quantile(0.99) as f64 / 1000.0,
        cache_elapsed.as_secs_f64()
    );
    println!(
        "raw Postgres upserts (peer):       {:>9.0} events/s  batch p50 {:>6.2} ms  p99 {:>6.2} ms  ({:.2} s)",
        raw_rate,
        raw_latency.value_at_quantile(0.5) as f64 / 1000.0,
        raw_latency.value_at_quantile(0.99) as f64 / 1000.0,
        raw_elapsed.as_secs_f64()
    );
    println!(
        "ratio roomcache / raw: {:.2}x   (budget: >= 30000 events/s and >= 0.7x raw)",
        cache_rate / raw_rate
    );

    runtime.block_on(async {
        if let Ok((client, connection)) =
            tokio_postgres::connect(&database_url, tokio_postgres::NoTls).await
        {
            tokio::spawn(connection);
            let _ = client
                .batch_execute(&format!(
                    "DROP SCHEMA {cache_schema} CASCADE; DROP SCHEMA {raw_schema} CASCADE"
                ))
                .await;
        }
    });
}
