//! Writes into a Synapse fixture database as Synapse's own writers do
//! (events, state, backfill, positions), for the source-mode tests.

use serde_json::{json, Value};

use super::synapse::SynapseDatabase;

/// Takes `stream_ordering` from the events stream's sequence, as Synapse
/// allocates every position it persists (the sequence moves up to it, never
/// down).
pub(crate) async fn allocate_stream_ordering(
    client: &tokio_postgres::Client,
    stream_ordering: i64,
) {
    client
        .execute(
            "SELECT setval('events_stream_seq',
                 GREATEST($1, (SELECT last_value FROM events_stream_seq)))",
            &[&stream_ordering],
        )
        .await
        .unwrap();
}

/// Writes `event` (its JSON, with `event_id`, `room_id`, `type`, `sender`
/// and, for state, `state_key`) as `writer` persists it at `stream_ordering`
/// (allocated from the sequence): its `events` and `event_json` rows,
/// nothing else.
pub(crate) async fn insert_event(
    client: &tokio_postgres::Client,
    writer: &str,
    stream_ordering: i64,
    event: &serde_json::Value,
) {
    let text = |key: &str| event[key].as_str().map(str::to_owned);
    let (event_id, room_id) = (text("event_id"), text("room_id"));
    allocate_stream_ordering(client, stream_ordering).await;
    client
        .execute(
            "INSERT INTO events (topological_ordering, event_id, type, room_id, processed, outlier,
                 depth, origin_server_ts, received_ts, sender, instance_name, stream_ordering, state_key)
             VALUES ($1, $2, $3, $4, TRUE, FALSE, $1, 0, 0, $5, $6, $1, $7)",
            &[&stream_ordering, &event_id, &text("type"), &room_id, &text("sender"), &writer, &text("state_key")],
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO event_json (event_id, room_id, internal_metadata, json, format_version)
             VALUES ($1, $2, '{}', $3, 3)",
            &[&event_id, &room_id, &event.to_string()],
        )
        .await
        .unwrap();
}

/// Writes a backfilled event as Synapse's `writer` persists one, in
/// one transaction: its `events` and `event_json` rows at stream ordering
/// `-position` with its topological ordering, the backfill stream's
/// sequence and the writer's `stream_positions` row (negative, as Synapse
/// writes it).
pub(crate) async fn persist_backfilled(
    client: &tokio_postgres::Client,
    writer: &str,
    position: i64,
    event: &Value,
    topological_ordering: i64,
) {
    client.batch_execute("BEGIN").await.unwrap();
    insert_event(client, writer, -position, event).await;
    client
        .execute(
            "UPDATE events SET topological_ordering = $2, depth = $2 WHERE stream_ordering = $1",
            &[&-position, &topological_ordering],
        )
        .await
        .unwrap();
    client
        .execute(
            "SELECT setval('events_backfill_stream_seq',
                 GREATEST($1, (SELECT last_value FROM events_backfill_stream_seq)))",
            &[&position],
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO stream_positions (stream_name, instance_name, stream_id)
             VALUES ('backfill', $2, $1)
             ON CONFLICT (stream_name, instance_name) DO UPDATE SET stream_id = EXCLUDED.stream_id
             WHERE stream_positions.stream_id > EXCLUDED.stream_id",
            &[&-position, &writer],
        )
        .await
        .unwrap();
    client.batch_execute("COMMIT").await.unwrap();
}

/// A message in a room of the multi-writer fixture persisted by `writer`, at
/// `position`, written as the writer writes one (`events`, `event_json`),
/// without moving `stream_positions`; returns the room.
pub(crate) async fn persist_message(
    synapse: &SynapseDatabase,
    writer: &str,
    position: i64,
) -> String {
    let client = synapse.client().await;
    let row = client
        .query_one(
            "SELECT e.room_id, c.user_id FROM events e
             JOIN local_current_membership c ON c.room_id = e.room_id AND c.membership = 'join'
             WHERE e.instance_name = $1 AND e.type = 'm.room.create'
             ORDER BY e.room_id LIMIT 1",
            &[&writer],
        )
        .await
        .unwrap();
    let (room_id, sender): (String, String) = (row.get(0), row.get(1));
    let event_id = format!("$announced{position}");
    let event = serde_json::json!({"event_id": event_id, "room_id": room_id, "type": "m.room.message",
        "sender": sender, "content": {"msgtype": "m.text", "body": "announced"},
        "origin_server_ts": 0, "unsigned": {}});
    insert_event(&client, writer, position, &event).await;
    room_id
}

