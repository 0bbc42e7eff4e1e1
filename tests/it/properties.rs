//! Property tests over random but valid event streams, produced by the
//! homeserver simulator from random client-like actions.
//!
//! Pure (many cases): the rules' emitted row changes reproduce exactly the
//! rows they hold; the rows and the persisted memory survive a round trip
//! (what a restart reloads) and applying the rest of the stream to the
//! reloaded state gives the same result; feeding a stream in one batch or in
//! many gives the same rows; invariants of the tables hold. (Re-applying
//! rows is *not* idempotent at the rules level — a re-sent outlier would bump
//! again, as a new event would — which is why the supervisor skips rows at or
//! below a writer's durable position; the socket test checks that.)
//!
//! Over the socket (few cases): after every batch the rows served equal the
//! rows in Postgres; a restart in the middle gives the same final rows as no
//! restart; feeding the same stream again changes nothing; and the final
//! rows equal the pure rules' result.

use std::collections::{BTreeMap, BTreeSet};

use crate::support::homeserver::{stripped, stripped_create, Delta, Homeserver, NewEvent};
use crate::support::server::TestServer;
use proptest::prelude::*;
use roomcache::feed::{FeedBatch, FeedRow};
use roomcache::model::{JoinedRoomRow, MembershipSnapshot, RoomId, RowChange, UserId};
use roomcache::rules::{apply_rows, RoomMemory, RoomState, RulesContext};
use serde_json::{json, Value};

const LOCAL_USERS: [&str; 3] = ["@u1:example.org", "@u2:example.org", "@u3:example.org"];
const REMOTE_USER: &str = "@remote:other.example";
const NAMES: [&str; 3] = ["alpha", "beta", ""];

/// One random action: what, where, who, and whether the rows so far are
/// fed as a batch afterwards.
type Action = (u8, u8, u8, bool);

fn user(index: u8) -> &'static str {
    match index % 4 {
        3 => REMOTE_USER,
        i => LOCAL_USERS[i as usize],
    }
}

fn local_user(index: u8) -> &'static str {
    LOCAL_USERS[(index % 3) as usize]
}

fn stripped_choice(choice: u8) -> Option<Value> {
    match choice % 5 {
        0 => None,
        1 => Some(json!([])),
        2 => Some(json!([
            stripped_create(None),
            stripped("m.room.name", json!({"name": "s"}))
        ])),
        3 => Some(json!([
            stripped_create(Some("m.space")),
            stripped("m.room.encryption", json!({"algorithm": "x"})),
            stripped("m.room.tombstone", json!({"replacement_room": "!next:x"})),
        ])),
        _ => Some(json!([stripped("m.room.name", json!({"name": 5}))])),
    }
}

/// Turns random actions into feed batches (JSON), skipping actions that
/// are not valid in the simulated situation.
fn build_stream(actions: &[Action]) -> Vec<Value> {
    let mut hs = Homeserver::default();
    let mut local_rooms: [Option<String>; 3] = [None, None, None];
    let mut remote_rooms: [Option<String>; 2] = [None, None];
    let mut batches = Vec::new();
    for &(kind, where_, who, cut) in actions {
        let kind = kind % 22;
        if (17..=19).contains(&kind) {
            let slot = (where_ % 2) as usize;
            let room = remote_rooms[slot]
                .get_or_insert_with(|| hs.remote_room())
                .clone();
            remote_room_action(&mut hs, kind, &room, who);
        } else {
            let slot = (where_ % 3) as usize;
            let Some(room) = local_rooms[slot].clone() else {
                let owner = local_user(who);
                let room_type = (who % 2 == 1).then_some("m.space");
                local_rooms[slot] = Some(hs.create_room(owner, room_type).room_id);
                if cut {
                    batches.push(hs.take());
                }
                continue;
            };
            if local_room_action(&mut hs, kind, &room, who) {
                local_rooms[slot] = None;
            }
        }
        if cut && hs.has_pending() {
            batches.push(hs.take());
        }
    }
    if hs.has_pending() {
        batches.push(hs.take());
    }
    batches
}

/// Actions 17-19 in a remote room: invites, retractions, rejections,
/// knocks and joins while the server is not in it, leaves when it is.
fn remote_room_action(hs: &mut Homeserver, kind: u8, room: &str, who: u8) {
    let local = local_user(who);
    let in_room = hs.is_server_in_room(room);
    match (kind, in_room) {
        (17, false) => {
            hs.remote_invite(room, local, stripped_choice(who / 3));
        }
        (18, false) => match who % 3 {
            0 => {
                hs.remote_retract(room, local);
            }
            1 => {
                hs.reject_remote_invite(room, local);
            }
            _ => {
                hs.remote_knock(room, local, stripped_choice(who / 3));
            }
        },
        (19, false) => {
            hs.join_remote(
                room,
                local,
                vec![
                    NewEvent::state(
                        "m.room.create",
                        "",
                        REMOTE_USER,
                        json!({"creator": REMOTE_USER, "room_version": "10"}),
                    ),
                    NewEvent::member(REMOTE_USER, REMOTE_USER, "join"),
                    NewEvent::state("m.room.name", "", REMOTE_USER, json!({"name": "r"})),
                ],
            );
        }
        (_, true) => {
            hs.leave(room, local);
        }
        _ => {}
    }
}

