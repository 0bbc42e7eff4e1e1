//! Synapse's replication stream over Redis, as a source of wake-ups and
//! positions for the follower (source mode, setting `source_redis_url`).
//!
//! Synapse's processes publish every replication command on one Redis
//! channel named after the server name. roomcache subscribes, then
//! publishes `REPLICATE` as Synapse's own processes do when they connect, so
//! that every process answers with its current positions. A numbered
//! `RDATA` line or a `POSITION` line says that a process has persisted (and
//! committed) its rows of a stream up to a position: it is remembered here
//! as that process's *announced* position and wakes the follower, which
//! reads what changed from Synapse's database at once (RDATA carries no
//! values roomcache uses: the database stays the source of values). An
//! idle event writer's `POSITION` moves its position without rows, so the
//! minimum over writers does not stall.
//!
//! Redis keeps no history: while roomcache is not subscribed, lines are
//! lost. Nothing depends on them, though: the follower always reads from
//! its own durable positions in the database, polls every
//! `source_poll_interval_ms` besides, and catches up at once on every
//! (re)connection.
//!
//! Owns: the parsing of the channel's lines ([`wire`]), the subscription and
//! its reconnection ([`subscriber`]), the announced positions and the
//! wake-up ([`Replication`]). May not touch: any database, the supervisor,
//! positions roomcache has applied.

mod subscriber;
pub(crate) mod wire;

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

pub(crate) use subscriber::Subscriber;

/// The events stream's name on the channel.
pub(crate) const EVENTS: &str = "events";
/// The caches stream's name on the channel.
pub(crate) const CACHES: &str = "caches";

/// What the channel has told so far, shared by the subscriber (which
/// writes) and the follower (which reads and waits).
#[derive(Debug, Default)]
pub(crate) struct Replication {
    state: Mutex<Announced>,
    wake: Notify,
}

/// The positions announced on the channel and the connection's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Announced {
    /// Subscribed, and `REPLICATE` sent.
    pub(crate) connected: bool,
    /// Subscriptions made so far (a new one means lines may have been lost).
    pub(crate) connections: u64,
    /// Per stream, per process: the highest position announced (numbered
    /// RDATA token or POSITION's new token). Never lowered.
    pub(crate) positions: BTreeMap<String, BTreeMap<String, i64>>,
}

impl Announced {
    /// The positions announced for `stream`, per process.
    pub(crate) fn stream(&self, stream: &str) -> BTreeMap<String, i64> {
        self.positions.get(stream).cloned().unwrap_or_default()
    }
}

impl Replication {
    fn state(&self) -> MutexGuard<'_, Announced> {
        // The state is plain values updated in one step: usable after a panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy of what was announced.
    pub(crate) fn announced(&self) -> Announced {
        self.state().clone()
    }

    /// Returns once something was announced (or the connection changed)
    /// since the last call returned; at once if it already was.
    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }

    /// `instance` has persisted its rows of `stream` up to `position`.
    pub(crate) fn announce(&self, stream: &str, instance: &str, position: i64) {
        {
            let mut state = self.state();
            let known = state
                .positions
                .entry(stream.to_owned())
                .or_default()
                .entry(instance.to_owned())
                .or_insert(position);
            *known = (*known).max(position);
        }
        self.wake.notify_one();
    }

    /// The subscription is up (a new connection) or down.
    pub(crate) fn set_connected(&self, connected: bool) {
        {
            let mut state = self.state();
            if connected && !state.connected {
                state.connections += 1;
            }
            state.connected = connected;
        }
        metrics::gauge!("roomcache_source_redis_connected").set(if connected { 1.0 } else { 0.0 });
        self.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn announced_positions_only_grow_and_wake_the_follower() {
        let replication = Replication::default();
        replication.announce(EVENTS, "p1", 7);
        replication.announce(EVENTS, "p1", 5);
        replication.announce(EVENTS, "p2", 3);
        replication.announce(CACHES, "master", 11);
        let announced = replication.announced();
        assert_eq!(
            announced.stream(EVENTS),
            BTreeMap::from([("p1".to_owned(), 7), ("p2".to_owned(), 3)])
        );
        assert_eq!(announced.stream(CACHES).get("master"), Some(&11));
        assert!(announced.stream("typing").is_empty());
        // The wake-ups coalesce into one.
        replication.woken().await;
        replication.set_connected(true);
        replication.set_connected(true);
        replication.set_connected(false);
        replication.set_connected(true);
        replication.woken().await;
        let announced = replication.announced();
        assert!(announced.connected);
        assert_eq!(announced.connections, 2);
    }
}
