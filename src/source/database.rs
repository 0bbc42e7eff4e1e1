//! The read-only connection to Synapse's database, and running the queries of
//! [`super::queries`] on it.
//!
//! Owns: [`SourceDatabase`] (connecting with read-only transactions, running
//! a query into [`SourceRow`]s, the events stream's safe position) and
//! [`SourceRow`] (reading a column with `try_get` into
//! [`SourceError::Column`]). May not touch: SQL text (the queries module's),
//! Synapse's tables beyond reading, roomcache's own tables.

use std::sync::atomic::{AtomicI64, Ordering};

use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{Client, NoTls, Row};
use tracing::warn;

use super::queries::{self, Query, RoomsQuery};
use super::SourceError;

/// A query's parameters.
pub(crate) type Parameters<'a> = [&'a (dyn ToSql + Sync)];

/// A read-only connection to Synapse's database. Every transaction on it is
/// read-only (`default_transaction_read_only`), so roomcache cannot write to
/// Synapse's tables even by mistake.
pub(crate) struct SourceDatabase {
    client: Client,
    /// The highest position found safe so far: every id up to it is in
    /// the events stream's tables (see [`SourceDatabase::safe_position`]).
    contiguous: AtomicI64,
}

/// One row a query against Synapse's schema returned. Its columns are read
/// with [`SourceRow::column`], which names the query and column when the
/// value is not what roomcache reads.
pub(crate) struct SourceRow {
    row: Row,
    query: &'static Query,
}

impl SourceRow {
    /// Column `index`, as `T` (`Option<T>` where NULL is expected).
    pub(crate) fn column<'a, T: FromSql<'a>>(&'a self, index: usize) -> Result<T, SourceError> {
        self.row
            .try_get(index)
            .map_err(|cause| SourceError::Column {
                query: self.query.name,
                column: self.query.column_name(index),
                cause,
            })
    }
}

impl SourceDatabase {
    /// Connects to `url` with read-only transactions by default.
    pub(crate) async fn connect(url: &str) -> Result<SourceDatabase, SourceError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(SourceError::BadUrl)?;
        // JIT compilation costs more than it saves on these short queries.
        config.options("-c default_transaction_read_only=on -c jit=off");
        config.application_name("roomcache-source");
        let (client, connection) = config.connect(NoTls).await.map_err(SourceError::Connect)?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                warn!(%error, "the source database connection closed");
            }
        });
        client
            .batch_execute("SET default_transaction_read_only = on")
            .await
            .map_err(SourceError::Connect)?;
        Ok(SourceDatabase {
            client,
            contiguous: AtomicI64::new(0),
        })
    }

    /// Every row `query` returns.
    pub(crate) async fn rows(
        &self,
        query: &'static Query,
        parameters: &Parameters<'_>,
    ) -> Result<Vec<SourceRow>, SourceError> {
        self.run(query, query.sql, parameters).await
    }

    /// Every row `query` returns, of all rooms (`rooms` is `None`) or of
    /// `rooms` (passed after `parameters`).
    pub(crate) async fn rows_of_rooms(
        &self,
        query: &'static RoomsQuery,
        parameters: &Parameters<'_>,
        rooms: Option<&[String]>,
    ) -> Result<Vec<SourceRow>, SourceError> {
        let mut all_parameters = parameters.to_vec();
        if let Some(rooms) = &rooms {
            all_parameters.push(rooms);
        }
        let rooms_parameter = rooms.is_some().then_some(all_parameters.len());
        let sql = query.sql(rooms_parameter);
        self.run(&query.query, &sql, &all_parameters).await
    }

    /// The one row `query` returns (an error if it returns none or more).
    pub(crate) async fn one_row(
        &self,
        query: &'static Query,
        parameters: &Parameters<'_>,
    ) -> Result<SourceRow, SourceError> {
        let row = self
            .client
            .query_one(query.sql, parameters)
            .await
            .map_err(|cause| SourceError::Query {
                query: query.name,
                cause,
            })?;
        Ok(SourceRow { row, query })
    }

    /// The row `query` returns, if any (an error if it returns more).
    pub(crate) async fn optional_row(
        &self,
        query: &'static Query,
        parameters: &Parameters<'_>,
    ) -> Result<Option<SourceRow>, SourceError> {
        let row = self
            .client
            .query_opt(query.sql, parameters)
            .await
            .map_err(|cause| SourceError::Query {
                query: query.name,
                cause,
            })?;
        Ok(row.map(|row| SourceRow { row, query }))
    }

    async fn run(
        &self,
        query: &'static Query,
        sql: &str,
        parameters: &Parameters<'_>,
    ) -> Result<Vec<SourceRow>, SourceError> {
        let rows =
            self.client
                .query(sql, parameters)
                .await
                .map_err(|cause| SourceError::Query {
                    query: query.name,
                    cause,
                })?;
        Ok(rows
            .into_iter()
            .map(|row| SourceRow { row, query })
            .collect())
    }

    /// The highest events-stream position up to which everything is
    /// persisted. Each writer's `stream_positions` row covers its own ids,
    /// so everything up to the minimum row is persisted; above it, ids that
    /// are all present in the stream's tables, one after the other, are
    /// persisted too (a writer that persists nothing keeps an old row while
    /// the others' ids fill the range after it; an id still being written
    /// leaves a gap, and the position stops before it). For a database
    /// without such rows (a single writer that never wrote one), the highest
    /// stream ordering in use.
    pub(crate) async fn safe_position(&self) -> Result<i64, SourceError> {
        let row = self
            .one_row(&queries::EVENTS_STREAM_MINIMUM_POSITION, &[])
            .await?;
        let minimum: Option<i64> = row.column(0)?;
        let maximum: Option<i64> = row.column(1)?;
        if let (Some(minimum), Some(maximum)) = (minimum, maximum) {
            return self.contiguous_after(minimum.max(0), maximum).await;
        }
        let row = self.one_row(&queries::HIGHEST_STREAM_ORDERING, &[]).await?;
        Ok(row.column::<Option<i64>>(0)?.unwrap_or(0).max(0))
    }

    /// From `minimum` (or the highest position found before, when higher),
    /// up through the ids present in the events stream's tables one after
    /// the other, at most to `maximum`.
    async fn contiguous_after(&self, minimum: i64, maximum: i64) -> Result<i64, SourceError> {
        let mut safe = minimum.max(self.contiguous.load(Ordering::Acquire));
        if maximum > safe {
            let rows = self
                .rows(&queries::STREAM_IDS_IN_RANGE, &[&safe, &maximum])
                .await?;
            for row in &rows {
                let id: i64 = row.column(0)?;
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
