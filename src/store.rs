//! Write-through to Postgres: migrations, loading at start-up, and the group
//! commit of row changes together with the stream positions they cover.
//!
//! Owns: the connection pool, the SQL of roomcache's schema, and the rule
//! that a group's rows and its writers' positions commit in one transaction
//! (so after any crash rows and positions agree). May not touch: actors,
//! the read index, the position tracker; callers publish after `commit`
//! returns.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::{NoTls, Row};
use tracing::{info, instrument};

use crate::config::Settings;
use crate::model::{
    AccountData, EventId, IdError, JoinedRoomRow, Membership, MembershipSnapshot, RoomId,
    RoomMetadata, RowChange, UserId,
};
use crate::rules::{RoomMemory, RoomState};

/// The name of the events stream in `stream_positions`.
pub const EVENTS_STREAM: &str = "events";

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid database URL: {0}")]
    BadUrl(#[source] tokio_postgres::Error),
    #[error("cannot get a database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("cannot build the connection pool: {0}")]
    Build(#[from] deadpool_postgres::BuildError),
    #[error("database error: {}", describe_database_error(.0))]
    Database(#[from] tokio_postgres::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] refinery::Error),
    #[error("a stored row is invalid ({table}): {reason}")]
    Corrupt { table: &'static str, reason: String },
}

/// A database error with the server's message and detail, not just "db error".
fn describe_database_error(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => {
            let mut text = format!("{} ({})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                text.push_str(": ");
                text.push_str(detail);
            }
            text
        }
        None => match std::error::Error::source(error) {
            Some(source) => format!("{error}: {source}"),
            None => error.to_string(),
        },
    }
}

impl StoreError {
    /// True when the failure is a uniqueness conflict caused by the data
    /// (e.g. two events claiming one stream ordering), not by the database.
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Database(e)
            if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION))
    }
}

impl From<IdError> for StoreError {
    fn from(e: IdError) -> Self {
        StoreError::Corrupt {
            table: "sliding-sync tables",
            reason: e.to_string(),
        }
    }
}

/// Everything loaded at start-up.
#[derive(Debug, Default)]
pub struct LoadedRows {
    pub joined_rooms: Vec<JoinedRoomRow>,
    pub snapshots: Vec<MembershipSnapshot>,
    pub positions: BTreeMap<String, i64>,
    pub recalculation_queue: Vec<RoomId>,
    /// Users' `m.direct` and `m.tag` account data.
    pub account_data: Vec<AccountData>,
    /// Each space's children (spaces without children are absent).
    pub space_children: Vec<(RoomId, Vec<RoomId>)>,
}

/// The final value of every key touched by a group of batches, and the
/// positions the group makes durable. Later changes to a key replace
/// earlier ones, so each key is written once.
#[derive(Debug, Default)]
pub struct CommitGroup {
    joined_rooms: BTreeMap<RoomId, Option<JoinedRoomRow>>,
    snapshots: BTreeMap<(RoomId, UserId), Option<MembershipSnapshot>>,
    memories: BTreeMap<RoomId, Option<RoomMemory>>,
    dequeued: Vec<RoomId>,
    positions: BTreeMap<String, i64>,
    /// Final content per (user, room or "", type).
    account_data: BTreeMap<(UserId, String, String), serde_json::Value>,
    /// Final children per space.
    space_children: BTreeMap<RoomId, Vec<RoomId>>,
    /// Source mode: the import's progress, written with the group's rows.
    import_progress: Option<ImportProgress>,
}

/// Source mode: how far the import from Synapse's tables has come
/// (table `source_import_progress`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportProgress {
    /// The events-stream position every room is computed at.
    pub target_position: i64,
    /// Rooms are imported in `room_id` order; the last one done.
    pub last_room_id: String,
    pub rooms_done: i64,
    pub rows_written: i64,
    pub finished: bool,
}

