//! Oracle tests against a real Synapse database (`tests/fixtures/synapse/`):
//! roomcache in source mode, following or importing the fixture's
//! database, must hold exactly the rows Synapse maintained live (all
//! columns); after changes made while it was stopped, a restart must queue
//! and recompute exactly the changed rooms.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{unique_schema, ServerOptions, TestServer};
use roomcache::store::LoadedRows;
use serde_json::Value;
use tokio_postgres::NoTls;

const SERVER_NAME: &str = "oracle.test";
/// The fixture's events-stream position (`stream_positions`).
const FIXTURE_POSITION: i64 = 3029;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/synapse")
        .join(name)
}

/// The test cluster's URL with another database name.
fn url_for_database(database: &str) -> String {
    let base = common::database_url();
    match base.rsplit_once('/') {
        Some((prefix, _)) => format!("{prefix}/{database}"),
        None => panic!("unexpected database URL {base}"),
    }
}

/// A private copy of the fixture's Synapse database.
struct SynapseDatabase {
    name: String,
    url: String,
}

impl SynapseDatabase {
    async fn load(fixture_name: &str) -> SynapseDatabase {
        let name = unique_schema("synapse");
        let (admin, connection) = tokio_postgres::connect(&url_for_database("postgres"), NoTls)
            .await
            .expect("connect to the test cluster");
        tokio::spawn(connection);
        admin
            .batch_execute(&format!(
                "CREATE DATABASE {name} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
            ))
            .await
            .expect("create the Synapse database");
        let url = url_for_database(&name);
        let gunzip = Command::new("gunzip")
            .arg("-c")
            .arg(fixture(fixture_name))
            .stdout(Stdio::piped())
            .spawn()
            .expect("gunzip");
        let status = Command::new("psql")
            .args(["-q", "-v", "ON_ERROR_STOP=1", "-o", "/dev/null", &url])
            .stdin(gunzip.stdout.expect("gunzip output"))
            .status()
            .expect("psql");
        assert!(status.success(), "loading the dump failed");
        SynapseDatabase { name, url }
    }

    async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .expect("connect to the Synapse database");
        tokio::spawn(connection);
        client
    }
}

/// A CSV field: `None` for NULL (an empty unquoted field).
type Field = Option<String>;

/// Parses the fixture's CSV (header row; NULL is empty, "" is the empty string).
fn parse_csv(text: &str) -> Vec<Vec<Field>> {
    let mut records = Vec::new();
    let mut record: Vec<Field> = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut in_quotes = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    field.push('"');
                    chars.next();
                } else {
                    in_quotes = false;
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            '"' => {
                in_quotes = true;
                quoted = true;
            }
            ',' => {
                record.push((quoted || !field.is_empty()).then(|| std::mem::take(&mut field)));
                quoted = false;
            }
            '\n' => {
                record.push((quoted || !field.is_empty()).then(|| std::mem::take(&mut field)));
                quoted = false;
                records.push(std::mem::take(&mut record));
            }
            '\r' => {}
            other => field.push(other),
        }
    }
    if !record.is_empty() || !field.is_empty() {
        record.push((quoted || !field.is_empty()).then_some(field));
        records.push(record);
    }
    records.remove(0);
    records
}

fn text(value: &str) -> Field {
    Some(value.to_owned())
}

fn boolean(value: bool) -> Field {
    text(if value { "t" } else { "f" })
}

/// The rows of both tables as the fixture's CSV writes them, keyed.
#[derive(Debug, PartialEq)]
struct Tables {
    joined: BTreeMap<String, Vec<Field>>,
    snapshots: BTreeMap<(String, String), Vec<Field>>,
}

impl Tables {
    fn from_csv(joined: &str, snapshots: &str) -> Tables {
        let joined_text = std::fs::read_to_string(fixture(joined)).expect("joined CSV");
        let snapshot_text = std::fs::read_to_string(fixture(snapshots)).expect("snapshot CSV");
        Tables {
            joined: parse_csv(&joined_text)
                .into_iter()
                .map(|r| (r[0].clone().unwrap_or_default(), r))
                .collect(),
            snapshots: parse_csv(&snapshot_text)
                .into_iter()
                .map(|r| {
                    (
                        (
                            r[0].clone().unwrap_or_default(),
                            r[1].clone().unwrap_or_default(),
                        ),
                        r,
                    )
                })
                .collect(),
        }
    }

