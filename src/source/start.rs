//! Source mode's door: what `roomcache serve` starts when a Synapse
//! database is configured, in two steps around loading the rows.
//!
//! [`start`], before any row is loaded (so no stale row is ever served):
//! the import on first start, then start-up's repair and §4 check through
//! the supervisor's steps ([`startup::invalidate_changed_rooms`]), the
//! stored account-data position, and the subscription to Synapse's
//! replication stream prepared (`source_redis_url`). [`SourceHandle::follow`],
//! once the supervisor runs: the recalculation of the queued rooms, then
//! the follower (and the subscriber) until the process stops. The handle
//! gives the reads and the API what they need of source mode meanwhile.
//!
//! Owns: which of source mode's parts are built, in which order, with which
//! settings. May not touch: rows, SQL, routes; connecting to Synapse's
//! database and checking its grants stays with the server's start-up,
//! which does it before taking the schema's lock.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use anyhow::Context as _;
use roomcache_core::StreamToken;

use super::account_data::{AccountDataFollower, AccountDataPosition};
use super::follow::Follower;
use super::health::{SourceHealth, SourcePart};
use super::import::{run_import, ImportOptions, RulesSettings};
use super::redis::{Replication, Subscriber};
use super::{SourceDatabase, SourceProgress, SynapseUpstream};
use crate::config::Settings;
use crate::supervisor::commit::WritePath;
use crate::supervisor::recalc::{RecalculationQueue, Upstream};
use crate::supervisor::startup::{self, Invalidation};
use crate::supervisor::{Recalculate, Supervisor};

/// Source mode's start-up (see the module documentation); `source` is
/// Synapse's database, connected and checked.
pub(crate) async fn start(
    settings: &Settings,
    source: Arc<SourceDatabase>,
    write_path: &WritePath,
) -> anyhow::Result<SourceHandle> {
    let mut handle = start_up(settings, source, write_path).await?;
    handle.subscriber = prepare_subscriber(settings)?;
    Ok(handle)
}

/// Source mode once started: its parts, for the reads and the API, and
/// the follower still to run ([`SourceHandle::follow`]).
pub(crate) struct SourceHandle {
    source: Arc<SourceDatabase>,
    upstream: Arc<dyn Upstream>,
    invalidation: Invalidation,
    progress: Arc<SourceProgress>,
    account_data: Arc<AccountDataPosition>,
    poll_now: Arc<tokio::sync::Notify>,
    health: Arc<SourceHealth>,
    /// The subscription to Synapse's replication stream (with
    /// `source_redis_url`), started with the follower.
    subscriber: Option<(Arc<Replication>, Subscriber)>,
}

/// Source mode's start-up, before any row is loaded (so no stale row is
/// ever served): the import on first start, then the §4 check.
async fn start_up(
    settings: &Settings,
    source: Arc<SourceDatabase>,
    write_path: &WritePath,
) -> anyhow::Result<SourceHandle> {
    if settings.source_import_on_start {
        run_import(write_path, &source, &ImportOptions::of(settings, true))
            .await
            .context("importing from the Synapse database")?;
    }
    let upstream: Arc<dyn Upstream> = Arc::new(SynapseUpstream::new(
        source.clone(),
        RulesSettings::of(settings),
        &settings.writers,
    ));
    let invalidation = startup::invalidate_changed_rooms(write_path, upstream.as_ref())
        .await
        .context("checking for rooms changed in Synapse while roomcache was down")?;
    let progress = Arc::new(SourceProgress::default());
    progress.set_invalidated_at_start(invalidation.queued.len());
    let account_data = Arc::new(AccountDataPosition::default());
    if let Some(position) = write_path
        .store()
        .account_data_position()
        .await
        .context("reading the stored account-data position")?
    {
        account_data.advance(position);
    }
    Ok(SourceHandle {
        source,
        upstream,
        invalidation,
        progress,
        account_data,
        poll_now: Arc::new(tokio::sync::Notify::new()),
        health: Arc::new(SourceHealth::new()),
        subscriber: None,
    })
}

