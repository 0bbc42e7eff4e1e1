//! Throughput of the update rules alone (no actors, no I/O): feed rows of a
//! realistic mix applied to room states with `rules::apply_rows`, the way a
//! room actor does (one call per room per batch, each call cloning the
//! room's state and returning the changed rows).
//!
//! Run: `cargo bench --bench rules`. Figures go in `docs/benchmarks.md`.

// The simulator of the integration tests; the bench uses part of it.
#[allow(unused_imports, dead_code)]
#[path = "../tests/it/support/homeserver/mod.rs"]
mod homeserver;

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use homeserver::{Homeserver, NewEvent};
use roomcache::feed::{FeedBatch, FeedRow};
use roomcache::model::RoomId;
use roomcache::rules::{apply_rows, RoomState, RulesContext};
use serde_json::{json, Value};

const ROOMS: usize = 1_000;
const MEMBERS_PER_ROOM: usize = 5;
const EVENTS: usize = 20_000;

fn context() -> RulesContext {
    RulesContext {
        server_name: "example.org".into(),
        writer: "master".into(),
        held_state: std::sync::Arc::new(roomcache::rules::HeldStateTypes::element_x(1000)),
    }
}

/// A batch's rows, by room.
fn rows_by_room(batch: &Value) -> Vec<(RoomId, Vec<FeedRow>)> {
    let batch: FeedBatch = serde_json::from_value(batch.clone()).expect("batch");
    let mut by_room: BTreeMap<RoomId, Vec<FeedRow>> = BTreeMap::new();
    for row in batch.rows {
        if let Some(room) = row.room_id() {
            by_room.entry(room.clone()).or_default().push(row);
        }
    }
    by_room.into_iter().collect()
}

/// A small deterministic generator (no randomness crate needed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

struct Workload {
    initial: BTreeMap<RoomId, RoomState>,
    /// One entry per persisted event: the rows of its batch for its room.
    batches: Vec<(RoomId, Vec<FeedRow>)>,
}

/// 1,000 rooms with 5 local members each (plus a name and encryption in
/// half of them), then 20,000 events: 80% messages, 5% reactions, 5%
/// display-name changes, 4% joins, 3% leaves, 2% renames, 1% invites.
fn workload() -> Workload {
    let mut hs = Homeserver::default();
    let mut initial: BTreeMap<RoomId, RoomState> = BTreeMap::new();
    let mut rooms = Vec::new();
    let users: Vec<String> = (0..200).map(|i| hs.user(&format!("user{i}"))).collect();
    for index in 0..ROOMS {
        let owner = &users[index % users.len()];
        let room = hs.create_room(owner, None).room_id;
        for member in 1..MEMBERS_PER_ROOM {
            hs.join(&room, &users[(index * 7 + member * 13) % users.len()]);
        }
        if index % 2 == 0 {
            hs.name(&room, owner, "a room");
            hs.encrypt(&room, owner);
        }
        rooms.push((room, owner.clone()));
    }
    for (room, rows) in rows_by_room(&hs.take()) {
        let state = initial.remove(&room).unwrap_or_default();
        let outcome = apply_rows(&state, &room, &rows, &context()).expect("setup");
        initial.insert(room, outcome.state);
    }
    let mut random = Lcg(42);
    let mut batches = Vec::with_capacity(EVENTS);
    for _ in 0..EVENTS {
        let (room, owner) = &rooms[(random.next() % ROOMS as u64) as usize];
        let user = &users[(random.next() % users.len() as u64) as usize];
        match random.next() % 100 {
            0..80 => {
                hs.send(room, owner, "hello");
            }
            80..85 => {
                let mut reaction = NewEvent::message(owner, "");
                reaction.event_type = "m.reaction".into();
                reaction.content = json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": "$x", "key": "+"}});
                hs.persist(room, vec![reaction], homeserver::Delta::Natural);
            }
            85..90 => {
                hs.set_displayname(room, owner, "nick");
            }
            90..94 => {
                hs.join(room, user);
            }
            94..97 => {
                hs.leave(room, user);
            }
            97..99 => {
                hs.name(room, owner, "renamed");
            }
            _ => {
                hs.invite(room, owner, user);
            }
        }
        batches.extend(rows_by_room(&hs.take()));
    }
    Workload { initial, batches }
}

fn apply_all(workload: &Workload, mut states: BTreeMap<RoomId, RoomState>) -> usize {
    let context = context();
    let mut changes = 0;
    let empty = RoomState::default();
    for (room, rows) in &workload.batches {
        let outcome = apply_rows(states.get(room).unwrap_or(&empty), room, rows, &context)
            .expect("valid stream");
        changes += outcome.changes.len();
        states.insert(room.clone(), outcome.state);
    }
    black_box(changes)
}

fn rules(criterion: &mut Criterion) {
    let workload = workload();
    let mut group = criterion.benchmark_group("rules");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(20);
    group.bench_function("mixed_events", |bench| {
        bench.iter_batched(
            || workload.initial.clone(),
            |states| apply_all(&workload, states),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, rules);
criterion_main!(benches);
