//! Following Synapse live: each step reads what Synapse has persisted since
//! roomcache's positions from its database and submits it to the
//! supervisor, so everything after the supervisor is shared with the socket
//! feed.
//!
//! A step runs at once after the previous one while behind, and otherwise
//! when woken: by a line of Synapse's replication stream over Redis (any
//! numbered `RDATA` or `POSITION`, see [`super::redis`]), by a reader
//! waiting for a position not reached yet, or by the poll interval,
//! whichever comes first. Redis only wakes and informs: what is
//! read always starts at roomcache's own durable positions, so lines lost
//! while Redis was down or roomcache was disconnected cost nothing but a
//! poll interval.
//!
//! Each step does, in order:
//!
//! 1. the events stream ([`events`]): every configured writer's rows from its
//!    durable position up to its safe position (Synapse's `stream_positions`,
//!    the run of consecutive committed positions above the lowest of them,
//!    and what the writer announced on Redis, never past what Synapse has
//!    allocated; a durable position past it is repaired by the supervisor
//!    first), one feed batch per writer,
//!    with a forget row for each of the range's memberships that is
//!    forgotten already; while behind, up to eight ranges of
//!    `source_batch_size` positions, two of them read while the one before
//!    them is applied;
//! 2. the caches stream ([`caches`]): the cache invalidations Synapse writes
//!    in the same transaction as a forget (`did_forget`) or a room deletion,
//!    applied at once as forget and purge rows, with the caches stream's
//!    positions;
//! 3. the backfill stream ([`backfill`]): each Synapse writer's backfilled
//!    events (negative stream orderings) from roomcache's durable position
//!    up to the writer's `stream_positions` row, applied with the
//!    backfill stream's positions (they can only change the rooms' latest
//!    events);
//! 4. at start, after each (re)connection to Redis and, while not connected
//!    to Redis, once a minute, a full check: every forgotten membership not
//!    yet applied and every cached room that no longer exists in Synapse
//!    (what the caches stream may not show: rows older than Synapse keeps,
//!    invalidations committed out of order while polling), and Synapse's
//!    processes looked for in its database (also at most every ten seconds
//!    after Redis named one not known yet), whose caches and account-data
//!    announcements are kept from then on.
//!
//! Beside each step, the account data room lists read is followed
//! ([`super::account_data`]); a line of Redis's `account_data` stream wakes
//! it like any other.
//!
//! Owns: the loop, its wake-ups, the full check and the lag metric. May not
//! touch: Synapse's tables (read-only), SQL text (Synapse's: the queries
//! module; roomcache's: only through the store's methods), the rules.

mod backfill;
mod caches;
mod events;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use tracing::{debug, info_span, Instrument};

use roomcache_core::{PositionTracker, WriterName};

use super::account_data::AccountDataFollower;
use super::health::{SourceHealth, SourcePart};
use super::read::{self, forget_rows};
use super::redis::Replication;
use super::{queries, SourceDatabase, SourceError, SourceProgress};
use crate::feed::{FeedRow, PurgeRow};
use crate::index::ReadIndex;
use crate::model::RoomId;
use crate::store::Store;
use crate::supervisor::recalc::Upstream;
use crate::supervisor::{InvalidationBatch, SubmitInvalidations, Supervisor};

use backfill::BackfillFollower;
use caches::CachesFollower;

/// How often the full check runs while not connected to Redis (besides at
/// start and on each connection).
const FULL_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// Synapse's processes are looked for anew at most this often when Redis
/// names one not known yet (a new worker; or junk, which costs no more).
const PROCESS_LOOKUP_INTERVAL: Duration = Duration::from_secs(10);

