//! The backfill stream: the events Synapse backfilled (history fetched
//! from other servers, stored at negative stream orderings from a stream
//! of its own) and those it de-outliered while backfilling, read per
//! Synapse writer from roomcache's durable position up to the writer's
//! `stream_positions` row (written by the writer after its own commits, so
//! everything of that writer up to it is committed: a writer committing out
//! of order is waited for, and an idle writer holds no one up), at most
//! `source_batch_size` positions per writer per step. Their event rows go
//! to the supervisor ([`SubmitBackfill`]) with the new positions: only the
//! rooms' latest events take anything from them (the initial timeline's
//! query selects backfilled events by their topological ordering), and
//! applying an event twice changes nothing.
//!
//! Positions are positive, as Synapse's replication gives them (stream
//! ordering `-n` is position `n`). The import sets them when it starts
//! (to each writer's row in Synapse then: what it reads includes every
//! backfilled event committed); without an import, and for a writer
//! without one, following starts at 0 (every backfilled event).
//!
//! A writer whose row in Synapse is below roomcache's position for it
//! (Synapse's database restored behind roomcache) has its position lowered
//! to the row, and the rooms holding backfilled events beyond it recomputed
//! ([`RepairBackfill`]), before anything of it is read.
//!
//! Owns: the backfill part of a step. May not touch: SQL text,
//! roomcache's tables (only through the supervisor), the rules.

use std::collections::BTreeMap;

use roomcache_core::WriterName;
use tracing::{debug, info};

use super::Follower;
use crate::source::read::{self, BackfillBounds};
use crate::source::SourceError;
use crate::supervisor::{BackfillBatch, Recalculate, RepairBackfill, SubmitBackfill};

/// The backfill stream's state between steps: how far each Synapse writer's
/// backfilled events are applied (as durable).
pub(super) struct BackfillFollower {
    positions: BTreeMap<String, i64>,
}

impl BackfillFollower {
    /// From the durable positions.
    pub(super) async fn start(follower: &Follower) -> Result<BackfillFollower, SourceError> {
        let positions = follower.store.backfill_positions().await?;
        info!(?positions, "following Synapse's backfill stream");
        Ok(BackfillFollower { positions })
    }

    /// Reads and submits the next rows of each writer that moved; true
    /// when every writer has reached its row in Synapse.
    pub(super) async fn step(&mut self, follower: &Follower) -> Result<bool, SourceError> {
        let targets = read::backfill_positions(&follower.source).await?;
        let behind = behind_synapse(&self.positions, &targets);
        if !behind.is_empty() {
            self.repair(follower, behind).await?;
            return Ok(false);
        }
        let bounds = next_bounds(&self.positions, &targets, follower.batch_size);
        if bounds.is_empty() {
            return Ok(true);
        }
        let mut rows = read::backfilled_rows(&follower.source, &bounds).await?;
        let positions: BTreeMap<String, i64> = bounds
            .iter()
            .map(|(writer, b)| (writer.clone(), b.up_to))
            .collect();
        let events: usize = rows.values().map(Vec::len).sum();
        // One batch per writer with rows (their instance name), the
        // positions with the last one (or alone).
        let last = rows.keys().next_back().cloned();
        let mut batches: Vec<BackfillBatch> = Vec::new();
        while let Some((writer, writer_rows)) = rows.pop_first() {
            let positions = if Some(&writer) == last.as_ref() {
                positions.clone()
            } else {
                BTreeMap::new()
            };
            batches.push(BackfillBatch {
                writer,
                rows: writer_rows,
                positions,
            });
        }
        if batches.is_empty() {
            batches.push(BackfillBatch {
                writer: WriterName::master().as_str().to_owned(),
                rows: Vec::new(),
                positions: positions.clone(),
            });
        }
        for batch in batches {
            follower.supervisor.send(SubmitBackfill(batch)).await??;
        }
        debug!(events, ?positions, "backfilled events applied");
        metrics::counter!("roomcache_source_backfilled_events_total").increment(events as u64);
        let caught_up = positions
            .iter()
            .all(|(writer, position)| targets.get(writer) == Some(position));
        self.positions.extend(positions);
        Ok(caught_up)
    }
}

