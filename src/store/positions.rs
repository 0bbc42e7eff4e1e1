//! Stream positions in roomcache's tables: written with every commit
//! (`stream_positions`: the position and what it was read up to), read back
//! at start-up and by source mode.
//!
//! Owns: what a commit group makes durable besides rows
//! ([`PositionWrites`], with the import's [`ImportProgress`]) and the
//! statements on `stream_positions` and `source_import_progress`.
//! May not touch: positions in memory (the supervisor's write path moves
//! them after [`super::StoreWriter::commit`]).

use std::collections::BTreeMap;

use roomcache_core::WriterName;
use tracing::warn;

use super::rows::column;
use super::{
    Store, StoreError, ACCOUNT_DATA_SOURCE, ACCOUNT_DATA_STREAM, BACKFILL_STREAM, CACHES_STREAM,
    EVENTS_STREAM,
};

/// Source mode: how far the import from Synapse's tables has come
/// (table `source_import_progress`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImportProgress {
    /// The events-stream position every room is computed at.
    pub(crate) target_position: i64,
    /// Rooms are imported in `room_id` order; the last one done.
    pub(crate) last_room_id: String,
    pub(crate) rooms_done: i64,
    pub(crate) rows_written: i64,
    pub(crate) finished: bool,
}

/// The positions a commit group makes durable, written in its transaction
/// by [`write_positions`].
#[derive(Debug, Default)]
pub(super) struct PositionWrites {
    /// The events stream's, per writer.
    pub(super) events: BTreeMap<WriterName, i64>,
    /// Source mode: Synapse's caches stream's, per process.
    pub(super) caches: BTreeMap<String, i64>,
    /// Source mode: Synapse's backfill stream's, per writer.
    pub(super) backfill: BTreeMap<String, i64>,
    /// Source mode: the import's progress.
    pub(super) import_progress: Option<ImportProgress>,
    /// Source mode: how far Synapse's account-data stream is applied.
    pub(super) account_data: Option<i64>,
    /// Source mode's repair: positions set lower than they are, per
    /// (stream, instance).
    pub(super) lowered: BTreeMap<(&'static str, String), i64>,
}

impl Store {
    /// The durable positions of the events stream, per writer. A stored
    /// name that is not a valid writer name is skipped with a warning (no
    /// writer could ever claim it).
    pub(crate) async fn positions(&self) -> Result<BTreeMap<WriterName, i64>, StoreError> {
        stored_positions(&*self.pool.get().await?).await
    }

    /// Source mode: the durable positions of Synapse's caches stream, per
    /// Synapse process.
    pub(crate) async fn caches_positions(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        self.instance_positions(CACHES_STREAM).await
    }

    /// Source mode: the durable positions of Synapse's backfill stream, per
    /// Synapse writer (positive: position `n` is stream ordering `-n`).
    pub(crate) async fn backfill_positions(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        self.instance_positions(BACKFILL_STREAM).await
    }

    /// The positions of `stream`, per instance (any name Synapse wrote).
    async fn instance_positions(&self, stream: &str) -> Result<BTreeMap<String, i64>, StoreError> {
        let table = "stream_positions";
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &format!("SELECT instance_name, stream_id FROM {table} WHERE stream_name = $1"),
                &[&stream],
            )
            .await?;
        rows.iter()
            .map(|row| Ok((column(row, table, 0)?, column(row, table, 1)?)))
            .collect()
    }

    /// Source mode: how far Synapse's account-data stream is applied, if
    /// it ever was.
    pub(crate) async fn account_data_position(&self) -> Result<Option<i64>, StoreError> {
        let table = "stream_positions";
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT stream_id FROM {table} WHERE stream_name = $1 AND instance_name = $2"
                ),
                &[&ACCOUNT_DATA_STREAM, &ACCOUNT_DATA_SOURCE],
            )
            .await?;
        row.map(|row| column(&row, table, 0)).transpose()
    }

    /// Source mode: what each writer's events stream was last read up to
    /// by roomcache (written with every position; `None` for a row from
    /// before that column). A position moved any other way leaves it behind.
    pub(crate) async fn read_up_to(&self) -> Result<BTreeMap<WriterName, Option<i64>>, StoreError> {
        let table = "stream_positions";
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &format!("SELECT instance_name, read_up_to FROM {table} WHERE stream_name = $1"),
                &[&EVENTS_STREAM],
            )
            .await?;
        let mut read = BTreeMap::new();
        for row in &rows {
            if let Ok(writer) = WriterName::parse(column::<&str>(row, table, 0)?) {
                read.insert(writer, column(row, table, 1)?);
            }
        }
        Ok(read)
    }
}