impl CommitGroup {
    pub fn add_changes(&mut self, changes: &[RowChange]) {
        for change in changes {
            match change {
                RowChange::UpsertJoinedRoom(row) => {
                    self.joined_rooms
                        .insert(row.room_id.clone(), Some(row.clone()));
                }
                RowChange::DeleteJoinedRoom(room) => {
                    self.joined_rooms.insert(room.clone(), None);
                }
                RowChange::UpsertSnapshot(s) => {
                    self.snapshots
                        .insert((s.room_id.clone(), s.user_id.clone()), Some(s.clone()));
                }
                RowChange::DeleteSnapshot(room, user) => {
                    self.snapshots.insert((room.clone(), user.clone()), None);
                }
                RowChange::Dequeue(room) => self.dequeued.push(room.clone()),
                RowChange::SpaceChildren {
                    space_room_id,
                    children,
                } => {
                    self.space_children
                        .insert(space_room_id.clone(), children.clone());
                }
                RowChange::AccountData(data) => {
                    let room = data
                        .room_id
                        .as_ref()
                        .map(|r| r.as_str().to_owned())
                        .unwrap_or_default();
                    self.account_data.insert(
                        (data.user_id.clone(), room, data.data_type.clone()),
                        data.content.clone(),
                    );
                }
            }
        }
    }

    /// Records the rules' memory of a room (`None`: forget it).
    pub fn set_memory(&mut self, room: RoomId, memory: Option<RoomMemory>) {
        self.memories.insert(room, memory);
    }

    /// Makes `writer`'s position `position` durable with this group.
    pub fn advance(&mut self, writer: &str, position: i64) {
        let entry = self.positions.entry(writer.to_owned()).or_insert(position);
        *entry = (*entry).max(position);
    }

    /// Records the import's progress with this group (source mode).
    pub fn set_import_progress(&mut self, progress: ImportProgress) {
        self.import_progress = Some(progress);
    }

    pub fn is_empty(&self) -> bool {
        self.import_progress.is_none()
            && self.joined_rooms.is_empty()
            && self.snapshots.is_empty()
            && self.memories.is_empty()
            && self.dequeued.is_empty()
            && self.positions.is_empty()
            && self.account_data.is_empty()
            && self.space_children.is_empty()
    }

    /// Number of table rows written or deleted.
    pub fn row_count(&self) -> usize {
        self.joined_rooms.len() + self.snapshots.len()
    }
}

