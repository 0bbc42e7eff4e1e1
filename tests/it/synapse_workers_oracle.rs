//! Oracle tests against a real multi-writer Synapse database
//! (`tests/fixtures/synapse/workers.*`: two event persisters, p1 and p2):
//! following from position 0 and importing both give exactly the rows
//! Synapse maintained live (all columns, both `event_instance_name`s), and
//! every writer reaches the fixture's position although p2's
//! `stream_positions` row stayed behind.

use crate::support::server::TestServer;
use crate::support::synapse::{
    assert_no_differences, source_options, wait_for_writers, SynapseDatabase, Tables,
    WORKERS_FIXTURE_POSITION, WORKERS_SERVER_NAME, WORKERS_WRITERS,
};

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
    let options = source_options(&synapse)
        .server_name(WORKERS_SERVER_NAME)
        .writers(&WORKERS_WRITERS)
        .build();
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
    let options = source_options(&synapse)
        .server_name(WORKERS_SERVER_NAME)
        .writers(&WORKERS_WRITERS)
        .import_on_start(true)
        .build();
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
