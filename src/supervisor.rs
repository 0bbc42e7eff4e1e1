//! The supervisor: receives writers' batches, routes their rows to room
//! actors, commits the results in groups and only then moves positions.
//!
//! Owns: the queue of batches waiting for a commit, the registry of room
//! actors, and the order "claim the writer's range → prepare in room actors
//! → commit in Postgres → publish to the read index and finish the claim
//! (one step for readers, through the publish gate) → answer". May
//! not touch: SQL (the store's), the rules (the room actors'), HTTP (the
//! API's).
//!
//! A two-stage pipeline: one group commits while the next group is prepared
//! on top of it (room actors keep both as pending states). Batches that
//! arrive meanwhile queue up and form the group after. If a commit fails,
//! the group prepared on top of it is withdrawn (claims abandoned, room
//! states dropped) and its batches go back to the front of the queue.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::join_all;
use tokio::sync::oneshot;
use tracing::{info_span, warn, Instrument};

use crate::feed::{FeedBatch, FeedRow};
use crate::index::ReadIndex;
use crate::model::{RoomId, RowChange};
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
    /// The room actors; lent to the group being prepared.
    rooms: HashMap<RoomId, Addr<RoomActor>>,
    queue: VecDeque<Queued>,
    /// A group is being prepared (at most one at a time).
    preparing: bool,
    /// The group being prepared was built on a group whose commit failed:
    /// drop it when it is ready.
    discard_preparing: bool,
    /// Batches to put back at the front of the queue once the group being
    /// prepared is discarded (they come before it).
    held_back: Vec<Queued>,
    /// A prepared group waiting for the commit in flight to finish.
    ready: Option<Vec<Prepared>>,
    /// A group commit is in flight (at most one at a time).
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
            preparing: false,
            discard_preparing: false,
            held_back: Vec::new(),
            ready: None,
            committing: false,
            isolated: 0,
            next_seq: 1,
            batch_size,
            linger,
        }
    }

    /// Starts preparing the next group when the pipeline has room for it:
    /// one group commits while the next one is prepared on top of it.
    fn kick(&mut self, ctx: &mut Context<Self>) {
        if self.preparing || self.ready.is_some() || self.queue.is_empty() {
            return;
        }
        self.preparing = true;
        if !self.linger.is_zero() && self.queue.len() < self.batch_size {
            ctx.run_later(self.linger, |act, ctx| act.prepare_next_group(ctx));
        } else {
            self.prepare_next_group(ctx);
        }
    }

    fn prepare_next_group(&mut self, ctx: &mut Context<Self>) {
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
        let preparer = GroupPreparer {
            deps: self.deps.clone(),
            rooms: std::mem::take(&mut self.rooms),
        };
        let span = info_span!("prepare_group", batches = batches.len());
        let work = async move { preparer.run(batches).await }.instrument(span);
        ctx.spawn(
            actix::fut::wrap_future(work).map(|(rooms, prepared), act: &mut Self, ctx| {
                act.rooms = rooms;
                act.preparing = false;
                metrics::gauge!("roomcache_room_actors").set(act.rooms.len() as f64);
                if act.discard_preparing {
                    act.discard_preparing = false;
                    let mut requeue = std::mem::take(&mut act.held_back);
                    requeue.extend(invalidate(&act.deps, prepared));
                    act.requeue_front(requeue);
                } else if !prepared.is_empty() {
                    act.ready = Some(prepared);
                }
                act.commit_next_group(ctx);
                act.kick(ctx);
            }),
        );
    }

    fn commit_next_group(&mut self, ctx: &mut Context<Self>) {
        if self.committing {
            return;
        }
        let Some(group) = self.ready.take() else {
            return;
        };
        self.committing = true;
        let deps = self.deps.clone();
        let span = info_span!("group_commit", batches = group.len());
        let work = async move { commit_group(&deps, group).await }.instrument(span);
        ctx.spawn(
            actix::fut::wrap_future(work).map(|retry, act: &mut Self, ctx| {
                act.committing = false;
                if let Some(retry) = retry {
                    act.after_failed_commit(retry);
                }
                act.commit_next_group(ctx);
                act.kick(ctx);
            }),
        );
    }

    /// A commit failed: every group prepared on top of it is invalid. Its
    /// batches (and `retry`, the failed group's batches to retry alone) go
    /// back to the front of the queue, in stream order.
    fn after_failed_commit(&mut self, retry: Vec<Queued>) {
        if !retry.is_empty() {
            warn!(
                batches = retry.len(),
                "a group commit hit a conflict; retrying its batches one by one"
            );
            self.isolated = retry.len();
        }
        let mut requeue = retry;
        if let Some(ready) = self.ready.take() {
            requeue.extend(invalidate(&self.deps, ready));
        }
        if self.preparing {
            self.discard_preparing = true;
            self.held_back.extend(requeue);
        } else {
            self.requeue_front(requeue);
        }
    }

    fn requeue_front(&mut self, batches: Vec<Queued>) {
        for queued in batches.into_iter().rev() {
            self.queue.push_front(queued);
        }
    }
}

