//! The recalculation queue (spec §4–§5) and its drain.
//!
//! Owns: the set of rooms whose rows were deleted at start-up because they
//! changed in the source while roomcache was down, the position they are
//! recomputed at, and the drain that recomputes them in batches through the
//! one write path (rows and dequeue in one transaction, then published),
//! then moves every writer to that position. May not touch: SQL (the
//! store's and the source's), the read index (only through
//! [`WritePath`]), HTTP.

use std::sync::Arc;

use dashmap::DashSet;
use futures_util::future::BoxFuture;
use roomcache_core::{StreamToken, WriterName};
use tracing::{info, info_span, Instrument};

use super::commit::{CommitUnit, WritePath};
use super::rooms::RoomRegistry;
use crate::model::{RoomId, RowChange, UserId};
use crate::rules::RoomMemory;
use crate::source::SourceError;
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
    /// writer.
    fn safe_token(&self) -> BoxFuture<'_, Result<StreamToken, SourceError>>;
    /// Rooms with anything in the events stream after `from` and up to
    /// `to` (per writer).
    fn changed_rooms<'a>(
        &'a self,
        from: &'a StreamToken,
        to: &'a StreamToken,
    ) -> BoxFuture<'a, Result<Vec<RoomId>, SourceError>>;
    /// The rows of `rooms` as of `at` (each writer's rows up to its
    /// position in it).
    fn recompute<'a>(
        &'a self,
        rooms: &'a [RoomId],
        at: &'a StreamToken,
    ) -> BoxFuture<'a, Result<RecomputedRooms, SourceError>>;
    /// Those of `rooms` where `user` has a current membership.
    fn rooms_of_user<'a>(
        &'a self,
        user: &'a UserId,
        rooms: &'a [RoomId],
    ) -> BoxFuture<'a, Result<Vec<RoomId>, SourceError>>;
}

/// Why recalculation failed (the queue is kept; a restart retries).
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecalculationError {
    #[error("reading the source failed")]
    Source(#[from] SourceError),
    #[error("committing recomputed rooms failed")]
    Store(#[from] StoreError),
}

/// The rooms waiting for recalculation, shared with the reads' fallback.
#[derive(Debug, Default)]
pub(crate) struct RecalculationQueue {
    rooms: DashSet<RoomId>,
    /// The source token queued rooms are recomputed at.
    position: StreamToken,
}

impl RecalculationQueue {
    pub(crate) fn new(rooms: impl IntoIterator<Item = RoomId>, position: StreamToken) -> Arc<Self> {
        let queue = RecalculationQueue {
            rooms: rooms.into_iter().collect(),
            position,
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
    pub(crate) fn position(&self) -> &StreamToken {
        &self.position
    }

    /// Every queued room, sorted.
    pub(crate) fn rooms(&self) -> Vec<RoomId> {
        let mut rooms: Vec<RoomId> = self.rooms.iter().map(|r| r.key().clone()).collect();
        rooms.sort();
        rooms
    }

    fn remove(&self, rooms: &[RoomId]) {
        for room in rooms {
            self.rooms.remove(room);
        }
        metrics::gauge!("roomcache_recalculation_queue").set(self.len() as f64);
    }
}

/// Recomputes every queued room, `batch_rooms` at a time, each batch
/// committed with its dequeue and published; then moves `writers` to the
/// queue's position through the same write path.
pub(crate) async fn drain(
    write_path: &WritePath,
    upstream: &dyn Upstream,
    queue: &RecalculationQueue,
    rooms: &RoomRegistry,
    writers: &[WriterName],
    batch_rooms: usize,
) -> Result<(), RecalculationError> {
    let at = queue.position();
    let queued = queue.rooms();
    for batch in queued.chunks(batch_rooms.max(1)) {
        let span = info_span!("recalculate", rooms = batch.len(), at = %at);
        async {
            let recomputed = upstream.recompute(batch, at).await?;
            let mut unit = CommitUnit::default();
            recomputed.add_to(&mut unit);
            unit.dequeue(batch);
            write_path.commit(unit).await?;
            queue.remove(batch);
            rooms.forget(batch);
            Ok::<_, RecalculationError>(())
        }
        .instrument(span)
        .await?;
    }
    let mut unit = CommitUnit::default();
    for writer in writers {
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