/// The follower's parts and settings.
pub(crate) struct Follower {
    pub(crate) source: Arc<SourceDatabase>,
    /// Synapse's database as the supervisor asks it (repairs of positions
    /// found ahead of what Synapse has allocated).
    pub(crate) upstream: Arc<dyn Upstream>,
    /// Rooms per recalculation batch of such a repair.
    pub(crate) batch_rooms: usize,
    /// Read-only: which rooms are cached (purge detection), the caches
    /// stream's durable positions.
    pub(crate) store: Store,
    pub(crate) supervisor: Addr<Supervisor>,
    /// Read-only: the writers' durable positions.
    pub(crate) tracker: Arc<PositionTracker>,
    /// Read-only: which forgets are applied already.
    pub(crate) index: Arc<ReadIndex>,
    pub(crate) progress: Arc<SourceProgress>,
    pub(crate) server_name: String,
    pub(crate) writers: Vec<WriterName>,
    pub(crate) poll_interval: Duration,
    /// Most stream positions read per writer per step.
    pub(crate) batch_size: i64,
    /// Synapse's replication stream over Redis, when configured.
    pub(crate) replication: Option<Arc<Replication>>,
    /// Follows the account data room lists read, once per step.
    pub(crate) account_data: AccountDataFollower,
    /// Ends a pause between steps at once (a reader waits for a position
    /// the follower has not reached).
    pub(crate) poll_now: Arc<tokio::sync::Notify>,
    /// Told how each step went (and logs the failures).
    pub(crate) health: Arc<SourceHealth>,
}

/// What the loop remembers between steps.
#[derive(Default)]
struct FollowState {
    caches: Option<CachesFollower>,
    backfill: Option<BackfillFollower>,
    last_full_check: Option<Instant>,
    /// Redis subscriptions seen (a new one calls for a full check).
    connections: u64,
    /// When Synapse's processes were last looked for.
    last_process_lookup: Option<Instant>,
}

impl Follower {
    /// Follows until the process stops. Errors are logged and retried after
    /// the poll interval (nothing of a failed step is applied).
    pub(crate) async fn run(self) {
        let mut state = FollowState::default();
        loop {
            let span = info_span!("source_step");
            let account_data = match self.account_data.step().await {
                Ok(caught_up) => {
                    self.health.succeeded(SourcePart::AccountData);
                    caught_up
                }
                Err(error) => {
                    let health = &self.health;
                    health
                        .failed(SourcePart::AccountData, &error, &self.source)
                        .await;
                    true
                }
            };
            match self.step(&mut state).instrument(span).await {
                Ok(caught_up) => {
                    self.health.succeeded(SourcePart::Events);
                    if caught_up && account_data {
                        self.wait().await;
                    }
                }
                Err(error) => {
                    let health = &self.health;
                    health
                        .failed(SourcePart::Events, &error, &self.source)
                        .await;
                    tokio::time::sleep(self.poll_interval).await;
                }
            }
        }
    }