/// Withdraws prepared batches that will not be committed: their claims are
/// abandoned and their rooms drop what they prepared. Returns the batches,
/// to be prepared again.
fn invalidate(deps: &Deps, prepared: Vec<Prepared>) -> Vec<Queued> {
    let Some(first_seq) = prepared.iter().map(|b| b.seq).min() else {
        return Vec::new();
    };
    for batch in &prepared {
        deps.tracker.abandon(&batch.claim);
        for (address, _) in &batch.rooms {
            address.do_send(Abort { seq: first_seq });
        }
    }
    prepared.into_iter().map(|b| b.queued).collect()
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
    /// Each room's actor and what it prepared.
    rooms: Vec<(Addr<RoomActor>, PreparedRoom)>,
    /// Changes that belong to no room (account data), in stream order.
    user_changes: Vec<RowChange>,
    queued: Queued,
}

/// Prepares one group: each batch in turn, each in its rooms' actors.
struct GroupPreparer {
    deps: Deps,
    rooms: HashMap<RoomId, Addr<RoomActor>>,
}

impl GroupPreparer {
    /// Returns the room registry and the prepared batches (refused batches
    /// are answered here).
    async fn run(
        mut self,
        batches: Vec<(BatchSeq, Queued)>,
    ) -> (HashMap<RoomId, Addr<RoomActor>>, Vec<Prepared>) {
        let mut prepared: Vec<Prepared> = Vec::new();
        for (seq, queued) in batches {
            match self.prepare(seq, &queued.batch).await {
                Ok((claim, applied_rows, rooms, user_changes)) => {
                    prepared.push(Prepared {
                        seq,
                        position: claim.up_to.max(claim.after),
                        claim,
                        applied_rows,
                        rooms,
                        user_changes,
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
        (self.rooms, prepared)
    }

    /// Claims the batch's range of its writer's stream and applies the new
    /// rows in their rooms' actors; on any failure the claim is abandoned
    /// and every room drops what it prepared for it.
    async fn prepare(
        &mut self,
        seq: BatchSeq,
        batch: &FeedBatch,
    ) -> Result<
        (
            Claim,
            usize,
            Vec<(Addr<RoomActor>, PreparedRoom)>,
            Vec<RowChange>,
        ),
        BatchError,
    > {
        // Rows at or below the end of the writer's last claim (durable, or
        // claimed by an earlier batch of this group) are skipped.
        let claim = self
            .deps
            .tracker
            .claim(&batch.writer, batch.last_stream_id().unwrap_or(i64::MIN))
            .map_err(|PositionError::UnknownWriter(writer)| BatchError::UnknownWriter(writer))?;
        match self.prepare_claimed(seq, batch, &claim).await {
            Ok((applied_rows, rooms, user_changes)) => {
                Ok((claim, applied_rows, rooms, user_changes))
            }
            Err(error) => {
                self.deps.tracker.abandon(&claim);
                Err(error)
            }
        }
    }

    async fn prepare_claimed(
        &mut self,
        seq: BatchSeq,
        batch: &FeedBatch,
        claim: &Claim,
    ) -> Result<(usize, Vec<(Addr<RoomActor>, PreparedRoom)>, Vec<RowChange>), BatchError> {
        let mut by_room: BTreeMap<RoomId, Vec<FeedRow>> = BTreeMap::new();
        let mut applied_rows = 0;
        let mut user_changes = Vec::new();
        // The rooms get copies (cheap: event contents are shared); the batch
        // keeps its rows, to be prepared again if the group it joins is
        // withdrawn.
        for row in batch.rows.iter().filter(|r| claim.covers(r.stream_id())) {
            applied_rows += 1;
            if let Some(room) = row.room_id() {
                by_room.entry(room.clone()).or_default().push(row.clone());
            } else if let FeedRow::AccountData(data) = &row {
                user_changes.extend(data.change().map(RowChange::AccountData));
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
        for (result, address) in results.into_iter().zip(&addresses) {
            match result {
                Ok(Ok(room)) => rooms.push((address.clone(), room)),
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
        Ok((applied_rows, rooms, user_changes))
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
}

/// Commits a prepared group, then publishes it and answers its batches.
/// Returns `None` when it committed, and when it failed the batches to
/// retry one by one (a conflict in a group of several batches; every other
/// failure is answered here).
async fn commit_group(deps: &Deps, prepared: Vec<Prepared>) -> Option<Vec<Queued>> {
    let mut group = CommitGroup::default();
    for batch in &prepared {
        for (_, room) in &batch.rooms {
            group.add_changes(&room.changes);
            if let Some(memory) = &room.memory {
                group.set_memory(room.room_id.clone(), memory.clone());
            }
        }
        group.add_changes(&batch.user_changes);
        group.advance(&batch.claim.writer, batch.position);
    }
    let started = Instant::now();
    let result = deps.store.commit(&group).await;
    metrics::histogram!("roomcache_commit_seconds").record(started.elapsed().as_secs_f64());
    let last_seq = prepared.iter().map(|b| b.seq).max().unwrap_or(0);
    match result {
        Ok(()) => {
            // Committed: publish the rows, then advance the positions,
            // as one step for readers (see `publish`).
            let (index, tracker) = (&deps.index, &deps.tracker);
            tracker.gate().publish(|| {
                for batch in &prepared {
                    for (_, room) in &batch.rooms {
                        index.publish(&room.changes);
                    }
                    index.publish(&batch.user_changes);
                }
                for batch in &prepared {
                    tracker.finish(&batch.claim);
                }
            });
            for (address, _) in prepared.iter().flat_map(|b| &b.rooms) {
                address.do_send(Commit { seq: last_seq });
            }
            for batch in prepared {
                metrics::counter!("roomcache_feed_batches_total", "outcome" => "committed")
                    .increment(1);
                metrics::counter!("roomcache_feed_rows_total").increment(batch.applied_rows as u64);
                metrics::histogram!("roomcache_batch_seconds")
                    .record(batch.queued.received.elapsed().as_secs_f64());
                let _ = batch.queued.reply.send(Ok(BatchAck {
                    position: batch.position,
                    applied_rows: batch.applied_rows,
                }));
            }
            metrics::gauge!("roomcache_joined_rooms").set(deps.index.joined_room_count() as f64);
            metrics::gauge!("roomcache_snapshots").set(deps.index.snapshot_count() as f64);
            None
        }
        Err(error) => {
            let conflict = error.is_conflict();
            warn!(%error, batches = prepared.len(), "group commit failed; nothing of it applied");
            let several = prepared.len() > 1;
            let queued = invalidate(deps, prepared);
            if conflict && several {
                return Some(queued);
            }
            for queued in queued {
                metrics::counter!("roomcache_feed_batches_total", "outcome" => "failed")
                    .increment(1);
                let message = error.to_string();
                let _ = queued.reply.send(Err(if conflict {
                    BatchError::Conflict(message)
                } else {
                    BatchError::Store(message)
                }));
            }
            Some(Vec::new())
        }
    }
}
