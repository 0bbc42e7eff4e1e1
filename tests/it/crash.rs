//! Crash test: two writers feed a long interleaved stream while the server
//! is killed with SIGKILL at random points and restarted; the writers
//! resume from `GET /v1/positions`. At the end every row (and position) in
//! Postgres, and every row served, equals what a fresh server holds after
//! the same feed with no crash: nothing lost, nothing applied twice.
//!
//! The feed and the kill delays come from a seeded generator; the seed is
//! printed, and `ROOMCACHE_CRASH_SEED=<seed>` replays the same feed and
//! delays (where exactly a kill lands still depends on timing, which is the
//! point: each run probes other instants).

use roomcache_core::WriterName;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::server::{send, ServerOptions, TestServer};
use bytes::Bytes;
use hyper::Method;
use serde_json::{json, Value};

/// splitmix64: small, seedable, good enough to shuffle a test feed.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const WRITERS: [&str; 2] = ["w1", "w2"];

/// One writer's feed, cut into batches (each a list of rows in id order).
type Batches = Vec<Vec<Value>>;

/// The two rows (event `$e{id}` and its state row) of a state event, a
/// builder: `state_event(id, room, type).by(sender).content(..)` with
/// `.key(..)` for a state key other than "", or `member_event(id, room,
/// user, membership)` (sent by the user unless `.by(..)` says otherwise);
/// then `.rows()`.
struct StateEvent {
    id: i64,
    room: String,
    kind: String,
    state_key: String,
    sender: Option<String>,
    content: Value,
}

fn state_event(id: i64, room: &str, kind: &str) -> StateEvent {
    StateEvent {
        id,
        room: room.to_owned(),
        kind: kind.to_owned(),
        state_key: String::new(),
        sender: None,
        content: json!({}),
    }
}

fn member_event(id: i64, room: &str, user: &str, membership: &str) -> StateEvent {
    state_event(id, room, "m.room.member")
        .key(user)
        .by(user)
        .content(json!({ "membership": membership }))
}

impl StateEvent {
    fn key(mut self, state_key: &str) -> Self {
        self.state_key = state_key.to_owned();
        self
    }

    fn by(mut self, sender: &str) -> Self {
        self.sender = Some(sender.to_owned());
        self
    }

    fn content(mut self, content: Value) -> Self {
        self.content = content;
        self
    }

    fn rows(self) -> Vec<Value> {
        let StateEvent {
            id,
            room,
            kind,
            state_key,
            sender,
            content,
        } = self;
        let sender = sender.expect("a state event needs a sender: by()");
        let event_id = format!("$e{id}");
        vec![
            json!({"kind": "event", "stream_id": id, "event": {"event_id": event_id, "room_id": room,
                "type": kind, "state_key": state_key, "sender": sender, "content": content}}),
            json!({"kind": "state", "stream_id": id, "room_id": room, "type": kind,
                "state_key": state_key, "event_id": event_id}),
        ]
    }
}

/// A long stream: ids 2.. handed to the writers at random (with gaps);
/// each writer persists the events of its own rooms (rooms are sharded
/// between writers, as event persisters shard them). Most events are joins
/// of a user seen for the first time, so every lost row leaves a missing
/// snapshot; the others change existing rows (leaves, invites, renames).
fn generate_feed(random: &mut Random, ids: i64) -> [Batches; 2] {
    const ROOMS: usize = 12;
    let mut rows: [Vec<Vec<Value>>; 2] = [Vec::new(), Vec::new()];
    let mut members: [Vec<Vec<String>>; 2] = [vec![Vec::new(); ROOMS], vec![Vec::new(); ROOMS]];
    let mut id = 1;
    for _ in 0..ids {
        id += 1 + i64::from(random.below(10) == 0); // sometimes a gap
        let writer = random.below(2) as usize;
        let room_index = random.below(ROOMS as u64) as usize;
        let room = format!("!r{writer}x{room_index}:example.org");
        let known = &mut members[writer][room_index];
        let group = if known.is_empty() {
            let creator = format!("@creator{writer}x{room_index}:example.org");
            known.push(creator.clone());
            let mut group = state_event(id, &room, "m.room.create")
                .by(&creator)
                .content(json!({"room_version": "10"}))
                .rows();
            // The creator joins in the same group.
            let mut join = member_event(id, &room, &creator, "join").rows();
            join[0]["event"]["event_id"] = json!(format!("$j{id}"));
            join[1]["event_id"] = json!(format!("$j{id}"));
            group.append(&mut join);
            group
        } else {
            event_in_known_room(random, id, &room, known)
        };
        rows[writer].push(group);
    }
    rows.map(|groups| {
        let mut batches = Vec::new();
        let mut groups = groups.into_iter().peekable();
        while groups.peek().is_some() {
            let size = 1 + random.below(8) as usize;
            batches.push(groups.by_ref().take(size).flatten().collect());
        }
        batches
    })
}

