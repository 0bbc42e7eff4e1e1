//! Oracle tests against a real multi-writer Synapse database
//! (`tests/fixtures/synapse/workers.*`: two event persisters, p1 and p2):
//! following from position 0 and importing both give exactly the rows
//! Synapse maintained live (all columns, both `event_instance_name`s), and
//! every writer reaches the fixture's position although p2's
//! `stream_positions` row stayed behind; a writer without a row holds the
//! others back at a position still missing.

use crate::support::server::TestServer;
use crate::support::synapse::{
    assert_no_differences, persist_message, source_options, wait_for_writers, SourceOptions,
    SynapseDatabase, Tables, WORKERS_FIXTURE_POSITION, WORKERS_SERVER_NAME, WORKERS_WRITERS,
};

/// Source mode on the workers fixture: its server name, both writers.
fn workers_options(synapse: &SynapseDatabase) -> SourceOptions<'_> {
    source_options(synapse)
        .server_name(WORKERS_SERVER_NAME)
        .writers(&WORKERS_WRITERS)
}

fn live_tables() -> Tables {
    let live = Tables::from_csv(
        "workers.joined_rooms.csv",
        "workers.membership_snapshots.csv",
    );
    assert_eq!((live.joined.len(), live.snapshots.len()), (26, 76));
    let writers: std::collections::BTreeSet<&str> = live
        .snapshots
        .values()
        .filter_map(|row| row[7].as_deref())
        .collect();
    assert_eq!(writers, WORKERS_WRITERS.into_iter().collect());
    live
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_the_workers_fixture_from_position_zero_reproduces_synapses_live_tables() {
    let synapse = SynapseDatabase::load("workers.sql.gz").await;
    let options = workers_options(&synapse).build();
    let mut server = TestServer::start_with(options).await;
    let status = wait_for_writers(&server, &WORKERS_WRITERS, WORKERS_FIXTURE_POSITION).await;
    assert_eq!(status["token"], format!("s{WORKERS_FIXTURE_POSITION}"));
    let ours = Tables::from_rows(&server.rows_in_postgres().await);
    assert_no_differences(
        &ours,
        &live_tables(),
        "follow from 0 vs Synapse's live tables",
    );
    server.assert_postgres_matches_served().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_the_workers_fixture_reproduces_synapses_live_tables() {
    let synapse = SynapseDatabase::load("workers.sql.gz").await;
    let options = workers_options(&synapse).import_on_start(true).build();
    let mut server = TestServer::start_with(options).await;
    let status = wait_for_writers(&server, &WORKERS_WRITERS, WORKERS_FIXTURE_POSITION).await;
    assert_eq!(status["source"]["invalidated_at_start"], 0);
    let ours = Tables::from_rows(&server.rows_in_postgres().await);
    assert_no_differences(&ours, &live_tables(), "import vs Synapse's live tables");
    // A restart neither imports again nor invalidates anything.
    server.restart().await;
    let status = wait_for_writers(&server, &WORKERS_WRITERS, WORKERS_FIXTURE_POSITION).await;
    assert_eq!(status["source"]["invalidated_at_start"], 0);
    let again = Tables::from_rows(&server.rows_in_postgres().await);
    assert_no_differences(&again, &live_tables(), "after a restart");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_without_a_stream_positions_row_holds_the_others_back_at_a_missing_position() {
    let synapse = SynapseDatabase::load("workers.sql.gz").await;
    let options = workers_options(&synapse).build();
    let mut server = TestServer::start_with(options).await;
    wait_for_writers(&server, &WORKERS_WRITERS, WORKERS_FIXTURE_POSITION).await;
    // p2 has no row (as before its first write); p1 commits 441 while p2's
    // 440 is still in flight, and says so in its row.
    let client = synapse.client().await;
    client
        .batch_execute(
            "DELETE FROM stream_positions WHERE stream_name = 'events' AND instance_name = 'p2'",
        )
        .await
        .unwrap();
    persist_message(&synapse, "p1", 441).await;
    client
        .batch_execute("UPDATE stream_positions SET stream_id = 441 WHERE stream_name = 'events' AND instance_name = 'p1'")
        .await
        .unwrap();
    // p1's own rows are safe up to its row; p2 stops before the gap.
    let status = wait_for_token(&server, "m439~p1.441").await;
    assert_eq!(status["positions"]["p2"], 439);
    // p2's 440 commits: the gap closes and p2 applies it.
    let room = persist_message(&synapse, "p2", 440).await;
    wait_for_writers(&server, &WORKERS_WRITERS, 441).await;
    let served = server.served_joined_room(&room).await.unwrap();
    assert_eq!(
        (served.event_stream_ordering, served.bump_stamp),
        (440, Some(440))
    );
    server.stop().await;
}

/// Waits until the server's token is `token`.
async fn wait_for_token(server: &TestServer, token: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let status = server.get("/v1/status").await.body;
        if status["token"] == token {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "token {token} not reached: {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
