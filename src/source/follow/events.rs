//! The events stream: every configured writer's rows from its durable
//! position up to its safe position, one feed batch per writer.
//!
//! A writer's safe position is the highest of: its `stream_positions` row
//! (Synapse writes it after the writer's own commits), the run of
//! consecutive committed positions above the lowest writer's row (so an
//! idle writer follows the others when no position is missing), and, with
//! Redis, the position it announced (a numbered `RDATA` token or a
//! `POSITION`, sent only once everything of that writer up to it is
//! committed; an idle writer's `POSITION` moves it without rows). Writers
//! move independently: a reader waiting for one writer's event does not
//! wait for the others (the vector token), and the minimum over writers
//! does not stall while a writer is idle.
//!
//! None of them passes what Synapse has allocated on the events stream (its
//! sequence, read each step after the announcements were taken): a
//! `stream_positions` row above it is refused (the database module), an
//! announcement above it refused and taken back, counted and logged; a
//! writer's durable position above it is repaired by the supervisor before
//! anything is read. The gauges `roomcache_source_position{writer}` and
//! `roomcache_source_distance_to_allocated{writer}` show each writer against
//! it. Owns: the events part of a step. May not touch: SQL text,
//! roomcache's tables, the rules.

use std::collections::BTreeMap;
use std::time::Instant;

use futures_util::stream::{FuturesOrdered, StreamExt};

use roomcache_core::{StreamToken, WriterName};
use tracing::debug;

use super::Follower;
use crate::feed::{FeedBatch, FeedRow, PositionRow};
use crate::source::range::StreamRange;
use crate::source::read::forget_rows;
use crate::source::redis::{Snapshot, EVENTS};
use crate::source::rejected::{self, Reason};
use crate::source::{SafeToken, SourceError};
use crate::supervisor::{Recalculate, RepairPositions, SubmitBatch};

/// Most steps of the events stream in one turn of the follower's loop
/// (then the caches stream and the account data have theirs).
const STEPS_PER_TURN: usize = 8;

/// Steps read at once, ahead of the one being applied (each on its own
/// connection to Synapse's database).
const READS_IN_FLIGHT: usize = 2;

/// Each configured writer's target: the highest of its safe position in
/// the database, its announced position and its durable position, never
/// past what Synapse has allocated; and the announcements refused for
/// being past it.
pub(super) fn targets(
    writers: &[WriterName],
    safe: &SafeToken,
    announced: &BTreeMap<WriterName, i64>,
    durable: &StreamToken,
) -> (BTreeMap<WriterName, i64>, Vec<(WriterName, i64)>) {
    let mut refused = Vec::new();
    let targets = writers
        .iter()
        .map(|writer| {
            let name = writer.as_str();
            let announced = match announced.get(name).copied() {
                Some(position) if position > safe.allocated => {
                    refused.push((writer.clone(), position));
                    0
                }
                position => position.unwrap_or(0),
            };
            let target = safe
                .token
                .position(name)
                .max(announced)
                .max(durable.position(name))
                .min(safe.allocated);
            (writer.clone(), target)
        })
        .collect();
    (targets, refused)
}

/// The next step's end: each writer's target, at most `batch_size`
/// positions past where it is.
pub(super) fn step_end(
    durable: &StreamToken,
    targets: &BTreeMap<WriterName, i64>,
    batch_size: i64,
) -> BTreeMap<WriterName, i64> {
    targets
        .iter()
        .map(|(writer, target)| {
            let from = durable.position(writer.as_str());
            (
                writer.clone(),
                (*target).min(from.saturating_add(batch_size.max(1))),
            )
        })
        .collect()
}