impl BackfillFollower {
    /// Lowers the positions of `behind` (roomcache's, Synapse's row) to
    /// Synapse's rows through the supervisor, which recomputes the rooms
    /// holding backfilled events beyond them.
    async fn repair(
        &mut self,
        follower: &Follower,
        behind: BTreeMap<String, (i64, i64)>,
    ) -> Result<(), SourceError> {
        let repair = RepairBackfill {
            recalculate: Recalculate {
                upstream: follower.upstream.clone(),
                writers: follower.writers.clone(),
                batch_rooms: follower.batch_rooms,
            },
            lowered: behind.clone(),
        };
        follower
            .supervisor
            .send(repair)
            .await?
            .map_err(|failure| SourceError::Repair(Box::new(failure)))?;
        for (writer, (_, synapse)) in behind {
            self.positions.insert(writer, synapse);
        }
        Ok(())
    }
}

/// The writers whose position in roomcache is above their row in Synapse
/// (a database restored behind roomcache): both positions of each.
fn behind_synapse(
    positions: &BTreeMap<String, i64>,
    targets: &BTreeMap<String, i64>,
) -> BTreeMap<String, (i64, i64)> {
    targets
        .iter()
        .filter_map(|(writer, target)| {
            let position = positions.get(writer).copied()?;
            (position > *target).then(|| (writer.clone(), (position, *target)))
        })
        .collect()
}

/// Each writer's next read: after its position (0 when it has none), up to
/// its row in Synapse, at most `batch_size` positions; writers with nothing
/// new are left out.
fn next_bounds(
    positions: &BTreeMap<String, i64>,
    targets: &BTreeMap<String, i64>,
    batch_size: i64,
) -> BTreeMap<String, BackfillBounds> {
    targets
        .iter()
        .filter_map(|(writer, target)| {
            let after = positions.get(writer).copied().unwrap_or(0);
            (*target > after).then(|| {
                let up_to = (*target).min(after.saturating_add(batch_size.max(1)));
                (writer.clone(), BackfillBounds { after, up_to })
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_above_their_row_in_synapse_are_behind_it() {
        let positions = BTreeMap::from([
            ("p1".to_owned(), 10),
            ("p2".to_owned(), 40),
            ("p3".to_owned(), 5),
        ]);
        // p1 is above its row (a restore), p2 at it, p3 below it, p4 has no
        // position yet.
        let targets = BTreeMap::from([
            ("p1".to_owned(), 7),
            ("p2".to_owned(), 40),
            ("p3".to_owned(), 9),
            ("p4".to_owned(), 3),
        ]);
        assert_eq!(
            behind_synapse(&positions, &targets),
            BTreeMap::from([("p1".to_owned(), (10, 7))])
        );
        // A writer without a row in Synapse is left alone.
        assert!(behind_synapse(&positions, &BTreeMap::new()).is_empty());
    }

    #[test]
    fn each_writer_reads_from_its_position_at_most_a_batch() {
        let positions = BTreeMap::from([("p1".to_owned(), 10), ("p2".to_owned(), 40)]);
        let targets = BTreeMap::from([
            ("p1".to_owned(), 500),
            ("p2".to_owned(), 40),
            ("p3".to_owned(), 3),
        ]);
        let bounds = next_bounds(&positions, &targets, 100);
        assert_eq!(
            bounds,
            BTreeMap::from([
                (
                    "p1".to_owned(),
                    BackfillBounds {
                        after: 10,
                        up_to: 110
                    }
                ),
                ("p3".to_owned(), BackfillBounds { after: 0, up_to: 3 }),
            ])
        );
        // A row in Synapse below roomcache's position reads nothing.
        let behind = BTreeMap::from([("p2".to_owned(), 30)]);
        assert!(next_bounds(&positions, &behind, 100).is_empty());
    }
}
