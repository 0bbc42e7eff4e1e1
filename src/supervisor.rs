//! The supervisor: receives writers' batches, routes their rows to room
//! actors, commits the results in groups and only then moves positions.
//!
//! Owns: the queue of batches waiting for a commit, the registry of room
//! actors, and the order "claim the writer's range → prepare in room actors
//! → commit in Postgres → publish to the read index and finish the claim
//! (one step for readers, through the publish gate) → answer". May
//! not touch: SQL (the store's), the rules (the room actors'), HTTP (the
//! API's). One group commit is in flight at a time; batches that arrive
//! meanwhile queue up and form the next group.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::join_all;
use tokio::sync::oneshot;
use tracing::{info_span, warn, Instrument};

use crate::feed::{FeedBatch, FeedRow};
use crate::index::ReadIndex;
use crate::model::RoomId;
use crate::positions::{Claim, PositionError, PositionTracker};
use crate::room::{Abort, BatchSeq, Commit, Prepare, PreparedRoom, RoomActor};
use crate::rules::{RuleError, RulesContext};
use crate::store::{CommitGroup, Store, StoreError};

/// Why a batch was not applied. Nothing of it is visible anywhere.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("writer {0:?} is not configured (settings: writers)")]
    UnknownWriter(String),
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error("the batch conflicts with stored rows (a stream ordering used twice?): {0}")]
    Conflict(String),
    #[error("the database is unavailable: {0}")]
    Store(String),
    #[error("a room actor stopped unexpectedly: {0}")]
    Mailbox(#[from] MailboxError),
    #[error("roomcache is shutting down")]
    ShuttingDown,
}

/// The answer to a batch: the writer's durable position once it committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchAck {
    pub position: i64,
    /// Rows applied (rows at or below the durable position are skipped).
    pub applied_rows: usize,
}

/// A writer's validated batch.
#[derive(Debug, Message)]
#[rtype(result = "Result<BatchAck, BatchError>")]
pub struct SubmitBatch(pub FeedBatch);

struct Queued {
    batch: FeedBatch,
    reply: oneshot::Sender<Result<BatchAck, BatchError>>,
    received: Instant,
}

/// The parts every group commit needs.
#[derive(Clone)]
struct Deps {
    store: Store,
    index: Arc<ReadIndex>,
    tracker: Arc<PositionTracker>,
    server_name: Arc<str>,
}

pub struct Supervisor {
    deps: Deps,
    rooms: HashMap<RoomId, Addr<RoomActor>>,
    queue: VecDeque<Queued>,
    committing: bool,
    /// Batches to commit one per group, after a group failed on a conflict,
    /// so the batch at fault is refused alone.
    isolated: usize,
    next_seq: BatchSeq,
    batch_size: usize,
    linger: Duration,
}

impl Supervisor {
    pub fn new(
        store: Store,
        index: Arc<ReadIndex>,
        tracker: Arc<PositionTracker>,
        server_name: &str,
        batch_size: usize,
        linger: Duration,
    ) -> Self {
        Supervisor {
            deps: Deps {
                store,
                index,
                tracker,
                server_name: Arc::from(server_name),
            },
            rooms: HashMap::new(),
            queue: VecDeque::new(),
            committing: false,
            isolated: 0,
            next_seq: 1,
            batch_size,
            linger,
        }
    }

    /// Starts the next group commit if none is running.
    fn kick(&mut self, ctx: &mut Context<Self>) {
        if self.committing || self.queue.is_empty() {
            return;
        }
        self.committing = true;
        if !self.linger.is_zero() && self.queue.len() < self.batch_size {
            ctx.run_later(self.linger, |act, ctx| act.run_group(ctx));
        } else {
            self.run_group(ctx);
        }
    }

    fn run_group(&mut self, ctx: &mut Context<Self>) {
        let limit = if self.isolated > 0 {
            self.isolated -= 1;
            1
        } else {
            self.batch_size
        };
        let take = self.queue.len().min(limit);
        let batches: Vec<(BatchSeq, Queued)> = self
            .queue
            .drain(..take)
            .map(|q| {
                let seq = self.next_seq;
                self.next_seq += 1;
                (seq, q)
            })
            .collect();
        let rooms = std::mem::take(&mut self.rooms);
        let group = GroupCommit {
            deps: self.deps.clone(),
            rooms,
        };
        let span = info_span!("group_commit", batches = batches.len());
        let work = async move { group.run(batches).await }.instrument(span);
        ctx.spawn(
            actix::fut::wrap_future(work).map(|(rooms, retry), act: &mut Self, ctx| {
                act.rooms = rooms;
                if !retry.is_empty() {
                    warn!(
                        batches = retry.len(),
                        "a group commit hit a conflict; retrying its batches one by one"
                    );
                    act.isolated = retry.len();
                    for queued in retry.into_iter().rev() {
                        act.queue.push_front(queued);
                    }
                }
                act.committing = false;
                metrics::gauge!("roomcache_room_actors").set(act.rooms.len() as f64);
                act.kick(ctx);
            }),
        );
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;
}

impl Handler<SubmitBatch> for Supervisor {
    type Result = ResponseFuture<Result<BatchAck, BatchError>>;

