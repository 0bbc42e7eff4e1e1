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

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::SinkExt;
use hdrhistogram::Histogram;
use roomcache::index::ReadIndex;
use roomcache::model::{
    AccountData, EventId, JoinedRoomRow, Membership, MembershipSnapshot, RoomId, RoomMetadata,
    RowChange, UserId,
};
use roomcache::room_list::{Filters, ListRequest};
use roomcache::store::Store;
use roomcache_core::PublishGate;
use serde_json::{json, Value};

mod support;
use support::{Connection, Server};

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

const SERVER: &str = "bench.example";
const BIG_USER: &str = "@big:bench.example";

/// Sizes of the generated dataset.
#[derive(Clone, Copy)]
struct Sizes {
    rooms: usize,
    snapshots: usize,
    user_rooms: usize,
}

/// splitmix64: deterministic pseudo-random numbers.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn room_id(i: usize) -> RoomId {
    RoomId::parse(&format!("!room{i:06}:{SERVER}")).unwrap()
}

const WORDS: [&str; 8] = [
    "tea", "coffee", "garden", "rust", "matrix", "music", "chess", "books",
];

fn room_metadata(i: usize) -> RoomMetadata {
    let r = mix(i as u64);
    RoomMetadata {
        room_type: r.is_multiple_of(20).then(|| "m.space".to_owned()),
        room_name: (!r.is_multiple_of(10))
            .then(|| format!("Room {i} {}", WORDS[(r >> 8) as usize % 8])),
        is_encrypted: (r >> 16) % 10 < 4,
        tombstone_successor_room_id: (r >> 24)
            .is_multiple_of(100)
            .then(|| format!("!next{i}:{SERVER}")),
    }
}

fn joined_rows(sizes: Sizes) -> Vec<JoinedRoomRow> {
    (0..sizes.rooms)
        .filter(|i| mix(*i as u64 ^ 0xA5) % 100 < 97)
        .map(|i| JoinedRoomRow {
            room_id: room_id(i),
            // A permutation of 1..=rooms (scaled): unique, like the real column.
            event_stream_ordering: 1 + ((i as i64 * 48_271) % 100_003) * 10,
            bump_stamp: Some(1 + ((i as i64 * 48_271) % 100_003) * 10 - 3),
            metadata: room_metadata(i),
        })
        .collect()
}

/// The `n`-th snapshot: the big user's first, then 10 rooms per other user.
fn snapshot(n: usize, sizes: Sizes) -> MembershipSnapshot {
    let (user, room) = if n < sizes.user_rooms {
        (
            BIG_USER.to_owned(),
            (n * (sizes.rooms / sizes.user_rooms)) % sizes.rooms,
        )
    } else {
        let k = (n - sizes.user_rooms) / 10;
        let j = (n - sizes.user_rooms) % 10;
        (
            format!("@user{k}:{SERVER}"),
            (k * 13 + j * 10_007) % sizes.rooms,
        )
    };
    let r = mix(n as u64 ^ 0x5A5A);
    let (membership, self_sent) = match r % 100 {
        0..=89 => (Membership::Join, true),
        90..=93 => (Membership::Invite, false),
        94..=96 => (Membership::Leave, false),
        97 => (Membership::Ban, false),
        98 => (Membership::Leave, true),
        _ => (Membership::Knock, true),
    };
    let user_id = UserId::parse(&user).unwrap();
    let known = membership != Membership::Invite || !(r >> 8).is_multiple_of(5);
    MembershipSnapshot {
        room_id: room_id(room),
        sender: if self_sent {
            user_id.clone()
        } else {
            UserId::parse("@admin:remote.example").unwrap()
        },
        user_id,
        // Real event IDs are '$' and 43 URL-safe base64 characters.
        membership_event_id: EventId::parse(&format!("${:043x}", mix(n as u64))).unwrap(),
        membership,
        forgotten: membership == Membership::Leave && (r >> 16).is_multiple_of(3),
        event_stream_ordering: 1 + (n as i64 * 7_919) % 1_000_003,
        event_instance_name: "master".into(),
        has_known_state: known,
        metadata: if known {
            room_metadata(room)
        } else {
            RoomMetadata::default()
        },
    }
}