/// The rows of one random event in a room whose members so far are `known`
/// (its creator first); a joining user is added to them.
fn event_in_known_room(
    random: &mut Random,
    id: i64,
    room: &str,
    known: &mut Vec<String>,
) -> Vec<Value> {
    let creator = known[0].clone();
    match random.below(20) {
        0..=12 => {
            let server = if random.below(8) == 0 {
                "remote.org"
            } else {
                "example.org"
            };
            let user = format!("@u{id}:{server}");
            known.push(user.clone());
            member_event(id, room, &user, "join").rows()
        }
        13..=15 => {
            let user = known[random.below(known.len() as u64) as usize].clone();
            let membership = ["leave", "invite", "join"][random.below(3) as usize];
            let sender = if membership == "invite" {
                creator.clone()
            } else {
                user.clone()
            };
            member_event(id, room, &user, membership).by(&sender).rows()
        }
        16 | 17 => state_event(id, room, "m.room.name")
            .by(&creator)
            .content(json!({"name": format!("room {id}")}))
            .rows(),
        18 => state_event(id, room, "m.room.topic")
            .by(&creator)
            .content(json!({"topic": format!("t{id}")}))
            .rows(),
        _ => vec![json!({"kind": "position", "stream_id": id})],
    }
}

fn last_id(batch: &[Value]) -> i64 {
    batch
        .last()
        .and_then(|r| r["stream_id"].as_i64())
        .unwrap_or_default()
}

/// One request over the socket; `Err` when the server is unreachable or
/// the connection breaks (it was killed).
async fn request(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let body = body.map(|b| {
        (
            Bytes::from(serde_json::to_vec(b).unwrap()),
            "application/json",
        )
    });
    let answer = send(socket, method, path, body).await?;
    Ok((answer.status.as_u16(), answer.body))
}

/// A writer's resume loop: ask the durable position, send the first batch
/// that ends above it (whole: rows at or below the position are skipped by
/// the server), repeat. Returns true when the whole feed is durable, false
/// when the server went away.
async fn run_writer(socket: PathBuf, writer: &'static str, batches: Batches) -> bool {
    let Ok((200, positions)) = request(&socket, Method::GET, "/v1/positions", None).await else {
        return false;
    };
    let mut position = positions["positions"][writer]
        .as_i64()
        .expect("position of the writer");
    loop {
        let Some(batch) = batches.iter().find(|b| last_id(b) > position) else {
            return true;
        };
        let body = json!({"writer": writer, "rows": batch});
        match request(&socket, Method::POST, "/v1/feed", Some(&body)).await {
            Ok((200, answer)) => {
                let acked = answer["position"].as_i64().expect("position");
                assert_eq!(acked, last_id(batch), "{writer} acked {answer}");
                // Exactly the rows above the durable position were applied:
                // none of those at or below it a second time.
                let fresh = batch
                    .iter()
                    .filter(|r| r["stream_id"].as_i64() > Some(position))
                    .count();
                assert_eq!(answer["applied_rows"], fresh, "{writer}: {answer}");
                position = acked;
            }
            Ok((status, answer)) if status < 500 => {
                panic!("{writer}: feed refused: {status} {answer}")
            }
            Ok(_) | Err(_) => return false,
        }
    }
}