    fn from_rows(rows: &LoadedRows) -> Tables {
        Tables {
            joined: rows
                .joined_rooms
                .iter()
                .map(|r| {
                    (
                        r.room_id.to_string(),
                        vec![
                            text(r.room_id.as_str()),
                            text(&r.event_stream_ordering.to_string()),
                            r.bump_stamp.map(|b| b.to_string()),
                            r.metadata.room_type.clone(),
                            r.metadata.room_name.clone(),
                            boolean(r.metadata.is_encrypted),
                            r.metadata.tombstone_successor_room_id.clone(),
                        ],
                    )
                })
                .collect(),
            snapshots: rows
                .snapshots
                .iter()
                .map(|s| {
                    (
                        (s.room_id.to_string(), s.user_id.to_string()),
                        vec![
                            text(s.room_id.as_str()),
                            text(s.user_id.as_str()),
                            text(s.sender.as_str()),
                            text(s.membership_event_id.as_str()),
                            text(s.membership.as_str()),
                            text(if s.forgotten { "1" } else { "0" }),
                            text(&s.event_stream_ordering.to_string()),
                            text(&s.event_instance_name),
                            boolean(s.has_known_state),
                            s.metadata.room_type.clone(),
                            s.metadata.room_name.clone(),
                            boolean(s.metadata.is_encrypted),
                            s.metadata.tombstone_successor_room_id.clone(),
                        ],
                    )
                })
                .collect(),
        }
    }

