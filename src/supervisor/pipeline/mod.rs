//! The feed pipeline as a state machine: batches queue up, form groups, are
//! prepared in room actors and committed, one group committing while the
//! next one is prepared on top of it.
//!
//! Owns: the queue of batches waiting for a commit, the pipeline's
//! [`Stage`] (at most one group preparing, one prepared group waiting, one
//! committing) and every decision the pipeline makes: when the next group
//! is prepared and how many batches it takes, when a prepared group
//! commits, and what a failed commit means: every group prepared on top of
//! it is withdrawn (claims abandoned, room states dropped) and its batches
//! go back to the front of the queue, in stream order; a group of several
//! batches that failed on its contents (a conflict, a value the database
//! refuses) is retried one batch per group, so only the batch at fault is
//! refused.
//!
//! Each event (a batch arrived, a group is prepared, a commit finished) is
//! a transition: a method that changes the state and returns the
//! [`Action`]s to carry out, in order. It does no I/O and sends nothing;
//! the supervisor carries the actions out (`supervisor/run_pipeline.rs`),
//! and the unit tests (`tests.rs`) drive the transitions without Postgres
//! or actors. May not touch: actors, the write path, SQL, the rules,
//! clocks.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use roomcache_core::{Claim, StreamToken};

use super::prepare::Prepared;
use super::queued::Queued;
use super::room_actor::{BatchSeq, PreparedRoom, RoomActor};
use super::{BatchAck, BatchError};
use crate::store::StoreError;

/// Where the pipeline is. A group being prepared includes the linger
/// before it is taken off the queue.
#[derive(Debug, Default)]
enum Stage {
    /// Nothing prepared, nothing committing: no room actor holds a
    /// pending state.
    #[default]
    Idle,
    /// A group is being prepared; nothing commits.
    Preparing,
    /// A group commits; the queue was empty when it started.
    Committing,
    /// A group commits while the next one is prepared on top of it.
    CommittingWhilePreparing,
    /// A group commits; the next one is prepared and waits for it.
    CommittingWithNextReady(Vec<Prepared>),
    /// A commit failed while a group was prepared on top of it: that group
    /// is withdrawn once ready, after `held_back` (the batches that came
    /// before it) go back to the queue.
    PreparingWithdrawn { held_back: Vec<Queued> },
}

/// What the supervisor does after a transition, in the order given.
#[derive(Debug)]
pub(super) enum Action {
    /// Take the next group off the queue ([`Pipeline::next_group`]) and
    /// prepare it, after `after` (a linger for more batches) or at once;
    /// report with [`Pipeline::group_prepared`].
    PrepareNextGroup { after: Option<Duration> },
    /// Commit a prepared group through the write path; report with
    /// [`Pipeline::commit_finished`].
    Commit(Vec<Prepared>),
    /// A group committed: its rooms' pending states up to `last_seq` become
    /// their committed states.
    CommitRooms {
        last_seq: BatchSeq,
        rooms: Vec<(Addr<RoomActor>, PreparedRoom)>,
    },
    /// Undo the preparation of batches that will not be committed.
    Withdraw(Withdrawal),
    /// Answer batches.
    Answer(Vec<(Queued, Result<BatchAck, BatchError>)>),
    /// No room actor holds a pending state: actors of rooms without rows
    /// may be stopped.
    ReapRowless,
}

/// What undoes the preparation of withdrawn batches: their claims are
/// abandoned, and their rooms drop every state prepared from `first_seq`
/// on.
#[derive(Debug)]
pub(super) struct Withdrawal {
    pub(super) first_seq: BatchSeq,
    pub(super) claims: Vec<Claim>,
    pub(super) rooms: Vec<Addr<RoomActor>>,
}

/// How a group's commit ended, for its batches.
#[derive(Debug)]
pub(super) enum CommitOutcome {
    /// Durable and visible: every batch is answered with its position and
    /// `token`, the token right after the group's publication.
    Committed { token: StreamToken },
    /// Failed on its contents in a group of several batches: each batch is
    /// retried in a group of its own, so only the batch at fault is refused.
    RetryAlone,
    /// Failed: every batch is answered with the failure.
    Failed {
        failure: CommitFailure,
        error: Arc<StoreError>,
    },
}

/// Why a commit failed, as its writers are told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CommitFailure {
    /// A uniqueness conflict caused by the data (409).
    Conflict,
    /// The database refused a value (400).
    Content,
    /// The database is down or did not answer in time (503).
    Unavailable,
}

