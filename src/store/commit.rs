//! The group commit: the final value of every key a group of batches
//! touched, written in one transaction with the positions it makes durable.
//!
//! Owns: [`CommitGroup`], [`StoreWriter`] (the one handle that commits)
//! and the INSERT/UPDATE/DELETE statements of roomcache's schema. May not
//! touch: the read index, positions in memory (the supervisor's write path
//! moves them after [`StoreWriter::commit`]).

use std::collections::BTreeMap;

use roomcache_core::WriterName;
use tokio_postgres::types::{Json, ToSql};
use tracing::instrument;

use super::positions::{write_positions, ImportProgress, PositionWrites};
use super::room_state::{write_current_states, write_held_types, write_latest_events};
use super::{Store, StoreError};
use crate::model::{JoinedRoomRow, MembershipSnapshot, RoomId, RowChange, UserId};
use crate::rules::{CurrentStateIds, HeldStateTypes, LatestEvents, RoomMemory};

/// The final value of every key touched by a group of batches, and the
/// positions the group makes durable. Later changes to a key replace
/// earlier ones, so each key is written once.
#[derive(Debug, Default)]
pub(crate) struct CommitGroup {
    joined_rooms: BTreeMap<RoomId, Option<JoinedRoomRow>>,
    snapshots: BTreeMap<(RoomId, UserId), Option<MembershipSnapshot>>,
    memories: BTreeMap<RoomId, Option<RoomMemory>>,
    dequeued: Vec<RoomId>,
    /// Rooms whose every row is deleted and which are queued for recalculation.
    invalidated: Vec<RoomId>,
    /// Final content per (user, room or "", type).
    account_data: BTreeMap<(UserId, String, String), serde_json::Value>,
    /// Final children per space.
    space_children: BTreeMap<RoomId, Vec<RoomId>>,
    /// Final current state per room (the rooms' data).
    current_states: BTreeMap<RoomId, CurrentStateIds>,
    /// Final latest events per room (the rooms' data).
    latest_events: BTreeMap<RoomId, LatestEvents>,
    /// The types the rooms' current state is computed for, when recorded
    /// with this group.
    held_state_types: Option<HeldStateTypes>,
    /// Rooms queued for recalculation with their rows kept (a repair while
    /// serving: the recomputed rows replace them).
    queued: Vec<RoomId>,
    /// The positions the group makes durable.
    pub(super) positions: PositionWrites,
}