/// An event for [`persist_event`], a builder:
/// `source_event(room_id, sender, type).state_key("").content(..)`.
pub(crate) struct SourceEvent {
    room_id: String,
    sender: String,
    event_type: String,
    state_key: Option<String>,
    content: Value,
}

pub(crate) fn source_event(room_id: &str, sender: &str, event_type: &str) -> SourceEvent {
    SourceEvent {
        room_id: room_id.to_owned(),
        sender: sender.to_owned(),
        event_type: event_type.to_owned(),
        state_key: None,
        content: json!({}),
    }
}

impl SourceEvent {
    pub(crate) fn state_key(mut self, state_key: &str) -> Self {
        self.state_key = Some(state_key.to_owned());
        self
    }

    pub(crate) fn content(mut self, content: Value) -> Self {
        self.content = content;
        self
    }
}

/// Inserts an event as Synapse's one writer `master` persists one (events,
/// event_json and, for state, the delta row and current state, in one
/// transaction: a server following the database never sees the event
/// without its delta row), at `stream_ordering`, and moves the events
/// stream there; returns its ID.
pub(crate) async fn persist_event(
    client: &tokio_postgres::Client,
    stream_ordering: i64,
    event: SourceEvent,
) -> String {
    let SourceEvent {
        room_id,
        sender,
        event_type,
        state_key,
        content,
    } = event;
    let (room_id, sender, event_type) = (room_id.as_str(), sender.as_str(), event_type.as_str());
    let state_key = state_key.as_deref();
    let event_id = format!("$test{stream_ordering}");
    client.batch_execute("BEGIN").await.unwrap();
    let json = json!({
        "event_id": event_id, "room_id": room_id, "type": event_type,
        "sender": sender, "content": content, "state_key": state_key,
        "origin_server_ts": 0, "unsigned": {},
    });
    insert_event(client, "master", stream_ordering, &json).await;
    if let Some(state_key) = state_key {
        client
            .execute(
                "INSERT INTO current_state_delta_stream
                     (stream_id, room_id, type, state_key, event_id, prev_event_id, instance_name)
                 SELECT $1, $2, $3, $4, $5,
                     (SELECT event_id FROM current_state_events
                      WHERE room_id = $2 AND type = $3 AND state_key = $4), 'master'",
                &[
                    &stream_ordering,
                    &room_id,
                    &event_type,
                    &state_key,
                    &event_id,
                ],
            )
            .await
            .unwrap();
        client
            .execute(
                "INSERT INTO current_state_events
                     (room_id, type, state_key, event_id, event_stream_ordering)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (room_id, type, state_key)
                 DO UPDATE SET event_id = $4, event_stream_ordering = $5",
                &[
                    &room_id,
                    &event_type,
                    &state_key,
                    &event_id,
                    &stream_ordering,
                ],
            )
            .await
            .unwrap();
    }
    move_events_position(client, stream_ordering).await;
    client.batch_execute("COMMIT").await.unwrap();
    event_id
}

/// Stores a new room as Synapse does before any of its events (on creating
/// or joining it): its `rooms` row. [`persist_event`] writes no such row,
/// so an event in a room of the tests' own making needs this first: a
/// cached room that is not in `rooms` is a deleted room to roomcache, and
/// the follower's full check (at its first step, then once a minute while
/// polling) purges it, whenever that check runs.
pub(crate) async fn store_room(client: &tokio_postgres::Client, room_id: &str, creator: &str) {
    client
        .execute(
            "INSERT INTO rooms (room_id, is_public, creator, room_version, has_auth_chain_index)
             VALUES ($1, FALSE, $2, '10', TRUE)",
            &[&room_id, &creator],
        )
        .await
        .unwrap();
}

/// Moves the events stream's position (`stream_positions`) to `position`.
pub(crate) async fn move_events_position(client: &tokio_postgres::Client, position: i64) {
    client
        .execute(
            "UPDATE stream_positions SET stream_id = $1 WHERE stream_name = 'events'",
            &[&position],
        )
        .await
        .unwrap();
}