/// An action in a local room (kinds other than 17-19); returns whether it
/// purged the room.
fn local_room_action(hs: &mut Homeserver, kind: u8, room: &str, who: u8) -> bool {
    let in_room = hs.is_server_in_room(room);
    let target = user(who / 4);
    match kind {
        20 => {
            hs.purge(room);
            return true;
        }
        4 if !in_room && target != REMOTE_USER => {
            hs.join(room, target);
        }
        15 => hs.forget(room, local_user(who / 3)),
        _ if !in_room => {}
        0..=10 => client_action(hs, kind, room, who),
        _ => unusual_action(hs, kind, room, who),
    }
    false
}

/// Actions 0-10 in a room the server is in: what clients do.
fn client_action(hs: &mut Homeserver, kind: u8, room: &str, who: u8) {
    let actor = local_user(who);
    let target = user(who / 4);
    match kind {
        0 | 10 => {
            hs.send(room, actor, "hello");
        }
        1 => {
            hs.name(room, actor, NAMES[(who % 3) as usize]);
        }
        2 => {
            hs.encrypt(room, actor);
        }
        3 => {
            hs.tombstone(room, actor, "!successor:example.org");
        }
        4 => {
            hs.join(room, target);
        }
        5 if hs.membership(room, target).is_some() => {
            hs.leave(room, target);
        }
        6 => {
            hs.invite(room, actor, target);
        }
        7 => {
            hs.ban(room, actor, target);
        }
        8 => {
            hs.kick(room, actor, target);
        }
        9 if hs.membership(room, target).as_deref() == Some("join") => {
            hs.set_displayname(room, target, "nick");
        }
        _ => {}
    }
}

/// Actions 11-14, 16 and 21 in a room the server is in: rejected,
/// soft-failed and outlier events, redactions, state resets and
/// de-outliering.
fn unusual_action(hs: &mut Homeserver, kind: u8, room: &str, who: u8) {
    let actor = local_user(who);
    let target = user(who / 4);
    match kind {
        11 => {
            let message = NewEvent::message(actor, "odd");
            match who % 3 {
                0 => {
                    hs.persist(room, vec![message.rejected()], Delta::None);
                }
                1 => {
                    hs.persist(room, vec![message.soft_failed()], Delta::None);
                }
                _ => {
                    hs.outlier(room, message);
                }
            }
        }
        12 => {
            let name = ("m.room.name".to_owned(), String::new());
            if let Some(target) = hs.current_event(room, &name) {
                hs.redact(room, actor, &target);
            }
        }
        13 => {
            let keys = ["m.room.name", "m.room.tombstone", "m.room.encryption"];
            let key = (keys[(who % 3) as usize].to_owned(), String::new());
            if hs.current_event(room, &key).is_some() {
                hs.persist(
                    room,
                    vec![NewEvent::message(actor, "reset")],
                    Delta::Explicit {
                        to_insert: vec![],
                        to_delete: vec![key],
                    },
                );
            }
        }
        14 => {
            let key = ("m.room.member".to_owned(), target.to_owned());
            if hs.current_event(room, &key).is_some() {
                hs.persist(
                    room,
                    vec![],
                    Delta::Explicit {
                        to_insert: vec![],
                        to_delete: vec![key],
                    },
                );
            }
        }
        16 => {
            let name = NewEvent::state("m.room.name", "", actor, json!({"name": "late"}));
            let outlier = hs.outlier(room, name);
            hs.deoutlier(room, &outlier);
        }
        21 => {
            let history = hs.member_history(room, target);
            if history.len() >= 2 {
                let old = &history[(who as usize) % (history.len() - 1)];
                hs.reset_to(room, &old.id);
            }
        }
        _ => {}
    }
}

fn actions() -> impl Strategy<Value = Vec<Action>> {
    prop::collection::vec(
        (any::<u8>(), any::<u8>(), any::<u8>(), any::<bool>()),
        1..60,
    )
}

