//! Oracle tests against a real Synapse database (`tests/fixtures/synapse/`):
//! roomcache in source mode, following or importing the fixture's
//! database, must hold exactly the rows Synapse maintained live (all
//! columns); after changes made while it was stopped, a restart must queue
//! and recompute exactly the changed rooms.

use crate::support::server::{database_url, unique_schema, TestServer};
use crate::support::synapse::{
    assert_no_differences, persist_event, persist_message, source_event, source_options, text,
    wait_for_position, SynapseDatabase, Tables, FIXTURE_POSITION, SERVER_NAME,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_the_fixture_from_position_zero_reproduces_synapses_live_tables() {
    let synapse = SynapseDatabase::load("small.sql.gz").await;
    let mut server = TestServer::start_with(source_options(&synapse).build()).await;
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
    let mut server =
        TestServer::start_with(source_options(&synapse).import_on_start(true).build()).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_source_changes_recomputes_exactly_the_changed_rooms() {
    let synapse = SynapseDatabase::load("small.sql.gz").await;
    let mut server =
        TestServer::start_with(source_options(&synapse).import_on_start(true).build()).await;
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
    let message = source_event(&messaged, &member_of(&messaged), "m.room.message")
        .content(json!({"msgtype": "m.text", "body": "while you were away"}));
    persist_event(&client, 3030, message).await;
    let rename = source_event(&renamed, &member_of(&renamed), "m.room.name")
        .state_key("")
        .content(json!({"name": "Renamed while away"}));
    persist_event(&client, 3031, rename).await;

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
        .stored_rows(
            "SELECT room_id FROM sliding_sync_joined_rooms_to_recalculate",
            &[],
        )
        .await;
    assert!(queue.is_empty());
    assert!(server
        .log()
        .contains("rooms changed in Synapse since the cached position were invalidated"));

    // Following continues live after the recalculation.
    let message = source_event(&renamed, &member_of(&renamed), "m.room.message")
        .content(json!({"msgtype": "m.text", "body": "live again"}));
    persist_event(&client, 3032, message).await;
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

/// Runs `roomcache import` into `schema`; returns its standard output.
fn run_import_command(synapse: &SynapseDatabase, schema: &str) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_roomcache"))
        .args(["import", "--config", "/dev/null"])
        .args(["--database-url", &database_url()])
        .args(["--schema", schema])
        .args(["--source-database-url", &synapse.url])
        .args(["--server-name", SERVER_NAME])
        .args(["--source-import-batch-rooms", "10"])
        .output()
        .expect("running roomcache import");
    assert!(
        output.status.success(),
        "import failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_import_continues_after_the_last_committed_room() {
    let synapse = SynapseDatabase::load("small.sql.gz").await;
    let live = Tables::from_csv("small.joined_rooms.csv", "small.membership_snapshots.csv");
    // A complete import, to take the first batches' rows from.
    let complete = unique_schema("import_full");
    let output = run_import_command(&synapse, &complete);
    assert!(
        output.contains("imported 71 rooms, 384 rows at stream position 3029"),
        "{output}"
    );
    // An import interrupted after its first 30 rooms: their rows, memory and
    // progress committed, nothing else.
    let interrupted = unique_schema("import_resumed");
    let store = roomcache::store::Store::connect(&database_url(), &interrupted, 1)
        .await
        .unwrap();
    let client = store.client().await.unwrap();
    let thirtieth: String = synapse
        .client()
        .await
        .query_one(
            "SELECT room_id FROM (SELECT room_id FROM rooms UNION SELECT room_id FROM local_current_membership) t
             ORDER BY room_id OFFSET 29 LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let mut copied_rows = 0i64;
    for (table, room_column) in [
        ("sliding_sync_joined_rooms", "room_id"),
        ("sliding_sync_membership_snapshots", "room_id"),
        ("room_rules_memory", "room_id"),
        ("space_children", "space_room_id"),
        ("room_current_state", "room_id"),
    ] {
        let copied = client
            .execute(
                &format!(
                    "INSERT INTO {interrupted}.{table} SELECT * FROM {complete}.{table} WHERE {room_column} <= $1"
                ),
                &[&thirtieth],
            )
            .await
            .unwrap();
        if table.starts_with("sliding_sync") {
            copied_rows += copied as i64;
        }
    }
    // The held state's types, recorded at the start of the first run.
    client
        .execute(
            &format!("INSERT INTO {interrupted}.room_state_types SELECT * FROM {complete}.room_state_types"),
            &[],
        )
        .await
        .unwrap();
    // A marker proves the resumed import does not redo committed rooms.
    let marked = client
        .execute(
            &format!(
                "UPDATE {interrupted}.sliding_sync_joined_rooms SET room_name = 'marker'
                 WHERE room_id = (SELECT MIN(room_id) FROM {interrupted}.sliding_sync_joined_rooms)"
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(marked, 1);
    client
        .execute(
            &format!(
                "INSERT INTO {interrupted}.source_import_progress
                     (target_position, last_room_id, rooms_done, rows_written, finished)
                 VALUES ($1, $2, 30, $3, FALSE)"
            ),
            &[&FIXTURE_POSITION, &thirtieth, &copied_rows],
        )
        .await
        .unwrap();
    drop(client);
    let output = run_import_command(&synapse, &interrupted);
    assert!(
        output.contains("imported 71 rooms, 384 rows at stream position 3029"),
        "{output}"
    );
    let rows = store.load_all().await.unwrap();
    let complete_rows = roomcache::store::Store::connect(&database_url(), &complete, 1)
        .await
        .unwrap()
        .load_all()
        .await
        .unwrap();
    assert_eq!(rows.space_children, complete_rows.space_children);
    assert_eq!(rows.current_states, complete_rows.current_states);
    assert_eq!(rows.current_states.len(), 63);
    assert_eq!(rows.space_children.len(), 7);
    let ours = Tables::from_rows(&rows);
    let differences = ours.differences(&live);
    assert_eq!(differences.len(), 1, "{differences:#?}");
    assert!(differences[0].contains("marker"), "{differences:#?}");
    assert_eq!(rows.positions.get("master"), Some(&FIXTURE_POSITION));
    // Once finished, running it again does nothing.
    let output = run_import_command(&synapse, &interrupted);
    assert!(output.contains("had already finished"), "{output}");
}

/// A monolith writes its events stream's `stream_positions` row from its
/// first persisted batch on; until then roomcache walks the positions in
/// use. Batches of different rooms persist concurrently and a later one
/// can commit first: the position missing below it is waited for, so its
/// event is not skipped when it commits (it was, before: roomcache took
/// the highest stream ordering in use).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_positions_row_an_event_committed_late_is_not_skipped() {
    let synapse = SynapseDatabase::load("small.sql.gz").await;
    let client = synapse.client().await;
    client
        .batch_execute("DELETE FROM stream_positions WHERE stream_name = 'events'")
        .await
        .unwrap();
    let mut server =
        TestServer::start_with(source_options(&synapse).import_on_start(true).build()).await;
    wait_for_position(&server, FIXTURE_POSITION).await;
    // The later position commits first; the earlier one is in flight.
    let (late, early) = (FIXTURE_POSITION + 1, FIXTURE_POSITION + 2);
    let room = persist_message(&synapse, "master", early).await;
    server.post("/v1/source/wake", &json!({})).await;
    server.wait_for_log("waiting for it").await;
    let status = server.get("/v1/status").await.body;
    assert_eq!(
        status["positions"]["master"],
        FIXTURE_POSITION,
        "{}",
        server.log()
    );
    persist_message(&synapse, "master", late).await;
    wait_for_position(&server, early).await;
    let stored = server
        .stored_rows(
            "SELECT events -> 'events' -> 0 ->> 0, events -> 'events' -> 1 ->> 0
             FROM room_latest_events WHERE room_id = $1",
            &[&room],
        )
        .await;
    let newest: (String, String) = (stored[0].get(0), stored[0].get(1));
    assert_eq!(
        newest,
        (format!("$announced{early}"), format!("$announced{late}")),
        "{}",
        server.log()
    );
    server.stop().await;
}