    fn handle(&mut self, msg: SubmitBatch, ctx: &mut Context<Self>) -> Self::Result {
        let (reply, answer) = oneshot::channel();
        self.queue.push_back(Queued {
            batch: msg.0,
            reply,
            received: Instant::now(),
        });
        self.kick(ctx);
        Box::pin(async move { answer.await.unwrap_or(Err(BatchError::ShuttingDown)) })
    }
}

/// One prepared batch waiting for the group's commit.
struct Prepared {
    seq: BatchSeq,
    /// The writer's range this batch applies; finished after the group is
    /// committed and published, abandoned if the commit fails.
    claim: Claim,
    position: i64,
    applied_rows: usize,
    rooms: Vec<PreparedRoom>,
    queued: Queued,
}

/// The work of one group: prepare each batch in turn, commit them together.
struct GroupCommit {
    deps: Deps,
    rooms: HashMap<RoomId, Addr<RoomActor>>,
}

impl GroupCommit {
    /// Returns the room registry, and the batches to retry one by one when a
    /// multi-batch group failed on a conflict.
    async fn run(
        mut self,
        batches: Vec<(BatchSeq, Queued)>,
    ) -> (HashMap<RoomId, Addr<RoomActor>>, Vec<Queued>) {
        let mut prepared: Vec<Prepared> = Vec::new();
        // A group of several batches is retried batch by batch after a
        // conflict, so its batches keep their rows; a lone batch moves them.
        let keep_rows = batches.len() > 1;
        for (seq, mut queued) in batches {
            match self.prepare(seq, &mut queued.batch, keep_rows).await {
                Ok((claim, applied_rows, rooms)) => {
                    prepared.push(Prepared {
                        seq,
                        position: claim.up_to.max(claim.after),
                        claim,
                        applied_rows,
                        rooms,
                        queued,
                    });
                }
                Err(error) => {
                    warn!(writer = %queued.batch.writer, %error, "feed batch refused");
                    metrics::counter!("roomcache_feed_batches_total", "outcome" => "refused")
                        .increment(1);
                    let _ = queued.reply.send(Err(error));
                }
            }
        }
        let retry = if prepared.is_empty() {
            Vec::new()
        } else {
            self.commit(prepared).await
        };
        (self.rooms, retry)
    }

    /// Claims the batch's range of its writer's stream and applies the new
    /// rows in their rooms' actors; on any failure the claim is abandoned
    /// and every room drops what it prepared for it.
    async fn prepare(
        &mut self,
        seq: BatchSeq,
        batch: &mut FeedBatch,
        keep_rows: bool,
    ) -> Result<(Claim, usize, Vec<PreparedRoom>), BatchError> {
        // Rows at or below the end of the writer's last claim (durable, or
        // claimed by an earlier batch of this group) are skipped.
        let claim = self
            .deps
            .tracker
            .claim(&batch.writer, batch.last_stream_id().unwrap_or(i64::MIN))
            .map_err(|PositionError::UnknownWriter(writer)| BatchError::UnknownWriter(writer))?;
        match self.prepare_claimed(seq, batch, &claim, keep_rows).await {
            Ok((applied_rows, rooms)) => Ok((claim, applied_rows, rooms)),
            Err(error) => {
                self.deps.tracker.abandon(&claim);
                Err(error)
            }
        }
    }

    async fn prepare_claimed(
        &mut self,
        seq: BatchSeq,
        batch: &mut FeedBatch,
        claim: &Claim,
        keep_rows: bool,
    ) -> Result<(usize, Vec<PreparedRoom>), BatchError> {
        let mut by_room: BTreeMap<RoomId, Vec<FeedRow>> = BTreeMap::new();
        let mut applied_rows = 0;
        // The rows move to their rooms (or are copied, when the batch may be
        // retried); the batch keeps its writer.
        let rows = if keep_rows {
            batch.rows.clone()
        } else {
            std::mem::take(&mut batch.rows)
        };
        for row in rows.into_iter().filter(|r| claim.covers(r.stream_id())) {
            applied_rows += 1;
            if let Some(room) = row.room_id() {
                by_room.entry(room.clone()).or_default().push(row);
            }
        }
        self.ensure_actors(by_room.keys())
            .await
            .map_err(|e| BatchError::Store(e.to_string()))?;
        let context = Arc::new(RulesContext {
            server_name: self.deps.server_name.to_string(),
            writer: batch.writer.clone(),
        });
        let mut sends = Vec::with_capacity(by_room.len());
        let mut addresses = Vec::with_capacity(by_room.len());
        for (room, rows) in by_room {
            let Some(address) = self.rooms.get(&room) else {
                continue;
            };
            addresses.push(address.clone());
            sends.push(address.send(Prepare {
                seq,
                context: context.clone(),
                rows,
            }));
        }
        let results = join_all(sends).await;
        let mut rooms = Vec::with_capacity(results.len());
        let mut failure = None;
        for result in results {
            match result {
                Ok(Ok(room)) => rooms.push(room),
                Ok(Err(e)) => failure = failure.or(Some(BatchError::Rule(e))),
                Err(e) => failure = failure.or(Some(BatchError::Mailbox(e))),
            }
        }
        if let Some(error) = failure {
            for address in &addresses {
                address.do_send(Abort { seq });
            }
            return Err(error);
        }
        Ok((applied_rows, rooms))
    }

