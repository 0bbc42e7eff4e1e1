//! The caches stream: forgets and room deletions, applied as soon as
//! Synapse commits them.
//!
//! A forget changes no events-stream row (`room_memberships.forgotten` is
//! updated in place), but Synapse writes every cache invalidation to
//! `cache_invalidation_stream_by_instance` in the same transaction as the
//! change, with a position of its caches stream (one sequence shared by
//! every Synapse process): a forget writes `did_forget [user, room]`, a
//! room deletion `dr_cache_fake [room]`. Each step reads those two kinds
//! after roomcache's positions and turns them into forget rows (for a
//! membership the read index shows and has not forgotten; otherwise the
//! events stream brings the forget with the membership event) and purge
//! rows (for a room gone from Synapse's tables).
//!
//! Positions are per Synapse process. With Redis, a process's rows are read
//! up to the position it announced (numbered `RDATA caches` or `POSITION
//! caches`): exact, as the process publishes only what it has committed.
//! Otherwise (polling, or a process that has announced nothing) up to the
//! highest position present when the step starts; a row committed later
//! below it is found by the full check. An announcement above what Synapse
//! has allocated on the stream (`cache_invalidation_stream_seq`) is refused
//! and taken back; a durable position above it, found at start, is lowered
//! with a full check (which finds everything the stream could have shown).
//! The processes whose rows are read become processes whose announcements
//! are kept. Positions are kept durable (table
//! `stream_positions`, stream `caches`) when rows are applied, and at
//! least every [`DURABLE_EVERY`] while they move; re-reading rows after a
//! restart is harmless (both kinds are idempotent). Owns: the caches part
//! of a step. May not touch: SQL text, roomcache's tables except through
//! the supervisor and the store.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use tracing::{debug, error, info};

use super::Follower;
use crate::feed::{FeedRow, PurgeRow};
use crate::model::RoomId;
use crate::source::read::forget_rows;
use crate::source::redis::{Snapshot, CACHES};
use crate::source::rejected::{self, Reason};
use crate::source::{queries, SourceError};
use crate::supervisor::InvalidationBatch;

/// The cache invalidation of a forget: keys `[user, room]`.
const FORGET: &str = "did_forget";
/// The cache invalidation of a room deletion: keys `[room]`.
const ROOM_DELETION: &str = "dr_cache_fake";
/// Most invalidations read per step.
const ROWS_PER_STEP: i64 = 5_000;
/// Moved positions are made durable at least this often.
const DURABLE_EVERY: Duration = Duration::from_secs(10);

/// Positions in the caches stream: per Synapse process, and `floor` for a
/// process not seen yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct CachesPositions {
    pub(super) floor: i64,
    pub(super) instances: BTreeMap<String, i64>,
}

impl CachesPositions {
    pub(super) fn position(&self, instance: &str) -> i64 {
        self.instances.get(instance).copied().unwrap_or(self.floor)
    }
}

/// How far this step reads: per process up to `bound(process)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StepBounds<'a> {
    /// The highest position present when the step started (or the last one
    /// read, when the step read its most rows).
    pub(super) highest: i64,
    /// Processes bounded by what they announced on Redis (those above
    /// `allocated` are not: their announcement is refused).
    pub(super) announcements: Option<&'a BTreeMap<String, i64>>,
    /// The highest position Synapse has allocated on the caches stream.
    pub(super) allocated: i64,
}

impl StepBounds<'_> {
    /// What `instance` announced, if it is believed.
    fn announced(&self, instance: &str) -> Option<i64> {
        self.announcements?
            .get(instance)
            .copied()
            .filter(|position| *position <= self.allocated)
    }

    /// The announcing processes whose announcement is believed.
    fn announcing(&self) -> impl Iterator<Item = &String> {
        self.announcements
            .into_iter()
            .flatten()
            .filter(|(_, position)| **position <= self.allocated)
            .map(|(instance, _)| instance)
    }

    /// The announcements refused for being above what was allocated.
    fn refused(&self) -> impl Iterator<Item = (&String, i64)> {
        self.announcements
            .into_iter()
            .flatten()
            .filter(|(_, position)| **position > self.allocated)
            .map(|(instance, position)| (instance, *position))
    }

    pub(super) fn bound(&self, instance: &str) -> i64 {
        self.announced(instance)
            .map_or(self.highest, |a| a.min(self.highest))
    }

    /// The positions once every row up to the bounds is read.
    pub(super) fn advance(&self, positions: &CachesPositions) -> CachesPositions {
        let mut next = positions.clone();
        next.floor = next.floor.max(self.highest);
        for instance in self.announcing() {
            next.instances
                .entry(instance.clone())
                .or_insert(positions.floor);
        }
        for (instance, position) in next.instances.iter_mut() {
            *position = (*position).max(self.bound(instance));
        }
        next
    }
}