/// The Postgres side of roomcache.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Connects, creates the schema if needed and applies the migrations.
    #[instrument(skip_all, fields(schema = %schema))]
    pub async fn connect(
        database_url: &str,
        schema: &str,
        pool_size: usize,
    ) -> Result<Store, StoreError> {
        let mut config: tokio_postgres::Config =
            database_url.parse().map_err(StoreError::BadUrl)?;
        config.options(format!("-c search_path={schema}"));
        config.application_name("roomcache");
        config.connect_timeout(Duration::from_secs(10));
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager).max_size(pool_size).build()?;
        let mut client = pool.get().await?;
        client
            .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .await?;
        let report = embedded::migrations::runner()
            .set_migration_table_name("roomcache_migrations")
            .run_async(&mut **client)
            .await?;
        for migration in report.applied_migrations() {
            info!(
                version = migration.version(),
                name = migration.name(),
                "applied migration"
            );
        }
        Ok(Store { pool })
    }

    /// Connects with the settings' database URL.
    pub async fn from_settings(settings: &Settings, url: &str) -> Result<Store, StoreError> {
        Self::connect(url, &settings.schema, settings.pool_size).await
    }

    /// Loads every row, the durable positions and the recalculation queue.
    #[instrument(skip_all)]
    pub async fn load_all(&self) -> Result<LoadedRows, StoreError> {
        let mut loaded = self.load_all_but_snapshots().await?;
        let mut snapshots = Vec::new();
        self.load_snapshots(|chunk| snapshots.extend(chunk)).await?;
        loaded.snapshots = snapshots;
        Ok(loaded)
    }

    /// Streams every snapshot to `on_chunk`, a few thousand at a time, so a
    /// caller can take them in without holding them all at once.
    #[instrument(skip_all)]
    pub async fn load_snapshots(
        &self,
        mut on_chunk: impl FnMut(Vec<MembershipSnapshot>),
    ) -> Result<(), StoreError> {
        use futures_util::TryStreamExt;
        const CHUNK: usize = 8192;
        let client = self.pool.get().await?;
        let rows = client
            .query_raw(
                &format!("SELECT {SNAPSHOT_COLUMNS} FROM sliding_sync_membership_snapshots"),
                std::iter::empty::<&str>(),
            )
            .await?;
        futures_util::pin_mut!(rows);
        let mut chunk = Vec::with_capacity(CHUNK);
        while let Some(row) = rows.try_next().await? {
            chunk.push(snapshot_from_row(&row)?);
            if chunk.len() == CHUNK {
                on_chunk(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)));
            }
        }
        if !chunk.is_empty() {
            on_chunk(chunk);
        }
        Ok(())
    }

    /// Everything [`Store::load_all`] loads except the snapshots (`snapshots` is empty).
    #[instrument(skip_all)]
    pub async fn load_all_but_snapshots(&self) -> Result<LoadedRows, StoreError> {
        let client = self.pool.get().await?;
        let joined_rooms = client
            .query(
                &format!("SELECT {JOINED_COLUMNS} FROM sliding_sync_joined_rooms"),
                &[],
            )
            .await?
            .iter()
            .map(joined_from_row)
            .collect::<Result<_, _>>()?;
        let positions = client
            .query(
                "SELECT instance_name, stream_id FROM stream_positions WHERE stream_name = $1",
                &[&EVENTS_STREAM],
            )
            .await?
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
            .collect();
        let recalculation_queue = client
            .query(
                "SELECT room_id FROM sliding_sync_joined_rooms_to_recalculate",
                &[],
            )
            .await?
            .iter()
            .map(|r| RoomId::parse(r.get(0)))
            .collect::<Result<_, _>>()?;
        let account_data = client
            .query(
                "SELECT user_id, room_id, account_data_type, content FROM user_account_data",
                &[],
            )
            .await?
            .iter()
            .map(|r| {
                let room: &str = r.get(1);
                Ok(AccountData {
                    user_id: UserId::parse(r.get(0))?,
                    room_id: if room.is_empty() {
                        None
                    } else {
                        Some(RoomId::parse(room)?)
                    },
                    data_type: r.get(2),
                    content: r.get(3),
                })
            })
            .collect::<Result<_, StoreError>>()?;
        let mut children: BTreeMap<RoomId, Vec<RoomId>> = BTreeMap::new();
        for row in client
            .query(
                "SELECT space_room_id, child_room_id FROM space_children ORDER BY 1, 2",
                &[],
            )
            .await?
        {
            children
                .entry(RoomId::parse(row.get(0))?)
                .or_default()
                .push(RoomId::parse(row.get(1))?);
        }
        Ok(LoadedRows {
            joined_rooms,
            snapshots: Vec::new(),
            positions,
            recalculation_queue,
            account_data,
            space_children: children.into_iter().collect(),
        })
    }

    /// Loads the full rule state of the given rooms (rooms never seen get
    /// the default state).
    #[instrument(skip_all, fields(rooms = rooms.len()))]
    pub async fn load_room_states(
        &self,
        rooms: &[RoomId],
    ) -> Result<HashMap<RoomId, RoomState>, StoreError> {
        let ids: Vec<&str> = rooms.iter().map(RoomId::as_str).collect();
        let client = self.pool.get().await?;
        let mut states: HashMap<RoomId, RoomState> = rooms
            .iter()
            .map(|r| (r.clone(), RoomState::default()))
            .collect();
        let joined = client
            .query(
                &format!("SELECT {JOINED_COLUMNS} FROM sliding_sync_joined_rooms WHERE room_id = ANY($1)"),
                &[&ids],
            )
            .await?;
        for row in &joined {
            let row = joined_from_row(row)?;
            if let Some(state) = states.get_mut(&row.room_id) {
                state.joined = Some(row);
            }
        }
        let snapshots = client
            .query(
                &format!("SELECT {SNAPSHOT_COLUMNS} FROM sliding_sync_membership_snapshots WHERE room_id = ANY($1)"),
                &[&ids],
            )
            .await?;
        for row in &snapshots {
            let snapshot = snapshot_from_row(row)?;
            if let Some(state) = states.get_mut(&snapshot.room_id) {
                state.snapshots.insert(snapshot.user_id.clone(), snapshot);
            }
        }
        let memories = client
            .query(
                "SELECT room_id, memory FROM room_rules_memory WHERE room_id = ANY($1)",
                &[&ids],
            )
            .await?;
        for row in &memories {
            let room = RoomId::parse(row.get(0))?;
            let memory: RoomMemory =
                serde_json::from_value(row.get(1)).map_err(|e| StoreError::Corrupt {
                    table: "room_rules_memory",
                    reason: e.to_string(),
                })?;
            if let Some(state) = states.get_mut(&room) {
                state.memory = memory;
                state.restore_counters();
            }
        }
        Ok(states)
    }

    /// Writes a group in one transaction: deletions, then upserts, then the
    /// positions. Nothing is visible to anyone until it commits.
    #[instrument(skip_all, fields(rows = group.row_count()))]
    pub async fn commit(&self, group: &CommitGroup) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;

        let (joined_upserts, joined_deletes): (Vec<_>, Vec<_>) = group
            .joined_rooms
            .iter()
            .partition(|(_, row)| row.is_some());
        let (snapshot_upserts, snapshot_deletes): (Vec<_>, Vec<_>) =
            group.snapshots.iter().partition(|(_, row)| row.is_some());

        if !joined_deletes.is_empty() {
            let ids: Vec<&str> = joined_deletes.iter().map(|(r, _)| r.as_str()).collect();
            transaction
                .execute(
                    "DELETE FROM sliding_sync_joined_rooms WHERE room_id = ANY($1)",
                    &[&ids],
                )
                .await?;
        }
        if !snapshot_deletes.is_empty() {
            let rooms: Vec<&str> = snapshot_deletes
                .iter()
                .map(|((r, _), _)| r.as_str())
                .collect();
            let users: Vec<&str> = snapshot_deletes
                .iter()
                .map(|((_, u), _)| u.as_str())
                .collect();
            transaction
                .execute(
                    "DELETE FROM sliding_sync_membership_snapshots AS s
                     USING UNNEST($1::text[], $2::text[]) AS d(room_id, user_id)
                     WHERE s.room_id = d.room_id AND s.user_id = d.user_id",
                    &[&rooms, &users],
                )
                .await?;
        }
        if !joined_upserts.is_empty() {
            let rows: Vec<&JoinedRoomRow> = joined_upserts
                .iter()
                .filter_map(|(_, r)| r.as_ref())
                .collect();
            upsert_joined_rooms(&transaction, &rows).await?;
        }
        if !snapshot_upserts.is_empty() {
            let rows: Vec<&MembershipSnapshot> = snapshot_upserts
                .iter()
                .filter_map(|(_, r)| r.as_ref())
                .collect();
            upsert_snapshots(&transaction, &rows).await?;
        }
        write_memories(&transaction, &group.memories).await?;
        write_room_list_data(&transaction, group).await?;
        if !group.dequeued.is_empty() {
            let ids: Vec<&str> = group.dequeued.iter().map(RoomId::as_str).collect();
            transaction
                .execute(
                    "DELETE FROM sliding_sync_joined_rooms_to_recalculate WHERE room_id = ANY($1)",
                    &[&ids],
                )
                .await?;
        }
        if !group.positions.is_empty() {
            let writers: Vec<&str> = group.positions.keys().map(String::as_str).collect();
            let positions: Vec<i64> = group.positions.values().copied().collect();
            transaction
                .execute(
                    "INSERT INTO stream_positions (stream_name, instance_name, stream_id)
                     SELECT $1, w, p FROM UNNEST($2::text[], $3::bigint[]) AS t(w, p)
                     ON CONFLICT (stream_name, instance_name) DO UPDATE
                     SET stream_id = EXCLUDED.stream_id
                     WHERE stream_positions.stream_id < EXCLUDED.stream_id",
                    &[&EVENTS_STREAM, &writers, &positions],
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
        transaction.commit().await?;
        Ok(())
    }

    /// The durable positions of the events stream, per writer.
    pub async fn positions(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        let client = self.pool.get().await?;
        Ok(client
            .query(
                "SELECT instance_name, stream_id FROM stream_positions WHERE stream_name = $1",
                &[&EVENTS_STREAM],
            )
            .await?
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
            .collect())
    }

    /// Every room with a cached row or remembered state.
    pub async fn cached_room_ids(&self) -> Result<Vec<String>, StoreError> {
        let client = self.pool.get().await?;
        Ok(client
            .query(
                "SELECT room_id FROM room_rules_memory
                 UNION SELECT room_id FROM sliding_sync_joined_rooms
                 UNION SELECT room_id FROM sliding_sync_membership_snapshots",
                &[],
            )
            .await?
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect())
    }

    /// Source mode: the import's progress, if an import ever started.
    pub async fn import_progress(&self) -> Result<Option<ImportProgress>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT target_position, last_room_id, rooms_done, rows_written, finished
                 FROM source_import_progress",
                &[],
            )
            .await?;
        Ok(row.map(|r| ImportProgress {
            target_position: r.get(0),
            last_room_id: r.get(1),
            rooms_done: r.get(2),
            rows_written: r.get(3),
            finished: r.get(4),
        }))
    }

    /// Start-up invalidation (§4): in one transaction, deletes every row and
    /// the rules' memory of `rooms` and queues them in
    /// `sliding_sync_joined_rooms_to_recalculate` (the queue survives restarts).
    #[instrument(skip_all, fields(rooms = rooms.len()))]
    pub async fn invalidate_rooms(&self, rooms: &[RoomId]) -> Result<(), StoreError> {
        if rooms.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = rooms.iter().map(RoomId::as_str).collect();
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        for table in [
            "sliding_sync_joined_rooms",
            "sliding_sync_membership_snapshots",
            "room_rules_memory",
        ] {
            transaction
                .execute(
                    &format!("DELETE FROM {table} WHERE room_id = ANY($1)"),
                    &[&ids],
                )
                .await?;
        }
        transaction
            .execute(
                "INSERT INTO sliding_sync_joined_rooms_to_recalculate (room_id)
                 SELECT UNNEST($1::text[]) ON CONFLICT DO NOTHING",
                &[&ids],
            )
            .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// A pooled connection, for tools and tests that read the tables.
    pub async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.pool.get().await?)
    }
}

