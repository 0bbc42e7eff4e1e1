//! The read-only connection to Synapse's database.
//!
//! Owns: [`SourceDatabase`] (connecting with read-only transactions, and the
//! events stream's safe position). May not touch: Synapse's tables beyond
//! reading, roomcache's own tables.

use tokio_postgres::{Client, NoTls};
use tracing::warn;

use super::{queries, SourceError};

/// A read-only connection to Synapse's database. Every transaction on it is
/// read-only (`default_transaction_read_only`), so roomcache cannot write to
/// Synapse's tables even by mistake.
pub(crate) struct SourceDatabase {
    client: Client,
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
        Ok(SourceDatabase { client })
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// The highest events-stream position up to which everything is
    /// persisted: the minimum of the writers' `stream_positions` rows for the
    /// events stream; for a database without such rows (a single writer
    /// that never wrote one), the highest stream ordering in use.
    pub(crate) async fn safe_position(&self) -> Result<i64, SourceError> {
        let row = self
            .client
            .query_one(queries::EVENTS_STREAM_MINIMUM_POSITION, &[])
            .await?;
        if let Some(position) = row.try_get::<_, Option<i64>>(0)? {
            return Ok(position.max(0));
        }
        let row = self
            .client
            .query_one(queries::HIGHEST_STREAM_ORDERING, &[])
            .await?;
        Ok(row.try_get::<_, Option<i64>>(0)?.unwrap_or(0).max(0))
    }
}