/// Source mode with `source_redis_url`: the subscription to Synapse's
/// replication stream (started with the follower; it reconnects by itself).
pub(crate) fn prepare_subscriber(
    settings: &Settings,
) -> anyhow::Result<Option<(Arc<Replication>, Subscriber)>> {
    let Some(url) = &settings.source_redis_url else {
        return Ok(None);
    };
    let replication = Arc::new(Replication::new(&settings.writers));
    let subscriber = Subscriber::new(
        url,
        &settings.server_name,
        replication.clone(),
        settings.source_redis_max_line_bytes,
    )
    .context("reading source_redis_url")?;
    Ok(Some((replication, subscriber)))
}

impl SourceHandle {
    /// The token the rooms queued at start-up are recomputed at.
    pub(crate) fn queue_position(&self) -> StreamToken {
        self.invalidation.to.clone()
    }

    /// Synapse's database as the supervisor and the reads' fallback ask it.
    pub(crate) fn upstream(&self) -> Arc<dyn Upstream> {
        self.upstream.clone()
    }

    /// How far account data is applied (reads wait on it).
    pub(crate) fn account_data(&self) -> Arc<AccountDataPosition> {
        self.account_data.clone()
    }

    /// Wakes the follower at once (a reader waits for a position it has
    /// not reached).
    pub(crate) fn poll_now(&self) -> Arc<tokio::sync::Notify> {
        self.poll_now.clone()
    }

    /// The progress `GET /v1/status` shows.
    pub(crate) fn progress(&self) -> Arc<SourceProgress> {
        self.progress.clone()
    }

    /// Whether following works (`/health`).
    pub(crate) fn health(&self) -> Arc<SourceHealth> {
        self.health.clone()
    }

    /// Once the supervisor runs: recomputes the queued rooms (after the
    /// configured delay), then follows Synapse until the process stops
    /// (with the subscription to Redis, when configured). A failed
    /// recalculation leaves the source degraded (reads use the fallback;
    /// restart to retry).
    pub(crate) fn follow(
        self,
        settings: &Settings,
        write_path: &WritePath,
        queue: &RecalculationQueue,
        supervisor: Addr<Supervisor>,
    ) {
        let source = self;
        let subscriber = source.subscriber;
        let replication = subscriber.map(|(replication, subscriber)| {
            actix_rt::spawn(subscriber.run());
            replication
        });
        let account_data = AccountDataFollower {
            source: source.source.clone(),
            supervisor: supervisor.clone(),
            position: source.account_data,
            batch_size: settings.source_batch_size,
        };
        let health = source.health.clone();
        let database = source.source.clone();
        let follower = Follower {
            account_data,
            poll_now: source.poll_now,
            upstream: source.upstream.clone(),
            batch_rooms: settings.source_import_batch_rooms,
            source: source.source,
            store: write_path.store().clone(),
            supervisor: supervisor.clone(),
            tracker: write_path.tracker().clone(),
            index: write_path.index().clone(),
            progress: source.progress,
            server_name: settings.server_name.clone(),
            writers: settings.writers.clone(),
            poll_interval: Duration::from_millis(settings.source_poll_interval_ms),
            batch_size: settings.source_batch_size,
            replication,
            health: source.health,
        };
        let covered_nothing = source.invalidation.from == StreamToken::linear(0);
        let recalculate = (!covered_nothing || !queue.is_empty()).then(|| Recalculate {
            upstream: source.upstream,
            writers: settings.writers.clone(),
            batch_rooms: settings.source_import_batch_rooms,
        });
        let delay = if queue.is_empty() {
            Duration::ZERO
        } else {
            Duration::from_millis(settings.source_recalculation_delay_ms)
        };
        actix_rt::spawn(async move {
            if let Some(recalculate) = recalculate {
                tokio::time::sleep(delay).await;
                match supervisor.send(recalculate).await {
                    Ok(Ok(())) => {}
                    // Logged by the supervisor; reads keep using the fallback.
                    Ok(Err(failure)) => {
                        health
                            .failed(SourcePart::Recalculation, &failure, &database)
                            .await;
                        return;
                    }
                    Err(_) => return,
                }
            }
            follower.run().await;
        });
    }
}