/// One invalidation read from Synapse.
struct Invalidation {
    stream_id: i64,
    instance: String,
    function: String,
    keys: Option<Vec<String>>,
}

/// The caches stream's state between steps.
pub(super) struct CachesFollower {
    positions: CachesPositions,
    durable: CachesPositions,
    last_durable: Instant,
    full_check_due: bool,
}

impl CachesFollower {
    /// From the durable positions; on a first start (none), when Synapse
    /// has deleted rows past them, or when one is above what Synapse has
    /// allocated (then lowered: logged as an error), from the highest
    /// position present, with a full check due.
    pub(super) async fn start(follower: &Follower) -> Result<CachesFollower, SourceError> {
        let mut durable = follower.store.caches_positions().await?;
        let extent = follower
            .source
            .one_row(&queries::CACHES_STREAM_EXTENT, &[])
            .await?;
        let (lowest, highest): (Option<i64>, Option<i64>) = (extent.column(0)?, extent.column(1)?);
        let allocated: i64 = extent.column(2)?;
        let ahead = durable.len();
        durable.retain(|_, position| *position <= allocated);
        let lowered = ahead - durable.len();
        if lowered > 0 {
            error!(
                processes = lowered,
                allocated,
                "caches-stream positions are ahead of what Synapse has allocated; \
                 following from the highest position present, with a full check"
            );
            metrics::counter!("roomcache_source_positions_repaired_total", "stream" => CACHES)
                .increment(lowered as u64);
        }
        if let Some(replication) = &follower.replication {
            replication.learn_processes(durable.keys().map(String::as_str));
        }
        let floor = durable.values().copied().min().filter(|_| lowered == 0);
        let (positions, full_check_due) = match floor {
            Some(floor) => (
                CachesPositions {
                    floor,
                    instances: durable,
                },
                lowest.is_some_and(|lowest| lowest > floor + 1),
            ),
            None => (
                CachesPositions {
                    floor: highest.unwrap_or(0).min(allocated),
                    instances: BTreeMap::new(),
                },
                true,
            ),
        };
        info!(
            floor = positions.floor,
            full_check_due, "following Synapse's caches stream"
        );
        Ok(CachesFollower {
            durable: positions.clone(),
            positions,
            last_durable: Instant::now(),
            full_check_due,
        })
    }

    /// True once after the start found rows missing (the caller runs the
    /// full check).
    pub(super) fn take_full_check_due(&mut self) -> bool {
        std::mem::take(&mut self.full_check_due)
    }

    /// Reads and applies the invalidations after the positions; true when
    /// it read everything up to the step's bounds.
    pub(super) async fn step(
        &mut self,
        follower: &Follower,
        channel: &Snapshot,
    ) -> Result<bool, SourceError> {
        let extent = follower
            .source
            .one_row(&queries::CACHES_STREAM_EXTENT, &[])
            .await?;
        let highest: i64 = extent.column::<Option<i64>>(1)?.unwrap_or(0);
        let allocated: i64 = extent.column(2)?;
        let mut bounds = StepBounds {
            highest,
            announcements: channel.connected.then_some(&channel.announced.caches),
            allocated,
        };
        for (instance, position) in bounds.refused() {
            rejected::reject(CACHES, Reason::BeyondAllocated, instance, position);
            if let Some(replication) = &follower.replication {
                let instead = self.positions.position(instance);
                replication.take_back(CACHES, instance, position, instead);
            }
        }
        if bounds.advance(&self.positions) == self.positions {
            return Ok(true);
        }
        let read = self.read(follower, &bounds).await?;
        if let Some(replication) = &follower.replication {
            replication.learn_processes(read.iter().map(|row| row.instance.as_str()));
        }
        let complete = read.len() < ROWS_PER_STEP as usize;
        if let (false, Some(last)) = (complete, read.last()) {
            bounds.highest = last.stream_id;
        }
        let wanted: Vec<&Invalidation> = read
            .iter()
            .filter(|row| {
                row.stream_id > self.positions.position(&row.instance)
                    && row.stream_id <= bounds.bound(&row.instance)
            })
            .collect();
        let rows = self.rows_of(follower, &wanted).await?;
        let next = bounds.advance(&self.positions);
        let persist = !rows.is_empty() || self.last_durable.elapsed() >= DURABLE_EVERY;
        if persist && (next != self.durable || !rows.is_empty()) {
            let mut caches_positions = next.instances.clone();
            caches_positions
                .retain(|instance, position| self.durable.position(instance) < *position);
            follower
                .submit_invalidations(InvalidationBatch {
                    rows,
                    caches_positions,
                })
                .await?;
            self.durable = next.clone();
            self.last_durable = Instant::now();
        }
        self.positions = next;
        Ok(complete)
    }