impl CommitOutcome {
    /// What the write path's answer means for a group of `batches` batches.
    pub(super) fn of(result: Result<StreamToken, StoreError>, batches: usize) -> Self {
        let error = match result {
            Ok(token) => return CommitOutcome::Committed { token },
            Err(error) => error,
        };
        let failure = if error.is_conflict() {
            CommitFailure::Conflict
        } else if error.is_caused_by_content() {
            CommitFailure::Content
        } else {
            CommitFailure::Unavailable
        };
        if failure != CommitFailure::Unavailable && batches > 1 {
            return CommitOutcome::RetryAlone;
        }
        CommitOutcome::Failed {
            failure,
            error: Arc::new(error),
        }
    }
}

impl CommitFailure {
    fn batch_error(self, error: &Arc<StoreError>) -> BatchError {
        let cause = StoreError::Shared(error.clone());
        match self {
            CommitFailure::Conflict => BatchError::Conflict(cause),
            CommitFailure::Content => BatchError::Content(cause),
            CommitFailure::Unavailable => BatchError::Store(cause),
        }
    }
}

/// The pipeline's state; see the module documentation.
#[derive(Debug)]
pub(super) struct Pipeline {
    queue: VecDeque<Queued>,
    stage: Stage,
    /// Batches still to commit one per group, after a group failed on its
    /// contents.
    isolated: usize,
    last_seq: BatchSeq,
    /// Batches per group.
    batch_size: usize,
    /// How long to wait for more batches before preparing a group that is
    /// not full.
    linger: Duration,
}

impl Pipeline {
    pub(super) fn new(batch_size: usize, linger: Duration) -> Self {
        Pipeline {
            queue: VecDeque::new(),
            stage: Stage::Idle,
            isolated: 0,
            last_seq: 0,
            batch_size,
            linger,
        }
    }

    /// True when no room actor holds a pending state.
    pub(super) fn is_idle(&self) -> bool {
        matches!(self.stage, Stage::Idle)
    }

    /// A batch arrived.
    pub(super) fn submit(&mut self, queued: Queued) -> Vec<Action> {
        self.queue.push_back(queued);
        let mut actions = Vec::new();
        self.start_next_group(&mut actions);
        actions
    }

    /// Takes the next group's batches off the queue, numbered: up to
    /// `batch_size`, or one while batches are retried alone.
    pub(super) fn next_group(&mut self) -> Vec<(BatchSeq, Queued)> {
        let limit = if self.isolated > 0 {
            self.isolated -= 1;
            1
        } else {
            self.batch_size
        };
        let take = self.queue.len().min(limit);
        let mut group = Vec::with_capacity(take);
        for queued in self.queue.drain(..take) {
            self.last_seq += 1;
            group.push((self.last_seq, queued));
        }
        group
    }

    /// The group being prepared is ready: `prepared` holds its batches that
    /// were not refused (those are answered by the preparation).
    pub(super) fn group_prepared(&mut self, prepared: Vec<Prepared>) -> Vec<Action> {
        let mut actions = Vec::new();
        match std::mem::take(&mut self.stage) {
            Stage::Preparing if prepared.is_empty() => {}
            Stage::Preparing => {
                self.stage = Stage::Committing;
                actions.push(Action::Commit(prepared));
            }
            Stage::CommittingWhilePreparing if prepared.is_empty() => {
                self.stage = Stage::Committing;
            }
            Stage::CommittingWhilePreparing => {
                self.stage = Stage::CommittingWithNextReady(prepared);
            }
            Stage::PreparingWithdrawn { mut held_back } => {
                held_back.extend(withdraw(prepared, &mut actions));
                self.requeue_front(held_back);
            }
            stage @ (Stage::Idle | Stage::Committing | Stage::CommittingWithNextReady(_)) => {
                // Only one group is prepared at a time, so this cannot
                // happen; if it did, its batches go back, to lose nothing.
                tracing::error!(
                    ?stage,
                    "a prepared group arrived while none was being prepared"
                );
                self.stage = stage;
                let batches = withdraw(prepared, &mut actions);
                self.requeue_front(batches);
            }
        }
        self.after_transition(&mut actions);
        actions
    }