const JOINED_COLUMNS: &str = "room_id, event_stream_ordering, bump_stamp, room_type, room_name, \
     is_encrypted, tombstone_successor_room_id";

const SNAPSHOT_COLUMNS: &str = "room_id, user_id, sender, membership_event_id, membership, \
     forgotten, event_stream_ordering, event_instance_name, has_known_state, room_type, room_name, \
     is_encrypted, tombstone_successor_room_id";

fn joined_from_row(row: &Row) -> Result<JoinedRoomRow, StoreError> {
    Ok(JoinedRoomRow {
        room_id: RoomId::parse(row.get(0))?,
        event_stream_ordering: row.get(1),
        bump_stamp: row.get(2),
        metadata: RoomMetadata {
            room_type: row.get(3),
            room_name: row.get(4),
            is_encrypted: row.get(5),
            tombstone_successor_room_id: row.get(6),
        },
    })
}

fn snapshot_from_row(row: &Row) -> Result<MembershipSnapshot, StoreError> {
    let membership: &str = row.get(4);
    Ok(MembershipSnapshot {
        room_id: RoomId::parse(row.get(0))?,
        user_id: UserId::parse(row.get(1))?,
        sender: UserId::parse(row.get(2))?,
        membership_event_id: EventId::parse(row.get(3))?,
        membership: Membership::parse(membership).ok_or_else(|| StoreError::Corrupt {
            table: "sliding_sync_membership_snapshots",
            reason: format!("unknown membership {membership:?}"),
        })?,
        forgotten: row.get::<_, i32>(5) != 0,
        event_stream_ordering: row.get(6),
        event_instance_name: row.get(7),
        has_known_state: row.get(8),
        metadata: RoomMetadata {
            room_type: row.get(9),
            room_name: row.get(10),
            is_encrypted: row.get(11),
            tombstone_successor_room_id: row.get(12),
        },
    })
}

