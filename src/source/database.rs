//! The read-only connection to Synapse's database, and running the queries of
//! [`super::queries`] on it.
//!
//! Owns: [`SourceDatabase`] (connecting with read-only transactions, running
//! a query into [`SourceRow`]s, the events stream's safe position and
//! allocated maximum: [`SafeToken`]) and
//! [`SourceRow`] (reading a column with `try_get` into
//! [`SourceError::Column`]). May not touch: SQL text (the queries module's),
//! Synapse's tables beyond reading, roomcache's own tables.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use roomcache_core::{StreamToken, WriterName};
use tokio::sync::{RwLock, RwLockReadGuard};
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{Client, NoTls, Row};
use tracing::{info, warn};

use super::queries::{self, Query, RangeQuery, RoomsQuery};
use super::range::StreamRange;
use super::redis::EVENTS;
use super::rejected::{self, Reason};
use super::SourceError;

/// The events stream's first position: Synapse's sequences start past it
/// (ID 1 counts as persisted), so a writer without a row is at it.
const FIRST_POSITION: i64 = 1;

/// Most positions in use read past the lowest writer position when walking
/// through consecutive ones (see [`SourceDatabase::safe_token`]).
const WALK_LIMIT: i64 = 10_000;

/// Without any `stream_positions` row, how long a missing position below
/// the highest stream ordering in use is waited for before it is taken as
/// never to be used (see [`position_without_rows`]).
const GAP_GRACE: Duration = Duration::from_secs(10);

/// A query's parameters.
pub(crate) type Parameters<'a> = [&'a (dyn ToSql + Sync)];

