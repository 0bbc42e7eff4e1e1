//! The room actor: one per room, created on first use.
//!
//! Owns: the room's committed [`RoomState`] and the states of batches that
//! are prepared but not yet committed. It applies the rules
//! ([`crate::rules::apply_rows`]) and hands the changed rows back for the
//! store; it never writes to Postgres or the read index itself, and it never
//! sees another room.

use std::collections::VecDeque;
use std::sync::Arc;

use actix::prelude::*;
use tracing::debug;

use crate::feed::FeedRow;
use crate::model::{RoomId, RowChange};
use crate::rules::{apply_rows, RoomMemory, RoomState, RuleError, RulesContext};

/// Identifies one feed batch across the supervisor, room actors and store.
pub(crate) type BatchSeq = u64;

/// The rows of one batch for one room, to apply on top of the latest
/// (possibly still pending) state.
#[derive(Debug, Message)]
#[rtype(result = "Result<PreparedRoom, RuleError>")]
pub(crate) struct Prepare {
    pub(crate) seq: BatchSeq,
    pub(crate) context: Arc<RulesContext>,
    pub(crate) rows: Vec<FeedRow>,
}

/// What a room hands to the store for one batch.
#[derive(Debug, Clone)]
pub(crate) struct PreparedRoom {
    pub(crate) room_id: RoomId,
    pub(crate) changes: Vec<RowChange>,
    /// What to do with the room's stored rules' memory.
    pub(crate) memory: MemoryChange,
    /// The room's state after the batch holds a table row (a joined row or
    /// a snapshot); an actor of a room without rows is stopped once the
    /// pipeline is idle (its memory is in Postgres).
    pub(crate) holds_rows: bool,
}

/// What a batch does to a room's stored rules' memory.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MemoryChange {
    /// Nothing to write.
    Unchanged,
    /// Store this memory.
    Write(RoomMemory),
    /// Delete the stored memory (a purged room: nothing left to remember).
    Delete,
}

/// The batch is durable: its state becomes the committed state.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Commit {
    pub(crate) seq: BatchSeq,
}

/// The batch (and every later one) will not be committed: drop their states.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Abort {
    pub(crate) seq: BatchSeq,
}

#[derive(Debug)]
pub(crate) struct RoomActor {
    room_id: RoomId,
    committed: RoomState,
    pending: VecDeque<(BatchSeq, RoomState)>,
}

impl RoomActor {
    pub(crate) fn new(room_id: RoomId, committed: RoomState) -> Self {
        RoomActor {
            room_id,
            committed,
            pending: VecDeque::new(),
        }
    }

    /// The state the next batch applies to: the last pending one, or the
    /// committed one when nothing is pending.
    fn latest_state(&self) -> &RoomState {
        self.pending
            .back()
            .map(|(_, state)| state)
            .unwrap_or(&self.committed)
    }
}

/// Whether a room's state has a table row.
pub(crate) fn holds_rows(state: &RoomState) -> bool {
    state.joined.is_some() || !state.snapshots.is_empty()
}

impl Actor for RoomActor {
    type Context = Context<Self>;
}

impl Handler<Prepare> for RoomActor {
    type Result = Result<PreparedRoom, RuleError>;

    fn handle(&mut self, msg: Prepare, _: &mut Context<Self>) -> Self::Result {
        let outcome = apply_rows(self.latest_state(), &self.room_id, &msg.rows, &msg.context)?;
        debug!(room_id = %self.room_id, seq = msg.seq, changes = outcome.changes.len(), "prepared");
        let memory = if !outcome.memory_changed {
            MemoryChange::Unchanged
        } else if outcome.state.memory != RoomMemory::default() {
            MemoryChange::Write(outcome.state.memory.clone())
        } else {
            MemoryChange::Delete
        };
        let holds_rows = holds_rows(&outcome.state);
        self.pending.push_back((msg.seq, outcome.state));
        Ok(PreparedRoom {
            room_id: self.room_id.clone(),
            changes: outcome.changes,
            memory,
            holds_rows,
        })
    }
}

impl Handler<Commit> for RoomActor {
    type Result = ();

    fn handle(&mut self, msg: Commit, _: &mut Context<Self>) {
        while let Some((seq, _)) = self.pending.front() {
            if *seq > msg.seq {
                break;
            }
            if let Some((_, state)) = self.pending.pop_front() {
                self.committed = state;
            }
        }
    }
}

impl Handler<Abort> for RoomActor {
    type Result = ();

    fn handle(&mut self, msg: Abort, _: &mut Context<Self>) {
        self.pending.retain(|(seq, _)| *seq < msg.seq);
    }
}
