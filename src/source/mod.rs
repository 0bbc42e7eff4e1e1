//! Source mode: roomcache beside a real Synapse, reading nothing but
//! Synapse's Postgres database (read-only).
//!
//! Owns: the read-only connection to Synapse's database, the translation of
//! Synapse's tables into feed rows ([`read`]), the import of every row from
//! those tables ([`import`]), what the supervisor asks of the source to
//! invalidate and recompute rooms ([`upstream`]), the follower that tails
//! new events into the supervisor ([`follow`]) and the account data room
//! lists read ([`account_data`]). May not touch: Synapse's
//! tables (never written: every transaction is read-only), the rules'
//! internals (only [`crate::rules::apply_rows`] is called), roomcache's own
//! tables except through the supervisor, the socket API.

pub(crate) mod account_data;
pub(crate) mod follow;
pub(crate) mod import;
pub(crate) mod read;
mod upstream;

use tokio_postgres::{Client, NoTls};
use tracing::warn;

pub(crate) use upstream::SynapseUpstream;

/// Why reading Synapse's database failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SourceError {
    #[error("invalid source database URL")]
    BadUrl(#[source] tokio_postgres::Error),
    #[error("source database error")]
    Database(#[from] tokio_postgres::Error),
    #[error("the source database holds an invalid value ({what}): {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("roomcache's database failed")]
    Store(#[from] crate::store::StoreError),
    #[error("the rules refused the source's rows")]
    Rule(#[from] crate::rules::RuleError),
    #[error("the supervisor refused a batch")]
    Batch(#[from] crate::supervisor::BatchError),
    #[error("the supervisor is not running")]
    Mailbox(#[from] actix::MailboxError),
}

/// A read-only connection to Synapse's database. Every transaction on it is
/// read-only (`default_transaction_read_only`), so roomcache cannot write to
/// Synapse's tables even by mistake.
pub(crate) struct SourceDatabase {
    client: Client,
    /// The highest position found safe so far: every id up to it is in
    /// the events stream's tables (see [`SourceDatabase::safe_position`]).
    contiguous: std::sync::atomic::AtomicI64,
}

impl SourceDatabase {
    /// Connects to `url` with read-only transactions by default.
    pub(crate) async fn connect(url: &str) -> Result<SourceDatabase, SourceError> {
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
        Ok(SourceDatabase {
            client,
            contiguous: std::sync::atomic::AtomicI64::new(0),
        })
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// The highest events-stream position up to which everything is
    /// persisted. Each writer's `stream_positions` row covers its own ids,
    /// so everything up to the minimum row is persisted; above it, ids that
    /// are all present in the stream's tables, one after the other, are
    /// persisted too (a writer that persists nothing keeps an old row, the
    /// others' ids fill the range after it, as Synapse itself counts when it
    /// starts; an id still being written leaves a gap, and the position
    /// stops before it). For a database without such rows (a single writer
    /// that never wrote one), the highest stream ordering in use.
    pub(crate) async fn safe_position(&self) -> Result<i64, SourceError> {
        let row = self
            .client
            .query_one(
                "SELECT MIN(stream_id), MAX(stream_id) FROM stream_positions
                 WHERE stream_name = 'events'",
                &[],
            )
            .await?;
        let (minimum, maximum): (Option<i64>, Option<i64>) = (row.try_get(0)?, row.try_get(1)?);
        if let (Some(minimum), Some(maximum)) = (minimum, maximum) {
            let safe = self.contiguous_after(minimum.max(0), maximum).await?;
            return Ok(safe);
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
        Ok(row.try_get::<_, Option<i64>>(0)?.unwrap_or(0).max(0))
    }

    /// From `minimum` (or the highest position found before, when higher),
    /// up through the ids present in the events stream's tables one after
    /// the other, at most to `maximum`.
    async fn contiguous_after(&self, minimum: i64, maximum: i64) -> Result<i64, SourceError> {
        use std::sync::atomic::Ordering;
        let mut safe = minimum.max(self.contiguous.load(Ordering::Acquire));
        if maximum > safe {
            let rows = self
                .client
                .query(
                    "SELECT stream_ordering FROM events
                       WHERE stream_ordering > $1 AND stream_ordering <= $2
                     UNION SELECT stream_id FROM current_state_delta_stream
                       WHERE stream_id > $1 AND stream_id <= $2
                     UNION SELECT event_stream_ordering FROM ex_outlier_stream
                       WHERE event_stream_ordering > $1 AND event_stream_ordering <= $2
                     ORDER BY 1",
                    &[&safe, &maximum],
                )
                .await?;
            for row in &rows {
                let id: i64 = row.try_get(0)?;
                if id != safe + 1 {
                    break;
                }
                safe = id;
            }
        }
        self.contiguous.fetch_max(safe, Ordering::AcqRel);
        Ok(safe)
    }
}
