//! A tiny stand-in for Synapse's persistence: writes events into an empty
//! copy of Synapse's schema the way Synapse stores them (`events`,
//! `event_json`, `room_memberships`, `local_current_membership`,
//! `current_state_events`, `current_state_delta_stream` with its "no longer
//! in room" wipe, `stream_positions`, a forget's cache invalidation), one
//! persist batch at a time. Only
//! what the sliding-sync computation reads is modelled; there is no state
//! resolution (each batch's state events simply replace current state).

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};

use super::synapse::{allocate_stream_ordering, SynapseDatabase};

/// A state key and what is current for it: the event and, for members, the membership.
type StateMap = BTreeMap<(String, String), (String, Option<String>)>;

/// A batch's state changes: `(room, type, state_key)` to the event and membership.
type StateChanges = BTreeMap<(String, String, String), (String, Option<String>)>;

/// A `current_state_events` row: type, state key, event, membership.
type CurrentRow = (String, String, String, Option<String>);

/// The local server's name in these tests.
pub(crate) const HS: &str = "test";

pub(crate) fn user(n: u32) -> String {
    format!("@u{n}:{HS}")
}

fn is_local(user_id: &str) -> bool {
    user_id.split_once(':').map(|(_, s)| s) == Some(HS)
}

/// One event to persist.
#[derive(Debug, Clone)]
pub(crate) struct NewEvent {
    pub(crate) room_id: String,
    pub(crate) event_type: String,
    pub(crate) state_key: Option<String>,
    pub(crate) sender: String,
    pub(crate) content: Value,
    pub(crate) outlier: bool,
    pub(crate) out_of_band: bool,
    pub(crate) unsigned: Value,
}

impl NewEvent {
    pub(crate) fn state(
        room_id: &str,
        sender: &str,
        event_type: &str,
        key: &str,
        content: Value,
    ) -> Self {
        NewEvent {
            room_id: room_id.into(),
            event_type: event_type.into(),
            state_key: Some(key.into()),
            sender: sender.into(),
            content,
            outlier: false,
            out_of_band: false,
            unsigned: json!({}),
        }
    }
}

pub(crate) struct FakeSynapse {
    pub(crate) client: tokio_postgres::Client,
    next_stream_ordering: i64,
    next_room: u32,
    next_remote_room: u32,
    /// Each room's state as the room's own events define it (kept across a
    /// "no longer in room" wipe, so a re-join's delta carries all of it).
    full_state: HashMap<String, StateMap>,
}

impl FakeSynapse {
    /// Empties the Synapse tables of `database` (a loaded fixture).
    pub(crate) async fn new(database: &SynapseDatabase) -> FakeSynapse {
        let client = database.client().await;
        client
            .batch_execute(
                "TRUNCATE rooms, events, event_json, current_state_delta_stream,
                     current_state_events, room_memberships, local_current_membership,
                     redactions, rejections, ex_outlier_stream,
                     cache_invalidation_stream_by_instance CASCADE;
                 UPDATE stream_positions SET stream_id = 1 WHERE stream_name = 'events';",
            )
            .await
            .unwrap();
        FakeSynapse {
            client,
            next_stream_ordering: 2,
            next_room: 0,
            next_remote_room: 0,
            full_state: HashMap::new(),
        }
    }

    /// The stream ordering the next event will get.
    pub(crate) fn next_position(&self) -> i64 {
        self.next_stream_ordering
    }

    /// Persists one batch; returns the event IDs.
    pub(crate) async fn persist(&mut self, batch: Vec<NewEvent>) -> Vec<String> {
        let first = self.next_stream_ordering;
        let mut ids = Vec::new();
        let mut state_changes = StateChanges::new();
        for event in &batch {
            let stream_ordering = self.next_stream_ordering;
            self.next_stream_ordering += 1;
            let event_id = format!("$e{stream_ordering}");
            self.insert_event(event, stream_ordering, &event_id).await;
            if let (Some(key), false) = (&event.state_key, event.outlier) {
                let membership = (event.event_type == "m.room.member").then(|| {
                    event.content["membership"]
                        .as_str()
                        .unwrap_or("leave")
                        .to_owned()
                });
                state_changes.insert(
                    (event.room_id.clone(), event.event_type.clone(), key.clone()),
                    (event_id.clone(), membership),
                );
            }
            ids.push(event_id);
        }
        let rooms: Vec<String> = {
            let mut rooms: Vec<String> = state_changes.keys().map(|(r, _, _)| r.clone()).collect();
            rooms.dedup();
            rooms
        };
        for room in rooms {
            self.update_current_state(&room, first, &state_changes)
                .await;
        }
        self.client
            .execute(
                "UPDATE stream_positions SET stream_id = $1 WHERE stream_name = 'events'",
                &[&(self.next_stream_ordering - 1)],
            )
            .await
            .unwrap();
        ids
    }