async fn feed_everything(server: &TestServer, feed: &[Batches; 2]) -> [bool; 2] {
    let tasks: Vec<_> = WRITERS
        .iter()
        .zip(feed.iter())
        .map(|(writer, batches)| {
            tokio::spawn(run_writer(server.socket.clone(), writer, batches.clone()))
        })
        .collect();
    let mut done = [false; 2];
    for (index, task) in tasks.into_iter().enumerate() {
        done[index] = task.await.expect("writer task");
    }
    done
}

fn options() -> ServerOptions {
    ServerOptions {
        writers: WRITERS.iter().map(|w| w.to_string()).collect(),
        ..ServerOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_and_doubles_nothing() {
    let seed = std::env::var("ROOMCACHE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    println!("crash test seed: {seed} (replay with ROOMCACHE_CRASH_SEED={seed})");
    let mut random = Random(seed);
    let feed = generate_feed(&mut random, 1000);

    let mut crashed = TestServer::start_with(options()).await;
    let mut kills = 0;
    while kills < 6 {
        let writers = {
            let socket = crashed.socket.clone();
            let feed = feed.clone();
            tokio::spawn(async move {
                let server_socket = socket;
                let tasks: Vec<_> = WRITERS
                    .iter()
                    .zip(feed)
                    .map(|(writer, batches)| {
                        tokio::spawn(run_writer(server_socket.clone(), writer, batches))
                    })
                    .collect();
                let mut done = true;
                for task in tasks {
                    done &= task.await.expect("writer task");
                }
                done
            })
        };
        tokio::time::sleep(Duration::from_millis(30 + random.below(400))).await;
        crashed.kill().await;
        kills += 1;
        // The writers notice the broken connection and stop (or had
        // already finished the feed, if the kill came late).
        tokio::time::timeout(Duration::from_secs(30), writers)
            .await
            .expect("writers stop after the kill")
            .expect("a writer failed");
        let positions = crashed.rows_in_postgres().await.positions;
        println!("kill {kills}: durable positions {positions:?}");
        crashed.spawn().await;
        // The restarted server resumes from exactly what is durable.
        let served = crashed.get("/v1/positions").await.body;
        for writer in WRITERS {
            let stored = positions.get(writer).copied().unwrap_or(0);
            assert_eq!(served["positions"][writer], stored, "{served}");
        }
    }
    // The last round runs to the end, and the same feed goes to a fresh
    // server that never crashes.
    let reference = TestServer::start_with(options()).await;
    let (finished, reference_finished) = tokio::join!(
        feed_everything(&crashed, &feed),
        feed_everything(&reference, &feed)
    );
    assert_eq!((finished, reference_finished), ([true, true], [true, true]));

    let mut got = crashed.rows_in_postgres().await;
    let mut want = reference.rows_in_postgres().await;
    for rows in [&mut got, &mut want] {
        rows.joined_rooms.sort_by(|a, b| a.room_id.cmp(&b.room_id));
        rows.snapshots
            .sort_by(|a, b| (&a.room_id, &a.user_id).cmp(&(&b.room_id, &b.user_id)));
    }
    assert!(!want.joined_rooms.is_empty() && !want.snapshots.is_empty());
    assert_eq!(
        got.joined_rooms, want.joined_rooms,
        "joined rooms differ (seed {seed})"
    );
    assert_eq!(
        got.snapshots, want.snapshots,
        "snapshots differ (seed {seed})"
    );
    assert_eq!(
        got.positions, want.positions,
        "positions differ (seed {seed})"
    );
    let last: Vec<i64> = feed.iter().map(|b| last_id(b.last().unwrap())).collect();
    assert_eq!(
        got.positions,
        [
            (WriterName::parse("w1").unwrap(), last[0]),
            (WriterName::parse("w2").unwrap(), last[1])
        ]
        .into()
    );
    crashed.assert_postgres_matches_served().await;
    assert_eq!(
        crashed.get("/v1/positions").await.body,
        reference.get("/v1/positions").await.body
    );
}