impl Follower {
    /// Reads and submits the events stream's next rows, up to
    /// [`STEPS_PER_TURN`] steps, [`READS_IN_FLIGHT`] of them read while
    /// the one before them is applied; true when every writer has reached
    /// its target.
    pub(super) async fn follow_events(&self, channel: &Snapshot) -> Result<bool, SourceError> {
        let durable = self.tracker.token();
        let safe = self.source.safe_token(&self.writers, &durable).await?;
        self.show_positions(&durable, safe.allocated);
        if self
            .writers
            .iter()
            .any(|writer| durable.position(writer.as_str()) > safe.allocated)
        {
            self.repair_positions().await?;
            return Ok(false);
        }
        let (targets, refused) = targets(&self.writers, &safe, &channel.announced.events, &durable);
        for (writer, position) in refused {
            rejected::reject(EVENTS, Reason::BeyondAllocated, writer.as_str(), position);
            if let Some(replication) = &self.replication {
                let instead = durable.position(writer.as_str());
                replication.take_back(EVENTS, writer.as_str(), position, instead);
            }
        }
        let target = StreamToken::of_writers(&targets);
        self.progress.set_source_position(target.stream);
        metrics::gauge!("roomcache_source_lag").set((target.stream - durable.stream).max(0) as f64);
        let mut next_from = durable;
        let mut steps = 0;
        let mut reads = FuturesOrdered::new();
        let mut read: Vec<(WriterName, Vec<FeedRow>)> = Vec::new();
        loop {
            while reads.len() < READS_IN_FLIGHT
                && steps < STEPS_PER_TURN
                && !target.is_before_or_eq(&next_from)
            {
                let ends = step_end(&next_from, &targets, self.batch_size);
                let to = StreamToken::of_writers(&ends);
                reads.push_back(self.read_step(std::mem::replace(&mut next_from, to), ends));
                steps += 1;
            }
            let started = Instant::now();
            let (next, applied) =
                tokio::join!(reads.next(), self.submit_all(std::mem::take(&mut read)));
            applied?;
            let Some(next) = next else {
                break;
            };
            let (batches, events) = next?;
            debug!(
                events,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "read a step of the events stream (while the one before was applied)"
            );
            metrics::counter!("roomcache_source_events_total").increment(events as u64);
            read = batches;
        }
        let now = self.tracker.token();
        metrics::gauge!("roomcache_source_lag").set((target.stream - now.stream).max(0) as f64);
        self.show_positions(&now, safe.allocated);
        Ok(target.is_before_or_eq(&now))
    }

    /// Each writer's durable position and its distance from what Synapse
    /// has allocated (negative: ahead, which the repair corrects).
    fn show_positions(&self, durable: &StreamToken, allocated: i64) {
        metrics::gauge!("roomcache_source_allocated", "stream" => EVENTS).set(allocated as f64);
        for writer in &self.writers {
            let position = durable.position(writer.as_str());
            let label = writer.as_str().to_owned();
            metrics::gauge!("roomcache_source_position", "writer" => label.clone())
                .set(position as f64);
            metrics::gauge!("roomcache_source_distance_to_allocated", "writer" => label)
                .set((allocated - position) as f64);
        }
    }

    /// Asks the supervisor to repair the positions found ahead of what
    /// Synapse has allocated (nothing of this follower is in flight now).
    async fn repair_positions(&self) -> Result<(), SourceError> {
        let repair = RepairPositions(Recalculate {
            upstream: self.upstream.clone(),
            writers: self.writers.clone(),
            batch_rooms: self.batch_rooms,
        });
        self.supervisor
            .send(repair)
            .await?
            .map_err(|failure| SourceError::Repair(Box::new(failure)))?;
        Ok(())
    }

    /// The feed batches of the step from `from` to `ends`: one per writer
    /// that has rows or moves (ending with its position), and the rows of
    /// writers that are not configured (refused when submitted, with their
    /// name); and how many events it read.
    async fn read_step(
        &self,
        from: StreamToken,
        ends: BTreeMap<WriterName, i64>,
    ) -> Result<(Vec<(WriterName, Vec<FeedRow>)>, usize), SourceError> {
        let range = StreamRange {
            from,
            to: StreamToken::of_writers(&ends),
        };
        let read = self
            .source
            .read_range(&range, None, &self.server_name)
            .await?;
        let events = read.events;
        let mut by_writer: BTreeMap<WriterName, Vec<FeedRow>> = BTreeMap::new();
        for (instance, rows) in read.by_writer() {
            let writer = WriterName::parse(&instance).map_err(SourceError::WriterName)?;
            by_writer.insert(writer, rows);
        }
        self.add_forgets(&mut by_writer, &ends).await?;
        let mut batches = Vec::with_capacity(by_writer.len() + ends.len());
        for (writer, end) in ends {
            let mut rows = by_writer.remove(&writer).unwrap_or_default();
            if rows.is_empty() && end <= range.from.position(writer.as_str()) {
                continue;
            }
            rows.push(FeedRow::Position(PositionRow { stream_id: end }));
            batches.push((writer, rows));
        }
        batches.extend(by_writer);
        Ok((batches, events))
    }

    /// Submits the batches in order, each once the one before is applied.
    async fn submit_all(
        &self,
        batches: Vec<(WriterName, Vec<FeedRow>)>,
    ) -> Result<(), SourceError> {
        for (writer, rows) in batches {
            self.submit(writer, rows).await?;
        }
        Ok(())
    }