    /// Until Redis announces something, a reader asks for a step, or the
    /// poll interval passes.
    async fn wait(&self) {
        let announced = async {
            match &self.replication {
                Some(replication) => replication.woken().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = announced => {}
            () = self.poll_now.notified() => {}
            () = tokio::time::sleep(self.poll_interval) => {}
        }
    }

    /// One step; true when caught up with the source.
    async fn step(&self, state: &mut FollowState) -> Result<bool, SourceError> {
        let channel = self
            .replication
            .as_ref()
            .map(|r| r.snapshot())
            .unwrap_or_default();
        let reconnected = channel.connections != state.connections;
        state.connections = channel.connections;
        let events_caught_up = events::step(self, &channel).await?;
        let caches = match &mut state.caches {
            Some(caches) => caches,
            None => state.caches.insert(CachesFollower::start(self).await?),
        };
        let caches_caught_up = caches.step(self, &channel).await?;
        let backfill = match &mut state.backfill {
            Some(backfill) => backfill,
            None => state.backfill.insert(BackfillFollower::start(self).await?),
        };
        let backfill_caught_up = backfill.step(self).await?;
        // With Redis the caches stream is exact: the periodic check is for
        // polling (and a start or a reconnection, which may have missed some).
        let periodic = !channel.connected
            && state
                .last_full_check
                .is_none_or(|t| t.elapsed() >= FULL_CHECK_INTERVAL);
        let full_check_due = caches.take_full_check_due()
            || reconnected
            || state.last_full_check.is_none()
            || periodic;
        if full_check_due {
            self.full_check().await?;
            state.last_full_check = Some(Instant::now());
            state.last_process_lookup = state.last_full_check;
        }
        let lookup_due = state
            .last_process_lookup
            .is_none_or(|t| t.elapsed() >= PROCESS_LOOKUP_INTERVAL);
        if lookup_due
            && self
                .replication
                .as_ref()
                .is_some_and(|r| r.take_unknown_process_seen())
        {
            self.learn_processes().await?;
            state.last_process_lookup = Some(Instant::now());
        }
        Ok(events_caught_up && caches_caught_up && backfill_caught_up)
    }

    /// Forgets not yet applied and purged rooms, checked against the whole
    /// of Synapse's tables; and Synapse's processes learnt anew from its
    /// database (their announcements on Redis are kept from then on).
    async fn full_check(&self) -> Result<(), SourceError> {
        let started = Instant::now();
        self.learn_processes().await?;
        let forgotten =
            read::forgotten_memberships(&self.source, &self.tracker.token(), None).await?;
        let mut rows = forget_rows(1, &self.forgets_not_applied(forgotten));
        for room_id in self.purged_rooms().await? {
            rows.push(FeedRow::Purge(PurgeRow {
                stream_id: 1,
                room_id,
            }));
        }
        debug!(
            rows = rows.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "full check of forgets and purges"
        );
        self.submit_invalidations(InvalidationBatch {
            rows,
            ..InvalidationBatch::default()
        })
        .await
    }

    /// Tells the replication stream Synapse's processes as its database
    /// names them (the writers of its streams).
    async fn learn_processes(&self) -> Result<(), SourceError> {
        let Some(replication) = &self.replication else {
            return Ok(());
        };
        let rows = self.source.rows(&queries::SYNAPSE_PROCESSES, &[]).await?;
        let names = rows
            .iter()
            .map(|row| row.column::<&str>(0))
            .collect::<Result<Vec<&str>, _>>()?;
        replication.learn_processes(names);
        Ok(())
    }

    /// The memberships whose forget the read index does not show yet; those
    /// whose membership event is not applied yet are left for the events
    /// stream (the forget comes with the event).
    fn forgets_not_applied(
        &self,
        forgotten: Vec<super::read::ForgottenMembership>,
    ) -> Vec<super::read::ForgottenMembership> {
        forgotten
            .into_iter()
            .filter(|membership| {
                self.index
                    .snapshot(&membership.user_id, &membership.room_id)
                    .is_some_and(|s| s.membership_event_id == membership.event_id && !s.forgotten)
            })
            .collect()
    }

    /// Applies forgets and purges (and the caches stream's positions).
    async fn submit_invalidations(&self, batch: InvalidationBatch) -> Result<(), SourceError> {
        if batch.rows.is_empty() && batch.caches_positions.is_empty() {
            return Ok(());
        }
        let rows = batch.rows.len();
        let ack = self.supervisor.send(SubmitInvalidations(batch)).await??;
        debug!(
            rows,
            applied = ack.applied_rows,
            "forgets and purges applied"
        );
        Ok(())
    }

    /// Cached rooms that no longer exist in Synapse (purged or deleted).
    async fn purged_rooms(&self) -> Result<Vec<RoomId>, SourceError> {
        let cached = self.store.cached_room_ids().await?;
        if cached.is_empty() {
            return Ok(Vec::new());
        }
        let mut gone = Vec::new();
        for chunk in cached.chunks(10_000) {
            let ids: Vec<&str> = chunk.iter().map(RoomId::as_str).collect();
            let rows = self.source.rows(&queries::ROOMS_PRESENT, &[&ids]).await?;
            let present = rows
                .iter()
                .map(|row| row.column::<&str>(0))
                .collect::<Result<std::collections::HashSet<&str>, _>>()?;
            gone.extend(
                chunk
                    .iter()
                    .filter(|r| !present.contains(r.as_str()))
                    .cloned(),
            );
        }
        Ok(gone)
    }
}
