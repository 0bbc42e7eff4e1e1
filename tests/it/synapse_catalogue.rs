//! The catalogue of Synapse's sliding-sync table tests (spec §7, T28–T41)
//! where they apply to roomcache in source mode: the scenario is written
//! into an empty Synapse database the way Synapse persists it
//! (`support::fake_synapse`), then roomcache imports it (Synapse's
//! background updates, T28–T34), or is restarted after changes made while
//! it was down (the start-up catch-up, T36 and T39), or follows it live.
//! Expected rows are Synapse's live values (what the import reproduces),
//! all columns. T35, T37, T38 and T40 tamper with the tables behind an
//! older Synapse's back and do not apply (see docs/synapse.md).

use crate::support::fake_synapse::{stripped, user, FakeSynapse, HS};
use crate::support::rows::{joined, snapshot, SnapshotRow};
use crate::support::server::TestServer;
use crate::support::synapse::{
    boolean, source_options, text, wait_for_position, Field, SynapseDatabase, Tables,
};
use serde_json::json;

pub(crate) struct Scenario {
    pub(crate) synapse: SynapseDatabase,
    pub(crate) fake: FakeSynapse,
}

impl Scenario {
    pub(crate) async fn new() -> Scenario {
        let synapse = SynapseDatabase::load("small.sql.gz").await;
        let fake = FakeSynapse::new(&synapse).await;
        Scenario { synapse, fake }
    }

    /// Starts roomcache on the scenario (importing on first start) and waits
    /// until it has everything.
    pub(crate) async fn start(&self, import: bool) -> TestServer {
        let options = source_options(&self.synapse)
            .import_on_start(import)
            .server_name(HS)
            .build();
        let server = TestServer::start_with(options).await;
        wait_for_position(&server, self.fake.next_position() - 1).await;
        server
    }

    pub(crate) async fn so(&self, event_id: &str) -> i64 {
        self.fake.stream_ordering(event_id).await
    }
}

pub(crate) async fn tables(server: &TestServer) -> Tables {
    Tables::from_rows(&server.rows_in_postgres().await)
}

/// The state columns of an expected snapshot, applied to its row.
type State = fn(SnapshotRow) -> SnapshotRow;

fn snapshot_of<'a>(tables: &'a Tables, room: &str, user_id: &str) -> Option<&'a Vec<Field>> {
    tables.snapshots.get(&(room.to_owned(), user_id.to_owned()))
}

