//! Room-list benchmark (`scripts/bench room-list`): 100,000 rooms and
//! 1,000,000 snapshots, one user in 10,000 rooms; the top 20 rows without
//! and with filters, answered
//! 1. in process, from the read index;
//! 2. over the socket, by the real server loaded from Postgres, with one
//!    client and with concurrent clients;
//! 3. by SQL on Postgres over the same rows with Synapse's indexes — the
//!    peer a deployment would otherwise run;
//!
//! and the memory the index takes per room and per snapshot (live bytes
//! counted by a wrapping allocator, and the server's RSS).
//!
//! Environment: `ROOMCACHE_BENCH_DATABASE_URL` (Postgres for parts 2 and 3;
//! without it only part 1 runs), `ROOMCACHE_BIN` (the release server
//! binary), `ROOMCACHE_BENCH_ROOMS`, `_SNAPSHOTS`, `_USER_ROOMS`, `_CLIENTS`,
//! `_SECONDS` to change the sizes. `scripts/bench room-list` sets them up.
//! For profiling one query in process: `ROOMCACHE_BENCH_QUERY` (only the
//! queries whose name holds it) and `ROOMCACHE_BENCH_ITERATIONS` (20,000).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use hdrhistogram::Histogram;
use roomcache::index::ReadIndex;
use roomcache::model::{RowChange, UserId};
use roomcache::room_list::{Filters, ListRequest};
use roomcache::store::Store;
use roomcache_core::PublishGate;
use serde_json::{json, Value};

mod support;
use support::{Connection, RawConnection, Server};

/// Counts live heap bytes.
struct CountingAllocator;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn live_bytes() -> isize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[path = "room_list/dataset.rs"]
mod dataset;
#[path = "room_list/socket.rs"]
mod socket;
use dataset::{extras, joined_rows, room_id, snapshots, Sizes, BIG_USER, SERVER};

/// The queries measured: a name and a list request (top 20).
fn queries(sizes: Sizes) -> Vec<(&'static str, ListRequest)> {
    let top = |filters: Filters| ListRequest {
        ranges: vec![(0, 19)],
        filters,
        ..ListRequest::default()
    };
    vec![
        ("no filter", top(Filters::default())),
        (
            "is_encrypted",
            top(Filters {
                is_encrypted: Some(true),
                ..Filters::default()
            }),
        ),
        (
            "not invite, not space, not DM",
            top(Filters {
                is_invite: Some(false),
                not_room_types: Some(vec![Some("m.space".into())]),
                is_dm: Some(false),
                ..Filters::default()
            }),
        ),
        (
            "tags [m.favourite]",
            top(Filters {
                tags: Some(vec!["m.favourite".into()]),
                ..Filters::default()
            }),
        ),
        (
            "spaces [one space]",
            top(Filters {
                spaces: Some(dataset::spaces(sizes).into_iter().take(1).collect()),
                ..Filters::default()
            }),
        ),
        (
            "room_name_like (scan)",
            top(Filters {
                room_name_like: Some("Tea".into()),
                ..Filters::default()
            }),
        ),
    ]
}

