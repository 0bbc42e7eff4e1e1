//! The live-write scenarios of the specification (`sliding-sync-tables.md`
//! §7.1 T01–T24 and §7.5), each driven through the feed over the socket by
//! the homeserver simulator, asserting the exact rows — every column, and
//! the exact key sets — in Postgres and in what the API serves.
//!
//! T25–T27 concern Synapse's sliding-sync *connection* tables, which
//! roomcache does not have (see `docs/differences-from-synapse.md`).
#![allow(clippy::too_many_arguments)]

use crate::support::homeserver::{
    stripped, stripped_create, Delta, Ev, Homeserver, NewEvent, INVITER,
};
use crate::support::server::{ServerOptions, TestServer};
use roomcache::model::{
    EventId, JoinedRoomRow, Membership, MembershipSnapshot, RoomId, RoomMetadata, UserId,
};
use serde_json::{json, Value};

const U1: &str = "@u1:example.org";
const U2: &str = "@u2:example.org";
const U3: &str = "@u3:example.org";

const NAME: &str = "my super duper room";
const SPACE_NAME: &str = "my super duper space";

fn key(event_type: &str, state_key: &str) -> (String, String) {
    (event_type.into(), state_key.into())
}

/// An expected joined row: `J(R) = (esr, bump_stamp, room_type, room_name, is_encrypted, tombstone)`.
fn j(
    room: &str,
    event_stream_ordering: i64,
    bump_stamp: Option<i64>,
    room_type: Option<&str>,
    room_name: Option<&str>,
    is_encrypted: bool,
    tombstone: Option<&str>,
) -> JoinedRoomRow {
    JoinedRoomRow {
        room_id: RoomId::parse(room).unwrap(),
        event_stream_ordering,
        bump_stamp,
        metadata: metadata(room_type, room_name, is_encrypted, tombstone),
    }
}

fn metadata(
    room_type: Option<&str>,
    room_name: Option<&str>,
    is_encrypted: bool,
    tombstone: Option<&str>,
) -> RoomMetadata {
    RoomMetadata {
        room_type: room_type.map(str::to_owned),
        room_name: room_name.map(str::to_owned),
        is_encrypted,
        tombstone_successor_room_id: tombstone.map(str::to_owned),
    }
}

/// An expected snapshot: `S(R,U) = (sender, event, membership, SO(event),
/// has_known_state, room_type, room_name, is_encrypted, tombstone)`, not
/// forgotten, written by writer `master`.
fn s(
    room: &str,
    user: &str,
    sender: &str,
    event: &Ev,
    membership: &str,
    has_known_state: bool,
    room_type: Option<&str>,
    room_name: Option<&str>,
    is_encrypted: bool,
    tombstone: Option<&str>,
) -> MembershipSnapshot {
    MembershipSnapshot {
        room_id: RoomId::parse(room).unwrap(),
        user_id: UserId::parse(user).unwrap(),
        sender: UserId::parse(sender).unwrap(),
        membership_event_id: EventId::parse(&event.id).unwrap(),
        membership: Membership::parse(membership).unwrap(),
        forgotten: false,
        event_stream_ordering: event.so,
        event_instance_name: "master".into(),
        has_known_state,
        metadata: metadata(room_type, room_name, is_encrypted, tombstone),
    }
}

fn forgotten(mut snapshot: MembershipSnapshot) -> MembershipSnapshot {
    snapshot.forgotten = true;
    snapshot
}

/// Feeds every row the simulator produced since the last call.
async fn feed(server: &TestServer, hs: &mut Homeserver) -> Value {
    server.feed(&hs.take()).await
}

/// Asserts the exact contents of both tables — key sets and every column —
/// in Postgres, and that the API serves exactly what Postgres holds.
async fn assert_tables(
    server: &TestServer,
    mut joined: Vec<JoinedRoomRow>,
    mut snapshots: Vec<MembershipSnapshot>,
) {
    let mut rows = server.rows_in_postgres().await;
    rows.joined_rooms.sort_by(|a, b| a.room_id.cmp(&b.room_id));
    rows.snapshots
        .sort_by(|a, b| (&a.room_id, &a.user_id).cmp(&(&b.room_id, &b.user_id)));
    joined.sort_by(|a, b| a.room_id.cmp(&b.room_id));
    snapshots.sort_by(|a, b| (&a.room_id, &a.user_id).cmp(&(&b.room_id, &b.user_id)));
    assert_eq!(rows.joined_rooms, joined, "joined rows in Postgres");
    assert_eq!(rows.snapshots, snapshots, "snapshots in Postgres");
    for row in &joined {
        assert_eq!(
            server
                .served_joined_room(row.room_id.as_str())
                .await
                .as_ref(),
            Some(row),
            "served joined row"
        );
    }
    server.assert_postgres_matches_served().await;
}

/// Changes Postgres behind the server's back (imitating rows an older
/// homeserver left missing), then restarts the server so it loads them.
async fn tamper(server: &mut TestServer, sql: &str) {
    server.stop().await;
    let store = server.store().await;
    store
        .client()
        .await
        .unwrap()
        .batch_execute(sql)
        .await
        .unwrap();
    server.spawn().await;
}

// ---------------------------------------------------------------------------
// §7.1 T01–T24
// ---------------------------------------------------------------------------

#[tokio::test]
async fn t01_joined_room_with_no_info() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let r = hs.create_room(U1, None);
    feed(&server, &mut hs).await;
    let room = r.room_id.as_str();
    assert_tables(
        &server,
        vec![j(
            room,
            r.history_visibility.so,
            Some(r.create.so),
            None,
            None,
            false,
            None,
        )],
        vec![s(
            room, U1, U1, &r.join, "join", true, None, None, false, None,
        )],
    )
    .await;
}

