//! The feed pipeline: batches queue up, form groups, are prepared in room
//! actors and committed, one group committing while the next is prepared.
//!
//! Owns: the queue of batches waiting for a commit and the pipeline's state
//! (at most one group preparing, one prepared group waiting, one
//! committing), and what happens when a commit fails: every group prepared
//! on top of it is withdrawn (claims abandoned, room states dropped) and its
//! batches go back to the front of the queue, in stream order; a group of
//! several batches that failed on its contents (a conflict, a value the
//! database refuses) is retried one batch per group, so only the batch at
//! fault is refused. May not touch: SQL, the read index
//! and positions except through [`WritePath`], the rules.

use std::collections::VecDeque;
use std::time::Instant;

use actix::prelude::*;
use tracing::{info_span, warn, Instrument};

use super::commit::CommitUnit;
use super::prepare::{GroupPreparer, Prepared};
use super::queued::Queued;
use super::room_actor::{Abort, BatchSeq, Commit};
use super::{BatchAck, BatchError, Shared, Supervisor};

/// The pipeline's state; see the module documentation.
#[derive(Debug, Default)]
pub(super) struct Pipeline {
    pub(super) queue: VecDeque<Queued>,
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
    /// Batches to commit one per group, after a group failed on a conflict.
    isolated: usize,
    next_seq: BatchSeq,
}

impl Pipeline {
    /// True when no room actor holds a pending state.
    pub(super) fn is_idle(&self) -> bool {
        !self.preparing && !self.committing && self.ready.is_none()
    }

    fn requeue_front(&mut self, batches: Vec<Queued>) {
        for queued in batches.into_iter().rev() {
            self.queue.push_front(queued);
        }
    }

    /// Takes the next group's batches off the queue, numbered.
    fn next_group(&mut self, batch_size: usize) -> Vec<(BatchSeq, Queued)> {
        let limit = if self.isolated > 0 {
            self.isolated -= 1;
            1
        } else {
            batch_size
        };
        let take = self.queue.len().min(limit);
        let mut group = Vec::with_capacity(take);
        for queued in self.queue.drain(..take) {
            self.next_seq += 1;
            group.push((self.next_seq, queued));
        }
        group
    }
}

impl Supervisor {
    /// Starts preparing the next group when the pipeline has room for it:
    /// one group commits while the next one is prepared on top of it.
    pub(super) fn kick(&mut self, ctx: &mut Context<Self>) {
        let pipeline = &mut self.pipeline;
        if pipeline.preparing || pipeline.ready.is_some() || pipeline.queue.is_empty() {
            return;
        }
        pipeline.preparing = true;
        let settings = &self.shared.settings;
        if !settings.linger.is_zero() && pipeline.queue.len() < settings.batch_size {
            ctx.run_later(settings.linger, |supervisor, ctx| {
                supervisor.prepare_next_group(ctx)
            });
        } else {
            self.prepare_next_group(ctx);
        }
    }

    fn prepare_next_group(&mut self, ctx: &mut Context<Self>) {
        let batches = self.pipeline.next_group(self.shared.settings.batch_size);
        let preparer = GroupPreparer::new(&self.shared);
        let span = info_span!("prepare_group", batches = batches.len());
        let work = async move { preparer.run(batches).await }.instrument(span);
        ctx.spawn(
            actix::fut::wrap_future(work).map(|prepared, supervisor: &mut Self, ctx| {
                let pipeline = &mut supervisor.pipeline;
                pipeline.preparing = false;
                if pipeline.discard_preparing {
                    pipeline.discard_preparing = false;
                    let mut requeue = std::mem::take(&mut pipeline.held_back);
                    requeue.extend(withdraw(&supervisor.shared, prepared));
                    pipeline.requeue_front(requeue);
                } else if !prepared.is_empty() {
                    pipeline.ready = Some(prepared);
                }
                supervisor.commit_next_group(ctx);
                supervisor.reap_rowless_when_idle();
                supervisor.kick(ctx);
            }),
        );
    }