/// A read-only connection to Synapse's database. Every transaction on it is
/// read-only (`default_transaction_read_only`), so roomcache cannot write to
/// Synapse's tables even by mistake.
pub(crate) struct SourceDatabase {
    config: tokio_postgres::Config,
    /// The connection; opened again when it closed (Synapse's Postgres
    /// restarted), so the follower resumes by itself.
    client: RwLock<Client>,
    /// The highest position the walk through consecutive positions in use
    /// has reached (every row at or below it is committed, for good): the
    /// next walk starts there.
    walked: AtomicI64,
    /// Without position rows: the missing position the walk stopped before,
    /// and since when (see [`position_without_rows`]).
    gap: std::sync::Mutex<Option<(i64, Instant)>>,
    /// The `stream_positions` rows last refused, per stream and writer
    /// (each refusal is counted once, not once per step).
    refused_rows: std::sync::Mutex<BTreeMap<(&'static str, String), i64>>,
}

/// The events stream's safe token, and what Synapse has allocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SafeToken {
    /// Every row at or below it, of each writer, is committed.
    pub(crate) token: StreamToken,
    /// The highest position Synapse has allocated on the events stream
    /// (its sequence, shared by every event writer): no row, and no true
    /// position of any writer, is above it.
    pub(crate) allocated: i64,
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
        let client = open(&config).await?;
        Ok(SourceDatabase {
            config,
            client: RwLock::new(client),
            walked: AtomicI64::new(0),
            gap: std::sync::Mutex::default(),
            refused_rows: std::sync::Mutex::default(),
        })
    }

    /// The connection, opened again first if it has closed.
    async fn client(&self) -> Result<RwLockReadGuard<'_, Client>, SourceError> {
        {
            let client = self.client.read().await;
            if !client.is_closed() {
                return Ok(client);
            }
        }
        let mut client = self.client.write().await;
        if client.is_closed() {
            *client = open(&self.config).await?;
            info!("connected to the source database again");
        }
        Ok(client.downgrade())
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

    /// Every row `query` returns of `range` (of all rooms, or of `rooms`).
    pub(crate) async fn rows_in_range(
        &self,
        query: &'static RangeQuery,
        range: &StreamRange,
        rooms: Option<&[String]>,
    ) -> Result<Vec<SourceRow>, SourceError> {
        let (lowest, highest) = (range.lowest(), range.highest());
        let bounds = range.writer_bounds();
        let mut parameters: Vec<&(dyn ToSql + Sync)> = vec![&lowest, &highest];
        let rooms_parameter = rooms.as_ref().map(|rooms| {
            parameters.push(rooms);
            parameters.len()
        });
        let bounds_parameter = bounds.as_ref().map(|bounds| {
            let first = parameters.len() + 1;
            parameters.extend(bounds.parameters());
            first
        });
        let sql = query.sql(rooms_parameter, bounds_parameter);
        self.run(query.query(), &sql, &parameters).await
    }

    /// The rooms with an event, a current-state delta or a de-outliered
    /// event in `range`, as their IDs (in order).
    pub(crate) async fn changed_room_ids(
        &self,
        range: &StreamRange,
    ) -> Result<Vec<SourceRow>, SourceError> {
        let (lowest, highest) = (range.lowest(), range.highest());
        let bounds = range.writer_bounds();
        let mut parameters: Vec<&(dyn ToSql + Sync)> = vec![&lowest, &highest];
        let bounds_parameter = bounds.as_ref().map(|bounds| {
            parameters.extend(bounds.parameters());
            3
        });
        let sql = queries::changed_rooms_sql(bounds_parameter);
        self.run(queries::CHANGED_ROOMS, &sql, &parameters).await
    }

    /// The one row `query` returns (an error if it returns none or more).
    pub(crate) async fn one_row(
        &self,
        query: &'static Query,
        parameters: &Parameters<'_>,
    ) -> Result<SourceRow, SourceError> {
        let row = self
            .client()
            .await?
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
            .client()
            .await?
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
        let rows = self
            .client()
            .await?
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

    /// The events stream's safe token for the configured `writers` (every
    /// row at or below it, of each writer, is committed), and the highest
    /// position Synapse has allocated on it, which no position of the token
    /// passes.
    ///
    /// Each writer's position is its `stream_positions` row (an idle
    /// writer's does not move), unless the row is above the allocated
    /// maximum: a position Synapse never handed out cannot have been
    /// persisted, so such a row (Synapse adopts a bogus announcement and
    /// writes it there) is refused, counted and logged, and the writer
    /// counts as being at `floor`'s position for it (roomcache's durable
    /// position: every row of the writer up to it is committed) when that
    /// is below the allocated maximum. The linear part starts at the lowest
    /// of the writers' positions — a writer without a row counts as
    /// position 1, which Synapse's sequences never hand out: its first row
    /// may still be in flight below the others' — (or where the last walk
    /// ended, if higher) and walks on through consecutive positions in use.
    /// Each of those is a committed row: only committed rows feed the walk,
    /// never a bare announced position (option S1 of the positions spec,
    /// A.13). A database with no rows at all and a single configured writer
    /// (a monolith before its first persisted batch, or an old one that
    /// never writes one) walks the same way up to the highest stream
    /// ordering in use, and past a missing position only once it has been
    /// missing for [`GAP_GRACE`] ([`position_without_rows`]): a monolith
    /// persists batches of different rooms concurrently, and a later batch
    /// can commit first.
    pub(crate) async fn safe_token(
        &self,
        writers: &[WriterName],
        floor: &StreamToken,
    ) -> Result<SafeToken, SourceError> {
        let rows = self
            .rows(&queries::EVENTS_STREAM_WRITER_POSITIONS, &[])
            .await?;
        let WriterRows {
            allocated,
            believed: positions,
            refused,
        } = WriterRows::of(&rows)?;
        self.report_refused_rows(EVENTS, writers.iter().map(WriterName::as_str), &refused);
        if positions.is_empty() && refused.is_empty() && writers.len() <= 1 {
            let row = self.one_row(&queries::HIGHEST_STREAM_ORDERING, &[]).await?;
            let highest = row.column::<Option<i64>>(0)?.unwrap_or(0).max(0);
            let stream = self
                .walk_without_rows(floor.stream.max(FIRST_POSITION), highest.min(allocated))
                .await?;
            return Ok(SafeToken {
                token: StreamToken::linear(stream),
                allocated,
            });
        }
        let committed_through = |writer: &WriterName| match positions.get(writer.as_str()) {
            Some(&position) => position,
            None if refused.contains_key(writer.as_str()) => {
                let durable = floor.position(writer.as_str());
                if durable <= allocated {
                    durable.max(FIRST_POSITION)
                } else {
                    FIRST_POSITION
                }
            }
            None => FIRST_POSITION,
        };
        let lowest = writers
            .iter()
            .map(committed_through)
            .min()
            .unwrap_or(FIRST_POSITION);
        // A walk past what is allocated now walked through rows that are
        // gone (a database restored from a backup): it starts again.
        let walked = self.walked.load(Ordering::Acquire);
        if walked > allocated {
            self.walked.store(0, Ordering::Release);
        }
        let start = lowest.max(if walked > allocated { 0 } else { walked });
        let in_use: Vec<i64> = self
            .rows(
                &queries::EVENTS_STREAM_POSITIONS_IN_USE,
                &[&start, &i64::MAX, &WALK_LIMIT],
            )
            .await?
            .iter()
            .map(|row| row.column(0))
            .collect::<Result<_, _>>()?;
        // Rows committed after the sequence was read may be walked through:
        // still never past what was allocated then.
        let stream = walk_consecutive(start, &in_use).min(allocated);
        self.walked.fetch_max(stream, Ordering::AcqRel);
        let mut token = StreamToken::linear(stream);
        for writer in writers {
            match positions.get(writer.as_str()) {
                Some(&position) if position > stream => {
                    token.instance_map.insert(writer.clone(), position);
                }
                _ => {}
            }
        }
        Ok(SafeToken { token, allocated })
    }

    /// Without position rows: walks through consecutive positions in use
    /// from `floor` (or where the last walk ended) towards `highest`.
    async fn walk_without_rows(&self, floor: i64, highest: i64) -> Result<i64, SourceError> {
        let start = floor.max(self.walked.load(Ordering::Acquire)).min(highest);
        let in_use: Vec<i64> = self
            .rows(
                &queries::EVENTS_STREAM_POSITIONS_IN_USE,
                &[&start, &highest, &WALK_LIMIT],
            )
            .await?
            .iter()
            .map(|row| row.column(0))
            .collect::<Result<_, _>>()?;
        let reached = walk_consecutive(start, &in_use);
        let mut gap = self.gap.lock().unwrap_or_else(|e| e.into_inner());
        let waited_for = gap.map(|(position, _)| position);
        let stream = position_without_rows(reached, highest, &mut gap, Instant::now());
        if gap.is_some() && waited_for != Some(reached) {
            info!(
                missing = reached + 1,
                highest,
                "events stream: a position below the highest in use is not committed yet, and \
                 Synapse has written no stream_positions row saying how far it persisted; \
                 waiting for it"
            );
        } else if waited_for == Some(reached) && stream == highest && reached < highest {
            warn!(
                missing = reached + 1,
                highest,
                grace_seconds = GAP_GRACE.as_secs(),
                "events stream: a position missing for the whole grace period is taken as \
                 never used (a failed transaction)"
            );
        }
        self.walked.fetch_max(stream, Ordering::AcqRel);
        Ok(stream)
    }

    /// Counts and logs the `stream_positions` rows of `stream` refused for
    /// being above its allocated maximum, once per value (a row stays until
    /// Synapse writes another: not once per step); `writers` are the
    /// writers whose rows were looked at.
    pub(crate) fn report_refused_rows<'a>(
        &self,
        stream: &'static str,
        writers: impl IntoIterator<Item = &'a str>,
        refused: &BTreeMap<String, i64>,
    ) {
        let mut reported = self
            .refused_rows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for name in writers {
            let key = (stream, name.to_owned());
            let row = refused.get(name).copied();
            if reported.get(&key).copied() == row {
                continue;
            }
            match row {
                Some(position) => {
                    rejected::reject(stream, Reason::StoredBeyondAllocated, name, position);
                    reported.insert(key, position);
                }
                None => {
                    reported.remove(&key);
                }
            }
        }
    }

    /// The highest position Synapse has allocated on the events stream.
    pub(crate) async fn allocated(&self) -> Result<i64, SourceError> {
        let row = self.one_row(&queries::EVENTS_STREAM_ALLOCATED, &[]).await?;
        Ok(row.column::<i64>(0)?.max(0))
    }

    /// The events stream's safe linear position ([`Self::safe_token`]'s
    /// `stream`, for a roomcache that has applied nothing): every row of
    /// every writer at or below it is committed.
    pub(crate) async fn safe_position(&self, writers: &[WriterName]) -> Result<i64, SourceError> {
        Ok(self
            .safe_token(writers, &StreamToken::linear(0))
            .await?
            .token
            .stream)
    }
}

