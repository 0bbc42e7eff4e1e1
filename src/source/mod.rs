//! Source mode: roomcache beside a real Synapse, reading nothing but
//! Synapse's Postgres database (read-only).
//!
//! Owns: the read-only connection to Synapse's database, the translation of
//! Synapse's tables into feed rows ([`read`]), the import of every row from
//! those tables ([`import`]), the start-up invalidation of rooms that changed
//! while roomcache was down and the draining of the recalculation queue
//! ([`startup`]), and the follower that tails new events into the supervisor
//! ([`follow`]). May not touch: Synapse's tables (never written: every
//! transaction is read-only), the rules' internals (only
//! [`crate::rules::apply_rows`] is called), the socket API.

pub mod follow;
pub mod import;
pub mod read;
pub mod startup;

use tokio_postgres::{Client, NoTls};
use tracing::warn;

/// Why reading Synapse's database failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("invalid source database URL: {0}")]
    BadUrl(#[source] tokio_postgres::Error),
    #[error("source database error: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("the source database holds an invalid value ({what}): {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Rule(#[from] crate::rules::RuleError),
    #[error("the supervisor refused a batch: {0}")]
    Batch(String),
}

/// A read-only connection to Synapse's database. Every transaction on it is
/// read-only (`default_transaction_read_only`), so roomcache cannot write to
/// Synapse's tables even by mistake.
pub struct SourceDatabase {
    client: Client,
}

impl SourceDatabase {
    /// Connects to `url` with read-only transactions by default.
    pub async fn connect(url: &str) -> Result<SourceDatabase, SourceError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(SourceError::BadUrl)?;
        // JIT compilation costs more than it saves on these short queries.
        config.options("-c default_transaction_read_only=on -c jit=off");
        config.application_name("roomcache-source");
        let (client, connection) = config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                warn!(%error, "the source database connection closed");
            }
        });
        client
            .batch_execute("SET default_transaction_read_only = on")
            .await?;
        Ok(SourceDatabase { client })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The highest events-stream position up to which everything is
    /// persisted: the minimum of the writers' `stream_positions` rows for the
    /// events stream; for a database without such rows (a single writer
    /// that never wrote one), the highest stream ordering in use.
    pub async fn safe_position(&self) -> Result<i64, SourceError> {
        let row = self
            .client
            .query_one(
                "SELECT MIN(stream_id) FROM stream_positions WHERE stream_name = 'events'",
                &[],
            )
            .await?;
        if let Some(position) = row.get::<_, Option<i64>>(0) {
            return Ok(position.max(0));
        }
        let row = self
            .client
            .query_one(
                "SELECT GREATEST(
                    (SELECT MAX(stream_ordering) FROM events),
                    (SELECT MAX(stream_id) FROM current_state_delta_stream),
                    (SELECT MAX(event_stream_ordering) FROM ex_outlier_stream))",
                &[],
            )
            .await?;
        Ok(row.get::<_, Option<i64>>(0).unwrap_or(0).max(0))
    }
}

/// What source mode shares with the API: the status fields of
/// `GET /v1/status`, and the §5 fallback for rooms waiting in the
/// recalculation queue (their rows were deleted at start-up; until they are
/// recomputed, reads compute them from Synapse's tables on demand).
#[derive(Default)]
pub struct SourceStatus {
    /// Rooms queued and not yet recomputed.
    queued: std::sync::Mutex<std::collections::BTreeSet<crate::model::RoomId>>,
    /// The source and the position queued rooms are computed at.
    fallback: std::sync::OnceLock<FallbackSource>,
    /// True when roomcache follows a Synapse database.
    pub enabled: std::sync::atomic::AtomicBool,
    /// Rooms waiting in `sliding_sync_joined_rooms_to_recalculate`.
    pub recalculation_queue: std::sync::atomic::AtomicI64,
    /// The source's safe events-stream position at the last poll.
    pub source_position: std::sync::atomic::AtomicI64,
    /// Rooms the start-up check invalidated and queued (this process).
    pub invalidated_at_start: std::sync::atomic::AtomicI64,
}

struct FallbackSource {
    source: std::sync::Arc<SourceDatabase>,
    position: i64,
    server_name: String,
}