impl CommitGroup {
    pub(crate) fn add_changes(&mut self, changes: &[RowChange]) {
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
                RowChange::CurrentState { room_id, state } => {
                    self.current_states.insert(room_id.clone(), state.clone());
                }
                RowChange::LatestEvents { room_id, events } => {
                    self.latest_events.insert(room_id.clone(), events.clone());
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
    pub(crate) fn set_memory(&mut self, room: RoomId, memory: Option<RoomMemory>) {
        self.memories.insert(room, memory);
    }

    /// Makes `writer`'s position `position` durable with this group.
    pub(crate) fn advance(&mut self, writer: &WriterName, position: i64) {
        let entry = self
            .positions
            .events
            .entry(writer.clone())
            .or_insert(position);
        *entry = (*entry).max(position);
    }

    /// Takes recomputed rooms off the recalculation queue.
    pub(crate) fn dequeue(&mut self, rooms: &[RoomId]) {
        self.dequeued.extend_from_slice(rooms);
    }

    /// Source mode: makes the caches stream's position of Synapse process
    /// `instance` durable with this group.
    pub(crate) fn advance_caches(&mut self, instance: &str, position: i64) {
        let entry = self
            .positions
            .caches
            .entry(instance.to_owned())
            .or_insert(position);
        *entry = (*entry).max(position);
    }

    /// Source mode: makes the backfill stream's position of Synapse writer
    /// `instance` durable with this group (positions only grow).
    pub(crate) fn advance_backfill(&mut self, instance: &str, position: i64) {
        let entry = self
            .positions
            .backfill
            .entry(instance.to_owned())
            .or_insert(position);
        *entry = (*entry).max(position);
    }

    /// Deletes every row and the rules' memory of `rooms` and queues them
    /// for recalculation (start-up invalidation, spec §4), before anything
    /// else of the group.
    pub(crate) fn invalidate(&mut self, rooms: &[RoomId]) {
        self.invalidated.extend_from_slice(rooms);
    }

    /// Source mode's repair: sets the position of `instance` on `stream`
    /// (and what it was read up to) to `position` where it is higher. The
    /// only statement that lowers a position.
    pub(crate) fn lower(&mut self, stream: &'static str, instance: &str, position: i64) {
        self.positions
            .lowered
            .insert((stream, instance.to_owned()), position);
    }

    /// Queues `rooms` for recalculation, keeping their rows until the
    /// recomputed ones replace them.
    pub(crate) fn enqueue(&mut self, rooms: &[RoomId]) {
        self.queued.extend_from_slice(rooms);
    }

    /// Records the import's progress with this group (source mode).
    pub(crate) fn set_import_progress(&mut self, progress: ImportProgress) {
        self.positions.import_progress = Some(progress);
    }

    /// Records the types the rooms' current state is computed for.
    pub(crate) fn set_held_state_types(&mut self, types: HeldStateTypes) {
        self.held_state_types = Some(types);
    }

    /// Records how far Synapse's account-data stream is applied (source mode).
    pub(crate) fn set_account_data_position(&mut self, position: i64) {
        self.positions.account_data = Some(position);
    }

    /// Number of table rows written or deleted.
    pub(crate) fn row_count(&self) -> usize {
        self.joined_rooms.len() + self.snapshots.len()
    }
}

/// The one handle that commits to the store. Only
/// [`Store::from_settings`] makes one, beside the store the server runs
/// on, and start-up hands it to the supervisor's write path, which keeps
/// it; it is not `Clone`: no other code can commit.
pub(crate) struct StoreWriter {
    store: Store,
}

impl std::fmt::Debug for StoreWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreWriter").finish_non_exhaustive()
    }
}

impl StoreWriter {
    pub(super) fn new(store: Store) -> Self {
        StoreWriter { store }
    }

    /// Writes a group in one transaction: invalidations, deletions, then
    /// upserts, then the positions. Nothing is visible to anyone until it
    /// commits.
    #[instrument(skip_all, fields(rows = group.row_count()))]
    pub(crate) async fn commit(&self, group: &CommitGroup) -> Result<(), StoreError> {
        self.store
            .within_write_timeout(self.commit_now(group))
            .await
    }

    async fn commit_now(&self, group: &CommitGroup) -> Result<(), StoreError> {
        let mut client = self.store.pool.get().await?;
        let transaction = client.transaction().await?;
        invalidate_rooms(&transaction, &group.invalidated).await?;
        enqueue(&transaction, &group.queued).await?;
        if let Some(types) = &group.held_state_types {
            write_held_types(&transaction, types).await?;
        }
        // The rest touches distinct tables (and distinct keys within one):
        // its statements go out together, pipelined on the connection, so
        // the group costs a few round trips instead of two per statement.
        futures_util::try_join!(
            write_rows(&transaction, group),
            write_memories(&transaction, &group.memories),
            write_room_list_data(&transaction, group),
            write_current_states(&transaction, &group.current_states),
            write_latest_events(&transaction, &group.latest_events),
            dequeue(&transaction, &group.dequeued),
            write_positions(&transaction, &group.positions),
        )?;
        transaction.commit().await?;
        Ok(())
    }
}

/// Queues rooms for recalculation (their rows stay).
async fn enqueue(
    transaction: &deadpool_postgres::Transaction<'_>,
    rooms: &[RoomId],
) -> Result<(), StoreError> {
    of_rooms(
        transaction,
        "INSERT INTO sliding_sync_joined_rooms_to_recalculate (room_id)
         SELECT UNNEST($1::text[]) ON CONFLICT DO NOTHING",
        rooms,
    )
    .await
}