#[tokio::test]
async fn t02_joined_room_with_info() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let r = hs.create_room(U2, None);
    let room = r.room_id.as_str();
    hs.name(room, U2, NAME);
    hs.encrypt(room, U2);
    hs.tombstone(room, U2, "another_room");
    let j1 = hs.join(room, U1);
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![j(
            room,
            j1.so,
            Some(r.create.so),
            None,
            Some(NAME),
            true,
            Some("another_room"),
        )],
        vec![
            s(
                room,
                U1,
                U1,
                &j1,
                "join",
                true,
                None,
                Some(NAME),
                true,
                Some("another_room"),
            ),
            s(room, U2, U2, &r.join, "join", true, None, None, false, None),
        ],
    )
    .await;
}

#[tokio::test]
async fn t03_joined_space_room_with_info() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let r = hs.create_room(U2, Some("m.space"));
    let room = r.room_id.as_str();
    hs.name(room, U2, SPACE_NAME);
    let j1 = hs.join(room, U1);
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![j(
            room,
            j1.so,
            Some(r.create.so),
            Some("m.space"),
            Some(SPACE_NAME),
            false,
            None,
        )],
        vec![
            s(
                room,
                U1,
                U1,
                &j1,
                "join",
                true,
                Some("m.space"),
                Some(SPACE_NAME),
                false,
                None,
            ),
            s(
                room,
                U2,
                U2,
                &r.join,
                "join",
                true,
                Some("m.space"),
                None,
                false,
                None,
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn t04_joined_room_with_state_updated() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let r = hs.create_room(U2, None);
    let room = r.room_id.as_str();
    hs.name(room, U2, NAME);
    let j1 = hs.join(room, U1);
    feed(&server, &mut hs).await;
    let snapshots = vec![
        s(
            room,
            U1,
            U1,
            &j1,
            "join",
            true,
            None,
            Some(NAME),
            false,
            None,
        ),
        s(room, U2, U2, &r.join, "join", true, None, None, false, None),
    ];
    assert_tables(
        &server,
        vec![j(
            room,
            j1.so,
            Some(r.create.so),
            None,
            Some(NAME),
            false,
            None,
        )],
        snapshots.clone(),
    )
    .await;

    hs.name(room, U2, "my super duper room was renamed");
    let e = hs.encrypt(room, U2);
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![j(
            room,
            e.so,
            Some(r.create.so),
            None,
            Some("my super duper room was renamed"),
            true,
            None,
        )],
        snapshots,
    )
    .await;
}

#[tokio::test]
async fn t05_joined_room_is_bumped() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let r = hs.create_room(U2, None);
    let room = r.room_id.as_str();
    hs.name(room, U2, NAME);
    let j1 = hs.join(room, U1);
    feed(&server, &mut hs).await;
    let snapshots = vec![
        s(
            room,
            U1,
            U1,
            &j1,
            "join",
            true,
            None,
            Some(NAME),
            false,
            None,
        ),
        s(room, U2, U2, &r.join, "join", true, None, None, false, None),
    ];
    assert_tables(
        &server,
        vec![j(
            room,
            j1.so,
            Some(r.create.so),
            None,
            Some(NAME),
            false,
            None,
        )],
        snapshots.clone(),
    )
    .await;

    let m = hs.send(room, U1, "hello");
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![j(room, m.so, Some(m.so), None, Some(NAME), false, None)],
        snapshots,
    )
    .await;
}

#[tokio::test]
async fn t06_joined_room_bump_stamp_backfill() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let room = "!foo:other";
    let creator = "@user:other";
    hs.backfill(
        room,
        vec![
            NewEvent::state(
                "m.room.create",
                "",
                creator,
                json!({"creator": creator, "room_version": "10"}),
            ),
            NewEvent::member(creator, creator, "join"),
            NewEvent::state("m.room.name", "", creator, json!({ "name": NAME })),
            NewEvent::message(creator, "old message"),
            NewEvent::member(U1, creator, "invite"),
        ],
    );
    feed(&server, &mut hs).await;
    assert_tables(&server, vec![], vec![]).await;

    let ju1 = hs.join(room, U1);
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![j(room, ju1.so, None, None, Some(NAME), false, None)],
        vec![s(
            room,
            U1,
            U1,
            &ju1,
            "join",
            true,
            None,
            Some(NAME),
            false,
            None,
        )],
    )
    .await;
}

/// T07: outliers then de-outliered copies of a join and a name event.
async fn outlier_and_deoutlier(delete_rows_first: bool) {
    let mut server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let r = hs.create_room(U2, None);
    let room = r.room_id.clone();
    let room = room.as_str();
    feed(&server, &mut hs).await;
    if delete_rows_first {
        tamper(
            &mut server,
            &format!(
                "DELETE FROM sliding_sync_joined_rooms WHERE room_id = '{room}';
                 DELETE FROM sliding_sync_membership_snapshots WHERE room_id = '{room}';"
            ),
        )
        .await;
        assert_tables(&server, vec![], vec![]).await;
    }
    let a = hs.outlier(room, NewEvent::member(U1, U1, "join"));
    feed(&server, &mut hs).await;
    hs.deoutlier(room, &a);
    feed(&server, &mut hs).await;
    let b = hs.outlier(
        room,
        NewEvent::state("m.room.name", "", U2, json!({"name": "my super room"})),
    );
    feed(&server, &mut hs).await;
    hs.deoutlier(room, &b);
    feed(&server, &mut hs).await;

    let mut snapshots = vec![s(room, U1, U1, &a, "join", true, None, None, false, None)];
    if !delete_rows_first {
        snapshots.push(s(
            room, U2, U2, &r.join, "join", true, None, None, false, None,
        ));
    }
    assert_tables(
        &server,
        vec![j(
            room,
            b.so,
            Some(r.create.so),
            None,
            Some("my super room"),
            false,
            None,
        )],
        snapshots,
    )
    .await;
}

