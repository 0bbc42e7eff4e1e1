//! §7.1 T11–T24: membership snapshots of rooms the user is not joined to,
//! and forgetting.

use crate::support::homeserver::{stripped, stripped_create, Delta, Homeserver, NewEvent, INVITER};
use crate::support::rows::{joined, snapshot};
use crate::support::server::TestServer;
use serde_json::{json, Value};

use super::{assert_tables, feed, key, tamper, NAME, SPACE_NAME, U1, U2, U3};

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
        vec![joined(room)
            .stream(n2.so)
            .bump(r.create.so)
            .room_type("m.space")
            .name("my super duper space was renamed")
            .encrypted()
            .tombstone("another_room")],
        vec![
            snapshot(room, U1)
                .by(U2)
                .event(&i)
                .membership("invite")
                .room_type("m.space")
                .name(SPACE_NAME)
                .encrypted()
                .tombstone("another_room"),
            snapshot(room, U2).event(&r.join).room_type("m.space"),
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
        vec![joined(room).stream(b3.so).bump(r.create.so)],
        vec![
            snapshot(room, U1).by(U2).event(&i1).membership("invite"),
            snapshot(room, U2).event(&r.join),
            snapshot(room, U3).by(U2).event(&b3).membership("ban"),
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
            snapshot(room, U1).event(&l1).membership("leave"),
            snapshot(room, U2).event(&l2).membership("leave"),
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
    let u2 = snapshot(room, U2).event(&r.join);
    assert_tables(
        &server,
        vec![joined(room).stream(n.so).bump(r.create.so).name(NAME)],
        vec![
            snapshot(room, U1).by(U2).event(&i).membership("invite"),
            u2.clone(),
        ],
    )
    .await;

    let j1 = hs.join(room, U1);
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![joined(room).stream(j1.so).bump(r.create.so).name(NAME)],
        vec![snapshot(room, U1).event(&j1).name(NAME), u2.clone()],
    )
    .await;

    let b = hs.ban(room, U2, U1);
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![joined(room).stream(b.so).bump(r.create.so).name(NAME)],
        vec![
            snapshot(room, U1)
                .by(U2)
                .event(&b)
                .membership("ban")
                .name(NAME),
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
            snapshot(room, U1).event(&l1).membership("leave"),
            snapshot(room, U2).event(&l2).membership("leave"),
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
        vec![snapshot(&room, U1)
            .by(INVITER)
            .event(&i)
            .membership("invite")
            .unknown_state()],
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
        vec![snapshot(&room, U1)
            .by(INVITER)
            .event(&i)
            .membership("invite")
            .name(NAME)],
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
        vec![snapshot(&room, U1)
            .by(INVITER)
            .event(&i)
            .membership("invite")
            .encrypted()
            .tombstone("another_room")],
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
        vec![snapshot(&room, U1)
            .by(INVITER)
            .event(&i)
            .membership("invite")
            .room_type("m.space")
            .name(SPACE_NAME)
            .encrypted()],
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
        vec![snapshot(&room, U1)
            .event(&l)
            .membership("leave")
            .encrypted()],
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
        vec![snapshot(&room, U1)
            .by(INVITER)
            .event(&k)
            .membership("leave")
            .encrypted()],
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
    let u2 = snapshot(room, U2).event(&r.join);
    assert_tables(
        &server,
        vec![joined(room).stream(j1.so).bump(r.create.so).name(NAME)],
        vec![snapshot(room, U1).event(&j1).name(NAME), u2.clone()],
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
        vec![joined(room).stream(m.so).bump(m.so).name(NAME)],
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
    let u1 = snapshot(room, U1).event(&l1).membership("leave");
    let u2 = snapshot(room, U2).event(&r.join);
    let joined_rows = vec![joined(room).stream(l1.so).bump(r.create.so)];
    assert_tables(&server, joined_rows.clone(), vec![u1.clone(), u2.clone()]).await;

    hs.forget(room, U1);
    feed(&server, &mut hs).await;
    assert_tables(&server, joined_rows, vec![u1.forgotten(), u2]).await;
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
    let joined_rows = vec![joined(room).stream(l1.so).bump(r.create.so)];
    assert_tables(&server, joined_rows.clone(), vec![]).await;

    hs.forget(room, U1);
    feed(&server, &mut hs).await;
    assert_tables(&server, joined_rows, vec![]).await;
}