/// Takes recomputed rooms out of the recalculation queue.
async fn dequeue(
    transaction: &deadpool_postgres::Transaction<'_>,
    rooms: &[RoomId],
) -> Result<(), StoreError> {
    of_rooms(
        transaction,
        "DELETE FROM sliding_sync_joined_rooms_to_recalculate WHERE room_id = ANY($1)",
        rooms,
    )
    .await
}

/// Runs `statement` with the IDs of `rooms` as `$1` (not at all without
/// rooms).
async fn of_rooms(
    transaction: &deadpool_postgres::Transaction<'_>,
    statement: &str,
    rooms: &[RoomId],
) -> Result<(), StoreError> {
    if !rooms.is_empty() {
        let ids: Vec<&str> = rooms.iter().map(RoomId::as_str).collect();
        transaction.execute(statement, &[&ids]).await?;
    }
    Ok(())
}

/// The table rows of a group: deletions and upserts (a key is in one or
/// the other), pipelined.
async fn write_rows(
    transaction: &deadpool_postgres::Transaction<'_>,
    group: &CommitGroup,
) -> Result<(), StoreError> {
    let (joined_upserts, joined_deletes): (Vec<_>, Vec<_>) = group
        .joined_rooms
        .iter()
        .partition(|(_, row)| row.is_some());
    let (snapshot_upserts, snapshot_deletes): (Vec<_>, Vec<_>) =
        group.snapshots.iter().partition(|(_, row)| row.is_some());
    let joined_ids: Vec<&str> = joined_deletes.iter().map(|(r, _)| r.as_str()).collect();
    let delete_joined = async {
        if !joined_ids.is_empty() {
            transaction
                .execute(
                    "DELETE FROM sliding_sync_joined_rooms WHERE room_id = ANY($1)",
                    &[&joined_ids],
                )
                .await?;
        }
        Ok::<(), StoreError>(())
    };
    let (rooms, users): (Vec<&str>, Vec<&str>) = snapshot_deletes
        .iter()
        .map(|((r, u), _)| (r.as_str(), u.as_str()))
        .unzip();
    let delete_snapshots = async {
        if !rooms.is_empty() {
            transaction
                .execute(
                    "DELETE FROM sliding_sync_membership_snapshots AS s
                     USING UNNEST($1::text[], $2::text[]) AS d(room_id, user_id)
                     WHERE s.room_id = d.room_id AND s.user_id = d.user_id",
                    &[&rooms, &users],
                )
                .await?;
        }
        Ok(())
    };
    let joined: Vec<&JoinedRoomRow> = joined_upserts
        .iter()
        .filter_map(|(_, r)| r.as_ref())
        .collect();
    let upsert_joined = async {
        if !joined.is_empty() {
            upsert_joined_rooms(transaction, &joined).await?;
        }
        Ok(())
    };
    let snapshots: Vec<&MembershipSnapshot> = snapshot_upserts
        .iter()
        .filter_map(|(_, r)| r.as_ref())
        .collect();
    let upsert = async {
        if !snapshots.is_empty() {
            upsert_snapshots(transaction, &snapshots).await?;
        }
        Ok(())
    };
    futures_util::try_join!(delete_joined, delete_snapshots, upsert_joined, upsert)?;
    Ok(())
}

/// Start-up invalidation (§4): deletes every row (space children and current state included)
/// and the rules' memory of `rooms` and queues them in `sliding_sync_joined_rooms_to_recalculate`
/// (the queue survives restarts).
async fn invalidate_rooms(
    transaction: &deadpool_postgres::Transaction<'_>,
    rooms: &[RoomId],
) -> Result<(), StoreError> {
    if rooms.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = rooms.iter().map(RoomId::as_str).collect();
    for (table, room_column) in [
        ("sliding_sync_joined_rooms", "room_id"),
        ("sliding_sync_membership_snapshots", "room_id"),
        ("room_rules_memory", "room_id"),
        ("space_children", "space_room_id"),
        ("room_current_state", "room_id"),
        ("room_latest_events", "room_id"),
    ] {
        transaction
            .execute(
                &format!("DELETE FROM {table} WHERE {room_column} = ANY($1)"),
                &[&ids],
            )
            .await?;
    }
    enqueue(transaction, rooms).await
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