/// Account data and spaces of the big user: 200 DMs, 500 tagged rooms,
/// 50 spaces of 100 children each.
fn extras(sizes: Sizes) -> Vec<RowChange> {
    let step = sizes.rooms / sizes.user_rooms;
    let user_room = |i: usize| room_id((i * step) % sizes.rooms);
    let user = UserId::parse(BIG_USER).unwrap();
    let dms: Vec<String> = (0..200).map(|i| user_room(i * 37).to_string()).collect();
    let mut changes = vec![RowChange::AccountData(AccountData {
        user_id: user.clone(),
        room_id: None,
        data_type: "m.direct".into(),
        content: json!({ "@friend:bench.example": dms }),
    })];
    for i in 0..500 {
        let tag = if i < 100 { "m.favourite" } else { "u.work" };
        changes.push(RowChange::AccountData(AccountData {
            user_id: user.clone(),
            room_id: Some(user_room(i * 19 + 5)),
            data_type: "m.tag".into(),
            content: json!({"tags": { tag: {"order": 0.5} }}),
        }));
    }
    for s in 0..50 {
        changes.push(RowChange::SpaceChildren {
            space_room_id: room_id(sizes.rooms - 1 - s),
            children: (0..100).map(|c| user_room(s * 100 + c)).collect(),
        });
    }
    changes
}

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
                spaces: Some(vec![room_id(sizes.rooms - 1)]),
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
    for n in 0..sizes.snapshots {
        batch.push(RowChange::UpsertSnapshot(snapshot(n, sizes)));
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
    for (name, list) in queries(sizes) {
        let count = index.room_list(&user, &list, None).count;
        for _ in 0..2_000 {
            std::hint::black_box(index.room_list(&user, &list, None));
        }
        let mut histogram = Histogram::<u64>::new(3).unwrap();
        let iterations = 20_000;
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
    (index, results)
}

/// Writes the dataset to Postgres with COPY (text format).
async fn load_postgres(store: &Store, sizes: Sizes) -> Result<(), Box<dyn std::error::Error>> {
    let client = store.client().await?;
    let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "\\N".into());
    let copy = |sql: &'static str| {
        let client = &client;
        async move { client.copy_in::<_, Bytes>(sql).await }
    };
    let sink = copy("COPY sliding_sync_joined_rooms (room_id, event_stream_ordering, bump_stamp, room_type, room_name, is_encrypted, tombstone_successor_room_id) FROM STDIN").await?;
    futures_util::pin_mut!(sink);
    let mut buffer = String::new();
    for row in joined_rows(sizes) {
        buffer.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            row.room_id,
            row.event_stream_ordering,
            row.bump_stamp.map_or("\\N".into(), |b| b.to_string()),
            text(&row.metadata.room_type),
            text(&row.metadata.room_name),
            row.metadata.is_encrypted,
            text(&row.metadata.tombstone_successor_room_id)
        ));
    }
    sink.send(Bytes::from(std::mem::take(&mut buffer))).await?;
    sink.as_mut().finish().await?;

    let sink = copy("COPY sliding_sync_membership_snapshots (room_id, user_id, sender, membership_event_id, membership, forgotten, event_stream_ordering, event_instance_name, has_known_state, room_type, room_name, is_encrypted, tombstone_successor_room_id) FROM STDIN").await?;
    futures_util::pin_mut!(sink);
    for n in 0..sizes.snapshots {
        let s = snapshot(n, sizes);
        buffer.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            s.room_id,
            s.user_id,
            s.sender,
            s.membership_event_id,
            s.membership.as_str(),
            i32::from(s.forgotten),
            s.event_stream_ordering,
            s.event_instance_name,
            s.has_known_state,
            text(&s.metadata.room_type),
            text(&s.metadata.room_name),
            s.metadata.is_encrypted,
            text(&s.metadata.tombstone_successor_room_id)
        ));
        if buffer.len() > 1 << 20 {
            sink.send(Bytes::from(std::mem::take(&mut buffer))).await?;
        }
    }
    sink.send(Bytes::from(std::mem::take(&mut buffer))).await?;
    sink.as_mut().finish().await?;

    for change in extras(sizes) {
        match change {
            RowChange::AccountData(data) => {
                let room = data.room_id.map(|r| r.to_string()).unwrap_or_default();
                client
                    .execute(
                        "INSERT INTO user_account_data (user_id, room_id, account_data_type, content) VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, room_id, account_data_type) DO UPDATE SET content = EXCLUDED.content",
                        &[&data.user_id.as_str(), &room, &data.data_type, &data.content],
                    )
                    .await?;
            }
            RowChange::SpaceChildren {
                space_room_id,
                children,
            } => {
                let children: Vec<&str> = children.iter().map(RoomId::as_str).collect();
                client
                    .execute(
                        "INSERT INTO space_children (space_room_id, child_room_id) SELECT $1, UNNEST($2::text[])",
                        &[&space_room_id.as_str(), &children],
                    )
                    .await?;
            }
            _ => {}
        }
    }
    client
        .execute(
            "INSERT INTO stream_positions (stream_name, instance_name, stream_id) VALUES ('events', 'master', 2000000)",
            &[],
        )
        .await?;
    client
        .batch_execute(
            "ANALYZE sliding_sync_joined_rooms; ANALYZE sliding_sync_membership_snapshots;",
        )
        .await?;
    Ok(())
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

