//! The recalculation queue (spec §4–§5) and its drain.
//!
//! Owns: the set of rooms whose rows were deleted at start-up because they
//! changed in the source while roomcache was down, the position they are
//! recomputed at, and the drain that recomputes them in batches through the
//! one write path (rows and dequeue in one transaction, then published),
//! then moves every writer to that position. May not touch: SQL (the
//! store's and the source's), the read index (only through
//! [`WritePath`]), HTTP.

use std::collections::BTreeSet;
use std::sync::{Arc, PoisonError, RwLock};

use dashmap::DashSet;
use futures_util::future::BoxFuture;
use roomcache_core::StreamToken;
use tracing::{info, info_span, Instrument};

use super::commit::{CommitUnit, WritePath};
use super::{Recalculate, Shared};
use crate::model::{RoomId, RowChange, UserId};
use crate::rules::{CurrentStateIds, LatestEvents, RoomMemory};
use crate::store::StoreError;

/// Rows recomputed from the source for some rooms.
#[derive(Debug, Default)]
pub(crate) struct RecomputedRooms {
    /// Row upserts and space children (each room computed from nothing:
    /// [`crate::rules::RoomState::rows_from_nothing`]).
    pub(crate) changes: Vec<RowChange>,
    /// The rules' memory of every room with any history.
    pub(crate) memories: Vec<(RoomId, RoomMemory)>,
    /// Rooms whose history the rules refused (logged; left without rows).
    pub(crate) refused: Vec<RoomId>,
}

impl RecomputedRooms {
    /// The joined rows and snapshots among the changes.
    pub(crate) fn table_rows(&self) -> usize {
        self.changes
            .iter()
            .filter(|change| {
                matches!(
                    change,
                    RowChange::UpsertJoinedRoom(_) | RowChange::UpsertSnapshot(_)
                )
            })
            .count()
    }

    /// Adds the rows and memories to a commit.
    pub(crate) fn add_to<'rows>(&'rows self, unit: &mut CommitUnit<'rows>) {
        unit.rows(&self.changes);
        for (room, memory) in &self.memories {
            unit.memory(room.clone(), Some(memory.clone()));
        }
    }
}

/// What the supervisor needs from the source of truth (in source mode,
/// Synapse's database) to invalidate and recompute rooms, and what the
/// reads' fallback needs to answer for a queued room.
pub(crate) trait Upstream: Send + Sync + 'static {
    /// The token up to which everything is persisted in the source, per
    /// writer; `floor` is roomcache's durable token (every row up to it is
    /// committed in the source), used for a writer whose own record in the
    /// source cannot be believed.
    fn safe_token<'a>(
        &'a self,
        floor: &'a StreamToken,
    ) -> BoxFuture<'a, Result<StreamToken, UpstreamError>>;
    /// The highest position the source has allocated on the events stream:
    /// no writer can truly be past it.
    fn allocated(&self) -> BoxFuture<'_, Result<i64, UpstreamError>>;
    /// Rooms with anything in the events stream after `from` and up to
    /// `to` (per writer).
    fn changed_rooms<'a>(
        &'a self,
        from: &'a StreamToken,
        to: &'a StreamToken,
    ) -> BoxFuture<'a, Result<Vec<RoomId>, UpstreamError>>;
    /// The rows of `rooms` as of `at` (each writer's rows up to its
    /// position in it).
    fn recompute<'a>(
        &'a self,
        rooms: &'a [RoomId],
        at: &'a StreamToken,
    ) -> BoxFuture<'a, Result<RecomputedRooms, UpstreamError>>;
    /// Those of `rooms` where `user` has a current membership.
    fn rooms_of_user<'a>(
        &'a self,
        user: &'a UserId,
        rooms: &'a [RoomId],
    ) -> BoxFuture<'a, Result<Vec<RoomId>, UpstreamError>>;
}