    /// A forget row, at the end of its writer's batch, for each membership
    /// of the rows that is forgotten already (its caches-stream row may have
    /// been read before this event was applied).
    async fn add_forgets(
        &self,
        by_writer: &mut BTreeMap<WriterName, Vec<FeedRow>>,
        ends: &BTreeMap<WriterName, i64>,
    ) -> Result<(), SourceError> {
        let local_suffix = format!(":{}", self.server_name);
        let memberships: Vec<&str> = by_writer
            .values()
            .flatten()
            .filter_map(|row| match row {
                FeedRow::Event(row)
                    if row.event.event_type == "m.room.member"
                        && row
                            .event
                            .state_key
                            .as_deref()
                            .is_some_and(|key| key.ends_with(&local_suffix)) =>
                {
                    Some(row.event.event_id.as_str())
                }
                _ => None,
            })
            .collect();
        let forgotten = self.source.forgotten_among_events(&memberships).await?;
        for membership in forgotten {
            let Ok(writer) = WriterName::parse(&membership.writer) else {
                continue;
            };
            let (Some(end), Some(rows)) = (ends.get(&writer), by_writer.get_mut(&writer)) else {
                continue;
            };
            rows.extend(forget_rows(*end, &[membership]));
        }
        Ok(())
    }

    async fn submit(&self, writer: WriterName, rows: Vec<FeedRow>) -> Result<(), SourceError> {
        let batch = FeedBatch { writer, rows };
        batch.validate().map_err(|cause| SourceError::FeedBatch {
            writer: batch.writer.clone(),
            cause,
        })?;
        let rows = batch.rows.len();
        let writer = batch.writer.clone();
        let ack = self.supervisor.send(SubmitBatch(batch)).await??;
        debug!(%writer, rows, position = ack.position, "source batch applied");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> WriterName {
        WriterName::parse(text).unwrap()
    }

    fn token(text: &str) -> StreamToken {
        text.parse().unwrap()
    }

    fn safe(token: &str, allocated: i64) -> SafeToken {
        SafeToken {
            token: token.parse().unwrap(),
            allocated,
        }
    }

    #[test]
    fn an_idle_writer_follows_the_walk_and_its_announcements() {
        let writers = [name("p1"), name("p2")];
        // Synapse's rows: p1 at 20, p2 (idle) at 12; consecutive positions
        // walk on to 15. p2 announced 18 on Redis.
        let safe = safe("m15~p1.20", 30);
        let announced = BTreeMap::from([(name("p2"), 18)]);
        let durable = token("m10~p1.14");
        let (targets, refused) = targets(&writers, &safe, &announced, &durable);
        assert_eq!(
            targets,
            BTreeMap::from([(name("p1"), 20), (name("p2"), 18)])
        );
        assert!(refused.is_empty());
        assert_eq!(StreamToken::of_writers(&targets).to_string(), "m18~p1.20");
        // Without Redis the idle writer is at the walk's end.
        let (polling, _) = super::targets(&writers, &safe, &BTreeMap::new(), &durable);
        assert_eq!(StreamToken::of_writers(&polling).to_string(), "m15~p1.20");
        // A target never goes below the durable position.
        let (behind, _) =
            super::targets(&writers, &self::safe("s5", 30), &BTreeMap::new(), &durable);
        assert_eq!(StreamToken::of_writers(&behind), durable);
    }

    #[test]
    fn an_announcement_past_what_synapse_allocated_moves_nothing() {
        let writers = [name("p1"), name("p2")];
        let safe = safe("m15~p1.20", 21);
        let announced = BTreeMap::from([(name("p1"), 21), (name("p2"), 9_999_999_999)]);
        let durable = token("m10~p1.14");
        let (targets, refused) = targets(&writers, &safe, &announced, &durable);
        assert_eq!(
            targets,
            BTreeMap::from([(name("p1"), 21), (name("p2"), 15)])
        );
        assert_eq!(refused, vec![(name("p2"), 9_999_999_999)]);
    }

    #[test]
    fn a_step_reads_at_most_the_batch_size_past_each_writer() {
        let durable = token("m10~p1.14");
        let targets = BTreeMap::from([(name("p1"), 500), (name("p2"), 12)]);
        let ends = step_end(&durable, &targets, 100);
        assert_eq!(ends, BTreeMap::from([(name("p1"), 114), (name("p2"), 12)]));
    }
}