/// Latencies of `clients` concurrent clients for `seconds`; returns the
/// merged histogram (ns) and the queries per second.
async fn socket_load(
    socket: &Path,
    body: Bytes,
    clients: usize,
    seconds: u64,
) -> (Histogram<u64>, f64) {
    let path = format!("/v1/users/{BIG_USER}/room_list");
    let barrier = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (socket, body, path, barrier) = (
            socket.to_owned(),
            body.clone(),
            path.clone(),
            barrier.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::open(&socket).await.unwrap();
            for _ in 0..200 {
                connection.send("POST", &path, body.clone()).await.unwrap();
            }
            barrier.wait().await;
            let deadline = Instant::now() + Duration::from_secs(seconds);
            let mut histogram = Histogram::<u64>::new(3).unwrap();
            while Instant::now() < deadline {
                let sent = Instant::now();
                connection.send("POST", &path, body.clone()).await.unwrap();
                histogram.record(sent.elapsed().as_nanos() as u64).unwrap();
            }
            histogram
        }));
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut merged = Histogram::<u64>::new(3).unwrap();
    for task in tasks {
        merged.add(task.await.unwrap()).unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let qps = merged.len() as f64 / elapsed;
    (merged, qps)
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

async fn over_the_socket(
    url: &str,
    binary: &Path,
    sizes: Sizes,
    clients: usize,
    seconds: u64,
    in_process: &[QueryFigures],
) {
    println!("== over the socket (real server, Postgres with durability defaults) ==");
    let dir = tempfile::Builder::new()
        .prefix("roomcache-bench")
        .tempdir()
        .unwrap();
    let schema = format!("bench_{}", std::process::id());
    let empty_schema = format!("bench_empty_{}", std::process::id());
    let store = Store::connect(url, &schema, 2).await.unwrap();
    let loading = Instant::now();
    load_postgres(&store, sizes).await.unwrap();
    println!(
        "loaded Postgres with COPY in {:.1} s",
        loading.elapsed().as_secs_f64()
    );

    let empty = Server::start(binary, dir.path(), url, &empty_schema, &server_args()).await;
    let empty_rss = empty.rss_bytes();
    empty.stop();
    let starting = Instant::now();
    let server = Server::start(binary, dir.path(), url, &schema, &server_args()).await;
    println!(
        "server ready (all rows loaded) in {:.2} s",
        starting.elapsed().as_secs_f64()
    );
    let rss = server.rss_bytes();
    println!(
        "server RSS {:.1} MiB (empty server {:.1} MiB): {:.0} bytes per snapshot with rooms included ((RSS - empty) / snapshots)",
        rss as f64 / 1_048_576.0,
        empty_rss as f64 / 1_048_576.0,
        (rss.saturating_sub(empty_rss)) as f64 / sizes.snapshots as f64
    );

    // The floor: the cheapest request the server answers, over the same transport.
    let mut floor = Histogram::<u64>::new(3).unwrap();
    let mut connection = Connection::open(&server.socket).await.unwrap();
    for i in 0..3_000 {
        let sent = Instant::now();
        connection.get("/health").await.unwrap();
        if i >= 500 {
            floor.record(sent.elapsed().as_nanos() as u64).unwrap();
        }
    }
    println!(
        "  transport floor (GET /health, 1 client): p50 {:.2} µs  p99 {:.2} µs",
        micros(&floor, 0.5),
        micros(&floor, 0.99)
    );
    let headline = ["no filter", "is_encrypted"];
    for (name, list) in queries(sizes)
        .into_iter()
        .filter(|(n, _)| headline.contains(n))
    {
        let body = request_body(&list);
        // The answer agrees with the in-process count.
        let mut connection = Connection::open(&server.socket).await.unwrap();
        let answer: Value = serde_json::from_slice(
            &connection
                .send(
                    "POST",
                    &format!("/v1/users/{BIG_USER}/room_list"),
                    body.clone(),
                )
                .await
                .unwrap(),
        )
        .unwrap();
        let count = answer["lists"]["l"]["count"].as_u64().unwrap_or(0) as usize;
        let expected = in_process
            .iter()
            .find(|r| r.0 == name)
            .map(|r| r.3)
            .unwrap_or(0);
        assert_eq!(count, expected, "socket and in-process counts differ");
        let (single, _) = socket_load(&server.socket, body.clone(), 1, seconds).await;
        let (loaded, qps) = socket_load(&server.socket, body.clone(), clients, seconds).await;
        let sql = sql_latency(&store, name == "is_encrypted", count).await;
        let in_process_p50 = in_process
            .iter()
            .find(|r| r.0 == name)
            .map(|r| r.1)
            .unwrap_or(0.0);
        println!("  top 20, {name} (count {count}):");
        println!("    in process          p50 {:>9.2} µs", in_process_p50);
        println!(
            "    socket, 1 client    p50 {:>9.2} µs  p99 {:>9.2} µs",
            micros(&single, 0.5),
            micros(&single, 0.99)
        );
        println!(
            "    socket, {clients} clients   p50 {:>9.2} µs  p99 {:>9.2} µs  {:>8.0} queries/s",
            micros(&loaded, 0.5),
            micros(&loaded, 0.99),
            qps
        );
        println!(
            "    SQL on Postgres     p50 {:>9.2} µs  p99 {:>9.2} µs",
            micros(&sql, 0.5),
            micros(&sql, 0.99)
        );
        println!(
            "    SQL / socket (1 client): {:.0}x at p50, {:.0}x at p99; SQL / in process: {:.0}x at p50",
            micros(&sql, 0.5) / micros(&single, 0.5),
            micros(&sql, 0.99) / micros(&single, 0.99),
            micros(&sql, 0.5) / in_process_p50.max(0.001)
        );
    }
    server.stop();
    let client = store.client().await.unwrap();
    client
        .batch_execute(&format!(
            "DROP SCHEMA {schema} CASCADE; DROP SCHEMA IF EXISTS {empty_schema} CASCADE"
        ))
        .await
        .unwrap();
}

fn main() {
    let sizes = Sizes {
        rooms: env_usize("ROOMCACHE_BENCH_ROOMS", 100_000),
        snapshots: env_usize("ROOMCACHE_BENCH_SNAPSHOTS", 1_000_000),
        user_rooms: env_usize("ROOMCACHE_BENCH_USER_ROOMS", 10_000),
    };
    let clients = env_usize("ROOMCACHE_BENCH_CLIENTS", 4);
    let seconds = env_usize("ROOMCACHE_BENCH_SECONDS", 5) as u64;
    let (index, results) = in_process(sizes);
    drop(index);
    let url = std::env::var("ROOMCACHE_BENCH_DATABASE_URL").ok();
    let binary = std::env::var("ROOMCACHE_BIN").ok().map(PathBuf::from);
    match (url, binary) {
        (Some(url), Some(binary)) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(over_the_socket(&url, &binary, sizes, clients, seconds, &results));
        }
        _ => println!(
            "(set ROOMCACHE_BENCH_DATABASE_URL and ROOMCACHE_BIN, or run scripts/bench room-list, for the socket and SQL figures)"
        ),
    }
}