/// Why the [`Upstream`] could not answer: the source's own error, kept
/// whole (the supervisor needs no more than that it failed, and why, to
/// log and answer). Transparent: it reads as that error, with that error's
/// causes, so the chain is the source's; [`UpstreamError::cause`] gives the
/// error itself to whoever tells failures apart by their type (the
/// source's health).
#[derive(Debug)]
pub(crate) struct UpstreamError(Box<dyn std::error::Error + Send + Sync + 'static>);

impl UpstreamError {
    pub(crate) fn new(cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        UpstreamError(Box::new(cause))
    }

    /// The source's error.
    pub(crate) fn cause(&self) -> &(dyn std::error::Error + 'static) {
        &*self.0
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// Why recalculation failed (the queue is kept; a restart retries).
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecalculationError {
    #[error("reading the source failed")]
    Source(#[from] UpstreamError),
    #[error("committing recomputed rooms failed")]
    Store(#[from] StoreError),
    /// A repair while serving found rooms queued already.
    #[error(
        "rooms are queued for recalculation already; the repair waits until they are recomputed"
    )]
    QueueBusy,
    /// A repair while serving found a batch being applied.
    #[error("a batch is being applied; the repair waits for the next step")]
    Busy,
}

/// The rooms waiting for recalculation, shared with the reads' fallback.
#[derive(Debug, Default)]
pub(crate) struct RecalculationQueue {
    rooms: DashSet<RoomId>,
    /// The source token queued rooms are recomputed at (set again only
    /// when the queue is empty: [`RecalculationQueue::requeue`]).
    position: RwLock<StreamToken>,
}

impl RecalculationQueue {
    pub(crate) fn new(rooms: impl IntoIterator<Item = RoomId>, position: StreamToken) -> Arc<Self> {
        let queue = RecalculationQueue {
            rooms: rooms.into_iter().collect(),
            position: RwLock::new(position),
        };
        metrics::gauge!("roomcache_recalculation_queue").set(queue.len() as f64);
        Arc::new(queue)
    }

    pub(crate) fn contains(&self, room: &RoomId) -> bool {
        self.rooms.contains(room)
    }

    pub(crate) fn len(&self) -> usize {
        self.rooms.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// The source token queued rooms are recomputed at.
    pub(crate) fn position(&self) -> StreamToken {
        self.position
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Queues `rooms`, to be recomputed at `position`: only when the queue
    /// is empty (one position for every queued room); false otherwise,
    /// and nothing changes. The position is set before any room shows.
    pub(crate) fn requeue(&self, rooms: &[RoomId], position: StreamToken) -> bool {
        let mut current = self
            .position
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if !self.rooms.is_empty() {
            return false;
        }
        *current = position;
        for room in rooms {
            self.rooms.insert(room.clone());
        }
        metrics::gauge!("roomcache_recalculation_queue").set(self.len() as f64);
        true
    }

    /// Every queued room, sorted.
    pub(crate) fn rooms(&self) -> Vec<RoomId> {
        let mut rooms: Vec<RoomId> = self.rooms.iter().map(|r| r.key().clone()).collect();
        rooms.sort();
        rooms
    }

    pub(super) fn remove(&self, rooms: &[RoomId]) {
        for room in rooms {
            self.rooms.remove(room);
        }
        metrics::gauge!("roomcache_recalculation_queue").set(self.len() as f64);
    }
}

/// Recomputes every queued room, `batch_rooms` at a time, each batch
/// committed with its dequeue and published (replacing whatever rows the
/// rooms still have: none after start-up's invalidation, the served ones
/// after a repair while serving); then moves `writers` to the queue's
/// position through the same write path.
pub(super) async fn drain(shared: &Shared, job: &Recalculate) -> Result<(), RecalculationError> {
    let (write_path, queue, upstream) = (&shared.write_path, &shared.queue, job.upstream.as_ref());
    let at = queue.position();
    let queued = queue.rooms();
    for batch in queued.chunks(job.batch_rooms.max(1)) {
        let span = info_span!("recalculate", rooms = batch.len(), at = %at);
        async {
            let recomputed = upstream.recompute(batch, &at).await?;
            let replaced = replaced_rows(write_path, batch, &recomputed).await?;
            let mut unit = CommitUnit::default();
            unit.rows(&replaced);
            recomputed.add_to(&mut unit);
            let remembered: BTreeSet<&RoomId> =
                recomputed.memories.iter().map(|(room, _)| room).collect();
            for room in batch.iter().filter(|room| !remembered.contains(room)) {
                unit.memory(room.clone(), None);
            }
            unit.dequeue(batch);
            write_path.commit(unit).await?;
            queue.remove(batch);
            shared.rooms.forget(batch);
            Ok::<_, RecalculationError>(())
        }
        .instrument(span)
        .await?;
    }
    let mut unit = CommitUnit::default();
    for writer in &job.writers {
        unit.advance(writer, at.position(writer.as_str()));
    }
    write_path.commit(unit).await?;
    if !queued.is_empty() {
        info!(
            rooms = queued.len(),
            position = %at,
            "recalculation queue drained"
        );
    }
    Ok(())
}

/// The deletions of the stored rows of `rooms` that the recomputed rows do
/// not replace (a room the server has left since, a membership gone with
/// a purge, space children or held state gone), so the recomputed rows are all the rooms
/// have afterwards.
async fn replaced_rows(
    write_path: &WritePath,
    rooms: &[RoomId],
    recomputed: &RecomputedRooms,
) -> Result<Vec<RowChange>, StoreError> {
    let mut upserted_rooms = BTreeSet::new();
    let mut upserted_snapshots = BTreeSet::new();
    let mut spaces = BTreeSet::new();
    let mut held_states = BTreeSet::new();
    let mut held_timelines = BTreeSet::new();
    for change in &recomputed.changes {
        match change {
            RowChange::UpsertJoinedRoom(row) => {
                upserted_rooms.insert(&row.room_id);
            }
            RowChange::UpsertSnapshot(row) => {
                upserted_snapshots.insert((&row.room_id, &row.user_id));
            }
            RowChange::SpaceChildren { space_room_id, .. } => {
                spaces.insert(space_room_id);
            }
            RowChange::CurrentState { room_id, .. } => {
                held_states.insert(room_id);
            }
            RowChange::LatestEvents { room_id, .. } => {
                held_timelines.insert(room_id);
            }
            _ => {}
        }
    }
    // A room computed from nothing lists its space children, its held
    // state and its latest events only when it has some.
    let mut deletions: Vec<RowChange> = rooms
        .iter()
        .filter(|room| !spaces.contains(room))
        .map(|room| RowChange::SpaceChildren {
            space_room_id: room.clone(),
            children: Vec::new(),
        })
        .collect();
    deletions.extend(
        rooms
            .iter()
            .filter(|room| !held_states.contains(room))
            .map(|room| RowChange::CurrentState {
                room_id: room.clone(),
                state: CurrentStateIds::default(),
            }),
    );
    deletions.extend(
        rooms
            .iter()
            .filter(|room| !held_timelines.contains(room))
            .map(|room| RowChange::LatestEvents {
                room_id: room.clone(),
                events: LatestEvents::default(),
            }),
    );
    let stored = write_path.store().load_room_states(rooms).await?;
    for (room, state) in &stored {
        if state.joined.is_some() && !upserted_rooms.contains(room) {
            deletions.push(RowChange::DeleteJoinedRoom(room.clone()));
        }
        for user in state.snapshots.keys() {
            if !upserted_snapshots.contains(&(room, user)) {
                deletions.push(RowChange::DeleteSnapshot(room.clone(), user.clone()));
            }
        }
    }
    Ok(deletions)
}
