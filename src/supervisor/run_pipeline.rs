//! The supervisor's side of the feed pipeline: it carries out the actions
//! the pipeline's transitions return ([`Action`]) and reports back what
//! happened (a group prepared, a commit finished).
//!
//! Owns: spawning the preparation and the commit of a group in the actor's
//! context, the commit through the one write path, and the side effects of
//! the other actions (room actors told to commit or drop their pending
//! states, claims abandoned, batches answered). May not touch: the
//! pipeline's decisions (`pipeline/`), SQL, the rules.

use std::time::Instant;

use actix::prelude::*;
use tracing::{info_span, warn, Instrument};

use super::commit::CommitUnit;
use super::pipeline::{Action, CommitOutcome, Withdrawal};
use super::prepare::{GroupPreparer, Prepared};
use super::room_actor::{Abort, Commit, MemoryChange};
use super::{Shared, Supervisor, LARGE_REAP};

impl Supervisor {
    /// Carries out a transition's actions, in their order.
    pub(super) fn carry_out(&mut self, actions: Vec<Action>, ctx: &mut Context<Self>) {
        for action in actions {
            match action {
                Action::PrepareNextGroup {
                    after: Some(linger),
                } => {
                    ctx.run_later(linger, |supervisor, ctx| supervisor.prepare_next_group(ctx));
                }
                Action::PrepareNextGroup { after: None } => self.prepare_next_group(ctx),
                Action::Commit(group) => self.commit_group(group, ctx),
                Action::CommitRooms { last_seq, rooms } => {
                    for (address, room) in rooms {
                        address.do_send(Commit { seq: last_seq });
                        self.shared
                            .rooms
                            .set_holds_rows(&room.room_id, room.holds_rows);
                    }
                }
                Action::Withdraw(withdrawal) => withdraw(&self.shared, withdrawal),
                Action::Answer(answers) => {
                    for (queued, answer) in answers {
                        queued.answer(answer);
                    }
                }
                Action::ReapRowless => {
                    if self.shared.rooms.reap_rowless() >= LARGE_REAP {
                        crate::memory::ask_for_release();
                    }
                }
            }
        }
    }

    fn prepare_next_group(&mut self, ctx: &mut Context<Self>) {
        let batches = self.pipeline.next_group();
        let preparer = GroupPreparer::new(&self.shared);
        let span = info_span!("prepare_group", batches = batches.len());
        let work = async move { preparer.run(batches).await }.instrument(span);
        ctx.spawn(
            actix::fut::wrap_future(work).map(|prepared, supervisor: &mut Self, ctx| {
                let actions = supervisor.pipeline.group_prepared(prepared);
                supervisor.carry_out(actions, ctx);
            }),
        );
    }

    /// Commits a prepared group through the write path (which publishes
    /// it), then reports how it ended.
    fn commit_group(&mut self, group: Vec<Prepared>, ctx: &mut Context<Self>) {
        let shared = self.shared.clone();
        let span = info_span!("group_commit", batches = group.len());
        let work = async move {
            let started = Instant::now();
            let result = shared.write_path.commit(unit_of(&group)).await;
            metrics::histogram!("roomcache_commit_seconds")
                .record(started.elapsed().as_secs_f64());
            if let Err(error) = &result {
                warn!(error = %crate::error_chain(error), batches = group.len(), "group commit failed; nothing of it applied");
            }
            let outcome = CommitOutcome::of(result, group.len());
            if let CommitOutcome::RetryAlone = outcome {
                warn!(
                    batches = group.len(),
                    "a group commit failed on its contents; retrying its batches one by one"
                );
            }
            (group, outcome)
        }
        .instrument(span);
        ctx.spawn(actix::fut::wrap_future(work).map(
            |(group, outcome), supervisor: &mut Self, ctx| {
                let actions = supervisor.pipeline.commit_finished(group, outcome);
                supervisor.carry_out(actions, ctx);
            },
        ));
    }
}

/// Abandons withdrawn batches' claims, and has their rooms drop what they
/// prepared.
fn withdraw(shared: &Shared, withdrawal: Withdrawal) {
    for claim in &withdrawal.claims {
        shared.write_path.tracker().abandon(claim);
    }
    for address in &withdrawal.rooms {
        address.do_send(Abort {
            seq: withdrawal.first_seq,
        });
    }
}

/// The commit of a whole group through the write path.
fn unit_of(prepared: &[Prepared]) -> CommitUnit<'_> {
    let mut unit = CommitUnit::default();
    for batch in prepared {
        for (_, room) in &batch.rooms {
            unit.rows(&room.changes);
            match &room.memory {
                MemoryChange::Unchanged => {}
                MemoryChange::Write(memory) => {
                    unit.memory(room.room_id.clone(), Some(memory.clone()))
                }
                MemoryChange::Delete => unit.memory(room.room_id.clone(), None),
            }
        }
        unit.rows(&batch.user_changes);
        if let Some(claim) = &batch.claim {
            unit.finish(claim, batch.position);
        }
        for (instance, position) in &batch.caches_positions {
            unit.caches_position(instance, *position);
        }
        for (instance, position) in &batch.backfill_positions {
            unit.backfill_position(instance, *position);
        }
    }
    unit
}