#[tokio::test]
async fn t07_joined_room_outlier_and_deoutlier_insert() {
    outlier_and_deoutlier(true).await;
}

#[tokio::test]
async fn t07_joined_room_outlier_and_deoutlier_upsert() {
    outlier_and_deoutlier(false).await;
}

#[tokio::test]
async fn t08_joined_room_meta_state_reset() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let r = hs.create_room(U2, None);
    let room = r.room_id.as_str();
    hs.name(room, U2, NAME);
    let j1 = hs.join(room, U1);
    feed(&server, &mut hs).await;
    let snapshots = vec![
        s(
            room,
            U1,
            U1,
            &j1,
            "join",
            true,
            None,
            Some(NAME),
            false,
            None,
        ),
        s(room, U2, U2, &r.join, "join", true, None, None, false, None),
    ];
    assert_tables(
        &server,
        vec![j(
            room,
            j1.so,
            Some(r.create.so),
            None,
            Some(NAME),
            false,
            None,
        )],
        snapshots.clone(),
    )
    .await;

    let m = hs
        .persist(
            room,
            vec![NewEvent::message(U1, "after the reset")],
            Delta::Explicit {
                to_insert: vec![],
                to_delete: vec![key("m.room.name", "")],
            },
        )
        .remove(0);
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![j(room, m.so, Some(m.so), None, None, false, None)],
        snapshots,
    )
    .await;
}

#[tokio::test]
async fn t09_joined_room_fully_insert_on_state_update() {
    let mut server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let r = hs.create_room(U1, None);
    let room = r.room_id.clone();
    let room = room.as_str();
    hs.name(room, U1, NAME);
    feed(&server, &mut hs).await;
    tamper(
        &mut server,
        &format!("DELETE FROM sliding_sync_joined_rooms WHERE room_id = '{room}'"),
    )
    .await;
    let snapshots = vec![s(
        room, U1, U1, &r.join, "join", true, None, None, false, None,
    )];
    assert_tables(&server, vec![], snapshots.clone()).await;

    let e = hs.encrypt(room, U1);
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![j(
            room,
            e.so,
            Some(r.create.so),
            None,
            Some(NAME),
            true,
            None,
        )],
        snapshots,
    )
    .await;
}

#[tokio::test]
async fn t10_joined_room_nothing_if_not_in_table_when_bumped() {
    let mut server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let r = hs.create_room(U1, None);
    let room = r.room_id.clone();
    let room = room.as_str();
    hs.name(room, U1, NAME);
    hs.encrypt(room, U1);
    feed(&server, &mut hs).await;
    tamper(
        &mut server,
        &format!("DELETE FROM sliding_sync_joined_rooms WHERE room_id = '{room}'"),
    )
    .await;
    let snapshots = vec![s(
        room, U1, U1, &r.join, "join", true, None, None, false, None,
    )];
    assert_tables(&server, vec![], snapshots.clone()).await;

    hs.send(room, U1, "hello");
    feed(&server, &mut hs).await;
    assert_tables(&server, vec![], snapshots).await;
}

#[tokio::test]
async fn t11_non_join_space_room_with_info() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let r = hs.create_room(U2, Some("m.space"));
    let room = r.room_id.as_str();
    hs.name(room, U2, SPACE_NAME);
    hs.encrypt(room, U2);
    hs.tombstone(room, U2, "another_room");
    let i = hs.invite(room, U2, U1);
    let n2 = hs.name(room, U2, "my super duper space was renamed");
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![j(
            room,
            n2.so,
            Some(r.create.so),
            Some("m.space"),
            Some("my super duper space was renamed"),
            true,
            Some("another_room"),
        )],
        vec![
            s(
                room,
                U1,
                U2,
                &i,
                "invite",
                true,
                Some("m.space"),
                Some(SPACE_NAME),
                true,
                Some("another_room"),
            ),
            s(
                room,
                U2,
                U2,
                &r.join,
                "join",
                true,
                Some("m.space"),
                None,
                false,
                None,
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn t12_non_join_invite_ban() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let r = hs.create_room(U2, None);
    let room = r.room_id.as_str();
    let i1 = hs.invite(room, U2, U1);
    hs.join(room, U3);
    let b3 = hs.ban(room, U2, U3);
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![j(room, b3.so, Some(r.create.so), None, None, false, None)],
        vec![
            s(room, U1, U2, &i1, "invite", true, None, None, false, None),
            s(room, U2, U2, &r.join, "join", true, None, None, false, None),
            s(room, U3, U2, &b3, "ban", true, None, None, false, None),
        ],
    )
    .await;
}

#[tokio::test]
async fn t13_non_join_reject_invite_empty_room() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let r = hs.create_room(U2, None);
    let room = r.room_id.as_str();
    hs.invite(room, U2, U1);
    let l2 = hs.leave(room, U2);
    let l1 = hs.leave(room, U1);
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![],
        vec![
            s(room, U1, U1, &l1, "leave", true, None, None, false, None),
            s(room, U2, U2, &l2, "leave", true, None, None, false, None),
        ],
    )
    .await;
}