async fn upsert_joined_rooms(
    transaction: &deadpool_postgres::Transaction<'_>,
    rows: &[&JoinedRoomRow],
) -> Result<(), StoreError> {
    let room_ids: Vec<&str> = rows.iter().map(|r| r.room_id.as_str()).collect();
    let orderings: Vec<i64> = rows.iter().map(|r| r.event_stream_ordering).collect();
    let bumps: Vec<Option<i64>> = rows.iter().map(|r| r.bump_stamp).collect();
    let types: Vec<Option<&str>> = rows
        .iter()
        .map(|r| r.metadata.room_type.as_deref())
        .collect();
    let names: Vec<Option<&str>> = rows
        .iter()
        .map(|r| r.metadata.room_name.as_deref())
        .collect();
    let encrypted: Vec<bool> = rows.iter().map(|r| r.metadata.is_encrypted).collect();
    let tombstones: Vec<Option<&str>> = rows
        .iter()
        .map(|r| r.metadata.tombstone_successor_room_id.as_deref())
        .collect();
    let params: [&(dyn ToSql + Sync); 7] = [
        &room_ids,
        &orderings,
        &bumps,
        &types,
        &names,
        &encrypted,
        &tombstones,
    ];
    transaction
        .execute(
            "INSERT INTO sliding_sync_joined_rooms
               (room_id, event_stream_ordering, bump_stamp, room_type, room_name,
                is_encrypted, tombstone_successor_room_id)
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[],
                                  $5::text[], $6::bool[], $7::text[])
             ON CONFLICT (room_id) DO UPDATE SET
               event_stream_ordering = EXCLUDED.event_stream_ordering,
               bump_stamp = EXCLUDED.bump_stamp,
               room_type = EXCLUDED.room_type,
               room_name = EXCLUDED.room_name,
               is_encrypted = EXCLUDED.is_encrypted,
               tombstone_successor_room_id = EXCLUDED.tombstone_successor_room_id",
            &params,
        )
        .await?;
    Ok(())
}