    /// The forget and room-deletion invalidations of each process after its
    /// position and up to its bound, in stream order (at most
    /// [`ROWS_PER_STEP`]).
    async fn read(
        &self,
        follower: &Follower,
        bounds: &StepBounds<'_>,
    ) -> Result<Vec<Invalidation>, SourceError> {
        let known: BTreeSet<&String> = self
            .positions
            .instances
            .keys()
            .chain(bounds.announcing())
            .collect();
        let instances: Vec<&str> = known.iter().map(|i| i.as_str()).collect();
        let after: Vec<i64> = instances
            .iter()
            .map(|i| self.positions.position(i))
            .collect();
        let up_to: Vec<i64> = instances.iter().map(|i| bounds.bound(i)).collect();
        let functions = [FORGET, ROOM_DELETION];
        let rows = follower
            .source
            .rows(
                &queries::CACHE_INVALIDATIONS,
                &[
                    &instances,
                    &after,
                    &up_to,
                    &&functions[..],
                    &self.positions.floor,
                    &bounds.highest,
                    &ROWS_PER_STEP,
                ],
            )
            .await?;
        let mut read = Vec::with_capacity(rows.len());
        for row in &rows {
            read.push(Invalidation {
                stream_id: row.column(0)?,
                instance: row.column(1)?,
                function: row.column(2)?,
                keys: row.column(3)?,
            });
        }
        Ok(read)
    }

    /// The forget and purge rows of `invalidations`; a forget with no keys
    /// (every key) makes the full check due.
    async fn rows_of(
        &mut self,
        follower: &Follower,
        invalidations: &[&Invalidation],
    ) -> Result<Vec<FeedRow>, SourceError> {
        let mut members: BTreeSet<(String, String)> = BTreeSet::new();
        let mut rooms: BTreeSet<String> = BTreeSet::new();
        for invalidation in invalidations {
            match (invalidation.function.as_str(), invalidation.keys.as_deref()) {
                (FORGET, Some([user, room])) => {
                    members.insert((room.clone(), user.clone()));
                }
                (ROOM_DELETION, Some([room])) => {
                    rooms.insert(room.clone());
                }
                (FORGET | ROOM_DELETION, None) => self.full_check_due = true,
                (function, keys) => {
                    debug!(
                        function,
                        ?keys,
                        stream_id = invalidation.stream_id,
                        "ignoring a cache invalidation"
                    );
                }
            }
        }
        let members: Vec<(String, String)> = members.into_iter().collect();
        let forgotten = follower.source.forgotten_among_members(&members).await?;
        let mut rows = forget_rows(1, &follower.forgets_not_applied(forgotten));
        for room in rooms {
            let exists: bool = follower
                .source
                .one_row(&queries::ROOM_EXISTS, &[&room])
                .await?
                .column(0)?;
            if let (false, Ok(room_id)) = (exists, RoomId::parse(&room)) {
                rows.push(FeedRow::Purge(PurgeRow {
                    stream_id: 1,
                    room_id,
                }));
            }
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announced_processes_are_read_up_to_their_announcement_the_others_up_to_the_highest() {
        let positions = CachesPositions {
            floor: 10,
            instances: BTreeMap::from([("master".to_owned(), 12), ("p1".to_owned(), 11)]),
        };
        let announced = BTreeMap::from([
            ("p1".to_owned(), 25),
            ("p2".to_owned(), 40),
            ("bogus".to_owned(), 9_999_999_999),
        ]);
        let bounds = StepBounds {
            highest: 30,
            announcements: Some(&announced),
            allocated: 45,
        };
        assert_eq!(bounds.bound("p1"), 25);
        assert_eq!(bounds.bound("p2"), 30);
        assert_eq!(bounds.bound("master"), 30);
        assert_eq!(bounds.bound("p3"), 30);
        // Above what was allocated: refused, as if nothing was announced.
        assert_eq!(bounds.bound("bogus"), 30);
        assert_eq!(
            bounds.refused().collect::<Vec<_>>(),
            vec![(&"bogus".to_owned(), 9_999_999_999)]
        );
        let next = bounds.advance(&positions);
        assert_eq!(next.floor, 30);
        assert_eq!(
            next.instances,
            BTreeMap::from([
                ("master".to_owned(), 30),
                ("p1".to_owned(), 25),
                ("p2".to_owned(), 30)
            ])
        );
        assert_eq!(next.position("p3"), 30);
        // Positions never move back.
        let lower = StepBounds {
            highest: 5,
            announcements: None,
            allocated: 45,
        };
        assert_eq!(lower.advance(&next), next);
    }
}
