//! Following Synapse live: poll its safe events-stream position, read the
//! new rows and submit them to the supervisor as feed batches, one per
//! writer, so everything after the supervisor is shared with the socket
//! feed.
//!
//! Forgets have no stream position in Synapse (`room_memberships.forgotten`
//! is updated in place): each poll that moves the position also compares the
//! forgotten current memberships with the cached snapshots and sends a
//! forget row, at the new position, for each one not yet applied. A forget
//! therefore becomes visible with the next event persisted anywhere on the
//! server. Purges delete the room from Synapse's `rooms`: cached rooms
//! missing there are purged, checked at start and then at most once a
//! minute. Owns: the polling loop and the lag metric. May not touch:
//! Synapse's tables (read-only), SQL text (Synapse's: the queries module;
//! roomcache's: only through the store's methods), the rules.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use tracing::{debug, info_span, warn, Instrument};

use roomcache_core::{PositionTracker, WriterName};

use super::account_data::AccountDataFollower;
use super::read::forget_rows;
use super::{queries, SourceDatabase, SourceError};
use crate::feed::{FeedBatch, FeedRow, PositionRow, PurgeRow};
use crate::index::ReadIndex;
use crate::model::RoomId;
use crate::store::Store;
use crate::supervisor::{SourceProgress, SubmitBatch, Supervisor};

/// How often cached rooms are checked against Synapse's `rooms` for purges.
const PURGE_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// The follower's parts and settings.
pub(crate) struct Follower {
    pub(crate) source: Arc<SourceDatabase>,
    /// Read-only: which rooms are cached (purge detection).
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
    /// Most stream positions read per step.
    pub(crate) batch_size: i64,
    /// Follows the account data room lists read, once per poll.
    pub(crate) account_data: AccountDataFollower,
    /// Ends a pause between polls at once (a reader waits for a position
    /// the follower has not reached).
    pub(crate) poll_now: Arc<tokio::sync::Notify>,
}

impl Follower {
    /// Follows until the process stops. Errors are logged and retried after
    /// the poll interval (nothing of a failed step is applied).
    pub(crate) async fn run(mut self) {
        let mut last_purge_check: Option<Instant> = None;
        loop {
            let check_purges = last_purge_check.is_none_or(|t| t.elapsed() >= PURGE_CHECK_INTERVAL);
            let span = info_span!("source_poll");
            let account_data = self.account_data.step().await.unwrap_or_else(|error| {
                warn!(error = %crate::error_chain(&error), "following the source's account data failed; retrying");
                true
            });
            match self.step(check_purges).instrument(span).await {
                Ok(caught_up) => {
                    let caught_up = caught_up && account_data;
                    if check_purges {
                        last_purge_check = Some(Instant::now());
                    }
                    if caught_up {
                        tokio::select! {
                            _ = tokio::time::sleep(self.poll_interval) => {}
                            _ = self.poll_now.notified() => {}
                        }
                    }
                }
                Err(error) => {
                    warn!(error = %crate::error_chain(&error), "following the source failed; retrying");
                    tokio::time::sleep(self.poll_interval).await;
                }
            }
        }
    }

    fn applied_position(&self) -> i64 {
        self.writers
            .iter()
            .map(|w| self.tracker.position(w.as_str()).unwrap_or(0))
            .min()
            .unwrap_or(0)
    }

    /// One step: reads up to `batch_size` positions and submits them.
    /// Returns true when caught up with the source.
    pub(crate) async fn step(&mut self, check_purges: bool) -> Result<bool, SourceError> {
        let target = self.source.safe_position().await?;
        self.progress.set_source_position(target);
        let from = self.applied_position();
        metrics::gauge!("roomcache_source_lag").set((target - from).max(0) as f64);
        if target <= from {
            return Ok(true);
        }
        let to = target.min(from.saturating_add(self.batch_size.max(1)));
        let range = self
            .source
            .read_range(from, to, None, &self.server_name)
            .await?;
        let events_read = range.events;
        let mut by_writer: std::collections::BTreeMap<WriterName, Vec<FeedRow>> =
            std::collections::BTreeMap::new();
        for (instance, rows) in range.by_writer() {
            let writer = WriterName::parse(&instance).map_err(SourceError::WriterName)?;
            by_writer.insert(writer, rows);
        }
        let mut extra: Vec<FeedRow> = Vec::new();
        let forgotten: Vec<_> = self
            .source
            .forgotten_memberships(to, None)
            .await?
            .into_iter()
            .filter(|(room, user, event)| {
                !self
                    .index
                    .snapshot(user, room)
                    .is_some_and(|s| s.forgotten && &s.membership_event_id == event)
            })
            .collect();
        // At `to`: the rules apply a group's forgets after its memberships.
        extra.extend(forget_rows(to, &forgotten));
        if check_purges {
            for room_id in self.purged_rooms().await? {
                extra.push(FeedRow::Purge(PurgeRow {
                    stream_id: to,
                    room_id,
                }));
            }
        }
        if let Some(first_writer) = self.writers.first() {
            by_writer
                .entry(first_writer.clone())
                .or_default()
                .extend(extra);
        }
        for writer in &self.writers {
            by_writer.entry(writer.clone()).or_default();
        }
        for (writer, mut rows) in by_writer {
            rows.push(FeedRow::Position(PositionRow { stream_id: to }));
            let batch = FeedBatch { writer, rows };
            batch.validate().map_err(|cause| SourceError::FeedBatch {
                writer: batch.writer.clone(),
                cause,
            })?;
            let rows = batch.rows.len();
            let ack = self.supervisor.send(SubmitBatch(batch)).await??;
            debug!(rows, position = ack.position, "source batch applied");
        }
        metrics::gauge!("roomcache_source_lag")
            .set((target - self.applied_position()).max(0) as f64);
        metrics::counter!("roomcache_source_events_total").increment(events_read as u64);
        Ok(to >= target)
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
