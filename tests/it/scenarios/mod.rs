//! The live-write scenarios of the specification (`sliding-sync-tables.md`
//! §7.1 T01–T24 and §7.5), each driven through the feed over the socket by
//! the homeserver simulator, asserting the exact rows — every column, and
//! the exact key sets — in Postgres and in what the API serves.
//!
//! T25–T27 concern Synapse's sliding-sync *connection* tables, which
//! roomcache does not have (see `docs/differences-from-synapse.md`).

mod additional;
mod decisions;
mod joined_rooms;
mod memberships;

use crate::support::homeserver::Homeserver;
use crate::support::rows::{JoinedRow, SnapshotRow};
use crate::support::server::TestServer;
use serde_json::Value;

const U1: &str = "@u1:example.org";
const U2: &str = "@u2:example.org";
const U3: &str = "@u3:example.org";

const NAME: &str = "my super duper room";
const SPACE_NAME: &str = "my super duper space";

/// A state key: `(type, state_key)`.
fn key(event_type: &str, state_key: &str) -> (String, String) {
    (event_type.into(), state_key.into())
}

/// Feeds every row the simulator produced since the last call.
async fn feed(server: &TestServer, hs: &mut Homeserver) -> Value {
    server.feed(&hs.take()).await
}

/// Asserts the exact contents of both tables — key sets and every column —
/// in Postgres, and that the API serves exactly what Postgres holds.
async fn assert_tables(server: &TestServer, joined: Vec<JoinedRow>, snapshots: Vec<SnapshotRow>) {
    let mut joined: Vec<_> = joined.iter().map(JoinedRow::build).collect();
    let mut snapshots: Vec<_> = snapshots.iter().map(SnapshotRow::build).collect();
    let mut rows = server.rows_in_postgres().await;
    rows.joined_rooms.sort_by(|a, b| a.room_id.cmp(&b.room_id));
    rows.snapshots
        .sort_by(|a, b| (&a.room_id, &a.user_id).cmp(&(&b.room_id, &b.user_id)));
    joined.sort_by(|a, b| a.room_id.cmp(&b.room_id));
    snapshots.sort_by(|a, b| (&a.room_id, &a.user_id).cmp(&(&b.room_id, &b.user_id)));
    assert_eq!(rows.joined_rooms, joined, "joined rows in Postgres");
    assert_eq!(rows.snapshots, snapshots, "snapshots in Postgres");
    for row in &joined {
        assert_eq!(
            server
                .served_joined_room(row.room_id.as_str())
                .await
                .as_ref(),
            Some(row),
            "served joined row"
        );
    }
    server.assert_postgres_matches_served().await;
}

/// Changes Postgres behind the server's back (imitating rows an older
/// homeserver left missing), then restarts the server so it loads them.
async fn tamper(server: &mut TestServer, sql: &str) {
    server.stop().await;
    let store = server.store().await;
    store
        .client()
        .await
        .unwrap()
        .batch_execute(sql)
        .await
        .unwrap();
    server.spawn().await;
}