    /// Creates the actors of rooms seen for the first time since start-up,
    /// from their committed state in Postgres.
    async fn ensure_actors<'a>(
        &mut self,
        rooms: impl Iterator<Item = &'a RoomId>,
    ) -> Result<(), StoreError> {
        let missing: Vec<RoomId> = rooms
            .filter(|r| !self.rooms.contains_key(*r))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let mut states = self.deps.store.load_room_states(&missing).await?;
        for room in missing {
            let state = states.remove(&room).unwrap_or_default();
            let actor = RoomActor::new(room.clone(), state).start();
            self.rooms.insert(room, actor);
        }
        Ok(())
    }

    /// Commits the group; returns the batches to retry alone (a conflict in
    /// a group of several batches), having answered every other batch.
    async fn commit(&mut self, prepared: Vec<Prepared>) -> Vec<Queued> {
        let mut group = CommitGroup::default();
        for batch in &prepared {
            for room in &batch.rooms {
                group.add_changes(&room.changes);
                if let Some(memory) = &room.memory {
                    group.set_memory(room.room_id.clone(), memory.clone());
                }
            }
            group.advance(&batch.claim.writer, batch.position);
        }
        let started = Instant::now();
        let result = self.deps.store.commit(&group).await;
        metrics::histogram!("roomcache_commit_seconds").record(started.elapsed().as_secs_f64());
        let last_seq = prepared.iter().map(|b| b.seq).max().unwrap_or(0);
        match result {
            Ok(()) => {
                // Committed: publish the rows, then advance the positions,
                // as one step for readers (see `publish`).
                let (index, tracker) = (&self.deps.index, &self.deps.tracker);
                tracker.gate().publish(|| {
                    for room in prepared.iter().flat_map(|b| &b.rooms) {
                        index.publish(&room.changes);
                    }
                    for batch in &prepared {
                        tracker.finish(&batch.claim);
                    }
                });
                for room in prepared.iter().flat_map(|b| &b.rooms) {
                    if let Some(address) = self.rooms.get(&room.room_id) {
                        address.do_send(Commit { seq: last_seq });
                    }
                }
                for batch in prepared {
                    metrics::counter!("roomcache_feed_batches_total", "outcome" => "committed")
                        .increment(1);
                    metrics::counter!("roomcache_feed_rows_total")
                        .increment(batch.applied_rows as u64);
                    metrics::histogram!("roomcache_batch_seconds")
                        .record(batch.queued.received.elapsed().as_secs_f64());
                    let _ = batch.queued.reply.send(Ok(BatchAck {
                        position: batch.position,
                        applied_rows: batch.applied_rows,
                    }));
                }
                metrics::gauge!("roomcache_joined_rooms")
                    .set(self.deps.index.joined_room_count() as f64);
                metrics::gauge!("roomcache_snapshots").set(self.deps.index.snapshot_count() as f64);
                Vec::new()
            }
            Err(error) => {
                for batch in &prepared {
                    self.deps.tracker.abandon(&batch.claim);
                }
                let first_seq = prepared.iter().map(|b| b.seq).min().unwrap_or(0);
                for room in prepared.iter().flat_map(|b| &b.rooms) {
                    if let Some(address) = self.rooms.get(&room.room_id) {
                        address.do_send(Abort { seq: first_seq });
                    }
                }
                let conflict = error.is_conflict();
                warn!(%error, batches = prepared.len(), "group commit failed; nothing of it applied");
                if conflict && prepared.len() > 1 {
                    return prepared.into_iter().map(|b| b.queued).collect();
                }
                for batch in prepared {
                    metrics::counter!("roomcache_feed_batches_total", "outcome" => "failed")
                        .increment(1);
                    let message = error.to_string();
                    let _ = batch.queued.reply.send(Err(if conflict {
                        BatchError::Conflict(message)
                    } else {
                        BatchError::Store(message)
                    }));
                }
                Vec::new()
            }
        }
    }
}
