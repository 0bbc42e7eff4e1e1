//! Reading roomcache's tables back: everything at start-up, one room's
//! state when its actor is (re-)created, positions and progress.
//!
//! Owns: the SELECTs of roomcache's schema. May not touch: the read index,
//! actors (callers take what is returned).

use std::collections::{BTreeMap, HashMap};

use futures_util::TryStreamExt;
use roomcache_core::WriterName;
use tokio_postgres::types::ToSql;
use tracing::instrument;

use super::positions::stored_positions;
use super::positions::ImportProgress;
use super::rows::{
    column, joined_from_row, room_id, snapshot_from_row, snapshot_view, user_id, JOINED_COLUMNS,
    JOINED_TABLE, SNAPSHOTS_TABLE, SNAPSHOT_COLUMNS,
};
use super::{CorruptRow, Store, StoreError};
use crate::model::{
    AccountData, JoinedRoomRow, LatestEvents, MembershipSnapshot, RoomId, SnapshotView,
};
use crate::rules::{CurrentStateIds, RoomMemory, RoomState};

/// Snapshots handed over per chunk while streaming them at start-up.
const SNAPSHOT_CHUNK: usize = 8192;

/// Everything loaded at start-up.
#[derive(Debug, Default)]
pub struct LoadedRows {
    pub joined_rooms: Vec<JoinedRoomRow>,
    pub snapshots: Vec<MembershipSnapshot>,
    pub positions: BTreeMap<WriterName, i64>,
    pub recalculation_queue: Vec<RoomId>,
    /// Users' `m.direct` and `m.tag` account data.
    pub account_data: Vec<AccountData>,
    /// Each space's children (spaces without children are absent).
    pub space_children: Vec<(RoomId, Vec<RoomId>)>,
    /// Each room's current state of the held types (rooms holding none are absent).
    pub current_states: Vec<(RoomId, CurrentStateIds)>,
    /// Each room's latest events (rooms holding none are absent).
    pub latest_events: Vec<(RoomId, LatestEvents)>,
}

impl Store {
    /// Loads every row, the durable positions and the recalculation queue.
    #[instrument(skip_all)]
    pub async fn load_all(&self) -> Result<LoadedRows, StoreError> {
        let mut loaded = self.load_all_but_snapshots().await?;
        let mut snapshots = Vec::new();
        self.load_snapshots(|chunk| snapshots.extend(chunk.iter().map(|view| view.to_snapshot())))
            .await?;
        loaded.snapshots = snapshots;
        Ok(loaded)
    }