/// A stream's `stream_positions` rows, judged against what its sequence has
/// allocated (the rows of [`queries::EVENTS_STREAM_WRITER_POSITIONS`] and
/// [`queries::ACCOUNT_DATA_WRITER_POSITIONS`]: the allocated maximum, then
/// writer and position, NULL when there is no row).
pub(crate) struct WriterRows {
    pub(crate) allocated: i64,
    /// Rows at or below the allocated maximum, per writer.
    pub(crate) believed: BTreeMap<String, i64>,
    /// Rows above it (they cannot be true), per writer.
    pub(crate) refused: BTreeMap<String, i64>,
}

impl WriterRows {
    pub(crate) fn of(rows: &[SourceRow]) -> Result<WriterRows, SourceError> {
        let mut judged = WriterRows {
            allocated: 0,
            believed: BTreeMap::new(),
            refused: BTreeMap::new(),
        };
        for row in rows {
            judged.allocated = row.column::<i64>(0)?.max(0);
            let (Some(name), Some(position)) = (
                row.column::<Option<String>>(1)?,
                row.column::<Option<i64>>(2)?,
            ) else {
                continue;
            };
            if position > judged.allocated {
                judged.refused.insert(name, position);
            } else {
                judged.believed.insert(name, position.max(0));
            }
        }
        Ok(judged)
    }
}