    /// Writes one event as Synapse stores it: `events`, `event_json`, for
    /// a membership `room_memberships` (and `local_current_membership` for a
    /// local user), and `rooms` for a create event or an out-of-band one.
    async fn insert_event(&self, event: &NewEvent, stream_ordering: i64, event_id: &str) {
        let mut body = json!({
            "event_id": event_id, "room_id": event.room_id, "type": event.event_type,
            "sender": event.sender, "content": event.content, "unsigned": event.unsigned,
            "origin_server_ts": stream_ordering,
        });
        if let Some(key) = &event.state_key {
            body["state_key"] = json!(key);
        }
        let metadata = if event.out_of_band {
            json!({"out_of_band_membership": true})
        } else {
            json!({})
        };
        allocate_stream_ordering(&self.client, stream_ordering).await;
        self.client
            .execute(
                "INSERT INTO events (topological_ordering, event_id, type, room_id, processed,
                     outlier, depth, origin_server_ts, received_ts, sender, instance_name,
                     stream_ordering, state_key)
                 VALUES ($1, $2, $3, $4, TRUE, $5, $1, $1, $1, $6, 'master', $1, $7)",
                &[
                    &stream_ordering,
                    &event_id,
                    &event.event_type,
                    &event.room_id,
                    &event.outlier,
                    &event.sender,
                    &event.state_key,
                ],
            )
            .await
            .unwrap();
        self.client
            .execute(
                "INSERT INTO event_json (event_id, room_id, internal_metadata, json, format_version)
                 VALUES ($1, $2, $3, $4, 3)",
                &[&event_id, &event.room_id, &metadata.to_string(), &body.to_string()],
            )
            .await
            .unwrap();
        if event.event_type == "m.room.member" {
            self.insert_membership(event, stream_ordering, event_id)
                .await;
        }
        if event.event_type == "m.room.create" || event.out_of_band {
            self.client
                .execute(
                    "INSERT INTO rooms (room_id, is_public, creator, room_version, has_auth_chain_index)
                     VALUES ($1, TRUE, $2, '10', TRUE) ON CONFLICT DO NOTHING",
                    &[&event.room_id, &event.sender],
                )
                .await
                .unwrap();
        }
    }

    /// A membership's `room_memberships` row, and for a local user its
    /// `local_current_membership` row.
    async fn insert_membership(&self, event: &NewEvent, stream_ordering: i64, event_id: &str) {
        let target = event.state_key.clone().unwrap_or_default();
        let membership = event.content["membership"].as_str().unwrap_or("leave");
        self.client
            .execute(
                "INSERT INTO room_memberships (event_id, user_id, sender, room_id, membership,
                     forgotten, event_stream_ordering)
                 VALUES ($1, $2, $3, $4, $5, 0, $6)",
                &[
                    &event_id,
                    &target,
                    &event.sender,
                    &event.room_id,
                    &membership,
                    &stream_ordering,
                ],
            )
            .await
            .unwrap();
        if is_local(&target) {
            self.client
                .execute(
                    "DELETE FROM local_current_membership WHERE room_id = $1 AND user_id = $2",
                    &[&event.room_id, &target],
                )
                .await
                .unwrap();
            self.client
                .execute(
                    "INSERT INTO local_current_membership
                         (room_id, user_id, event_id, membership, event_stream_ordering)
                     VALUES ($1, $2, $3, $4, $5)",
                    &[
                        &event.room_id,
                        &target,
                        &event_id,
                        &membership,
                        &stream_ordering,
                    ],
                )
                .await
                .unwrap();
        }
    }

    async fn update_current_state(&mut self, room: &str, stream_id: i64, changes: &StateChanges) {
        let current: Vec<CurrentRow> = self
            .client
            .query(
                "SELECT type, state_key, event_id, membership FROM current_state_events WHERE room_id = $1",
                &[&room],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
        let mut after: StateMap = current
            .iter()
            .map(|(t, k, e, m)| ((t.clone(), k.clone()), (e.clone(), m.clone())))
            .collect();
        let mut touches_local_member = false;
        let full = self.full_state.entry(room.to_owned()).or_default();
        for ((r, t, k), value) in changes {
            if r == room {
                touches_local_member |= t == "m.room.member" && is_local(k);
                after.insert((t.clone(), k.clone()), value.clone());
                full.insert((t.clone(), k.clone()), value.clone());
            }
        }
        // A re-join after a wipe: the new current state is the whole state,
        // all of it inserted.
        let rejoin = current.is_empty()
            && !changes
                .keys()
                .any(|(r, t, _)| r == room && t == "m.room.create");
        let full = full.clone();
        if rejoin {
            after = full.clone();
        }
        let still_joined = after.iter().any(|((t, k), (_, m))| {
            t == "m.room.member" && is_local(k) && m.as_deref() == Some("join")
        });
        if touches_local_member && !still_joined {
            self.no_longer_in_room(room, stream_id, &current).await;
            return;
        }
        if rejoin && !touches_local_member {
            // The server is not in the room: nothing is tracked.
            return;
        }
        let inserted: Vec<_> = if rejoin {
            full.into_iter().collect()
        } else {
            changes
                .iter()
                .filter(|((r, _, _), _)| r == room)
                .map(|((_, t, k), v)| ((t.clone(), k.clone()), v.clone()))
                .collect()
        };
        for ((t, k), (e, m)) in &inserted {
            let previous = current
                .iter()
                .find(|(ct, ck, _, _)| ct == t && ck == k)
                .map(|(_, _, pe, _)| pe.clone());
            self.client
                .execute(
                    "INSERT INTO current_state_delta_stream
                         (stream_id, room_id, type, state_key, event_id, prev_event_id, instance_name)
                     VALUES ($1, $2, $3, $4, $5, $6, 'master')",
                    &[&stream_id, &room, t, k, e, &previous],
                )
                .await
                .unwrap();
            self.replace_current_event(room, (t, k), (e, m)).await;
        }
    }

    /// No longer in room: every current key deleted, nothing inserted.
    async fn no_longer_in_room(&self, room: &str, stream_id: i64, current: &[CurrentRow]) {
        for (t, k, e, _) in current {
            self.client
                .execute(
                    "INSERT INTO current_state_delta_stream
                         (stream_id, room_id, type, state_key, event_id, prev_event_id, instance_name)
                     VALUES ($1, $2, $3, $4, NULL, $5, 'master')",
                    &[&stream_id, &room, t, k, e],
                )
                .await
                .unwrap();
        }
        self.client
            .execute(
                "DELETE FROM current_state_events WHERE room_id = $1",
                &[&room],
            )
            .await
            .unwrap();
    }

    /// The `current_state_events` row of a key becomes `(event, membership)`.
    async fn replace_current_event(
        &self,
        room: &str,
        (t, k): (&String, &String),
        (e, m): (&String, &Option<String>),
    ) {
        self.client
            .execute(
                "DELETE FROM current_state_events WHERE room_id = $1 AND type = $2 AND state_key = $3",
                &[&room, t, k],
            )
            .await
            .unwrap();
        let stream_ordering: i64 = self
            .client
            .query_one(
                "SELECT stream_ordering FROM events WHERE event_id = $1",
                &[e],
            )
            .await
            .unwrap()
            .get(0);
        self.client
            .execute(
                "INSERT INTO current_state_events
                     (event_id, room_id, type, state_key, membership, event_stream_ordering)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[e, &room, t, k, m, &stream_ordering],
            )
            .await
            .unwrap();
    }

    /// The client `createRoom`: C alone, the owner's join alone, then power
    /// levels, join rules and history visibility in one batch.
    pub(crate) async fn create_room(&mut self, owner: &str, room_type: Option<&str>) -> String {
        self.next_room += 1;
        let room = format!("!room{}:{HS}", self.next_room);
        let mut content = json!({"creator": owner, "room_version": "10"});
        if let Some(t) = room_type {
            content["type"] = json!(t);
        }
        self.persist(vec![NewEvent::state(
            &room,
            owner,
            "m.room.create",
            "",
            content,
        )])
        .await;
        self.member(&room, owner, owner, "join").await;
        self.persist(vec![
            NewEvent::state(
                &room,
                owner,
                "m.room.power_levels",
                "",
                json!({"users": {owner: 100}}),
            ),
            NewEvent::state(
                &room,
                owner,
                "m.room.join_rules",
                "",
                json!({"join_rule": "public"}),
            ),
            NewEvent::state(
                &room,
                owner,
                "m.room.history_visibility",
                "",
                json!({"history_visibility": "shared"}),
            ),
        ])
        .await;
        room
    }

    pub(crate) async fn state(
        &mut self,
        room: &str,
        sender: &str,
        event_type: &str,
        content: Value,
    ) -> String {
        self.persist(vec![NewEvent::state(room, sender, event_type, "", content)])
            .await
            .remove(0)
    }

    pub(crate) async fn name(&mut self, room: &str, sender: &str, name: &str) -> String {
        self.state(room, sender, "m.room.name", json!({"name": name}))
            .await
    }

    pub(crate) async fn encrypt(&mut self, room: &str, sender: &str) -> String {
        self.state(
            room,
            sender,
            "m.room.encryption",
            json!({"algorithm": "m.megolm.v1.aes-sha2"}),
        )
        .await
    }

    pub(crate) async fn tombstone(&mut self, room: &str, sender: &str, successor: &str) -> String {
        self.state(
            room,
            sender,
            "m.room.tombstone",
            json!({"replacement_room": successor}),
        )
        .await
    }

    pub(crate) async fn member(
        &mut self,
        room: &str,
        sender: &str,
        target: &str,
        membership: &str,
    ) -> String {
        self.persist(vec![NewEvent::state(
            room,
            sender,
            "m.room.member",
            target,
            json!({"membership": membership}),
        )])
        .await
        .remove(0)
    }

    pub(crate) async fn message(&mut self, room: &str, sender: &str) -> String {
        self.persist(vec![NewEvent {
            room_id: room.into(),
            event_type: "m.room.message".into(),
            state_key: None,
            sender: sender.into(),
            content: json!({"msgtype": "m.text", "body": "hello"}),
            outlier: false,
            out_of_band: false,
            unsigned: json!({}),
        }])
        .await
        .remove(0)
    }

    /// A remote server's invite for `target`, persisted as an out-of-band
    /// outlier with the stripped state in `unsigned.invite_room_state`.
    pub(crate) async fn remote_invite(
        &mut self,
        target: &str,
        stripped: Option<Vec<Value>>,
    ) -> (String, String) {
        let room = format!("!test_room{}:remote_server", self.next_remote_room);
        self.next_remote_room += 1;
        let unsigned = match stripped {
            Some(items) => json!({"invite_room_state": items}),
            None => json!({}),
        };
        let id = self
            .persist(vec![NewEvent {
                room_id: room.clone(),
                event_type: "m.room.member".into(),
                state_key: Some(target.into()),
                sender: "@inviter:remote_server".into(),
                content: json!({"membership": "invite"}),
                outlier: true,
                out_of_band: true,
                unsigned,
            }])
            .await
            .remove(0);
        (room, id)
    }

    /// An out-of-band leave (a rejection by `sender` or a remote retraction).
    pub(crate) async fn out_of_band_leave(
        &mut self,
        room: &str,
        sender: &str,
        target: &str,
    ) -> String {
        self.persist(vec![NewEvent {
            room_id: room.into(),
            event_type: "m.room.member".into(),
            state_key: Some(target.into()),
            sender: sender.into(),
            content: json!({"membership": "leave"}),
            outlier: true,
            out_of_band: true,
            unsigned: json!({}),
        }])
        .await
        .remove(0)
    }

    /// The client `forget`: every membership of the user in the room, and
    /// in the same transaction the `did_forget` cache invalidation Synapse
    /// writes on its caches stream.
    pub(crate) async fn forget(&self, room: &str, user_id: &str) {
        self.client.batch_execute("BEGIN").await.unwrap();
        self.client
            .execute(
                "UPDATE room_memberships SET forgotten = 1 WHERE room_id = $1 AND user_id = $2",
                &[&room, &user_id],
            )
            .await
            .unwrap();
        self.client
            .execute(
                "INSERT INTO cache_invalidation_stream_by_instance
                     (stream_id, instance_name, cache_func, keys, invalidation_ts)
                 VALUES (nextval('cache_invalidation_stream_seq'), 'master', 'did_forget',
                         ARRAY[$1, $2], 0)",
                &[&user_id, &room],
            )
            .await
            .unwrap();
        self.client.batch_execute("COMMIT").await.unwrap();
    }

    pub(crate) async fn stream_ordering(&self, event_id: &str) -> i64 {
        self.client
            .query_one(
                "SELECT stream_ordering FROM events WHERE event_id = $1",
                &[&event_id],
            )
            .await
            .unwrap()
            .get(0)
    }
}

/// A stripped state item from the remote inviter.
pub(crate) fn stripped(event_type: &str, content: Value) -> Value {
    json!({"type": event_type, "state_key": "", "sender": "@inviter:remote_server", "content": content})
}