fn context() -> RulesContext {
    RulesContext {
        server_name: "example.org".into(),
        writer: "master".into(),
        held_state: std::sync::Arc::new(roomcache::rules::HeldStateTypes::new(
            ["m.room.name".into()],
            ["m.space.child".into()],
            1000,
        )),
    }
}

/// The rows a table holds, by key.
#[derive(Debug, Clone, Default, PartialEq)]
struct Tables {
    joined: BTreeMap<RoomId, JoinedRoomRow>,
    snapshots: BTreeMap<(RoomId, UserId), MembershipSnapshot>,
    memories: BTreeMap<RoomId, Value>,
}

impl Tables {
    fn apply(&mut self, changes: &[RowChange]) {
        for change in changes {
            match change {
                RowChange::UpsertJoinedRoom(row) => {
                    self.joined.insert(row.room_id.clone(), row.clone());
                }
                RowChange::DeleteJoinedRoom(room) => {
                    self.joined.remove(room);
                }
                RowChange::UpsertSnapshot(row) => {
                    self.snapshots
                        .insert((row.room_id.clone(), row.user_id.clone()), row.clone());
                }
                RowChange::DeleteSnapshot(room, user) => {
                    self.snapshots.remove(&(room.clone(), user.clone()));
                }
                RowChange::Dequeue(_) => {}
                #[allow(unreachable_patterns)]
                _ => {}
            }
        }
    }

    /// What a restart loads: the rows plus each room's memory.
    fn reload(&self) -> BTreeMap<RoomId, RoomState> {
        let mut rooms: BTreeMap<RoomId, RoomState> = BTreeMap::new();
        for (room, memory) in &self.memories {
            rooms.entry(room.clone()).or_default().memory =
                serde_json::from_value(memory.clone()).unwrap();
        }
        for (room, row) in &self.joined {
            rooms.entry(room.clone()).or_default().joined = Some(row.clone());
        }
        for ((room, user), row) in &self.snapshots {
            rooms
                .entry(room.clone())
                .or_default()
                .snapshots
                .insert(user.clone(), row.clone());
        }
        for state in rooms.values_mut() {
            state.restore_counters();
        }
        rooms
    }
}

/// The pure cache: room states, the durable position and the table rows
/// the emitted changes produce.
#[derive(Default)]
struct PureCache {
    rooms: BTreeMap<RoomId, RoomState>,
    position: i64,
    tables: Tables,
}

impl PureCache {
    fn feed(&mut self, batch: &Value) {
        let batch: FeedBatch = serde_json::from_value(batch.clone()).unwrap();
        batch.validate().unwrap();
        let mut by_room: BTreeMap<RoomId, Vec<FeedRow>> = BTreeMap::new();
        for row in batch.rows.iter().filter(|r| r.stream_id() > self.position) {
            if let Some(room) = row.room_id() {
                by_room.entry(room.clone()).or_default().push(row.clone());
            }
        }
        for (room, rows) in by_room {
            let state = self.rooms.get(&room).cloned().unwrap_or_default();
            let outcome = apply_rows(&state, &room, &rows, &context())
                .unwrap_or_else(|e| panic!("rules refused a valid stream: {e}"));
            self.tables.apply(&outcome.changes);
            if outcome.memory_changed {
                if outcome.state.memory == RoomMemory::default() {
                    self.tables.memories.remove(&room);
                } else {
                    self.tables.memories.insert(
                        room.clone(),
                        serde_json::to_value(&outcome.state.memory).unwrap(),
                    );
                }
            }
            self.rooms.insert(room, outcome.state);
        }
        self.position = self.position.max(batch.last_stream_id().unwrap_or(0));
    }

    /// The rows the room states hold.
    fn held(&self) -> (Vec<JoinedRoomRow>, Vec<MembershipSnapshot>) {
        let joined = self
            .rooms
            .values()
            .filter_map(|s| s.joined.clone())
            .collect();
        let snapshots = self
            .rooms
            .values()
            .flat_map(|s| s.snapshots.values().cloned())
            .collect();
        (joined, snapshots)
    }

    fn table_rows(&self) -> (Vec<JoinedRoomRow>, Vec<MembershipSnapshot>) {
        (
            self.tables.joined.values().cloned().collect(),
            self.tables.snapshots.values().cloned().collect(),
        )
    }

    fn check_invariants(&self) {
        let (joined, snapshots) = self.held();
        for row in &joined {
            if let Some(bump) = row.bump_stamp {
                assert!(bump > 0 && bump <= row.event_stream_ordering, "{row:?}");
            }
        }
        let mut orderings = BTreeSet::new();
        for snapshot in &snapshots {
            assert!(
                orderings.insert(snapshot.event_stream_ordering),
                "two snapshots at one stream ordering: {snapshot:?}"
            );
            assert_eq!(snapshot.user_id.server_name(), "example.org");
            if !snapshot.has_known_state {
                assert_eq!(
                    (
                        &snapshot.metadata.room_type,
                        &snapshot.metadata.room_name,
                        snapshot.metadata.is_encrypted
                    ),
                    (&None, &None, false),
                    "{snapshot:?}"
                );
            }
        }
        let mut orderings = BTreeSet::new();
        for row in &joined {
            assert!(orderings.insert(row.event_stream_ordering), "{row:?}");
        }
    }
}