impl std::fmt::Debug for SourceStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceStatus")
            .field("enabled", &self.is_enabled())
            .field("recalculation_queue", &self.queue_length())
            .finish_non_exhaustive()
    }
}

/// Rows computed by the §5 fallback.
#[derive(Debug, Default)]
pub struct FallbackRows {
    pub joined_rooms: Vec<crate::model::JoinedRoomRow>,
    pub snapshots: Vec<crate::model::MembershipSnapshot>,
}

impl SourceStatus {
    /// Enables the fallback for `queue`, computed at `position`.
    pub fn set_queue(
        &self,
        source: std::sync::Arc<SourceDatabase>,
        position: i64,
        server_name: &str,
        queue: &[crate::model::RoomId],
    ) {
        let _ = self.fallback.set(FallbackSource {
            source,
            position,
            server_name: server_name.to_owned(),
        });
        if let Ok(mut queued) = self.queued.lock() {
            queued.extend(queue.iter().cloned());
        }
        self.recalculation_queue
            .store(queue.len() as i64, std::sync::atomic::Ordering::Release);
    }

    /// Marks rooms recomputed (their rows are in the read index now).
    pub fn dequeue(&self, rooms: &[crate::model::RoomId]) {
        if let Ok(mut queued) = self.queued.lock() {
            for room in rooms {
                queued.remove(room);
            }
            self.recalculation_queue
                .store(queued.len() as i64, std::sync::atomic::Ordering::Release);
        }
    }

    /// True when the room's rows are being recomputed.
    pub fn is_queued(&self, room: &crate::model::RoomId) -> bool {
        self.queued.lock().is_ok_and(|q| q.contains(room))
    }

    /// §5 fallback: the rows of the queued rooms among `rooms` (all queued
    /// rooms where `user` has a membership, when `user` is given), computed
    /// from Synapse's tables; nothing when no room is queued.
    pub async fn fallback_rows(
        &self,
        rooms: &[crate::model::RoomId],
        user: Option<&crate::model::UserId>,
    ) -> Result<FallbackRows, SourceError> {
        let Some(fallback) = self.fallback.get() else {
            return Ok(FallbackRows::default());
        };
        let mut wanted: Vec<String> = match self.queued.lock() {
            Ok(queued) => rooms
                .iter()
                .filter(|r| queued.contains(*r))
                .map(|r| r.as_str().to_owned())
                .collect(),
            Err(_) => Vec::new(),
        };
        if let Some(user) = user {
            let queued: Vec<String> = match self.queued.lock() {
                Ok(queued) => queued.iter().map(|r| r.as_str().to_owned()).collect(),
                Err(_) => Vec::new(),
            };
            if !queued.is_empty() {
                let rows = fallback
                    .source
                    .client()
                    .query(
                        "SELECT room_id FROM local_current_membership
                         WHERE user_id = $1 AND room_id = ANY($2)",
                        &[&user.as_str(), &queued],
                    )
                    .await?;
                wanted.extend(rows.iter().map(|r| r.get::<_, String>(0)));
            }
        }
        if wanted.is_empty() {
            return Ok(FallbackRows::default());
        }
        wanted.sort();
        wanted.dedup();
        let computed = import::compute_rooms(
            &fallback.source,
            &wanted,
            fallback.position,
            &fallback.server_name,
        )
        .await?;
        let mut rows = FallbackRows::default();
        for change in computed.changes {
            match change {
                crate::model::RowChange::UpsertJoinedRoom(row) => rows.joined_rooms.push(row),
                crate::model::RowChange::UpsertSnapshot(snapshot)
                    if user.is_none_or(|u| *u == snapshot.user_id) =>
                {
                    rows.snapshots.push(snapshot)
                }
                _ => {}
            }
        }
        Ok(rows)
    }

    pub fn queue_length(&self) -> i64 {
        self.recalculation_queue
            .load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn source_position(&self) -> i64 {
        self.source_position
            .load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn invalidated_at_start(&self) -> i64 {
        self.invalidated_at_start
            .load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled.load(std::sync::atomic::Ordering::Acquire)
    }
}