#[tokio::test]
async fn t14_membership_changing() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let r = hs.create_room(U2, None);
    let room = r.room_id.as_str();
    let i = hs.invite(room, U2, U1);
    let n = hs.name(room, U2, NAME);
    feed(&server, &mut hs).await;
    let u2 = s(room, U2, U2, &r.join, "join", true, None, None, false, None);
    assert_tables(
        &server,
        vec![j(
            room,
            n.so,
            Some(r.create.so),
            None,
            Some(NAME),
            false,
            None,
        )],
        vec![
            s(room, U1, U2, &i, "invite", true, None, None, false, None),
            u2.clone(),
        ],
    )
    .await;

    let j1 = hs.join(room, U1);
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![j(
            room,
            j1.so,
            Some(r.create.so),
            None,
            Some(NAME),
            false,
            None,
        )],
        vec![
            s(
                room,
                U1,
                U1,
                &j1,
                "join",
                true,
                None,
                Some(NAME),
                false,
                None,
            ),
            u2.clone(),
        ],
    )
    .await;

    let b = hs.ban(room, U2, U1);
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![j(
            room,
            b.so,
            Some(r.create.so),
            None,
            Some(NAME),
            false,
            None,
        )],
        vec![
            s(room, U1, U2, &b, "ban", true, None, Some(NAME), false, None),
            u2,
        ],
    )
    .await;
}

#[tokio::test]
async fn t15_non_join_server_left_room() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let r = hs.create_room(U2, None);
    let room = r.room_id.as_str();
    hs.join(room, U1);
    let l2 = hs.leave(room, U2);
    let l1 = hs.leave(room, U1);
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![],
        vec![
            s(room, U1, U1, &l1, "leave", true, None, None, false, None),
            s(room, U2, U2, &l2, "leave", true, None, None, false, None),
        ],
    )
    .await;
}

async fn remote_invite_without_stripped_state(stripped_state: Option<Value>) {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let room = hs.remote_room();
    assert_eq!(room, "!test_room0:remote_server");
    let i = hs.remote_invite(&room, U1, stripped_state);
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![],
        vec![s(
            &room, U1, INVITER, &i, "invite", false, None, None, false, None,
        )],
    )
    .await;
}

#[tokio::test]
async fn t16_non_join_remote_invite_no_stripped_state_none() {
    remote_invite_without_stripped_state(None).await;
}

#[tokio::test]
async fn t16_non_join_remote_invite_no_stripped_state_empty() {
    remote_invite_without_stripped_state(Some(json!([]))).await;
}

#[tokio::test]
async fn t17_non_join_remote_invite_unencrypted_room() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let room = hs.remote_room();
    let i = hs.remote_invite(
        &room,
        U1,
        Some(json!([
            stripped_create(None),
            stripped("m.room.name", json!({ "name": NAME }))
        ])),
    );
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![],
        vec![s(
            &room,
            U1,
            INVITER,
            &i,
            "invite",
            true,
            None,
            Some(NAME),
            false,
            None,
        )],
    )
    .await;
}

#[tokio::test]
async fn t18_non_join_remote_invite_encrypted_room() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let room = hs.remote_room();
    let i = hs.remote_invite(
        &room,
        U1,
        Some(json!([
            stripped_create(None),
            stripped(
                "m.room.encryption",
                json!({"algorithm": "m.megolm.v1.aes-sha2"})
            ),
            stripped(
                "m.room.tombstone",
                json!({"replacement_room": "another_room"})
            ),
            stripped("org.matrix.foo_state", json!({"foo": "qux"})),
        ])),
    );
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![],
        vec![s(
            &room,
            U1,
            INVITER,
            &i,
            "invite",
            true,
            None,
            None,
            true,
            Some("another_room"),
        )],
    )
    .await;
}

#[tokio::test]
async fn t19_non_join_remote_invite_space_room() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let room = hs.remote_room();
    let i = hs.remote_invite(
        &room,
        U1,
        Some(json!([
            stripped_create(Some("m.space")),
            stripped(
                "m.room.encryption",
                json!({"algorithm": "m.megolm.v1.aes-sha2"})
            ),
            stripped("m.room.name", json!({ "name": SPACE_NAME })),
        ])),
    );
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![],
        vec![s(
            &room,
            U1,
            INVITER,
            &i,
            "invite",
            true,
            Some("m.space"),
            Some(SPACE_NAME),
            true,
            None,
        )],
    )
    .await;
}

fn encrypted_room_stripped_state() -> Value {
    json!([
        stripped_create(None),
        stripped(
            "m.room.encryption",
            json!({"algorithm": "m.megolm.v1.aes-sha2"})
        ),
    ])
}

#[tokio::test]
async fn t20_non_join_reject_remote_invite() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let room = hs.remote_room();
    hs.remote_invite(&room, U1, Some(encrypted_room_stripped_state()));
    let l = hs.reject_remote_invite(&room, U1);
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![],
        vec![s(&room, U1, U1, &l, "leave", true, None, None, true, None)],
    )
    .await;
}

#[tokio::test]
async fn t21_non_join_retracted_remote_invite() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let room = hs.remote_room();
    hs.remote_invite(&room, U1, Some(encrypted_room_stripped_state()));
    let k = hs.remote_retract(&room, U1);
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![],
        vec![s(
            &room, U1, INVITER, &k, "leave", true, None, None, true, None,
        )],
    )
    .await;
}

#[tokio::test]
async fn t22_non_join_state_reset() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let r = hs.create_room(U2, None);
    let room = r.room_id.as_str();
    hs.name(room, U2, NAME);
    let j1 = hs.join(room, U1);
    feed(&server, &mut hs).await;
    let u2 = s(room, U2, U2, &r.join, "join", true, None, None, false, None);
    assert_tables(
        &server,
        vec![j(
            room,
            j1.so,
            Some(r.create.so),
            None,
            Some(NAME),
            false,
            None,
        )],
        vec![
            s(
                room,
                U1,
                U1,
                &j1,
                "join",
                true,
                None,
                Some(NAME),
                false,
                None,
            ),
            u2.clone(),
        ],
    )
    .await;

    let m = hs
        .persist(
            room,
            vec![NewEvent::message(U1, "reset")],
            Delta::Explicit {
                to_insert: vec![],
                to_delete: vec![key("m.room.member", U1)],
            },
        )
        .remove(0);
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![j(room, m.so, Some(m.so), None, Some(NAME), false, None)],
        vec![u2],
    )
    .await;
}