    /// Streams every snapshot to `on_chunk`, a few thousand at a time, so a
    /// caller can take them in without holding them all at once; each is
    /// borrowed from the row as received (nothing copied but the row).
    #[instrument(skip_all)]
    pub(crate) async fn load_snapshots(
        &self,
        mut on_chunk: impl FnMut(&[SnapshotView<'_>]),
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query_raw(
                &format!("SELECT {SNAPSHOT_COLUMNS} FROM {SNAPSHOTS_TABLE}"),
                std::iter::empty::<&str>(),
            )
            .await?;
        futures_util::pin_mut!(rows);
        let mut chunk = Vec::with_capacity(SNAPSHOT_CHUNK);
        let hand_over = |chunk: &[tokio_postgres::Row],
                         on_chunk: &mut dyn FnMut(&[SnapshotView<'_>])| {
            let views = chunk
                .iter()
                .map(snapshot_view)
                .collect::<Result<Vec<_>, _>>()?;
            on_chunk(&views);
            Ok::<(), StoreError>(())
        };
        while let Some(row) = rows.try_next().await? {
            chunk.push(row);
            if chunk.len() == SNAPSHOT_CHUNK {
                hand_over(&chunk, &mut on_chunk)?;
                chunk.clear();
            }
        }
        hand_over(&chunk, &mut on_chunk)
    }

    /// Everything [`Store::load_all`] loads except the snapshots (`snapshots` is empty).
    #[instrument(skip_all)]
    pub(crate) async fn load_all_but_snapshots(&self) -> Result<LoadedRows, StoreError> {
        let client = self.pool.get().await?;
        let joined_rooms = client
            .query(&format!("SELECT {JOINED_COLUMNS} FROM {JOINED_TABLE}"), &[])
            .await?
            .iter()
            .map(joined_from_row)
            .collect::<Result<_, _>>()?;
        let table = "sliding_sync_joined_rooms_to_recalculate";
        let recalculation_queue = client
            .query(&format!("SELECT room_id FROM {table}"), &[])
            .await?
            .iter()
            .map(|row| room_id(row, table, 0))
            .collect::<Result<_, _>>()?;
        Ok(LoadedRows {
            joined_rooms,
            snapshots: Vec::new(),
            positions: stored_positions(&client).await?,
            recalculation_queue,
            account_data: self.account_data(&client).await?,
            space_children: self.space_children(&client).await?,
            current_states: self.current_states(&client).await?,
            latest_events: self.latest_events(&client).await?,
        })
    }

    async fn account_data(
        &self,
        client: &deadpool_postgres::Object,
    ) -> Result<Vec<AccountData>, StoreError> {
        let table = "user_account_data";
        let rows = client
            .query(
                &format!("SELECT user_id, room_id, account_data_type, content FROM {table}"),
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let room: &str = column(row, table, 1)?;
                Ok(AccountData {
                    user_id: user_id(row, table, 0)?,
                    room_id: if room.is_empty() {
                        None
                    } else {
                        Some(room_id(row, table, 1)?)
                    },
                    data_type: column(row, table, 2)?,
                    content: column(row, table, 3)?,
                })
            })
            .collect()
    }

    async fn space_children(
        &self,
        client: &deadpool_postgres::Object,
    ) -> Result<Vec<(RoomId, Vec<RoomId>)>, StoreError> {
        let table = "space_children";
        let mut children: BTreeMap<RoomId, Vec<RoomId>> = BTreeMap::new();
        let query = format!("SELECT space_room_id, child_room_id FROM {table} ORDER BY 1, 2");
        for row in client.query(&query, &[]).await? {
            children
                .entry(room_id(&row, table, 0)?)
                .or_default()
                .push(room_id(&row, table, 1)?);
        }
        Ok(children.into_iter().collect())
    }

    /// Loads the full rule state of the given rooms (rooms never seen get
    /// the default state).
    #[instrument(skip_all, fields(rooms = rooms.len()))]
    pub(crate) async fn load_room_states(
        &self,
        rooms: &[RoomId],
    ) -> Result<HashMap<RoomId, RoomState>, StoreError> {
        self.within_write_timeout(self.load_room_states_now(rooms))
            .await
    }

    async fn load_room_states_now(
        &self,
        rooms: &[RoomId],
    ) -> Result<HashMap<RoomId, RoomState>, StoreError> {
        let ids: Vec<&str> = rooms.iter().map(RoomId::as_str).collect();
        let client = self.pool.get().await?;
        let mut states: HashMap<RoomId, RoomState> = rooms
            .iter()
            .map(|r| (r.clone(), RoomState::default()))
            .collect();
        let query = format!("SELECT {JOINED_COLUMNS} FROM {JOINED_TABLE} WHERE room_id = ANY($1)");
        for row in &client.query(&query, &[&ids]).await? {
            let row = joined_from_row(row)?;
            if let Some(state) = states.get_mut(&row.room_id) {
                state.joined = Some(row);
            }
        }
        let query =
            format!("SELECT {SNAPSHOT_COLUMNS} FROM {SNAPSHOTS_TABLE} WHERE room_id = ANY($1)");
        for row in &client.query(&query, &[&ids]).await? {
            let snapshot = snapshot_from_row(row)?;
            if let Some(state) = states.get_mut(&snapshot.room_id) {
                state.snapshots.insert(snapshot.user_id.clone(), snapshot);
            }
        }
        let table = "room_rules_memory";
        let query = format!("SELECT room_id, memory FROM {table} WHERE room_id = ANY($1)");
        for row in &client.query(&query, &[&ids]).await? {
            let room = room_id(row, table, 0)?;
            let memory: RoomMemory = serde_json::from_value(column(row, table, 1)?)
                .map_err(|e| StoreError::corrupt(table, CorruptRow::Memory(e)))?;
            if let Some(state) = states.get_mut(&room) {
                state.memory = memory;
                state.restore_counters();
            }
        }
        self.load_room_data_into(&client, &ids, &mut states).await?;
        Ok(states)
    }

    /// Rooms with a row, or remembered state, from a stream position above
    /// `position` (the rules' memory keeps the highest stream ordering of
    /// each room's events): what a source that has allocated no further
    /// cannot have told (a database restored behind roomcache).
    pub(crate) async fn rooms_with_rows_after(
        &self,
        position: i64,
    ) -> Result<Vec<RoomId>, StoreError> {
        self.room_ids(
            "room_rules_memory",
            "SELECT room_id FROM room_rules_memory
                 WHERE (memory->>'max_stream_ordering')::bigint > $1
             UNION SELECT room_id FROM sliding_sync_joined_rooms
                 WHERE event_stream_ordering > $1
             UNION SELECT room_id FROM sliding_sync_membership_snapshots
                 WHERE event_stream_ordering > $1
             ORDER BY 1",
            &[&position],
        )
        .await
    }

    /// Source mode: the rooms whose held latest events include a backfilled
    /// one beyond backfill position `position` (stream ordering below
    /// `-position`): what a backfill position lowered to `position` may
    /// have applied that Synapse no longer has.
    pub(crate) async fn rooms_with_backfilled_after(
        &self,
        position: i64,
    ) -> Result<Vec<RoomId>, StoreError> {
        self.room_ids(
            "room_latest_events",
            "SELECT room_id FROM room_latest_events
             WHERE EXISTS (
                 SELECT 1 FROM jsonb_array_elements(events->'events') AS event
                 WHERE jsonb_typeof(event->2) = 'number' AND (event->>2)::bigint < $1)
             ORDER BY 1",
            &[&position.saturating_neg()],
        )
        .await
    }

    /// Every room with a cached row or remembered state.
    pub(crate) async fn cached_room_ids(&self) -> Result<Vec<RoomId>, StoreError> {
        self.room_ids(
            "room_rules_memory",
            "SELECT room_id FROM room_rules_memory
             UNION SELECT room_id FROM room_current_state
             UNION SELECT room_id FROM room_latest_events
             UNION SELECT room_id FROM sliding_sync_joined_rooms
             UNION SELECT room_id FROM sliding_sync_membership_snapshots",
            &[],
        )
        .await
    }

    /// The room IDs (first column) of the rows a query selects from
    /// `table` (named in a corrupt row's error; the first of a union).
    async fn room_ids(
        &self,
        table: &'static str,
        sql: &str,
        parameters: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<RoomId>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client.query(sql, parameters).await?;
        rows.iter().map(|row| room_id(row, table, 0)).collect()
    }

    /// Source mode: the import's progress, if one started.
    pub(crate) async fn import_progress(&self) -> Result<Option<ImportProgress>, StoreError> {
        let table = "source_import_progress";
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT target_position, last_room_id, rooms_done, rows_written, finished
                     FROM {table}"
                ),
                &[],
            )
            .await?;
        row.map(|row| {
            Ok(ImportProgress {
                target_position: column(&row, table, 0)?,
                last_room_id: column(&row, table, 1)?,
                rooms_done: column(&row, table, 2)?,
                rows_written: column(&row, table, 3)?,
                finished: column(&row, table, 4)?,
            })
        })
        .transpose()
    }
}
