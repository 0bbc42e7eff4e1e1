//! Start-up stale-data resolution (spec §4) in source mode, and the
//! draining of the recalculation queue.
//!
//! At start, roomcache's durable position `p` says what its rows cover. Any
//! room with an event, a current-state delta or a de-outliered event in
//! Synapse after `p` (up to the source's safe position `P`) may have stale
//! rows: they are deleted and the room queued in
//! `sliding_sync_joined_rooms_to_recalculate`, in one transaction, before
//! the rows are loaded (so no stale row is ever served). The queue is then
//! drained in the background: each room is recomputed from Synapse's tables
//! at `P` (as the import does) and its rows committed together with its
//! dequeue. Only then do the positions move to `P` and following starts.
//! A restart in the middle finds the queue and the old position, and
//! queues again whatever changed since.
//!
//! Owns: that sequence. May not touch: Synapse's tables (read-only), the
//! rules' internals, the supervisor's room actors (following starts after
//! the queue is drained).

use tracing::info;

use super::import::compute_rooms;
use super::{SourceDatabase, SourceError, SourceStatus};
use crate::index::ReadIndex;
use crate::model::{RoomId, RowChange};
use crate::positions::PositionTracker;
use crate::store::{CommitGroup, Store};

/// Rooms with anything in the events stream in `(from, to]`.
pub async fn changed_rooms(
    source: &SourceDatabase,
    from: i64,
    to: i64,
) -> Result<Vec<RoomId>, SourceError> {
    if to <= from {
        return Ok(Vec::new());
    }
    let rows = source
        .client()
        .query(
            "SELECT room_id FROM events WHERE stream_ordering > $1 AND stream_ordering <= $2
             UNION SELECT room_id FROM current_state_delta_stream WHERE stream_id > $1 AND stream_id <= $2
             UNION SELECT e.room_id FROM ex_outlier_stream x JOIN events e ON e.event_id = x.event_id
                   WHERE x.event_stream_ordering > $1 AND x.event_stream_ordering <= $2
             ORDER BY 1",
            &[&from, &to],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| RoomId::parse(r.get(0)).ok())
        .collect())
}

/// The lowest durable position over the configured writers (0 for none).
pub async fn durable_position(store: &Store, writers: &[String]) -> Result<i64, SourceError> {
    let positions = store.positions().await?;
    Ok(writers
        .iter()
        .map(|w| positions.get(w).copied().unwrap_or(0))
        .min()
        .unwrap_or(0))
}

/// The outcome of the start-up check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalidation {
    /// roomcache's durable position before the check.
    pub from: i64,
    /// The source position the queued rooms will be recomputed at.
    pub to: i64,
    /// Rooms newly queued by this check.
    pub queued: Vec<RoomId>,
}

/// §4: deletes the rows of every room that changed in the source since
/// roomcache's durable position and queues them. Does nothing when
/// roomcache covers nothing yet (position 0: following from the start).
pub async fn invalidate_changed_rooms(
    store: &Store,
    source: &SourceDatabase,
    writers: &[String],
) -> Result<Invalidation, SourceError> {
    let from = durable_position(store, writers).await?;
    let to = source.safe_position().await?;
    if from == 0 {
        return Ok(Invalidation {
            from,
            to,
            queued: Vec::new(),
        });
    }
    let queued = changed_rooms(source, from, to).await?;
    for chunk in queued.chunks(1000) {
        store.invalidate_rooms(chunk).await?;
    }
    info!(
        from,
        to,
        rooms = queued.len(),
        "start-up check: rooms changed in Synapse since the cached position were invalidated and queued"
    );
    Ok(Invalidation { from, to, queued })
}

/// Recomputes every queued room at `to` (each batch of rooms committed with
/// its dequeue and published), then makes `to` the writers' position.
#[allow(clippy::too_many_arguments)]
pub async fn drain_queue(
    store: &Store,
    source: &SourceDatabase,
    index: &ReadIndex,
    tracker: &PositionTracker,
    status: &SourceStatus,
    queue: &[RoomId],
    to: i64,
    writers: &[String],
    server_name: &str,
    batch_rooms: usize,
) -> Result<(), SourceError> {
    metrics::gauge!("roomcache_recalculation_queue").set(queue.len() as f64);
    for batch in queue.chunks(batch_rooms.max(1)) {
        let ids: Vec<String> = batch.iter().map(|r| r.as_str().to_owned()).collect();
        let computed = compute_rooms(source, &ids, to, server_name).await?;
        let mut group = CommitGroup::default();
        computed.add_to(&mut group);
        let dequeues: Vec<RowChange> = batch.iter().cloned().map(RowChange::Dequeue).collect();
        group.add_changes(&dequeues);
        store.commit(&group).await?;
        index.publish(&computed.changes);
        status.dequeue(batch);
        metrics::gauge!("roomcache_recalculation_queue").set(status.queue_length() as f64);
    }
    let mut group = CommitGroup::default();
    for writer in writers {
        group.advance(writer, to);
    }
    store.commit(&group).await?;
    for writer in writers {
        tracker.advance(writer, to);
    }
    if !queue.is_empty() {
        info!(
            rooms = queue.len(),
            position = to,
            "recalculation queue drained"
        );
    }
    Ok(())
}