    fn commit_next_group(&mut self, ctx: &mut Context<Self>) {
        if self.pipeline.committing {
            return;
        }
        let Some(group) = self.pipeline.ready.take() else {
            return;
        };
        self.pipeline.committing = true;
        let shared = self.shared.clone();
        let span = info_span!("group_commit", batches = group.len());
        let work = async move { commit_group(&shared, group).await }.instrument(span);
        ctx.spawn(
            actix::fut::wrap_future(work).map(|retry, supervisor: &mut Self, ctx| {
                supervisor.pipeline.committing = false;
                if let Some(retry) = retry {
                    supervisor.after_failed_commit(retry);
                }
                supervisor.commit_next_group(ctx);
                supervisor.reap_rowless_when_idle();
                supervisor.kick(ctx);
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
                "a group commit failed on its contents; retrying its batches one by one"
            );
            self.pipeline.isolated = retry.len();
        }
        let mut requeue = retry;
        if let Some(ready) = self.pipeline.ready.take() {
            requeue.extend(withdraw(&self.shared, ready));
        }
        if self.pipeline.preparing {
            self.pipeline.discard_preparing = true;
            self.pipeline.held_back.extend(requeue);
        } else {
            self.pipeline.requeue_front(requeue);
        }
    }
}

/// Withdraws prepared batches that will not be committed: their claims are
/// abandoned and their rooms drop what they prepared. Returns the batches,
/// to be prepared again.
fn withdraw(shared: &Shared, prepared: Vec<Prepared>) -> Vec<Queued> {
    let Some(first_seq) = prepared.iter().map(|b| b.seq).min() else {
        return Vec::new();
    };
    for batch in &prepared {
        if let Some(claim) = &batch.claim {
            shared.write_path.tracker().abandon(claim);
        }
        for (address, _) in &batch.rooms {
            address.do_send(Abort { seq: first_seq });
        }
    }
    prepared.into_iter().map(|b| b.queued).collect()
}

/// The commit of a whole group through the write path.
fn unit_of(prepared: &[Prepared]) -> CommitUnit<'_> {
    let mut unit = CommitUnit::default();
    for batch in prepared {
        for (_, room) in &batch.rooms {
            unit.rows(&room.changes);
            if let Some(memory) = &room.memory {
                unit.memory(room.room_id.clone(), memory.clone());
            }
        }
        unit.rows(&batch.user_changes);
        if let Some(claim) = &batch.claim {
            unit.finish(claim, batch.position);
        }
        for (instance, position) in &batch.caches_positions {
            unit.caches_position(instance, *position);
        }
    }
    unit
}

/// Commits a prepared group, then publishes it and answers its batches.
/// Returns `None` when it committed, and when it failed the batches to
/// retry one by one (a failure caused by the contents — a conflict, a value
/// the database refuses — in a group of several batches, so only the batch
/// at fault is refused; every other failure is answered here).
async fn commit_group(shared: &Shared, prepared: Vec<Prepared>) -> Option<Vec<Queued>> {
    let started = Instant::now();
    let result = shared.write_path.commit(unit_of(&prepared)).await;
    metrics::histogram!("roomcache_commit_seconds").record(started.elapsed().as_secs_f64());
    let last_seq = prepared.iter().map(|b| b.seq).max().unwrap_or(0);
    match result {
        Ok(token) => {
            for (address, room) in prepared.iter().flat_map(|b| &b.rooms) {
                address.do_send(Commit { seq: last_seq });
                shared.rooms.set_holds_rows(&room.room_id, room.holds_rows);
            }
            for batch in prepared {
                metrics::counter!("roomcache_feed_rows_total").increment(batch.applied_rows as u64);
                let ack = BatchAck {
                    position: batch.position,
                    applied_rows: batch.applied_rows,
                    token: token.clone(),
                };
                batch.queued.answer(Ok(ack));
            }
            None
        }
        Err(error) => {
            let conflict = error.is_conflict();
            let content = error.is_caused_by_content();
            warn!(error = %crate::error_chain(&error), batches = prepared.len(), "group commit failed; nothing of it applied");
            let several = prepared.len() > 1;
            let queued = withdraw(shared, prepared);
            if (conflict || content) && several {
                return Some(queued);
            }
            let error = std::sync::Arc::new(error);
            for queued in queued {
                let cause = crate::store::StoreError::Shared(error.clone());
                queued.answer(Err(if conflict {
                    BatchError::Conflict(cause)
                } else if content {
                    BatchError::Content(cause)
                } else {
                    BatchError::Store(cause)
                }));
            }
            Some(Vec::new())
        }
    }
}
