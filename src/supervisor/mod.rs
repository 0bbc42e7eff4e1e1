//! The supervisor: the one writer of roomcache's state.
//!
//! Owns (as the design brief's card says): the per-writer positions and the
//! minimum token (through the [`PositionTracker`] it alone advances, in
//! [`commit::WritePath`]), the feed pipeline (queue → claim a writer's
//! range → prepare in room actors → commit in Postgres → publish and
//! advance → answer: [`pipeline`] decides, as a state machine,
//! [`run_pipeline`] carries its actions out, [`prepare`] prepares a group),
//! the room actors ([`room_actor`]) and their registry ([`rooms`], with the
//! idle reaper), start-up (loading, and in source mode the invalidation of
//! rooms that changed while roomcache was down: [`startup`]), the
//! recalculation queue and its drain ([`recalc`]) and the repair of
//! positions found ahead of the source ([`repair`]); the messages source
//! mode sends it are [`source_messages`]'s, their handlers this file's.
//! May not touch: SQL (the
//! store's), the rules (the room actors'), HTTP (the API's), Synapse's
//! tables (source mode implements [`recalc::Upstream`] for it).

pub(crate) mod commit;
mod pipeline;
mod prepare;
mod queued;
pub(crate) mod recalc;
pub(crate) mod repair;
mod room_actor;
pub(crate) mod rooms;
mod run_pipeline;
mod source_messages;
pub(crate) mod startup;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use roomcache_core::{PositionError, StreamToken};
use tracing::{error, info_span, Instrument};

use self::commit::WritePath;
use self::pipeline::Pipeline;
use self::queued::Queued;
use self::recalc::{RecalculationError, RecalculationQueue};
use self::rooms::RoomRegistry;
use crate::feed::{FeedError, ValidBatch};
use crate::model::RoomId;
use crate::rules::RuleError;
use crate::store::StoreError;

pub(crate) use source_messages::{
    ApplyAccountData, BackfillBatch, InvalidationBatch, Recalculate, RepairBackfill,
    RepairPositions, SubmitBackfill, SubmitBatch, SubmitInvalidations,
};

/// Stopped actors above which their freed memory is handed back at once.
const LARGE_REAP: usize = 1000;