#[tokio::test]
async fn t23_membership_snapshot_forget() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let r = hs.create_room(U2, None);
    let room = r.room_id.as_str();
    hs.join(room, U1);
    let l1 = hs.leave(room, U1);
    feed(&server, &mut hs).await;
    let u1 = s(room, U1, U1, &l1, "leave", true, None, None, false, None);
    let u2 = s(room, U2, U2, &r.join, "join", true, None, None, false, None);
    let joined = vec![j(room, l1.so, Some(r.create.so), None, None, false, None)];
    assert_tables(&server, joined.clone(), vec![u1.clone(), u2.clone()]).await;

    hs.forget(room, U1);
    feed(&server, &mut hs).await;
    assert_tables(&server, joined, vec![forgotten(u1), u2]).await;
}

#[tokio::test]
async fn t24_membership_snapshot_missing_forget() {
    let mut server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let r = hs.create_room(U2, None);
    let room = r.room_id.clone();
    let room = room.as_str();
    hs.join(room, U1);
    let l1 = hs.leave(room, U1);
    feed(&server, &mut hs).await;
    tamper(
        &mut server,
        &format!("DELETE FROM sliding_sync_membership_snapshots WHERE room_id = '{room}'"),
    )
    .await;
    let joined = vec![j(room, l1.so, Some(r.create.so), None, None, false, None)];
    assert_tables(&server, joined.clone(), vec![]).await;

    hs.forget(room, U1);
    feed(&server, &mut hs).await;
    assert_tables(&server, joined, vec![]).await;
}

// ---------------------------------------------------------------------------
// §7.5 additional scenarios
// ---------------------------------------------------------------------------

/// [DECISION] §8.1: a state reset removing the tombstone clears it in the
/// joined row (Synapse keeps it); snapshots are historical and unchanged.
#[tokio::test]
async fn s01_tombstone_removed_by_state_reset_is_cleared() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let r = hs.create_room(U1, None);
    let room = r.room_id.as_str();
    hs.name(room, U1, NAME);
    hs.tombstone(room, U1, "another_room");
    let j2 = hs.join(room, U2);
    feed(&server, &mut hs).await;
    let snapshots = vec![
        s(room, U1, U1, &r.join, "join", true, None, None, false, None),
        s(
            room,
            U2,
            U2,
            &j2,
            "join",
            true,
            None,
            Some(NAME),
            false,
            Some("another_room"),
        ),
    ];
    let m = hs
        .persist(
            room,
            vec![NewEvent::message(U1, "reset")],
            Delta::Explicit {
                to_insert: vec![],
                to_delete: vec![key("m.room.tombstone", "")],
            },
        )
        .remove(0);
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![j(room, m.so, Some(m.so), None, Some(NAME), false, None)],
        snapshots,
    )
    .await;
}

#[tokio::test]
async fn s02_stripped_name_with_nul_is_not_written() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let room = hs.remote_room();
    let i = hs.remote_invite(
        &room,
        U1,
        Some(json!([
            stripped_create(None),
            stripped("m.room.name", json!({"name": "bad\u{0000}name"})),
        ])),
    );
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![],
        vec![s(
            &room, U1, INVITER, &i, "invite", true, None, None, false, None,
        )],
    )
    .await;
}

#[tokio::test]
async fn s03_stripped_state_without_create_is_unknown() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let room = hs.remote_room();
    let i = hs.remote_invite(
        &room,
        U1,
        Some(json!([
            stripped("m.room.name", json!({ "name": NAME })),
            stripped(
                "m.room.encryption",
                json!({"algorithm": "m.megolm.v1.aes-sha2"})
            ),
        ])),
    );
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![],
        vec![s(
            &room, U1, INVITER, &i, "invite", false, None, None, false, None,
        )],
    )
    .await;
}

/// A remote invite without stripped state, then the join: the snapshot
/// flips to the room's real state; the joined row is fully inserted (its
/// bump stamp is NULL: the state came as outliers).
#[tokio::test]
async fn s04_remote_invite_then_join_takes_current_state() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let room = hs.remote_room();
    let i = hs.remote_invite(&room, U1, None);
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![],
        vec![s(
            &room, U1, INVITER, &i, "invite", false, None, None, false, None,
        )],
    )
    .await;

    let ju1 = hs.join_remote(
        &room,
        U1,
        vec![
            NewEvent::state(
                "m.room.create",
                "",
                INVITER,
                json!({"creator": INVITER, "room_version": "10", "type": "m.space"}),
            ),
            NewEvent::member(INVITER, INVITER, "join"),
            NewEvent::state("m.room.name", "", INVITER, json!({"name": "Real name"})),
            NewEvent::state(
                "m.room.encryption",
                "",
                INVITER,
                json!({"algorithm": "m.megolm.v1.aes-sha2"}),
            ),
        ],
    );
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![j(
            &room,
            ju1.so,
            None,
            Some("m.space"),
            Some("Real name"),
            true,
            None,
        )],
        vec![s(
            &room,
            U1,
            U1,
            &ju1,
            "join",
            true,
            Some("m.space"),
            Some("Real name"),
            true,
            None,
        )],
    )
    .await;
}