    /// Every difference, one line each (empty when equal).
    fn differences(&self, expected: &Tables) -> Vec<String> {
        let mut lines = Vec::new();
        for key in self.joined.keys().chain(expected.joined.keys()) {
            let (ours, theirs) = (self.joined.get(key), expected.joined.get(key));
            if ours != theirs && !lines.iter().any(|l: &String| l.contains(key)) {
                lines.push(format!("joined {key}: ours {ours:?} expected {theirs:?}"));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for key in self.snapshots.keys().chain(expected.snapshots.keys()) {
            let (ours, theirs) = (self.snapshots.get(key), expected.snapshots.get(key));
            if ours != theirs && seen.insert(key.clone()) {
                lines.push(format!(
                    "snapshot {key:?}: ours {ours:?} expected {theirs:?}"
                ));
            }
        }
        lines
    }
}

fn source_options(synapse: &SynapseDatabase, import: bool) -> ServerOptions {
    ServerOptions {
        server_name: SERVER_NAME.into(),
        extra_args: vec![
            "--source-database-url".into(),
            synapse.url.clone(),
            "--source-import-on-start".into(),
            import.to_string(),
            "--source-poll-interval-ms".into(),
            "20".into(),
            "--source-batch-size".into(),
            "100".into(),
            "--source-import-batch-rooms".into(),
            "7".into(),
        ],
        ..ServerOptions::default()
    }
}

/// Waits until the server's position reaches `position` with an empty queue.
async fn wait_for_position(server: &TestServer, position: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = server.get("/v1/status").await;
        let body = status.body.clone();
        if body["positions"]["master"].as_i64() == Some(position)
            && body["recalculation_queue"].as_i64() == Some(0)
        {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "position {position} not reached: {}\n{}",
            status.text,
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_no_differences(ours: &Tables, expected: &Tables, what: &str) {
    let differences = ours.differences(expected);
    assert!(
        differences.is_empty(),
        "{what}: {} differences:\n{}",
        differences.len(),
        differences.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_the_fixture_from_position_zero_reproduces_synapses_live_tables() {
    let synapse = SynapseDatabase::load("small.sql.gz").await;
    let mut server = TestServer::start_with(source_options(&synapse, false)).await;
    let status = wait_for_position(&server, FIXTURE_POSITION).await;
    assert_eq!(status["source"]["position"], FIXTURE_POSITION);
    let ours = Tables::from_rows(&server.rows_in_postgres().await);
    let live = Tables::from_csv("small.joined_rooms.csv", "small.membership_snapshots.csv");
    assert_eq!((live.joined.len(), live.snapshots.len()), (63, 321));
    assert_no_differences(&ours, &live, "follow from 0 vs Synapse's live tables");
    server.assert_postgres_matches_served().await;
    server.stop().await;
    let _ = synapse.name;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_the_fixture_reproduces_synapses_live_tables_not_its_rebuild() {
    let synapse = SynapseDatabase::load("small.sql.gz").await;
    let mut server = TestServer::start_with(source_options(&synapse, true)).await;
    let status = wait_for_position(&server, FIXTURE_POSITION).await;
    assert_eq!(status["source"]["invalidated_at_start"], 0);
    let ours = Tables::from_rows(&server.rows_in_postgres().await);
    let live = Tables::from_csv("small.joined_rooms.csv", "small.membership_snapshots.csv");
    assert_no_differences(&ours, &live, "import vs Synapse's live tables");
    // Synapse's own rebuild differs from live in 74 rows; the import does not.
    let rebuilt = Tables::from_csv(
        "small.rebuilt.joined_rooms.csv",
        "small.rebuilt.membership_snapshots.csv",
    );
    assert_eq!(live.differences(&rebuilt).len(), 74);
    // The import recorded its progress, finished, at the fixture's position.
    let client = server.store().await.client().await.unwrap();
    let progress = client
        .query_one(
            "SELECT target_position, rooms_done, rows_written, finished FROM source_import_progress",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(progress.get::<_, i64>(0), FIXTURE_POSITION);
    assert_eq!(progress.get::<_, i64>(1), 71);
    assert_eq!(progress.get::<_, i64>(2), 63 + 321);
    assert!(progress.get::<_, bool>(3));
    // A restart neither imports again nor invalidates anything.
    server.restart().await;
    let status = wait_for_position(&server, FIXTURE_POSITION).await;
    assert_eq!(status["source"]["invalidated_at_start"], 0);
    let again = Tables::from_rows(&server.rows_in_postgres().await);
    assert_no_differences(&again, &live, "after a restart");
    server.stop().await;
}

/// Inserts an event as Synapse persists one (events, event_json and, for
/// state, the delta row and current state), at `stream_ordering`.
async fn persist_event(
    client: &tokio_postgres::Client,
    stream_ordering: i64,
    room_id: &str,
    event_type: &str,
    state_key: Option<&str>,
    sender: &str,
    content: Value,
) -> String {
    let event_id = format!("$test{stream_ordering}");
    let json = serde_json::json!({
        "event_id": event_id, "room_id": room_id, "type": event_type,
        "sender": sender, "content": content, "state_key": state_key,
        "origin_server_ts": 0, "unsigned": {},
    });
    client
        .execute(
            "INSERT INTO events (topological_ordering, event_id, type, room_id, processed, outlier,
                 depth, origin_server_ts, received_ts, sender, instance_name, stream_ordering, state_key)
             VALUES ($1, $2, $3, $4, TRUE, FALSE, $1, 0, 0, $5, 'master', $1, $6)",
            &[&stream_ordering, &event_id, &event_type, &room_id, &sender, &state_key],
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO event_json (event_id, room_id, internal_metadata, json, format_version)
             VALUES ($1, $2, '{}', $3, 3)",
            &[&event_id, &room_id, &json.to_string()],
        )
        .await
        .unwrap();
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
                "UPDATE current_state_events SET event_id = $4, event_stream_ordering = $5
                 WHERE room_id = $1 AND type = $2 AND state_key = $3",
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
    client
        .execute(
            "UPDATE stream_positions SET stream_id = $1 WHERE stream_name = 'events'",
            &[&stream_ordering],
        )
        .await
        .unwrap();
    event_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_source_changes_recomputes_exactly_the_changed_rooms() {
    let synapse = SynapseDatabase::load("small.sql.gz").await;
    let mut server = TestServer::start_with(source_options(&synapse, true)).await;
    wait_for_position(&server, FIXTURE_POSITION).await;
    let before = server.rows_in_postgres().await;
    server.stop().await;

    // While roomcache is down: a message in one room, a rename in another.
    let live = Tables::from_csv("small.joined_rooms.csv", "small.membership_snapshots.csv");
    let mut rooms = live.joined.keys();
    let messaged = rooms.next().unwrap().clone();
    let renamed = rooms.next().unwrap().clone();
    let member_of = |room: &str| {
        live.snapshots
            .keys()
            .find(|(r, _)| r == room)
            .map(|(_, u)| u.clone())
            .unwrap()
    };
    let client = synapse.client().await;
    persist_event(
        &client,
        3030,
        &messaged,
        "m.room.message",
        None,
        &member_of(&messaged),
        serde_json::json!({"msgtype": "m.text", "body": "while you were away"}),
    )
    .await;
    persist_event(
        &client,
        3031,
        &renamed,
        "m.room.name",
        Some(""),
        &member_of(&renamed),
        serde_json::json!({"name": "Renamed while away"}),
    )
    .await;

    server.spawn().await;
    let status = wait_for_position(&server, 3031).await;
    assert_eq!(status["source"]["invalidated_at_start"], 2, "{status}");
    assert_eq!(status["recalculation_queue"], 0);
    let after = server.rows_in_postgres().await;
    let (before_tables, after_tables) = (Tables::from_rows(&before), Tables::from_rows(&after));
    let mut expected = before_tables;
    let row = expected.joined.get_mut(&messaged).unwrap();
    row[1] = text("3030");
    row[2] = text("3030");
    let row = expected.joined.get_mut(&renamed).unwrap();
    row[1] = text("3031");
    row[4] = text("Renamed while away");
    assert_no_differences(&after_tables, &expected, "after the restart");
    let queue = server
        .store()
        .await
        .client()
        .await
        .unwrap()
        .query(
            "SELECT room_id FROM sliding_sync_joined_rooms_to_recalculate",
            &[],
        )
        .await
        .unwrap();
    assert!(queue.is_empty());
    assert!(server
        .log()
        .contains("rooms changed in Synapse since the cached position were invalidated"));

    // Following continues live after the recalculation.
    persist_event(
        &client,
        3032,
        &renamed,
        "m.room.message",
        None,
        &member_of(&renamed),
        serde_json::json!({"msgtype": "m.text", "body": "live again"}),
    )
    .await;
    wait_for_position(&server, 3032).await;
    let served = server.served_joined_room(&renamed).await.unwrap();
    assert_eq!(served.event_stream_ordering, 3032);
    assert_eq!(served.bump_stamp, Some(3032));
    assert_eq!(
        served.metadata.room_name.as_deref(),
        Some("Renamed while away")
    );
    server.stop().await;
}