/// Why a batch was not applied. Nothing of it is visible anywhere.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BatchError {
    /// Only for [`SubmitBatch`] (the API parses its batches itself).
    #[error(transparent)]
    Invalid(#[from] FeedError),
    #[error(transparent)]
    UnknownWriter(#[from] PositionError),
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error("the batch conflicts with stored rows (a stream ordering used twice?)")]
    Conflict(#[source] StoreError),
    #[error("the database refused the batch's contents")]
    Content(#[source] StoreError),
    #[error("the database is unavailable")]
    Store(#[source] StoreError),
    #[error("a room actor stopped unexpectedly")]
    Mailbox(#[from] MailboxError),
    #[error("roomcache is shutting down")]
    ShuttingDown,
}

/// The answer to a batch: the writer's durable position once it committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BatchAck {
    pub(crate) position: i64,
    /// Rows applied (rows at or below the durable position are skipped).
    pub(crate) applied_rows: usize,
    /// The token right after the publication that made the batch visible
    /// (taken inside it: a later batch's publication cannot move it).
    pub(crate) token: StreamToken,
}

/// A writer's batch, parsed (the API's).
#[derive(Debug, Message)]
#[rtype(result = "Result<BatchAck, BatchError>")]
pub(crate) struct SubmitValidBatch(pub(crate) ValidBatch);

/// The supervisor's settings.
#[derive(Debug, Clone)]
pub(crate) struct SupervisorSettings {
    pub(crate) server_name: Arc<str>,
    /// The current state each room holds (the rooms' data).
    pub(crate) held_state: Arc<crate::rules::HeldStateTypes>,
    /// Batches per group commit.
    pub(crate) batch_size: usize,
    /// How long to wait for more batches before preparing a group.
    pub(crate) linger: Duration,
    /// Room actors unused for this long are stopped.
    pub(crate) idle_actor_timeout: Duration,
}

/// What every part of the supervisor shares.
#[derive(Debug, Clone)]
struct Shared {
    write_path: WritePath,
    rooms: Arc<RoomRegistry>,
    queue: Arc<RecalculationQueue>,
    settings: SupervisorSettings,
}

/// See the module documentation.
pub(crate) struct Supervisor {
    shared: Shared,
    pipeline: Pipeline,
}

impl Supervisor {
    pub(crate) fn new(
        write_path: WritePath,
        queue: Arc<RecalculationQueue>,
        settings: SupervisorSettings,
    ) -> Self {
        Supervisor {
            pipeline: Pipeline::new(settings.batch_size, settings.linger),
            shared: Shared {
                write_path,
                rooms: RoomRegistry::new(),
                queue,
                settings,
            },
        }
    }

    /// Stops idle room actors, while no group holds pending states. After
    /// a large reap, once the stopped actors are dropped, the freed heap is
    /// handed back to the operating system.
    fn reap_idle_actors(&mut self, ctx: &mut Context<Self>) {
        if !self.pipeline.is_idle() {
            return;
        }
        let stopped = self
            .shared
            .rooms
            .reap_idle(self.shared.settings.idle_actor_timeout);
        if stopped >= LARGE_REAP {
            ctx.run_later(Duration::from_secs(1), |_, _| {
                crate::memory::release_freed_memory()
            });
        }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let timeout = self.shared.settings.idle_actor_timeout;
        let every = (timeout / 4).max(Duration::from_millis(50));
        ctx.run_interval(every, |supervisor, ctx| supervisor.reap_idle_actors(ctx));
    }
}

impl Handler<SubmitBatch> for Supervisor {
    type Result = ResponseFuture<Result<BatchAck, BatchError>>;

    fn handle(&mut self, message: SubmitBatch, ctx: &mut Context<Self>) -> Self::Result {
        match ValidBatch::parse(message.0) {
            Ok(batch) => self.handle(SubmitValidBatch(batch), ctx),
            Err(invalid) => Box::pin(std::future::ready(Err(BatchError::Invalid(invalid)))),
        }
    }
}

impl Handler<SubmitValidBatch> for Supervisor {
    type Result = ResponseFuture<Result<BatchAck, BatchError>>;

    fn handle(&mut self, message: SubmitValidBatch, ctx: &mut Context<Self>) -> Self::Result {
        let (queued, answer) = Queued::new(message.0);
        let actions = self.pipeline.submit(queued);
        self.carry_out(actions, ctx);
        Box::pin(async move { answer.await.unwrap_or(Err(BatchError::ShuttingDown)) })
    }
}

impl Handler<SubmitInvalidations> for Supervisor {
    type Result = ResponseFuture<Result<BatchAck, BatchError>>;

    fn handle(&mut self, message: SubmitInvalidations, ctx: &mut Context<Self>) -> Self::Result {
        let (queued, answer) = Queued::invalidations(message.0);
        let actions = self.pipeline.submit(queued);
        self.carry_out(actions, ctx);
        Box::pin(async move { answer.await.unwrap_or(Err(BatchError::ShuttingDown)) })
    }
}

impl Handler<SubmitBackfill> for Supervisor {
    type Result = ResponseFuture<Result<BatchAck, BatchError>>;

    fn handle(&mut self, message: SubmitBackfill, ctx: &mut Context<Self>) -> Self::Result {
        let (queued, answer) = Queued::backfill(message.0);
        let actions = self.pipeline.submit(queued);
        self.carry_out(actions, ctx);
        Box::pin(async move { answer.await.unwrap_or(Err(BatchError::ShuttingDown)) })
    }
}

impl Handler<Recalculate> for Supervisor {
    type Result = ResponseFuture<Result<(), RecalculationError>>;

    fn handle(&mut self, message: Recalculate, _: &mut Context<Self>) -> Self::Result {
        let shared = self.shared.clone();
        let span = info_span!("recalculation_drain", rooms = shared.queue.len());
        Box::pin(
            async move {
                let drained = recalc::drain(&shared, &message).await;
                if let Err(failure) = &drained {
                    error!(error = %crate::error_chain(failure), "recomputing the queued rooms failed; restart to retry (the queue is kept)");
                }
                drained
            }
            .instrument(span),
        )
    }
}

impl Handler<RepairPositions> for Supervisor {
    type Result = ResponseFuture<Result<Option<repair::Repair>, RecalculationError>>;

    fn handle(&mut self, message: RepairPositions, _: &mut Context<Self>) -> Self::Result {
        if !self.pipeline.is_idle() {
            return Box::pin(async { Err(RecalculationError::Busy) });
        }
        let shared = self.shared.clone();
        Box::pin(
            async move { repair::while_serving(&shared, &message.0).await }
                .instrument(info_span!("repair_positions")),
        )
    }
}

impl Handler<RepairBackfill> for Supervisor {
    type Result = ResponseFuture<Result<Vec<RoomId>, RecalculationError>>;

    fn handle(&mut self, message: RepairBackfill, _: &mut Context<Self>) -> Self::Result {
        if !self.pipeline.is_idle() {
            return Box::pin(async { Err(RecalculationError::Busy) });
        }
        let shared = self.shared.clone();
        Box::pin(
            async move {
                repair::backfill_while_serving(&shared, &message.recalculate, &message.lowered)
                    .await
            }
            .instrument(info_span!("repair_backfill")),
        )
    }
}

impl Handler<ApplyAccountData> for Supervisor {
    type Result = ResponseFuture<Result<(), StoreError>>;

    fn handle(&mut self, message: ApplyAccountData, _: &mut Context<Self>) -> Self::Result {
        let write_path = self.shared.write_path.clone();
        let span = info_span!("account_data", rows = message.changes.len());
        Box::pin(
            async move {
                let mut unit = commit::CommitUnit::default();
                unit.rows(&message.changes);
                unit.account_data_position(message.position);
                write_path.commit(unit).await.map(|_| ())
            }
            .instrument(span),
        )
    }
}

/// The room actors' registry size (for benchmarks of idle actors).
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub(crate) struct LiveRoomActors;

impl Handler<LiveRoomActors> for Supervisor {
    type Result = usize;

    fn handle(&mut self, _: LiveRoomActors, _: &mut Context<Self>) -> usize {
        self.shared.rooms.len()
    }
}
