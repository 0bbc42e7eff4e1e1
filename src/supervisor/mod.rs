//! The supervisor: the one writer of roomcache's state.
//!
//! Owns (as the design brief's card says): the per-writer positions and the
//! minimum token (through the [`PositionTracker`] it alone advances, in
//! [`commit::WritePath`]), the feed pipeline ([`pipeline`]: claim a
//! writer's range → prepare in room actors → commit in Postgres → publish
//! and advance → answer), the registry of room actors ([`rooms`], with the
//! idle reaper), start-up (loading, and in source mode the invalidation of
//! rooms that changed while roomcache was down: [`startup`]) and the
//! recalculation queue and its drain ([`recalc`]). May not touch: SQL (the
//! store's), the rules (the room actors'), HTTP (the API's), Synapse's
//! tables (source mode implements [`recalc::Upstream`] for it).

pub(crate) mod commit;
mod pipeline;
mod prepare;
pub(crate) mod recalc;
pub(crate) mod rooms;
pub(crate) mod startup;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use roomcache_core::{PositionError, WriterName};
use tracing::{error, info_span, Instrument};

use self::commit::WritePath;
use self::pipeline::{Pipeline, Queued};
use self::recalc::{RecalculationError, RecalculationQueue, Upstream};
use self::rooms::RoomRegistry;
use crate::feed::FeedBatch;
use crate::rules::RuleError;
use crate::store::StoreError;

/// Stopped actors above which their freed memory is handed back at once.
const LARGE_REAP: usize = 1000;

/// Why a batch was not applied. Nothing of it is visible anywhere.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BatchError {
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchAck {
    pub(crate) position: i64,
    /// Rows applied (rows at or below the durable position are skipped).
    pub(crate) applied_rows: usize,
}

/// A writer's validated batch.
#[derive(Debug, Message)]
#[rtype(result = "Result<BatchAck, BatchError>")]
pub(crate) struct SubmitBatch(pub(crate) FeedBatch);

/// Source mode: recompute every queued room, then move `writers` to the
/// queue's position (answered once done).
#[derive(Message)]
#[rtype(result = "Result<(), RecalculationError>")]
pub(crate) struct Recalculate {
    pub(crate) upstream: Arc<dyn Upstream>,
    pub(crate) writers: Vec<WriterName>,
    pub(crate) batch_rooms: usize,
}

/// The supervisor's settings.
#[derive(Debug, Clone)]
pub(crate) struct SupervisorSettings {
    pub(crate) server_name: Arc<str>,
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
            shared: Shared {
                write_path,
                rooms: RoomRegistry::new(),
                queue,
                settings,
            },
            pipeline: Pipeline::default(),
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

impl Supervisor {
    /// Stops the actors of rooms without table rows once no group holds
    /// pending states (see [`RoomRegistry::reap_rowless`]).
    fn reap_rowless_when_idle(&mut self) {
        if !self.pipeline.is_idle() {
            return;
        }
        if self.shared.rooms.reap_rowless() >= LARGE_REAP {
            crate::memory::ask_for_release();
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
        let (queued, answer) = Queued::new(message.0);
        self.pipeline.queue.push_back(queued);
        self.kick(ctx);
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
                let drained = recalc::drain(
                    &shared.write_path,
                    message.upstream.as_ref(),
                    &shared.queue,
                    &shared.rooms,
                    &message.writers,
                    message.batch_rooms,
                )
                .await;
                if let Err(failure) = &drained {
                    error!(error = %crate::error_chain(failure), "recomputing the queued rooms failed; restart to retry (the queue is kept)");
                }
                drained
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

/// Source mode's progress, for `GET /v1/status`: the follower reports the
/// source's position, start-up the rooms it invalidated.
#[derive(Debug, Default)]
pub(crate) struct SourceProgress {
    source_position: std::sync::atomic::AtomicI64,
    invalidated_at_start: std::sync::atomic::AtomicUsize,
}

impl SourceProgress {
    pub(crate) fn set_source_position(&self, position: i64) {
        self.source_position
            .store(position, std::sync::atomic::Ordering::Release);
    }

    pub(crate) fn source_position(&self) -> i64 {
        self.source_position
            .load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn set_invalidated_at_start(&self, rooms: usize) {
        self.invalidated_at_start
            .store(rooms, std::sync::atomic::Ordering::Release);
    }

    pub(crate) fn invalidated_at_start(&self) -> usize {
        self.invalidated_at_start
            .load(std::sync::atomic::Ordering::Acquire)
    }
}
