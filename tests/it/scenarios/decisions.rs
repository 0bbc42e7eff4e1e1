//! Other deliberate decisions and feed semantics, end to end.

use crate::support::homeserver::{stripped, stripped_create, Delta, Homeserver, NewEvent, INVITER};
use crate::support::rows::{joined, snapshot};
use crate::support::server::{ServerOptions, TestServer};
use serde_json::json;

use super::{assert_tables, feed, tamper, NAME, U1, U2};

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
        vec![snapshot(&room, U1)
            .by(INVITER)
            .event(&i1)
            .membership("invite")
            .name(NAME)],
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
        vec![snapshot(&room, U1)
            .by(INVITER)
            .event(&i2)
            .membership("invite")
            .name(NAME)],
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
    let expected = snapshot(&room, U1).event(&r.join).instance("persister1");
    assert_tables(
        &server,
        vec![joined(&room)
            .stream(r.history_visibility.so)
            .bump(r.create.so)],
        vec![expected],
    )
    .await;

    hs.set_writer("persister2");
    let d = hs.set_displayname(&room, U1, "Alice");
    feed(&server, &mut hs).await;
    let expected = snapshot(&room, U1).event(&d).instance("persister2");
    assert_tables(
        &server,
        vec![joined(&room).stream(d.so).bump(r.create.so)],
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
    let u2 = snapshot(room, U2).event(&r.join);
    let joined_before = vec![joined(room).stream(d.so).bump(r.create.so).name(NAME)];
    let before = vec![snapshot(room, U1).event(&d).name(NAME), u2.clone()];
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
        vec![snapshot(room, U1).event(&j1).name(NAME), u2],
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
        vec![joined(room)
            .stream(events[2].so)
            .bump(events[0].so)
            .name(NAME)],
        vec![
            snapshot(room, U1).event(&events[1]).name(NAME),
            snapshot(room, U2).event(&r.join),
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
        vec![snapshot(&room, U1).event(&k).membership("knock").name(NAME)],
    )
    .await;
    let l = hs.reject_remote_invite(&room, U1);
    feed(&server, &mut hs).await;
    assert_tables(
        &server,
        vec![],
        vec![snapshot(&room, U1).event(&l).membership("leave").name(NAME)],
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
        vec![joined(room).stream(j1b.so).bump(r.create.so)],
        vec![
            snapshot(room, U1).event(&j1b),
            snapshot(room, U2).event(&r.join),
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
        vec![joined(room).stream(j1.so).bump(r.create.so).name(NAME)],
        vec![snapshot(room, U1).event(&j1).name(NAME)],
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
        vec![joined(room).stream(remote.so).bump(m.so).name(NAME)],
        vec![snapshot(room, U1).event(&r.join)],
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
        vec![joined(room).stream(last.so).bump(last.so).name("first")],
        vec![snapshot(room, U1).event(&r.join)],
    )
    .await;
}
