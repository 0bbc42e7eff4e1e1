//! Source-mode servers on the Synapse fixtures, started and caught up, and
//! the assertion that every room agrees with Synapse's tables.

use super::server::TestServer;
use super::synapse::{
    source_options, wait_for_position, wait_for_writers, SynapseDatabase, FIXTURE_POSITION,
    WORKERS_FIXTURE_POSITION, WORKERS_SERVER_NAME, WORKERS_WRITERS,
};

/// Asserts no room of `rooms` differs from Synapse (`differences`: one
/// line per room that does).
pub(crate) fn assert_rooms_agree(differences: &[String], rooms: usize, what: &str) {
    assert!(
        differences.is_empty(),
        "{what}: {} of {rooms} rooms differ:\n{}",
        differences.len(),
        differences.join("\n")
    );
}

/// Two source-mode servers on `synapse`'s single-writer fixture, one
/// following from position 0 and one importing at start, once both have
/// reached the fixture's position.
pub(crate) async fn start_followed_and_imported(
    synapse: &SynapseDatabase,
) -> (TestServer, TestServer) {
    let followed = TestServer::start_with(source_options(synapse).build()).await;
    let imported =
        TestServer::start_with(source_options(synapse).import_on_start(true).build()).await;
    wait_for_position(&followed, FIXTURE_POSITION).await;
    wait_for_position(&imported, FIXTURE_POSITION).await;
    (followed, imported)
}

/// A source-mode server on the multi-writer fixture (its server name and
/// writers), importing at start or following from 0, once every writer
/// has reached the fixture's position.
pub(crate) async fn start_on_workers(
    synapse: &SynapseDatabase,
    import_on_start: bool,
) -> TestServer {
    let server = TestServer::start_with(
        source_options(synapse)
            .server_name(WORKERS_SERVER_NAME)
            .writers(&WORKERS_WRITERS)
            .import_on_start(import_on_start)
            .build(),
    )
    .await;
    wait_for_writers(&server, &WORKERS_WRITERS, WORKERS_FIXTURE_POSITION).await;
    server
}