/// A read-only session on `config`.
async fn open(config: &tokio_postgres::Config) -> Result<Client, SourceError> {
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
    Ok(client)
}

/// The end of the run of consecutive positions after `start` in `in_use`
/// (ascending): `start` itself when the next one is missing.
/// Without position rows, where the walk may take the stream: `highest`
/// when it got there; else where it stopped (`reached`, before a missing
/// position), until that position has been missing for [`GAP_GRACE`] (an
/// uncommitted batch commits well within it; a position still missing then
/// was never used: a failed transaction), and then `highest`. `gap` keeps
/// the missing position and since when.
pub(crate) fn position_without_rows(
    reached: i64,
    highest: i64,
    gap: &mut Option<(i64, Instant)>,
    now: Instant,
) -> i64 {
    if reached >= highest {
        *gap = None;
        return highest;
    }
    match *gap {
        Some((position, since)) if position == reached => {
            if now.duration_since(since) >= GAP_GRACE {
                *gap = None;
                return highest;
            }
        }
        _ => *gap = Some((reached, now)),
    }
    reached
}

pub(crate) fn walk_consecutive(start: i64, in_use: &[i64]) -> i64 {
    let mut reached = start;
    for &position in in_use {
        if position <= reached {
            continue;
        }
        if position != reached + 1 {
            break;
        }
        reached = position;
    }
    reached
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{position_without_rows, walk_consecutive, GAP_GRACE};

    /// Without position rows, a missing position below the highest in use
    /// (a batch persisted concurrently, committed after a later one) holds
    /// the stream before it until it is committed, or for `GAP_GRACE`.
    #[test]
    fn without_rows_a_missing_position_is_waited_for() {
        let start = Instant::now();
        let mut gap = None;
        // Positions 2, 3 and 5 are in use, 4 is not yet: stop at 3.
        assert_eq!(position_without_rows(3, 5, &mut gap, start), 3);
        let later = start + Duration::from_secs(1);
        assert_eq!(position_without_rows(3, 5, &mut gap, later), 3);
        // 4 commits: the walk gets through.
        assert_eq!(position_without_rows(5, 5, &mut gap, later), 5);
        assert_eq!(gap, None);
        // A position never used (a failed transaction): passed after the grace.
        assert_eq!(position_without_rows(5, 9, &mut gap, later), 5);
        let waited = later + GAP_GRACE;
        let just_before = waited - Duration::from_millis(1);
        assert_eq!(position_without_rows(5, 9, &mut gap, just_before), 5);
        assert_eq!(position_without_rows(5, 9, &mut gap, waited), 9);
        // A new gap starts its own wait.
        assert_eq!(position_without_rows(10, 12, &mut gap, waited), 10);
        assert_eq!(gap, Some((10, waited)));
    }

    #[test]
    fn the_walk_stops_at_the_first_missing_position() {
        assert_eq!(walk_consecutive(5, &[]), 5);
        assert_eq!(walk_consecutive(5, &[6, 7, 8]), 8);
        assert_eq!(walk_consecutive(5, &[6, 7, 9, 10]), 7);
        assert_eq!(walk_consecutive(5, &[7, 8]), 5);
        assert_eq!(walk_consecutive(5, &[4, 5, 6]), 6);
    }
}