fn micros(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

/// A query's in-process figures: name, p50 and p99 (µs), count.
type QueryFigures = (&'static str, f64, f64, usize);

fn in_process(sizes: Sizes) -> (ReadIndex, Vec<QueryFigures>) {
    println!("== in process (read index) ==");
    let before = live_bytes();
    let joined = joined_rows(sizes);
    let joined_count = joined.len();
    let index = ReadIndex::from_rows(joined, Vec::new());
    let after_rooms = live_bytes();
    // The benchmark's own gate: nothing reads the index while it is built.
    let gate = PublishGate::new();
    let publish =
        |changes: &[RowChange]| gate.publish(|publication| index.publish(changes, publication));
    let mut batch = Vec::with_capacity(10_000);
    for snapshot in snapshots(sizes) {
        batch.push(RowChange::UpsertSnapshot(snapshot));
        if batch.len() == 10_000 {
            publish(&batch);
            batch.clear();
        }
    }
    publish(&batch);
    drop(batch);
    publish(&extras(sizes));
    let after_snapshots = live_bytes();
    let per_room = (after_rooms - before) as f64 / sizes.rooms as f64;
    let per_snapshot = (after_snapshots - after_rooms) as f64 / sizes.snapshots as f64;
    println!(
        "dataset: {} rooms ({} with a joined row), {} snapshots, {} in {} rooms",
        sizes.rooms, joined_count, sizes.snapshots, BIG_USER, sizes.user_rooms
    );
    println!(
        "memory (live heap bytes, allocator-counted): {:.0} bytes per room (budget 1024), {:.0} bytes per snapshot (budget 300), {:.1} MiB in all",
        per_room,
        per_snapshot,
        (after_snapshots - before) as f64 / 1_048_576.0
    );
    let user = UserId::parse(BIG_USER).unwrap();
    let mut results = Vec::new();
    let only = std::env::var("ROOMCACHE_BENCH_QUERY").unwrap_or_default();
    for (name, list) in queries(sizes) {
        if !name.contains(only.as_str()) {
            continue;
        }
        let count = index.room_list(&user, &list, None).count;
        for _ in 0..2_000 {
            std::hint::black_box(index.room_list(&user, &list, None));
        }
        let mut histogram = Histogram::<u64>::new(3).unwrap();
        let iterations = env_usize("ROOMCACHE_BENCH_ITERATIONS", 20_000);
        for _ in 0..iterations {
            let started = Instant::now();
            std::hint::black_box(index.room_list(&user, &list, None));
            histogram
                .record(started.elapsed().as_nanos() as u64)
                .unwrap();
        }
        let (p50, p99) = (micros(&histogram, 0.5), micros(&histogram, 0.99));
        println!(
            "  top 20, {name:<32} count {count:>5}: p50 {p50:>8.2} µs  p99 {p99:>8.2} µs  max {:>8.2} µs",
            histogram.max() as f64 / 1000.0
        );
        results.push((name, p50, p99, count));
    }
    if only.is_empty() {
        after_messages(&index, &user, sizes, &publish);
    }
    (index, results)
}

/// `room_name_like` right after a message in one of the user's rooms (its
/// joined row re-keys every member): the write's time and the query's
/// (the write rewrites the room's entry in the user's copy of listed
/// names).
fn after_messages(index: &ReadIndex, user: &UserId, sizes: Sizes, publish: &dyn Fn(&[RowChange])) {
    let step = sizes.rooms / sizes.user_rooms;
    let theirs: std::collections::HashSet<_> = (0..100).map(|i| room_id(i * step)).collect();
    let mut rows: Vec<_> = joined_rows(sizes)
        .into_iter()
        .filter(|row| theirs.contains(&row.room_id))
        .collect();
    let count = rows.len();
    let (_, list) = queries(sizes).pop().unwrap();
    let mut ordering = i64::MAX / 2;
    let (mut writes, mut reads) = (
        Histogram::<u64>::new(3).unwrap(),
        Histogram::<u64>::new(3).unwrap(),
    );
    for n in 0..2_000 {
        let row = &mut rows[n % count];
        ordering += 1;
        row.event_stream_ordering = ordering;
        let change = [RowChange::UpsertJoinedRoom(row.clone())];
        let started = Instant::now();
        publish(&change);
        writes.record(started.elapsed().as_nanos() as u64).unwrap();
        let started = Instant::now();
        std::hint::black_box(index.room_list(user, &list, None));
        reads.record(started.elapsed().as_nanos() as u64).unwrap();
    }
    println!(
        "  after a message in one of its rooms: write p50 {:.2} µs p99 {:.2} µs; top 20, room_name_like: p50 {:.2} µs  p99 {:.2} µs",
        micros(&writes, 0.5),
        micros(&writes, 0.99),
        micros(&reads, 0.5),
        micros(&reads, 0.99)
    );
}

/// The server's flags for this benchmark.
fn server_args() -> Vec<String> {
    [
        "--server-name",
        SERVER,
        "--writers",
        "master",
        "--pool-size",
        "4",
    ]
    .map(String::from)
    .to_vec()
}

fn request_body(list: &ListRequest) -> Bytes {
    Bytes::from(serde_json::to_vec(&json!({"lists": {"l": list}})).unwrap())
}

/// Synapse's question in SQL: R1 (the user's snapshots, not forgotten, no
/// self-leaves) joined to the joined rows, the filter, the recency order
/// and the limit, plus the count — pushed down into one statement (more
/// generous to the peer than Synapse, which filters and sorts in Python).
fn sql_for(filtered: bool) -> String {
    format!(
        "SELECT m.room_id, m.membership, m.sender, m.membership_event_id, m.event_stream_ordering,
                m.event_instance_name, m.has_known_state,
                COALESCE(j.room_type, m.room_type) AS room_type,
                COALESCE(j.is_encrypted, m.is_encrypted) AS is_encrypted,
                COALESCE(j.room_name, m.room_name), COALESCE(j.tombstone_successor_room_id, m.tombstone_successor_room_id),
                j.bump_stamp,
                COALESCE(j.event_stream_ordering, m.event_stream_ordering) AS recency,
                COUNT(*) OVER () AS total
         FROM sliding_sync_membership_snapshots AS m
         LEFT JOIN sliding_sync_joined_rooms AS j ON j.room_id = m.room_id AND m.membership = 'join'
         WHERE m.user_id = $1 AND m.forgotten = 0
           AND NOT (m.membership = 'leave' AND m.sender = $1)
           {}
         ORDER BY recency DESC, m.room_id
         LIMIT 20",
        if filtered {
            "AND m.has_known_state AND COALESCE(j.is_encrypted, m.is_encrypted)"
        } else {
            ""
        }
    )
}

async fn sql_latency(store: &Store, filtered: bool, expected_count: usize) -> Histogram<u64> {
    let client = store.client().await.unwrap();
    let statement = client.prepare(&sql_for(filtered)).await.unwrap();
    let rows = client.query(&statement, &[&BIG_USER]).await.unwrap();
    let total: i64 = rows.first().map(|r| r.get("total")).unwrap_or(0);
    assert_eq!(
        total as usize, expected_count,
        "SQL and index disagree on the count"
    );
    for _ in 0..20 {
        client.query(&statement, &[&BIG_USER]).await.unwrap();
    }
    let mut histogram = Histogram::<u64>::new(3).unwrap();
    for _ in 0..300 {
        let started = Instant::now();
        client.query(&statement, &[&BIG_USER]).await.unwrap();
        histogram
            .record(started.elapsed().as_nanos() as u64)
            .unwrap();
    }
    histogram
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Generates the dataset in Postgres unless a previous run stored it.
async fn ensure_dataset(url: &str, sizes: Sizes) -> Store {
    let schema = sizes.schema();
    let store = Store::connect(url, &schema, 2).await.unwrap();
    if dataset::is_stored(&store).await.unwrap() {
        println!("dataset already in Postgres (schema {schema}): reused");
        return store;
    }
    let loading = Instant::now();
    let client = store.client().await.unwrap();
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
    drop(client);
    let store = Store::connect(url, &schema, 2).await.unwrap();
    dataset::load_postgres(&store, sizes).await.unwrap();
    println!(
        "generated the dataset in Postgres with COPY (schema {schema}) in {:.1} s",
        loading.elapsed().as_secs_f64()
    );
    store
}

/// Starts `binary` on the dataset (cold start and RSS against an empty
/// server's).
async fn start_server(url: &str, label: &str, binary: &Path, dir: &Path, sizes: Sizes) -> Server {
    let empty_schema = format!("bench_empty_{}", std::process::id());
    let own_dir = dir.join(label);
    std::fs::create_dir_all(&own_dir).unwrap();
    let empty = Server::start(binary, &own_dir, url, &empty_schema, &server_args()).await;
    let empty_rss = empty.rss_bytes();
    empty.stop();
    let store = Store::connect(url, &empty_schema, 1).await.unwrap();
    let client = store.client().await.unwrap();
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {empty_schema} CASCADE"))
        .await
        .unwrap();
    println!("[{label}] load average before start-up: {}", load_average());
    let starting = Instant::now();
    let server = Server::start(binary, &own_dir, url, &sizes.schema(), &server_args()).await;
    println!(
        "[{label}] server ready (socket open, all rows loaded) in {:.2} s",
        starting.elapsed().as_secs_f64()
    );
    let rss = server.rss_bytes();
    println!(
        "[{label}] server RSS {:.1} MiB (empty server {:.1} MiB): {:.0} bytes per snapshot with rooms included ((RSS - empty) / snapshots)",
        rss as f64 / 1_048_576.0,
        empty_rss as f64 / 1_048_576.0,
        (rss.saturating_sub(empty_rss)) as f64 / sizes.snapshots as f64
    );
    server
}

/// The room list's count over the socket (checked against the in-process one).
async fn socket_count(server: &Server, body: Bytes) -> usize {
    let mut connection = Connection::open(&server.socket).await.unwrap();
    let answer = connection
        .send("POST", &socket::room_list_path(), body)
        .await
        .unwrap();
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    answer["lists"]["l"]["count"].as_u64().unwrap_or(0) as usize
}

/// The socket measures of one server: `/health`, then each headline list;
/// returns each list's count and hyper figure with one client.
async fn measure_server(
    label: &str,
    server: &Server,
    lists: &[(&'static str, Bytes)],
    clients: usize,
    seconds: f64,
    in_process: &[QueryFigures],
) -> Vec<(usize, socket::Load)> {
    println!(
        "[{label}] load average before the socket measures: {}",
        load_average()
    );
    let health = RawConnection::request("GET", "/health", b"");
    let raw = socket::raw_load(&server.socket, health, 1, seconds).await;
    let hyper =
        socket::hyper_load(&server.socket, "GET", "/health", Bytes::new(), 1, seconds).await;
    println!(
        "  [{label}] transport floor GET /health, 1 client: hand-written {}",
        raw.line()
    );
    println!(
        "  [{label}] transport floor GET /health, 1 client: hyper        {}",
        hyper.line()
    );
    let mut single = Vec::new();
    for (name, body) in lists {
        let count = socket_count(server, body.clone()).await;
        let expected = in_process.iter().find(|r| r.0 == *name);
        if let Some(expected) = expected {
            assert_eq!(count, expected.3, "socket and in-process counts differ");
        }
        println!(
            "  [{label}] top 20, {name} (count {count}); in process p50 {:.2} µs:",
            expected.map_or(0.0, |r| r.1)
        );
        let socket = &server.socket;
        let path = socket::room_list_path();
        let request = RawConnection::request("POST", &path, body);
        let raw_single = socket::raw_load(socket, request.clone(), 1, seconds).await;
        let raw_loaded = socket::raw_load(socket, request, clients, seconds).await;
        let hyper_single =
            socket::hyper_load(socket, "POST", &path, body.clone(), 1, seconds).await;
        let hyper_loaded =
            socket::hyper_load(socket, "POST", &path, body.clone(), clients, seconds).await;
        println!(
            "    [{label}] hand-written, 1 client    {}",
            raw_single.line()
        );
        println!(
            "    [{label}] hand-written, {clients} clients   {}",
            raw_loaded.line()
        );
        println!(
            "    [{label}] hyper, 1 client           {}",
            hyper_single.line()
        );
        println!(
            "    [{label}] hyper, {clients} clients          {}",
            hyper_loaded.line()
        );
        single.push((count, hyper_single));
    }
    single
}

/// Each binary in turn (the peer first) started on the dataset and
/// measured over the socket, then stopped (one server per schema: the
/// instance lock), beside the physical floor; then the same lists in SQL.
async fn over_the_socket(
    url: &str,
    binaries: &[(&'static str, PathBuf)],
    sizes: Sizes,
    clients: usize,
    seconds: f64,
    in_process: &[QueryFigures],
) {
    println!("== over the socket (real server, Postgres with durability defaults) ==");
    let dir = tempfile::Builder::new()
        .prefix("roomcache-bench")
        .tempdir()
        .unwrap();
    let store = ensure_dataset(url, sizes).await;
    let headline = ["no filter", "is_encrypted"];
    let lists: Vec<(&'static str, Bytes)> = queries(sizes)
        .into_iter()
        .filter(|(name, _)| headline.contains(name))
        .map(|(name, list)| (name, request_body(&list)))
        .collect();
    let echo = socket::echo(dir.path(), lists[0].1.len() + 150, seconds).await;
    println!(
        "  physical floor (echo of a request's size, 1 blocking client): {}",
        echo.line()
    );
    let mut ours_single = Vec::new();
    for (label, binary) in binaries {
        let server = start_server(url, label, binary, dir.path(), sizes).await;
        ours_single = measure_server(label, &server, &lists, clients, seconds, in_process).await;
        server.stop();
    }
    for ((name, _), (count, single)) in lists.iter().zip(&ours_single) {
        let count = *count;
        let sql = sql_latency(&store, *name == "is_encrypted", count).await;
        println!(
            "  top 20, {name}: SQL on Postgres p50 {:>9.2} µs  p99 {:>9.2} µs; SQL / socket (ours, hyper, 1 client): {:.0}x at p50, {:.0}x at p99",
            micros(&sql, 0.5),
            micros(&sql, 0.99),
            micros(&sql, 0.5) / single.micros(0.5),
            micros(&sql, 0.99) / single.micros(0.99),
        );
    }
}

fn main() {
    let sizes = Sizes {
        rooms: env_usize("ROOMCACHE_BENCH_ROOMS", 100_000),
        snapshots: env_usize("ROOMCACHE_BENCH_SNAPSHOTS", 1_000_000),
        user_rooms: env_usize("ROOMCACHE_BENCH_USER_ROOMS", 10_000),
    };
    let clients = env_usize("ROOMCACHE_BENCH_CLIENTS", 4);
    let seconds = env_usize("ROOMCACHE_BENCH_SECONDS", 5) as f64;
    // ROOMCACHE_BENCH_IN_PROCESS=0 skips part 1 (and the count check against it).
    let results = if env_usize("ROOMCACHE_BENCH_IN_PROCESS", 1) == 0 {
        Vec::new()
    } else {
        in_process(sizes).1
    };
    let url = std::env::var("ROOMCACHE_BENCH_DATABASE_URL").ok();
    let binary = std::env::var("ROOMCACHE_BIN").ok().map(PathBuf::from);
    // A second binary (e.g. the code before a change) measured beside ROOMCACHE_BIN.
    let peer = std::env::var("ROOMCACHE_BENCH_PEER_BIN")
        .ok()
        .map(PathBuf::from);
    match (url, binary) {
        (Some(url), Some(binary)) => {
            let binaries: Vec<(&'static str, PathBuf)> = peer
                .map(|p| ("peer", p))
                .into_iter()
                .chain([("ours", binary)])
                .collect();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(over_the_socket(&url, &binaries, sizes, clients, seconds, &results));
        }
        _ => println!(
            "(set ROOMCACHE_BENCH_DATABASE_URL and ROOMCACHE_BIN, or run scripts/bench room-list, for the socket and SQL figures)"
        ),
    }
}