/// Quirk §8.4: a value from stripped state survives a join into a room
/// whose real state lacks that event.
#[tokio::test]
async fn s05_stripped_name_survives_join_into_room_without_name() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let room = hs.remote_room();
    hs.remote_invite(
        &room,
        U1,
        Some(json!([
            stripped_create(None),
            stripped("m.room.name", json!({"name": "Stripped"}))
        ])),
    );
    let ju1 = hs.join_remote(
        &room,
        U1,
        vec![
            NewEvent::state(
                "m.room.create",
                "",
                INVITER,
                json!({"creator": INVITER, "room_version": "10"}),
            ),
            NewEvent::member(INVITER, INVITER, "join"),
        ],
    );
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![j(&room, ju1.so, None, None, None, false, None)],
        vec![s(
            &room,
            U1,
            U1,
            &ju1,
            "join",
            true,
            None,
            Some("Stripped"),
            false,
            None,
        )],
    )
    .await;
}

/// Quirk §8.2: a re-invite without stripped state leaves the tombstone.
#[tokio::test]
async fn s06_reinvite_without_stripped_state_keeps_tombstone() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let room = hs.remote_room();
    let i1 = hs.remote_invite(
        &room,
        U1,
        Some(json!([
            stripped_create(None),
            stripped("m.room.name", json!({ "name": NAME })),
            stripped(
                "m.room.tombstone",
                json!({"replacement_room": "another_room"})
            ),
        ])),
    );
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![],
        vec![s(
            &room,
            U1,
            INVITER,
            &i1,
            "invite",
            true,
            None,
            Some(NAME),
            false,
            Some("another_room"),
        )],
    )
    .await;
    let i2 = hs.remote_invite(&room, U1, None);
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![],
        vec![s(
            &room,
            U1,
            INVITER,
            &i2,
            "invite",
            false,
            None,
            None,
            false,
            Some("another_room"),
        )],
    )
    .await;
}

/// §2.7: a redaction changes no stored value; the next snapshot sees the
/// redacted (pruned) name.
#[tokio::test]
async fn s07_redacted_name_reaches_only_later_snapshots() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let r = hs.create_room(U2, None);
    let room = r.room_id.as_str();
    let n = hs.name(room, U2, NAME);
    let x = hs.redact(room, U2, &n.id);
    feed(&server, &mut hs).await;
    let u2 = s(room, U2, U2, &r.join, "join", true, None, None, false, None);
    assert_tables(
        &server,
        vec![j(
            room,
            x.so,
            Some(r.create.so),
            None,
            Some(NAME),
            false,
            None,
        )],
        vec![u2.clone()],
    )
    .await;
    let j1 = hs.join(room, U1);
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![j(
            room,
            j1.so,
            Some(r.create.so),
            None,
            Some(NAME),
            false,
            None,
        )],
        vec![
            s(room, U1, U1, &j1, "join", true, None, None, false, None),
            u2,
        ],
    )
    .await;
}

#[tokio::test]
async fn s08_rejected_event_last_in_batch_does_not_bump() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let r = hs.create_room(U1, None);
    let room = r.room_id.as_str();
    let events = hs.persist(
        room,
        vec![
            NewEvent::message(U1, "accepted"),
            NewEvent::message(U1, "rejected").rejected(),
        ],
        Delta::None,
    );
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![j(
            room,
            events[0].so,
            Some(events[0].so),
            None,
            None,
            false,
            None,
        )],
        vec![s(
            room, U1, U1, &r.join, "join", true, None, None, false, None,
        )],
    )
    .await;
}

#[tokio::test]
async fn s09_soft_failed_message_bumps() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let r = hs.create_room(U1, None);
    let room = r.room_id.as_str();
    let m = hs
        .persist(
            room,
            vec![NewEvent::message(U1, "soft").soft_failed()],
            Delta::None,
        )
        .remove(0);
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![j(room, m.so, Some(m.so), None, None, false, None)],
        vec![s(
            room, U1, U1, &r.join, "join", true, None, None, false, None,
        )],
    )
    .await;
}

#[tokio::test]
async fn s10_outlier_in_joined_room_bumps() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let r = hs.create_room(U1, None);
    let room = r.room_id.as_str();
    let o = hs.outlier(room, NewEvent::message("@someone:elsewhere", "outlier"));
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![j(room, o.so, Some(o.so), None, None, false, None)],
        vec![s(
            room, U1, U1, &r.join, "join", true, None, None, false, None,
        )],
    )
    .await;
}

/// A display-name change (join → join) rewrites the snapshot: new event,
/// new position, state refreshed to the current state.
#[tokio::test]
async fn s11_display_name_change_refreshes_snapshot() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let r = hs.create_room(U1, None);
    let room = r.room_id.as_str();
    hs.name(room, U1, NAME);
    hs.encrypt(room, U1);
    let d = hs.set_displayname(room, U1, "Alice");
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![j(
            room,
            d.so,
            Some(r.create.so),
            None,
            Some(NAME),
            true,
            None,
        )],
        vec![s(
            room,
            U1,
            U1,
            &d,
            "join",
            true,
            None,
            Some(NAME),
            true,
            None,
        )],
    )
    .await;
}

/// An unban is a leave sent by someone else (listed like a kick).
#[tokio::test]
async fn s12_unban_is_a_leave_by_another_user() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let r = hs.create_room(U2, None);
    let room = r.room_id.as_str();
    hs.join(room, U1);
    hs.ban(room, U2, U1);
    let unban = hs.kick(room, U2, U1);
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![j(
            room,
            unban.so,
            Some(r.create.so),
            None,
            None,
            false,
            None,
        )],
        vec![
            s(room, U1, U2, &unban, "leave", true, None, None, false, None),
            s(room, U2, U2, &r.join, "join", true, None, None, false, None),
        ],
    )
    .await;
}