async fn upsert_snapshots(
    transaction: &deadpool_postgres::Transaction<'_>,
    rows: &[&MembershipSnapshot],
) -> Result<(), StoreError> {
    let room_ids: Vec<&str> = rows.iter().map(|r| r.room_id.as_str()).collect();
    let user_ids: Vec<&str> = rows.iter().map(|r| r.user_id.as_str()).collect();
    let senders: Vec<&str> = rows.iter().map(|r| r.sender.as_str()).collect();
    let event_ids: Vec<&str> = rows
        .iter()
        .map(|r| r.membership_event_id.as_str())
        .collect();
    let memberships: Vec<&str> = rows.iter().map(|r| r.membership.as_str()).collect();
    let forgotten: Vec<i32> = rows.iter().map(|r| i32::from(r.forgotten)).collect();
    let orderings: Vec<i64> = rows.iter().map(|r| r.event_stream_ordering).collect();
    let instances: Vec<&str> = rows
        .iter()
        .map(|r| r.event_instance_name.as_str())
        .collect();
    let known: Vec<bool> = rows.iter().map(|r| r.has_known_state).collect();
    let types: Vec<Option<&str>> = rows
        .iter()
        .map(|r| r.metadata.room_type.as_deref())
        .collect();
    let names: Vec<Option<&str>> = rows
        .iter()
        .map(|r| r.metadata.room_name.as_deref())
        .collect();
    let encrypted: Vec<bool> = rows.iter().map(|r| r.metadata.is_encrypted).collect();
    let tombstones: Vec<Option<&str>> = rows
        .iter()
        .map(|r| r.metadata.tombstone_successor_room_id.as_deref())
        .collect();
    let params: [&(dyn ToSql + Sync); 13] = [
        &room_ids,
        &user_ids,
        &senders,
        &event_ids,
        &memberships,
        &forgotten,
        &orderings,
        &instances,
        &known,
        &types,
        &names,
        &encrypted,
        &tombstones,
    ];
    transaction
        .execute(
            "INSERT INTO sliding_sync_membership_snapshots
               (room_id, user_id, sender, membership_event_id, membership, forgotten,
                event_stream_ordering, event_instance_name, has_known_state, room_type,
                room_name, is_encrypted, tombstone_successor_room_id)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                  $6::int[], $7::bigint[], $8::text[], $9::bool[], $10::text[],
                                  $11::text[], $12::bool[], $13::text[])
             ON CONFLICT (room_id, user_id) DO UPDATE SET
               sender = EXCLUDED.sender,
               membership_event_id = EXCLUDED.membership_event_id,
               membership = EXCLUDED.membership,
               forgotten = EXCLUDED.forgotten,
               event_stream_ordering = EXCLUDED.event_stream_ordering,
               event_instance_name = EXCLUDED.event_instance_name,
               has_known_state = EXCLUDED.has_known_state,
               room_type = EXCLUDED.room_type,
               room_name = EXCLUDED.room_name,
               is_encrypted = EXCLUDED.is_encrypted,
               tombstone_successor_room_id = EXCLUDED.tombstone_successor_room_id",
            &params,
        )
        .await?;
    Ok(())
}

