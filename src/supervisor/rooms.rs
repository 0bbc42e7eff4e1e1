//! The registry of room actors: created on first use from the room's
//! committed state in Postgres, stopped after staying idle.
//!
//! Owns: the map room → actor (a `DashMap`, shared by the feed pipeline,
//! the idle reaper and the recalculation drain) and each actor's last use.
//! May not touch: the rules (the actors'), the read index, positions. An
//! actor is stopped by dropping its last address: only the supervisor
//! holds addresses, so removing the entry stops it once its mailbox is
//! empty.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr};
use dashmap::DashMap;
use tracing::debug;

use super::room_actor::{holds_rows, RoomActor};
use crate::model::RoomId;
use crate::store::{Store, StoreError};

/// One live actor and when it was last used (milliseconds since the
/// registry was made).
#[derive(Debug)]
struct RoomEntry {
    address: Addr<RoomActor>,
    last_used: AtomicU64,
    /// The room's committed state has a table row; actors of rooms without
    /// any are stopped as soon as the pipeline is idle.
    holds_rows: AtomicBool,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct RoomRegistry {
    actors: DashMap<RoomId, RoomEntry>,
    epoch: Instant,
}

impl RoomRegistry {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(RoomRegistry {
            actors: DashMap::new(),
            epoch: Instant::now(),
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The actors of `rooms`, in their order, creating the missing ones from
    /// their committed state in Postgres; each is marked used now. Must not
    /// run beside [`RoomRegistry::forget`] for the same rooms.
    pub(crate) async fn actors<'a>(
        &self,
        store: &Store,
        rooms: impl Iterator<Item = &'a RoomId> + Clone,
    ) -> Result<Vec<Addr<RoomActor>>, StoreError> {
        let missing: Vec<RoomId> = rooms
            .clone()
            .filter(|room| !self.actors.contains_key(*room))
            .cloned()
            .collect();
        let mut states = if missing.is_empty() {
            Default::default()
        } else {
            store.load_room_states(&missing).await?
        };
        let now = self.now();
        let addresses = rooms
            .map(|room| {
                let entry = self.actors.entry(room.clone()).or_insert_with(|| {
                    let state = states.remove(room).unwrap_or_default();
                    RoomEntry {
                        holds_rows: AtomicBool::new(holds_rows(&state)),
                        address: RoomActor::new(room.clone(), state).start(),
                        last_used: AtomicU64::new(now),
                    }
                });
                entry.last_used.store(now, Ordering::Relaxed);
                entry.address.clone()
            })
            .collect();
        if !missing.is_empty() {
            metrics::gauge!("roomcache_room_actors").set(self.actors.len() as f64);
        }
        Ok(addresses)
    }

    /// Stops the actors of `rooms` (their committed state changed behind
    /// them, e.g. recomputed): the next use re-creates them from Postgres.
    pub(crate) fn forget(&self, rooms: &[RoomId]) {
        for room in rooms {
            self.actors.remove(room);
        }
        metrics::gauge!("roomcache_room_actors").set(self.actors.len() as f64);
    }

    /// Stops every actor unused for `idle`. Call it only while no group is
    /// being prepared or committed, so no stopped actor holds a pending
    /// state. Returns how many were stopped.
    pub(crate) fn reap_idle(&self, idle: Duration) -> usize {
        let now = self.now();
        let idle = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        self.stop_unless(
            |entry| now.saturating_sub(entry.last_used.load(Ordering::Relaxed)) < idle,
            "idle",
        )
    }

    /// Records whether a room's newly committed state has a table row.
    pub(crate) fn set_holds_rows(&self, room: &RoomId, holds: bool) {
        if let Some(entry) = self.actors.get(room) {
            entry.holds_rows.store(holds, Ordering::Relaxed);
        }
    }

    /// Stops every actor whose committed state has no table row (a room
    /// the cache only remembers a few counters of, e.g. one that received
    /// messages but has no local member, or one only touched by refused
    /// batches): its memory is in Postgres, and keeping an actor per such
    /// room would let a writer grow the process without bound. Same
    /// condition as [`RoomRegistry::reap_idle`]: only while no group is
    /// being prepared or committed. Returns how many were stopped.
    pub(crate) fn reap_rowless(&self) -> usize {
        self.stop_unless(
            |entry| entry.holds_rows.load(Ordering::Relaxed),
            "without rows",
        )
    }

    /// Stops every actor whose entry `keep` refuses; `why` says which
    /// (logged). Returns how many were stopped.
    fn stop_unless(&self, keep: impl Fn(&RoomEntry) -> bool, why: &'static str) -> usize {
        let before = self.actors.len();
        self.actors.retain(|_, entry| keep(entry));
        let stopped = before - self.actors.len();
        if stopped > 0 {
            self.actors.shrink_to_fit();
            debug!(
                stopped,
                live = self.actors.len(),
                why,
                "stopped room actors"
            );
            metrics::counter!("roomcache_room_actors_stopped_total").increment(stopped as u64);
        }
        metrics::gauge!("roomcache_room_actors").set(self.actors.len() as f64);
        stopped
    }

    pub(crate) fn len(&self) -> usize {
        self.actors.len()
    }
}