/// [DECISION] §2.11: a purge removes the room's rows and its queued
/// recalculation; other rooms are untouched.
#[tokio::test]
async fn s13_purge_removes_rows_and_queued_recalculation() {
    let mut server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let a = hs.create_room(U1, None);
    let b = hs.create_room(U2, None);
    let room_a = a.room_id.clone();
    let room_b = b.room_id.clone();
    hs.invite(&room_a, U1, U2);
    feed(&server, &mut hs).await;
    tamper(
        &mut server,
        &format!(
            "INSERT INTO sliding_sync_joined_rooms_to_recalculate (room_id) VALUES ('{room_a}'), ('{room_b}')"
        ),
    )
    .await;
    hs.purge(&room_a);
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![j(
            &room_b,
            b.history_visibility.so,
            Some(b.create.so),
            None,
            None,
            false,
            None,
        )],
        vec![s(
            &room_b, U2, U2, &b.join, "join", true, None, None, false, None,
        )],
    )
    .await;
    let queue = server.rows_in_postgres().await.recalculation_queue;
    assert_eq!(queue, vec![RoomId::parse(&room_b).unwrap()]);
}

// ---------------------------------------------------------------------------
// Other deliberate decisions and feed semantics, end to end
// ---------------------------------------------------------------------------

/// [DECISION] §8.5: non-string stripped values are not written (Synapse
/// fails to persist the invite).
#[tokio::test]
async fn s14_non_string_stripped_values_are_not_written() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let room = hs.remote_room();
    let i1 = hs.remote_invite(
        &room,
        U1,
        Some(json!([
            stripped_create(None),
            stripped("m.room.name", json!({ "name": NAME })),
        ])),
    );
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![],
        vec![s(
            &room,
            U1,
            INVITER,
            &i1,
            "invite",
            true,
            None,
            Some(NAME),
            false,
            None,
        )],
    )
    .await;
    // A second invite whose values are a number, an object and a boolean:
    // none is written, so the earlier name stays.
    let mut create = stripped_create(None);
    create["content"]["type"] = json!(7);
    let i2 = hs.remote_invite(
        &room,
        U1,
        Some(json!([
            create,
            stripped("m.room.name", json!({"name": {"text": "x"}})),
            stripped("m.room.tombstone", json!({"replacement_room": true})),
        ])),
    );
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![],
        vec![s(
            &room,
            U1,
            INVITER,
            &i2,
            "invite",
            true,
            None,
            Some(NAME),
            false,
            None,
        )],
    )
    .await;
}

/// [DECISION] §8.3: a snapshot rewritten by another writer takes that
/// writer's name together with the new position.
#[tokio::test]
async fn s15_instance_name_follows_the_membership_event() {
    let server = TestServer::start_with(ServerOptions {
        writers: vec!["persister1".into(), "persister2".into()],
        ..ServerOptions::default()
    })
    .await;
    let mut hs = Homeserver::default();
    hs.set_writer("persister1");
    let r = hs.create_room(U1, None);
    let room = r.room_id.clone();
    feed(&server, &mut hs).await;
    let mut expected = s(
        &room, U1, U1, &r.join, "join", true, None, None, false, None,
    );
    expected.event_instance_name = "persister1".into();
    assert_tables(
        &server,
        vec![j(
            &room,
            r.history_visibility.so,
            Some(r.create.so),
            None,
            None,
            false,
            None,
        )],
        vec![expected],
    )
    .await;

    hs.set_writer("persister2");
    let d = hs.set_displayname(&room, U1, "Alice");
    feed(&server, &mut hs).await;
    let mut expected = s(&room, U1, U1, &d, "join", true, None, None, false, None);
    expected.event_instance_name = "persister2".into();
    assert_tables(
        &server,
        vec![j(&room, d.so, Some(r.create.so), None, None, false, None)],
        vec![expected],
    )
    .await;
}

/// A state reset back to an event the cache never saw: without the event
/// inline the batch is refused (4xx, nothing changes, the position does not
/// move); with it inline the snapshot is rewritten from that old event.
#[tokio::test]
async fn s16_state_reset_to_unknown_event_needs_it_inline() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let r = hs.create_room(U2, None);
    let room = r.room_id.as_str();
    hs.name(room, U2, NAME);
    let j1 = hs.join(room, U1);
    let d = hs.set_displayname(room, U1, "Alice");
    feed(&server, &mut hs).await;
    let u2 = s(room, U2, U2, &r.join, "join", true, None, None, false, None);
    let joined_before = vec![j(
        room,
        d.so,
        Some(r.create.so),
        None,
        Some(NAME),
        false,
        None,
    )];
    let before = vec![
        s(
            room,
            U1,
            U1,
            &d,
            "join",
            true,
            None,
            Some(NAME),
            false,
            None,
        ),
        u2.clone(),
    ];
    assert_tables(&server, joined_before.clone(), before.clone()).await;
    let position_before = server.get("/v1/positions").await.body;

    // The reset is an UpdateCurrentState-like delta: no event, a fresh position.
    let position = hs.allocate_position();
    let mut row = hs.inline_state_row(position, room, &j1.id);
    let inline = row["event"].take();
    hs.push_rows([row.clone()]);
    let refused = server.post("/v1/feed", &hs.take()).await;
    let message = refused.assert_error(400, "ROOMCACHE_UNKNOWN_EVENT");
    assert!(message.contains(&j1.id), "{message}");
    assert_tables(&server, joined_before.clone(), before).await;
    assert_eq!(server.get("/v1/positions").await.body, position_before);

    row["event"] = inline;
    hs.push_rows([row]);
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        joined_before,
        vec![
            s(
                room,
                U1,
                U1,
                &j1,
                "join",
                true,
                None,
                Some(NAME),
                false,
                None,
            ),
            u2,
        ],
    )
    .await;
}