pub(crate) const ROOM_NAME: &str = "my super duper room";
const SPACE_NAME: &str = "my super duper space";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t28_import_builds_the_joined_rows() {
    let mut s = Scenario::new().await;
    let u1 = user(1);
    let a = s.fake.create_room(&u1, None).await;
    let b = s.fake.create_room(&u1, None).await;
    s.fake.name(&b, &u1, ROOM_NAME).await;
    let e = s.fake.encrypt(&b, &u1).await;
    let space = s.fake.create_room(&u1, Some("m.space")).await;
    let ns = s.fake.name(&space, &u1, SPACE_NAME).await;
    let mut server = s.start(true).await;
    let t = tables(&server).await;
    let create = |room: &str| {
        let room = room.to_owned();
        let client = &s.fake.client;
        async move {
            client
                .query_one(
                    "SELECT stream_ordering FROM events WHERE room_id = $1 AND type = 'm.room.create'",
                    &[&room],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    let hv_a: i64 = s
        .fake
        .client
        .query_one(
            "SELECT stream_ordering FROM events WHERE room_id = $1 AND type = 'm.room.history_visibility'",
            &[&a],
        )
        .await
        .unwrap()
        .get(0);
    let expected = [
        (
            a.clone(),
            joined(&a).stream(hv_a).bump(create(&a).await).csv(),
        ),
        (
            b.clone(),
            joined(&b)
                .stream(s.so(&e).await)
                .bump(create(&b).await)
                .name(ROOM_NAME)
                .encrypted()
                .csv(),
        ),
        (
            space.clone(),
            joined(&space)
                .stream(s.so(&ns).await)
                .bump(create(&space).await)
                .room_type("m.space")
                .name(SPACE_NAME)
                .csv(),
        ),
    ];
    assert_eq!(t.joined, expected.into_iter().collect());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t29_import_builds_join_snapshots_with_the_state_at_the_join() {
    let mut s = Scenario::new().await;
    let u1 = user(1);
    let a = s.fake.create_room(&u1, None).await;
    let b = s.fake.create_room(&u1, None).await;
    s.fake.name(&b, &u1, ROOM_NAME).await;
    s.fake.encrypt(&b, &u1).await;
    s.fake.tombstone(&b, &u1, "another_room").await;
    let space = s.fake.create_room(&u1, Some("m.space")).await;
    s.fake.name(&space, &u1, SPACE_NAME).await;
    let mut server = s.start(true).await;
    let t = tables(&server).await;
    assert_eq!(t.snapshots.len(), 3);
    // Live values: the state at the join (the creator joined before the
    // name, encryption and tombstone), which Synapse's background update
    // replaces with current state (fixture README, cause 1).
    for (room, room_type) in [(&a, None), (&b, None), (&space, Some("m.space"))] {
        let join: String = s
            .fake
            .client
            .query_one(
                "SELECT event_id FROM room_memberships WHERE room_id = $1 AND user_id = $2",
                &[room, &u1],
            )
            .await
            .unwrap()
            .get(0);
        let mut expected = snapshot(room, &u1).event_at(&join, s.so(&join).await);
        if let Some(room_type) = room_type {
            expected = expected.room_type(room_type);
        }
        assert_eq!(snapshot_of(&t, room, &u1), Some(&expected.csv()));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t30_import_builds_local_invites_after_the_server_left() {
    let mut s = Scenario::new().await;
    let (u1, u2) = (user(1), user(2));
    let a = s.fake.create_room(&u2, None).await;
    let b = s.fake.create_room(&u2, None).await;
    s.fake.name(&b, &u2, ROOM_NAME).await;
    s.fake.encrypt(&b, &u2).await;
    s.fake.tombstone(&b, &u2, "another_room").await;
    let space = s.fake.create_room(&u2, Some("m.space")).await;
    s.fake.name(&space, &u2, SPACE_NAME).await;
    let ia = s.fake.member(&a, &u2, &u1, "invite").await;
    let ib = s.fake.member(&b, &u2, &u1, "invite").await;
    let is = s.fake.member(&space, &u2, &u1, "invite").await;
    for room in [&a, &b, &space] {
        s.fake.member(room, &u2, &u2, "leave").await;
    }
    let mut server = s.start(true).await;
    let t = tables(&server).await;
    assert!(t.joined.is_empty(), "{:?}", t.joined);
    assert_eq!(t.snapshots.len(), 6);
    assert_eq!(
        snapshot_of(&t, &a, &u1),
        Some(
            &snapshot(&a, &u1)
                .by(&u2)
                .event_at(&ia, s.so(&ia).await)
                .membership("invite")
                .csv()
        )
    );
    // Live sees the tombstone (Synapse's own stripped state would not carry it).
    assert_eq!(
        snapshot_of(&t, &b, &u1),
        Some(
            &snapshot(&b, &u1)
                .by(&u2)
                .event_at(&ib, s.so(&ib).await)
                .membership("invite")
                .name(ROOM_NAME)
                .encrypted()
                .tombstone("another_room")
                .csv()
        )
    );
    assert_eq!(
        snapshot_of(&t, &space, &u1),
        Some(
            &snapshot(&space, &u1)
                .by(&u2)
                .event_at(&is, s.so(&is).await)
                .membership("invite")
                .room_type("m.space")
                .name(SPACE_NAME)
                .csv()
        )
    );
    // U2's leave in B: the state at the leave.
    let leave_b = snapshot_of(&t, &b, &u2).unwrap();
    assert_eq!(leave_b[4], text("leave"));
    assert_eq!(
        &leave_b[8..],
        &[
            boolean(true),
            None,
            text(ROOM_NAME),
            boolean(true),
            text("another_room")
        ]
    );
    server.stop().await;
}

async fn four_remote_invites(s: &mut Scenario, u1: &str) -> Vec<(String, String)> {
    vec![
        s.fake.remote_invite(u1, None).await,
        s.fake
            .remote_invite(u1, Some(vec![stripped("m.room.create", json!({"creator": "@inviter:remote_server", "room_version": "10"}))]))
            .await,
        s.fake
            .remote_invite(
                u1,
                Some(vec![
                    stripped("m.room.create", json!({"creator": "@inviter:remote_server", "room_version": "10"})),
                    stripped("m.room.name", json!({"name": ROOM_NAME})),
                    stripped("m.room.encryption", json!({"algorithm": "m.megolm.v1.aes-sha2"})),
                ]),
            )
            .await,
        s.fake
            .remote_invite(
                u1,
                Some(vec![
                    stripped("m.room.create", json!({"creator": "@inviter:remote_server", "room_version": "10", "type": "m.space"})),
                    stripped("m.room.name", json!({"name": SPACE_NAME})),
                ]),
            )
            .await,
    ]
}

fn remote_states() -> [State; 4] {
    [
        SnapshotRow::unknown_state,
        |row| row,
        |row| row.name(ROOM_NAME).encrypted(),
        |row| row.room_type("m.space").name(SPACE_NAME),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t31_import_builds_remote_invites_from_stripped_state() {
    let mut s = Scenario::new().await;
    let u1 = user(1);
    let invites = four_remote_invites(&mut s, &u1).await;
    let mut server = s.start(true).await;
    let t = tables(&server).await;
    assert_eq!(t.snapshots.len(), 4);
    for ((room, event), state) in invites.iter().zip(remote_states()) {
        assert_eq!(
            snapshot_of(&t, room, &u1),
            Some(
                &state(
                    snapshot(room, &u1)
                        .by("@inviter:remote_server")
                        .event_at(event, s.so(event).await)
                        .membership("invite")
                )
                .csv()
            ),
            "{room}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t32_import_builds_rejections_and_retractions_of_remote_invites() {
    let mut s = Scenario::new().await;
    let u1 = user(1);
    let invites = four_remote_invites(&mut s, &u1).await;
    let inviter = "@inviter:remote_server";
    let mut leaves = Vec::new();
    for (index, (room, _)) in invites.iter().enumerate() {
        let sender = if index % 2 == 0 { u1.as_str() } else { inviter };
        leaves.push((sender, s.fake.out_of_band_leave(room, sender, &u1).await));
    }
    let mut server = s.start(true).await;
    let t = tables(&server).await;
    for (((room, _), (sender, leave)), state) in invites.iter().zip(&leaves).zip(remote_states()) {
        assert_eq!(
            snapshot_of(&t, room, &u1),
            Some(
                &state(
                    snapshot(room, &u1)
                        .by(sender)
                        .event_at(leave, s.so(leave).await)
                        .membership("leave")
                )
                .csv()
            ),
            "{room}"
        );
    }
    server.stop().await;
}

async fn t33(membership: &str) {
    let mut s = Scenario::new().await;
    let (u1, u2) = (user(1), user(2));
    let a = s.fake.create_room(&u2, None).await;
    let b = s.fake.create_room(&u2, None).await;
    s.fake.name(&b, &u2, ROOM_NAME).await;
    s.fake.encrypt(&b, &u2).await;
    s.fake.tombstone(&b, &u2, "another_room").await;
    let space = s.fake.create_room(&u2, Some("m.space")).await;
    s.fake.name(&space, &u2, SPACE_NAME).await;
    for room in [&a, &b, &space] {
        s.fake.member(room, &u1, &u1, "join").await;
    }
    let mut removals = Vec::new();
    for room in [&a, &b, &space] {
        removals.push(s.fake.member(room, &u2, &u1, membership).await);
    }
    for room in [&a, &b, &space] {
        s.fake.member(room, &u2, &u2, "leave").await;
    }
    let mut server = s.start(true).await;
    let t = tables(&server).await;
    let states: [State; 3] = [
        |row| row,
        |row| row.name(ROOM_NAME).encrypted().tombstone("another_room"),
        |row| row.room_type("m.space").name(SPACE_NAME),
    ];
    for ((room, event), state) in [&a, &b, &space].into_iter().zip(&removals).zip(states) {
        assert_eq!(
            snapshot_of(&t, room, &u1),
            Some(
                &state(
                    snapshot(room, &u1)
                        .by(&u2)
                        .event_at(event, s.so(event).await)
                        .membership(membership)
                )
                .csv()
            )
        );
        assert!(snapshot_of(&t, room, &u2).is_some());
    }
    assert_eq!(t.snapshots.len(), 6);
    assert!(t.joined.is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t33_import_builds_kicks_with_the_state_at_the_kick() {
    t33("leave").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t33_import_builds_bans_with_the_state_at_the_ban() {
    t33("ban").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t34_import_copies_forgotten_from_room_memberships() {
    let mut s = Scenario::new().await;
    let (u1, u2) = (user(1), user(2));
    let r = s.fake.create_room(&u2, None).await;
    s.fake.member(&r, &u1, &u1, "join").await;
    let l1 = s.fake.member(&r, &u1, &u1, "leave").await;
    s.fake.forget(&r, &u1).await;
    let mut server = s.start(true).await;
    let t = tables(&server).await;
    assert_eq!(
        snapshot_of(&t, &r, &u1),
        Some(
            &snapshot(&r, &u1)
                .event_at(&l1, s.so(&l1).await)
                .membership("leave")
                .forgotten()
                .csv()
        )
    );
    assert_eq!(snapshot_of(&t, &r, &u2).unwrap()[5], text("0"));
    assert_eq!(t.snapshots.len(), 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t34_following_applies_a_forget_at_once() {
    let mut s = Scenario::new().await;
    let (u1, u2) = (user(1), user(2));
    let r = s.fake.create_room(&u2, None).await;
    s.fake.member(&r, &u1, &u1, "join").await;
    let l1 = s.fake.member(&r, &u1, &u1, "leave").await;
    let mut server = s.start(true).await;
    assert_eq!(
        snapshot_of(&tables(&server).await, &r, &u1).unwrap()[5],
        text("0")
    );
    s.fake.forget(&r, &u1).await;
    // A forget has no events-stream position, but its cache invalidation
    // (caches stream) makes the follower apply it without any new event.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let t = loop {
        let t = tables(&server).await;
        if snapshot_of(&t, &r, &u1).is_some_and(|row| row[5] == text("1")) {
            break t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the forget was not applied"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(
        snapshot_of(&t, &r, &u1),
        Some(
            &snapshot(&r, &u1)
                .event_at(&l1, s.so(&l1).await)
                .membership("leave")
                .forgotten()
                .csv()
        )
    );
    // The next event changes nothing more (the forget is not applied twice).
    s.fake.message(&r, &u2).await;
    wait_for_position(&server, s.fake.next_position() - 1).await;
    assert_eq!(
        snapshot_of(&tables(&server).await, &r, &u1),
        snapshot_of(&t, &r, &u1)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t36_a_state_change_while_down_is_recomputed_at_start() {
    let mut s = Scenario::new().await;
    let u1 = user(1);
    let r = s.fake.create_room(&u1, None).await;
    let mut server = s.start(true).await;
    server.stop().await;
    let name = s.fake.name(&r, &u1, ROOM_NAME).await;
    server.spawn().await;
    let status = wait_for_position(&server, s.fake.next_position() - 1).await;
    assert_eq!(status["source"]["invalidated_at_start"], 1);
    let t = tables(&server).await;
    let create: i64 = s
        .fake
        .client
        .query_one(
            "SELECT stream_ordering FROM events WHERE room_id = $1 AND type = 'm.room.create'",
            &[&r],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        t.joined.get(&r),
        Some(
            &joined(&r)
                .stream(s.so(&name).await)
                .bump(create)
                .name(ROOM_NAME)
                .csv()
        )
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t39_a_membership_change_while_down_is_recomputed_at_start() {
    let mut s = Scenario::new().await;
    let (u1, u2) = (user(1), user(2));
    let r = s.fake.create_room(&u1, None).await;
    s.fake.member(&r, &u2, &u2, "join").await;
    let mut server = s.start(true).await;
    let before = tables(&server).await;
    server.stop().await;
    let leave = s.fake.member(&r, &u2, &u2, "leave").await;
    server.spawn().await;
    let status = wait_for_position(&server, s.fake.next_position() - 1).await;
    assert_eq!(status["source"]["invalidated_at_start"], 1);
    let t = tables(&server).await;
    assert_eq!(snapshot_of(&t, &r, &u1), snapshot_of(&before, &r, &u1));
    assert_eq!(
        snapshot_of(&t, &r, &u2),
        Some(
            &snapshot(&r, &u2)
                .event_at(&leave, s.so(&leave).await)
                .membership("leave")
                .csv()
        )
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t41_a_rejoin_after_a_forget_is_not_forgotten() {
    let mut s = Scenario::new().await;
    let (u1, u2) = (user(1), user(2));
    let r = s.fake.create_room(&u2, None).await;
    s.fake.member(&r, &u1, &u1, "join").await;
    s.fake.member(&r, &u1, &u1, "leave").await;
    s.fake.forget(&r, &u1).await;
    let rejoin = s.fake.member(&r, &u1, &u1, "join").await;
    for import in [true, false] {
        let mut server = s.start(import).await;
        let t = tables(&server).await;
        assert_eq!(
            snapshot_of(&t, &r, &u1),
            Some(
                &snapshot(&r, &u1)
                    .event_at(&rejoin, s.so(&rejoin).await)
                    .csv()
            ),
            "import: {import}"
        );
        server.stop().await;
    }
}