/// The durable positions of the events stream on `client` (see [`Store::positions`]).
pub(super) async fn stored_positions(
    client: &tokio_postgres::Client,
) -> Result<BTreeMap<WriterName, i64>, StoreError> {
    let table = "stream_positions";
    let rows = client
        .query(
            &format!("SELECT instance_name, stream_id FROM {table} WHERE stream_name = $1"),
            &[&EVENTS_STREAM],
        )
        .await?;
    let mut positions = BTreeMap::new();
    for row in &rows {
        let name: &str = column(row, table, 0)?;
        match WriterName::parse(name) {
            Ok(writer) => {
                positions.insert(writer, column(row, table, 1)?);
            }
            Err(error) => warn!(%error, "ignoring a stored position"),
        }
    }
    Ok(positions)
}

/// The writers' positions and the import's progress of a group.
pub(super) async fn write_positions(
    transaction: &deadpool_postgres::Transaction<'_>,
    group: &PositionWrites,
) -> Result<(), StoreError> {
    let streams = [
        (
            EVENTS_STREAM,
            group.events.keys().map(WriterName::as_str).collect(),
            group.events.values().copied().collect(),
        ),
        (
            CACHES_STREAM,
            group.caches.keys().map(String::as_str).collect(),
            group.caches.values().copied().collect(),
        ),
        (
            BACKFILL_STREAM,
            group.backfill.keys().map(String::as_str).collect(),
            group.backfill.values().copied().collect(),
        ),
    ];
    for (stream, writers, positions) in streams {
        let (writers, positions): (Vec<&str>, Vec<i64>) = (writers, positions);
        if writers.is_empty() {
            continue;
        }
        transaction
            .execute(
                "INSERT INTO stream_positions (stream_name, instance_name, stream_id, read_up_to)
                 SELECT $1, w, p, p FROM UNNEST($2::text[], $3::bigint[]) AS t(w, p)
                 ON CONFLICT (stream_name, instance_name) DO UPDATE
                 SET stream_id = EXCLUDED.stream_id, read_up_to = EXCLUDED.read_up_to
                 WHERE stream_positions.stream_id < EXCLUDED.stream_id",
                &[&stream, &writers, &positions],
            )
            .await?;
    }
    for ((stream, instance), position) in &group.lowered {
        transaction
            .execute(
                "UPDATE stream_positions SET stream_id = $3, read_up_to = $3
                 WHERE stream_name = $1 AND instance_name = $2 AND stream_id > $3",
                &[stream, instance, position],
            )
            .await?;
    }
    if let Some(progress) = &group.import_progress {
        transaction
            .execute(
                "INSERT INTO source_import_progress
                     (singleton, target_position, last_room_id, rooms_done, rows_written, finished)
                 VALUES (TRUE, $1, $2, $3, $4, $5)
                 ON CONFLICT (singleton) DO UPDATE SET
                     target_position = EXCLUDED.target_position,
                     last_room_id = EXCLUDED.last_room_id,
                     rooms_done = EXCLUDED.rooms_done,
                     rows_written = EXCLUDED.rows_written,
                     finished = EXCLUDED.finished",
                &[
                    &progress.target_position,
                    &progress.last_room_id,
                    &progress.rooms_done,
                    &progress.rows_written,
                    &progress.finished,
                ],
            )
            .await?;
    }
    if let Some(position) = group.account_data {
        transaction
            .execute(
                "INSERT INTO stream_positions (stream_name, instance_name, stream_id, read_up_to)
                 VALUES ($1, $2, $3, $3)
                 ON CONFLICT (stream_name, instance_name) DO UPDATE
                 SET stream_id = EXCLUDED.stream_id, read_up_to = EXCLUDED.read_up_to",
                &[&ACCOUNT_DATA_STREAM, &ACCOUNT_DATA_SOURCE, &position],
            )
            .await?;
    }
    Ok(())
}