fn sorted(
    (mut joined, mut snapshots): (Vec<JoinedRoomRow>, Vec<MembershipSnapshot>),
) -> (Vec<JoinedRoomRow>, Vec<MembershipSnapshot>) {
    joined.sort_by(|a, b| a.room_id.cmp(&b.room_id));
    snapshots.sort_by(|a, b| (&a.room_id, &a.user_id).cmp(&(&b.room_id, &b.user_id)));
    (joined, snapshots)
}

fn pure_run(batches: &[Value]) -> PureCache {
    let mut cache = PureCache::default();
    for batch in batches {
        cache.feed(batch);
    }
    cache
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// The changes the rules emit reproduce the rows they hold, after every
    /// batch; and the invariants of the tables hold.
    #[test]
    fn emitted_changes_reproduce_held_rows(actions in actions()) {
        let batches = build_stream(&actions);
        let mut cache = PureCache::default();
        for batch in &batches {
            cache.feed(batch);
            prop_assert_eq!(sorted(cache.held()), sorted(cache.table_rows()));
            cache.check_invariants();
        }
    }

    /// Reloading the persisted rows and memory in the middle of a stream
    /// (a restart) and applying the rest gives the same rows as no restart.
    #[test]
    fn restart_in_the_middle_changes_nothing(actions in actions(), cut in any::<prop::sample::Index>()) {
        let batches = build_stream(&actions);
        let uninterrupted = pure_run(&batches);
        let cut = cut.index(batches.len() + 1);
        let first = pure_run(&batches[..cut]);
        let mut restarted = PureCache {
            rooms: first.tables.reload(),
            position: first.position,
            tables: first.tables.clone(),
        };
        for batch in &batches[cut..] {
            restarted.feed(batch);
        }
        prop_assert_eq!(sorted(restarted.held()), sorted(uninterrupted.held()));
        prop_assert_eq!(&restarted.tables, &uninterrupted.tables);
    }

    /// The same stream fed as one batch or batch by batch gives the same rows.
    #[test]
    fn batching_does_not_matter(actions in actions()) {
        let batches = build_stream(&actions);
        let separately = pure_run(&batches);
        let mut rows = Vec::new();
        for batch in &batches {
            rows.extend(batch["rows"].as_array().unwrap().iter().cloned());
        }
        let together = pure_run(&[json!({"writer": "master", "rows": rows})]);
        prop_assert_eq!(sorted(together.held()), sorted(separately.held()));
    }
}

async fn rows_of(server: &TestServer) -> (Vec<JoinedRoomRow>, Vec<MembershipSnapshot>) {
    let rows = server.rows_in_postgres().await;
    sorted((rows.joined_rooms, rows.snapshots))
}

async fn socket_case(batches: Vec<Value>, cut: usize) {
    let mut plain = TestServer::start().await;
    let mut restarted = TestServer::start().await;
    for (index, batch) in batches.iter().enumerate() {
        plain.feed(batch).await;
        plain.assert_postgres_matches_served().await;
        if index == cut {
            restarted.restart().await;
        }
        restarted.feed(batch).await;
    }
    restarted.assert_postgres_matches_served().await;
    let final_rows = rows_of(&plain).await;
    assert_eq!(
        rows_of(&restarted).await,
        final_rows,
        "restart changed the rows"
    );
    assert_eq!(
        final_rows,
        sorted(pure_run(&batches).held()),
        "server differs from the rules"
    );

    // The same stream again: every row is at or below the durable position.
    for batch in &batches {
        let answer = plain.feed(batch).await;
        assert_eq!(answer["applied_rows"], 0);
    }
    assert_eq!(
        rows_of(&plain).await,
        final_rows,
        "a replay changed the rows"
    );
    plain.assert_postgres_matches_served().await;
    plain.stop().await;
    restarted.stop().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// Over the socket: served = Postgres after every batch; a restart in
    /// the middle gives the same rows; a replay changes nothing; the rows
    /// are the pure rules' rows.
    #[test]
    fn socket_streams_are_consistent(actions in actions(), cut in any::<prop::sample::Index>()) {
        let batches = build_stream(&actions);
        let cut = cut.index(batches.len().max(1));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(socket_case(batches, cut));
    }
}