/// A persist batch of several events: the delta rows carry the smallest
/// stream id, the membership event of a later position is resolved from the
/// same request, and the snapshot records the state after the whole batch
/// (§8.10).
#[tokio::test]
async fn s17_snapshot_is_state_after_the_whole_batch() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let r = hs.create_room(U2, None);
    let room = r.room_id.as_str();
    let events = hs.persist(
        room,
        vec![
            NewEvent::message(U2, "first"),
            NewEvent::member(U1, U1, "join"),
            NewEvent::state("m.room.name", "", U2, json!({ "name": NAME })),
        ],
        Delta::Natural,
    );
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![j(
            room,
            events[2].so,
            Some(events[0].so),
            None,
            Some(NAME),
            false,
            None,
        )],
        vec![
            s(
                room,
                U1,
                U1,
                &events[1],
                "join",
                true,
                None,
                Some(NAME),
                false,
                None,
            ),
            s(room, U2, U2, &r.join, "join", true, None, None, false, None),
        ],
    )
    .await;
}

/// A remote knock takes `knock_room_state`; rescinding it inherits.
#[tokio::test]
async fn s18_remote_knock_and_rescind() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let room = hs.remote_room();
    let k = hs.remote_knock(
        &room,
        U1,
        Some(json!([
            stripped_create(None),
            stripped("m.room.name", json!({ "name": NAME }))
        ])),
    );
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![],
        vec![s(
            &room,
            U1,
            U1,
            &k,
            "knock",
            true,
            None,
            Some(NAME),
            false,
            None,
        )],
    )
    .await;
    let l = hs.reject_remote_invite(&room, U1);
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![],
        vec![s(
            &room,
            U1,
            U1,
            &l,
            "leave",
            true,
            None,
            Some(NAME),
            false,
            None,
        )],
    )
    .await;
}

/// A forgotten room is un-forgotten by the next membership.
#[tokio::test]
async fn s19_new_membership_unforgets() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let r = hs.create_room(U2, None);
    let room = r.room_id.as_str();
    hs.join(room, U1);
    hs.leave(room, U1);
    hs.forget(room, U1);
    let j1b = hs.join(room, U1);
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![j(room, j1b.so, Some(r.create.so), None, None, false, None)],
        vec![
            s(room, U1, U1, &j1b, "join", true, None, None, false, None),
            s(room, U2, U2, &r.join, "join", true, None, None, false, None),
        ],
    )
    .await;
}

/// The server leaves and a local user rejoins later: the rejoin's delta
/// carries the whole room state, so the joined row is fully inserted again.
#[tokio::test]
async fn s20_rejoin_after_server_left_fully_inserts() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let r = hs.create_room(U1, None);
    let room = r.room_id.as_str();
    hs.name(room, U1, NAME);
    hs.leave(room, U1);
    feed(&server, &mut hs).await;
    let j1 = hs.join(room, U1);
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![j(
            room,
            j1.so,
            Some(r.create.so),
            None,
            Some(NAME),
            false,
            None,
        )],
        vec![s(
            room,
            U1,
            U1,
            &j1,
            "join",
            true,
            None,
            Some(NAME),
            false,
            None,
        )],
    )
    .await;
}

/// §2.12: a delta without events (a partial-state resync) on a room with no
/// joined row fully inserts it at the room's highest stream ordering, and
/// does not bump it.
#[tokio::test]
async fn s21_delta_without_events_fully_inserts_without_bump() {
    let mut server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let r = hs.create_room(U1, None);
    let room = r.room_id.clone();
    let room = room.as_str();
    hs.name(room, U1, NAME);
    let m = hs.send(room, U1, "latest");
    feed(&server, &mut hs).await;
    tamper(
        &mut server,
        &format!("DELETE FROM sliding_sync_joined_rooms WHERE room_id = '{room}'"),
    )
    .await;
    // A remote member's join that was only known as an outlier becomes
    // current without any new event.
    let remote = hs.outlier(room, NewEvent::member("@bob:other", "@bob:other", "join"));
    feed(&server, &mut hs).await;
    let position = hs.allocate_position();
    let row = hs.inline_state_row(position, room, &remote.id);
    hs.push_rows([row]);
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![j(
            room,
            remote.so,
            Some(m.so),
            None,
            Some(NAME),
            false,
            None,
        )],
        vec![s(
            room, U1, U1, &r.join, "join", true, None, None, false, None,
        )],
    )
    .await;
}

/// A state reset back to an earlier relevant event the cache has seen
/// needs no inline event; the joined row takes that event's value.
#[tokio::test]
async fn s22_state_reset_to_a_remembered_name() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let r = hs.create_room(U1, None);
    let room = r.room_id.as_str();
    let first = hs.name(room, U1, "first");
    hs.name(room, U1, "second");
    feed(&server, &mut hs).await;
    let position = hs.allocate_position();
    hs.push_rows([
        json!({"kind": "state", "stream_id": position, "room_id": room,
        "type": "m.room.name", "state_key": "", "event_id": first.id}),
    ]);
    feed(&server, &mut hs).await;
    let last = hs.send(room, U1, "after");
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![j(
            room,
            last.so,
            Some(last.so),
            None,
            Some("first"),
            false,
            None,
        )],
        vec![s(
            room, U1, U1, &r.join, "join", true, None, None, false, None,
        )],
    )
    .await;
}
