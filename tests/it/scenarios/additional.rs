//! §7.5: the additional scenarios.

use crate::support::homeserver::{stripped, stripped_create, Delta, Homeserver, NewEvent, INVITER};
use crate::support::rows::{joined, snapshot};
use crate::support::server::TestServer;
use roomcache::model::RoomId;
use serde_json::json;

use super::{assert_tables, feed, key, tamper, NAME, U1, U2};

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
        snapshot(room, U1).event(&r.join),
        snapshot(room, U2)
            .event(&j2)
            .name(NAME)
            .tombstone("another_room"),
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
        vec![joined(room).stream(m.so).bump(m.so).name(NAME)],
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
        vec![snapshot(&room, U1)
            .by(INVITER)
            .event(&i)
            .membership("invite")],
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
        vec![snapshot(&room, U1)
            .by(INVITER)
            .event(&i)
            .membership("invite")
            .unknown_state()],
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
        vec![snapshot(&room, U1)
            .by(INVITER)
            .event(&i)
            .membership("invite")
            .unknown_state()],
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
        vec![joined(&room)
            .stream(ju1.so)
            .room_type("m.space")
            .name("Real name")
            .encrypted()],
        vec![snapshot(&room, U1)
            .event(&ju1)
            .room_type("m.space")
            .name("Real name")
            .encrypted()],
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
        vec![joined(&room).stream(ju1.so)],
        vec![snapshot(&room, U1).event(&ju1).name("Stripped")],
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
        vec![snapshot(&room, U1)
            .by(INVITER)
            .event(&i1)
            .membership("invite")
            .name(NAME)
            .tombstone("another_room")],
    )
    .await;
    let i2 = hs.remote_invite(&room, U1, None);
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![],
        vec![snapshot(&room, U1)
            .by(INVITER)
            .event(&i2)
            .membership("invite")
            .unknown_state()
            .tombstone("another_room")],
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
    let u2 = snapshot(room, U2).event(&r.join);
    assert_tables(
        &server,
        vec![joined(room).stream(x.so).bump(r.create.so).name(NAME)],
        vec![u2.clone()],
    )
    .await;
    let j1 = hs.join(room, U1);
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![joined(room).stream(j1.so).bump(r.create.so).name(NAME)],
        vec![snapshot(room, U1).event(&j1), u2],
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
        vec![joined(room).stream(events[0].so).bump(events[0].so)],
        vec![snapshot(room, U1).event(&r.join)],
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
        vec![joined(room).stream(m.so).bump(m.so)],
        vec![snapshot(room, U1).event(&r.join)],
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
        vec![joined(room).stream(o.so).bump(o.so)],
        vec![snapshot(room, U1).event(&r.join)],
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
        vec![joined(room)
            .stream(d.so)
            .bump(r.create.so)
            .name(NAME)
            .encrypted()],
        vec![snapshot(room, U1).event(&d).name(NAME).encrypted()],
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
        vec![joined(room).stream(unban.so).bump(r.create.so)],
        vec![
            snapshot(room, U1).by(U2).event(&unban).membership("leave"),
            snapshot(room, U2).event(&r.join),
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
        vec![joined(&room_b)
            .stream(b.history_visibility.so)
            .bump(b.create.so)],
        vec![snapshot(&room_b, U2).event(&b.join)],
    )
    .await;
    let queue = server.rows_in_postgres().await.recalculation_queue;
    assert_eq!(queue, vec![RoomId::parse(&room_b).unwrap()]);
}
