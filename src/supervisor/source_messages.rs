//! The messages source mode sends the supervisor: the follower's batches
//! ([`SubmitBatch`]), forgets and purges from Synapse's caches stream
//! ([`SubmitInvalidations`]), backfilled events from Synapse's backfill
//! stream ([`SubmitBackfill`]), account data ([`ApplyAccountData`]), the
//! recalculation of queued rooms ([`Recalculate`]) and the repair of
//! positions found ahead of the source ([`RepairPositions`]).
//!
//! Owns: the messages' shapes (their handlers are the supervisor's, in
//! `mod.rs`). May not touch: anything that runs.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::Message;
use roomcache_core::WriterName;

use super::recalc::{RecalculationError, Upstream};
use super::{repair, BatchAck, BatchError};
use crate::feed::FeedBatch;
#[cfg(doc)]
use crate::feed::ValidBatch;
use crate::model::RoomId;
use crate::store::StoreError;

/// Source mode's follower's batch: the follower checks it with
/// [`FeedBatch::validate`] and sends the batch itself, so it is parsed into
/// a [`ValidBatch`] here, on its way into the queue (refused:
/// [`BatchError::Invalid`]). Goes once the follower parses its batches and
/// sends [`super::SubmitValidBatch`] (the source-mode round of the renovation).
#[derive(Debug, Message)]
#[rtype(result = "Result<BatchAck, BatchError>")]
pub(crate) struct SubmitBatch(pub(crate) FeedBatch);

/// Source mode: forgets and purges learnt from Synapse's caches stream.
/// They have no events-stream position: their rows are applied in their
/// rooms like a batch's (in queue order, on top of what is prepared) and
/// committed with the caches stream's new positions; no writer's position
/// moves. Answered with position 0.
#[derive(Debug, Message)]
#[rtype(result = "Result<BatchAck, BatchError>")]
pub(crate) struct SubmitInvalidations(pub(crate) InvalidationBatch);

/// See [`SubmitInvalidations`].
#[derive(Debug, Clone, Default)]
pub(crate) struct InvalidationBatch {
    /// Forget and purge rows (their stream ids only order them).
    pub(crate) rows: Vec<crate::feed::FeedRow>,
    /// The caches stream's new position per Synapse process.
    pub(crate) caches_positions: std::collections::BTreeMap<String, i64>,
}

/// Source mode: events Synapse backfilled (negative stream orderings, from
/// its backfill stream), which move no events-stream position: like
/// [`SubmitInvalidations`] their rows are applied in their rooms in queue
/// order and committed with the backfill stream's new positions. Answered
/// with position 0.
#[derive(Debug, Message)]
#[rtype(result = "Result<BatchAck, BatchError>")]
pub(crate) struct SubmitBackfill(pub(crate) BackfillBatch);

/// See [`SubmitBackfill`].
#[derive(Debug, Clone)]
pub(crate) struct BackfillBatch {
    /// The Synapse writer that persisted the events (their instance name
    /// in the rooms' latest events).
    pub(crate) writer: String,
    /// Event rows of backfilled (or, during backfill, de-outliered) events,
    /// each with its own `stream_ordering` (their stream ids only order
    /// them).
    pub(crate) rows: Vec<crate::feed::FeedRow>,
    /// The backfill stream's new position per Synapse writer.
    pub(crate) positions: std::collections::BTreeMap<String, i64>,
}

/// Source mode: recompute every queued room, then move `writers` to the
/// queue's position (answered once done).
#[derive(Message)]
#[rtype(result = "Result<(), RecalculationError>")]
pub(crate) struct Recalculate {
    pub(crate) upstream: Arc<dyn Upstream>,
    pub(crate) writers: Vec<WriterName>,
    pub(crate) batch_rooms: usize,
}

/// Source mode: repair the positions found ahead of what the source has
/// allocated (recomputing the rooms changed since where they are lowered
/// to, with the recalculation's settings), answered once done; `None` when
/// none was. Refused while a batch is being applied (the follower asks
/// between its steps).
#[derive(Message)]
#[rtype(result = "Result<Option<repair::Repair>, RecalculationError>")]
pub(crate) struct RepairPositions(pub(crate) Recalculate);

/// Source mode: lower the backfill positions of the Synapse writers in
/// `lowered` (roomcache's position, Synapse's own row for it, lower) and
/// recompute the rooms holding backfilled events beyond them; answered
/// with those rooms once done. Refused while a batch is being applied.
#[derive(Message)]
#[rtype(result = "Result<Vec<RoomId>, RecalculationError>")]
pub(crate) struct RepairBackfill {
    pub(crate) recalculate: Recalculate,
    pub(crate) lowered: BTreeMap<String, (i64, i64)>,
}

/// Source mode: account data (`m.direct`, `m.tag`) read from Synapse up to
/// `position` of its account-data stream. Committed with the position,
/// then published; answered once visible.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), StoreError>")]
pub(crate) struct ApplyAccountData {
    pub(crate) changes: Vec<crate::model::RowChange>,
    pub(crate) position: i64,
}