/// Account data and space children (migration V3).
async fn write_room_list_data(
    transaction: &deadpool_postgres::Transaction<'_>,
    group: &CommitGroup,
) -> Result<(), StoreError> {
    if !group.space_children.is_empty() {
        let spaces: Vec<&str> = group.space_children.keys().map(RoomId::as_str).collect();
        transaction
            .execute(
                "DELETE FROM space_children WHERE space_room_id = ANY($1)",
                &[&spaces],
            )
            .await?;
        let (parents, children): (Vec<&str>, Vec<&str>) = group
            .space_children
            .iter()
            .flat_map(|(space, children)| children.iter().map(|c| (space.as_str(), c.as_str())))
            .unzip();
        if !parents.is_empty() {
            transaction
                .execute(
                    "INSERT INTO space_children (space_room_id, child_room_id)
                     SELECT * FROM UNNEST($1::text[], $2::text[])",
                    &[&parents, &children],
                )
                .await?;
        }
    }
    if !group.account_data.is_empty() {
        let users: Vec<&str> = group
            .account_data
            .keys()
            .map(|(u, _, _)| u.as_str())
            .collect();
        let rooms: Vec<&str> = group
            .account_data
            .keys()
            .map(|(_, r, _)| r.as_str())
            .collect();
        let types: Vec<&str> = group
            .account_data
            .keys()
            .map(|(_, _, t)| t.as_str())
            .collect();
        let contents: Vec<&serde_json::Value> = group.account_data.values().collect();
        transaction
            .execute(
                "INSERT INTO user_account_data (user_id, room_id, account_data_type, content)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::jsonb[])
                 ON CONFLICT (user_id, room_id, account_data_type)
                 DO UPDATE SET content = EXCLUDED.content",
                &[&users, &rooms, &types, &contents],
            )
            .await?;
    }
    Ok(())
}

async fn write_memories(
    transaction: &deadpool_postgres::Transaction<'_>,
    memories: &BTreeMap<RoomId, Option<RoomMemory>>,
) -> Result<(), StoreError> {
    let (upserts, deletes): (Vec<_>, Vec<_>) = memories.iter().partition(|(_, m)| m.is_some());
    if !deletes.is_empty() {
        let ids: Vec<&str> = deletes.iter().map(|(r, _)| r.as_str()).collect();
        transaction
            .execute(
                "DELETE FROM room_rules_memory WHERE room_id = ANY($1)",
                &[&ids],
            )
            .await?;
    }
    if !upserts.is_empty() {
        let ids: Vec<&str> = upserts.iter().map(|(r, _)| r.as_str()).collect();
        let values: Vec<Json<&RoomMemory>> = upserts
            .iter()
            .filter_map(|(_, m)| m.as_ref().map(Json))
            .collect();
        transaction
            .execute(
                "INSERT INTO room_rules_memory (room_id, memory)
                 SELECT * FROM UNNEST($1::text[], $2::jsonb[])
                 ON CONFLICT (room_id) DO UPDATE SET memory = EXCLUDED.memory",
                &[&ids, &values],
            )
            .await?;
    }
    Ok(())
}
