//! §7.1 T01–T10: the joined-room row (`sliding_sync_joined_rooms`).

use crate::support::homeserver::{Delta, Homeserver, NewEvent};
use crate::support::rows::{joined, snapshot};
use crate::support::server::TestServer;
use serde_json::json;

use super::{assert_tables, feed, key, tamper, NAME, SPACE_NAME, U1, U2};

#[tokio::test]
async fn t01_joined_room_with_no_info() {
    let server = TestServer::start().await;
    let mut hs = Homeserver::default();
    let r = hs.create_room(U1, None);
    feed(&server, &mut hs).await;
    let room = r.room_id.as_str();
    assert_tables(
        &server,
        vec![joined(room)
            .stream(r.history_visibility.so)
            .bump(r.create.so)],
        vec![snapshot(room, U1).event(&r.join)],
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
        vec![joined(room)
            .stream(j1.so)
            .bump(r.create.so)
            .name(NAME)
            .encrypted()
            .tombstone("another_room")],
        vec![
            snapshot(room, U1)
                .event(&j1)
                .name(NAME)
                .encrypted()
                .tombstone("another_room"),
            snapshot(room, U2).event(&r.join),
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
        vec![joined(room)
            .stream(j1.so)
            .bump(r.create.so)
            .room_type("m.space")
            .name(SPACE_NAME)],
        vec![
            snapshot(room, U1)
                .event(&j1)
                .room_type("m.space")
                .name(SPACE_NAME),
            snapshot(room, U2).event(&r.join).room_type("m.space"),
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
        snapshot(room, U1).event(&j1).name(NAME),
        snapshot(room, U2).event(&r.join),
    ];
    assert_tables(
        &server,
        vec![joined(room).stream(j1.so).bump(r.create.so).name(NAME)],
        snapshots.clone(),
    )
    .await;

    hs.name(room, U2, "my super duper room was renamed");
    let e = hs.encrypt(room, U2);
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![joined(room)
            .stream(e.so)
            .bump(r.create.so)
            .name("my super duper room was renamed")
            .encrypted()],
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
        snapshot(room, U1).event(&j1).name(NAME),
        snapshot(room, U2).event(&r.join),
    ];
    assert_tables(
        &server,
        vec![joined(room).stream(j1.so).bump(r.create.so).name(NAME)],
        snapshots.clone(),
    )
    .await;

    let m = hs.send(room, U1, "hello");
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![joined(room).stream(m.so).bump(m.so).name(NAME)],
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
        vec![joined(room).stream(ju1.so).name(NAME)],
        vec![snapshot(room, U1).event(&ju1).name(NAME)],
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

    let mut snapshots = vec![snapshot(room, U1).event(&a)];
    if !delete_rows_first {
        snapshots.push(snapshot(room, U2).event(&r.join));
    }
    assert_tables(
        &server,
        vec![joined(room)
            .stream(b.so)
            .bump(r.create.so)
            .name("my super room")],
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
        snapshot(room, U1).event(&j1).name(NAME),
        snapshot(room, U2).event(&r.join),
    ];
    assert_tables(
        &server,
        vec![joined(room).stream(j1.so).bump(r.create.so).name(NAME)],
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
        vec![joined(room).stream(m.so).bump(m.so)],
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
    let snapshots = vec![snapshot(room, U1).event(&r.join)];
    assert_tables(&server, vec![], snapshots.clone()).await;

    let e = hs.encrypt(room, U1);
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![joined(room)
            .stream(e.so)
            .bump(r.create.so)
            .name(NAME)
            .encrypted()],
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
    let snapshots = vec![snapshot(room, U1).event(&r.join)];
    assert_tables(&server, vec![], snapshots.clone()).await;

    hs.send(room, U1, "hello");
    feed(&server, &mut hs).await;
    assert_tables(&server, vec![], snapshots).await;
}