    /// The commit in flight finished (its group is `group`).
    pub(super) fn commit_finished(
        &mut self,
        group: Vec<Prepared>,
        outcome: CommitOutcome,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        let retry = match outcome {
            CommitOutcome::Committed { token } => {
                Self::committed(group, token, &mut actions);
                None
            }
            CommitOutcome::RetryAlone => {
                let batches = withdraw(group, &mut actions);
                self.isolated = batches.len();
                Some(batches)
            }
            CommitOutcome::Failed { failure, error } => {
                let batches = withdraw(group, &mut actions);
                let answers = batches
                    .into_iter()
                    .map(|queued| (queued, Err(failure.batch_error(&error))))
                    .collect();
                actions.push(Action::Answer(answers));
                Some(Vec::new())
            }
        };
        match (std::mem::take(&mut self.stage), retry) {
            (Stage::Committing, None) => {}
            (Stage::CommittingWhilePreparing, None) => self.stage = Stage::Preparing,
            (Stage::CommittingWithNextReady(next), None) => {
                self.stage = Stage::Committing;
                actions.push(Action::Commit(next));
            }
            // Every group prepared on top of the failed one is withdrawn.
            (Stage::Committing, Some(retry)) => self.requeue_front(retry),
            (Stage::CommittingWhilePreparing, Some(retry)) => {
                self.stage = Stage::PreparingWithdrawn { held_back: retry };
            }
            (Stage::CommittingWithNextReady(next), Some(mut retry)) => {
                retry.extend(withdraw(next, &mut actions));
                self.requeue_front(retry);
            }
            (
                stage @ (Stage::Idle | Stage::Preparing | Stage::PreparingWithdrawn { .. }),
                retry,
            ) => {
                // Only one group commits at a time, so this cannot happen;
                // if it did, the batches to retry go back, to lose nothing.
                tracing::error!(?stage, "a commit finished while none was in flight");
                self.stage = stage;
                self.requeue_front(retry.unwrap_or_default());
            }
        }
        self.after_transition(&mut actions);
        actions
    }

    /// A committed group: its rooms commit their pending states, then its
    /// batches are answered.
    fn committed(group: Vec<Prepared>, token: StreamToken, actions: &mut Vec<Action>) {
        let last_seq = group.iter().map(|b| b.seq).max().unwrap_or(0);
        let mut rooms = Vec::new();
        let mut answers = Vec::with_capacity(group.len());
        for batch in group {
            rooms.extend(batch.rooms);
            let ack = BatchAck {
                position: batch.position,
                applied_rows: batch.applied_rows,
                token: token.clone(),
            };
            answers.push((batch.queued, Ok(ack)));
        }
        actions.push(Action::CommitRooms { last_seq, rooms });
        actions.push(Action::Answer(answers));
    }

    /// Puts batches back at the front of the queue, in their order.
    fn requeue_front(&mut self, batches: Vec<Queued>) {
        for queued in batches.into_iter().rev() {
            self.queue.push_front(queued);
        }
    }

    /// What every transition ends with: actors of rooms without rows may
    /// stop while nothing is pending, and the next group starts when there
    /// is room for it.
    fn after_transition(&mut self, actions: &mut Vec<Action>) {
        if self.is_idle() {
            actions.push(Action::ReapRowless);
        }
        self.start_next_group(actions);
    }

    /// Starts preparing the next group when the pipeline has room for it
    /// (one group commits while the next one is prepared on top of it):
    /// after the linger while the queue holds less than a full group.
    fn start_next_group(&mut self, actions: &mut Vec<Action>) {
        if self.queue.is_empty() {
            return;
        }
        self.stage = match self.stage {
            Stage::Idle => Stage::Preparing,
            Stage::Committing => Stage::CommittingWhilePreparing,
            _ => return,
        };
        let linger = !self.linger.is_zero() && self.queue.len() < self.batch_size;
        actions.push(Action::PrepareNextGroup {
            after: linger.then_some(self.linger),
        });
    }
}

/// Withdraws prepared batches that will not be committed (the action
/// undoing their preparation is added) and returns them, to be
/// prepared again.
fn withdraw(prepared: Vec<Prepared>, actions: &mut Vec<Action>) -> Vec<Queued> {
    let Some(first_seq) = prepared.iter().map(|b| b.seq).min() else {
        return Vec::new();
    };
    let mut withdrawal = Withdrawal {
        first_seq,
        claims: Vec::new(),
        rooms: Vec::new(),
    };
    let mut batches = Vec::with_capacity(prepared.len());
    for batch in prepared {
        withdrawal.claims.extend(batch.claim);
        withdrawal
            .rooms
            .extend(batch.rooms.into_iter().map(|(address, _)| address));
        batches.push(batch.queued);
    }
    actions.push(Action::Withdraw(withdrawal));
    batches
}

#[cfg(test)]
mod tests;
