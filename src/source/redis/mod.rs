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
//! Nothing on the channel is trusted beyond what it costs to check it: a
//! line over `source_redis_max_line_bytes` is dropped once read; a position
//! is kept only for a stream roomcache follows and a writer it follows (the
//! configured event writers for the events and backfill streams; for the
//! caches and account-data streams, the Synapse processes the follower has
//! found in Synapse's database), only when an `RDATA` row parses as Synapse
//! parses it ([`rows`]), and only up to what Synapse has allocated (the
//! follower checks that against the stream's sequence and takes back what
//! passes it; the account-data and backfill streams' announcements only
//! wake it: those are read up to Synapse's `stream_positions`). Anything else moves
//! nothing, wakes nothing and keeps nothing: the map holds at most one
//! number per followed writer, and a step takes it by reference, not by
//! copy.
//!
//! Owns: the parsing of the channel's lines ([`wire`], [`rows`]), the
//! subscription and its reconnection ([`subscriber`]), the announced
//! positions and the wake-up ([`Replication`]). May not touch: any database,
//! the supervisor, positions roomcache has applied.

mod rows;
mod subscriber;
pub(crate) mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use roomcache_core::WriterName;
use tokio::sync::Notify;

pub(crate) use subscriber::Subscriber;

use super::rejected::{self, Reason};

/// The events stream's name on the channel.
pub(crate) const EVENTS: &str = "events";
/// The caches stream's name on the channel.
pub(crate) const CACHES: &str = "caches";
/// The account-data stream's name on the channel.
pub(crate) const ACCOUNT_DATA: &str = "account_data";
/// The backfill stream's name on the channel.
pub(crate) const BACKFILL: &str = "backfill";

/// What the channel has told so far, shared by the subscriber (which
/// writes) and the follower (which reads, waits, and takes back what it
/// refuses).
#[derive(Debug)]
pub(crate) struct Replication {
    state: Mutex<State>,
    wake: Notify,
    /// The configured event writers: the only ones whose events-stream
    /// positions are kept.
    writers: BTreeSet<WriterName>,
}

#[derive(Debug, Default)]
struct State {
    /// Subscribed, and `REPLICATE` sent.
    connected: bool,
    /// Subscriptions made so far (a new one means lines may have been lost).
    connections: u64,
    /// Copied only when a step still holds the previous version.
    announced: Arc<Announced>,
    /// Synapse's processes as its database names them (and the configured
    /// writers and `master`, the main process): the only ones whose caches
    /// and account-data positions are kept.
    processes: BTreeSet<String>,
    /// A caches or account-data announcement of a process not known yet was
    /// refused since the follower last asked (it may learn it anew).
    unknown_process_seen: bool,
}

/// The highest position announced per followed writer, per stream. Never
/// lowered, except by the follower taking back a position it refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Announced {
    /// Per configured event writer.
    pub(crate) events: BTreeMap<WriterName, i64>,
    /// Per Synapse process (caches stream).
    pub(crate) caches: BTreeMap<String, i64>,
    /// The highest announced by any known process (account-data stream;
    /// only a wake-up: the stream is followed from `stream_positions`).
    pub(crate) account_data: i64,
    /// Per configured event writer (backfill stream; only a wake-up: the
    /// stream is followed from `stream_positions`).
    pub(crate) backfill: BTreeMap<WriterName, i64>,
}

/// What a step sees of the channel: the connection and the announced
/// positions, shared (not copied).
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    pub(crate) connected: bool,
    pub(crate) connections: u64,
    pub(crate) announced: Arc<Announced>,
}

/// What became of an announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A higher position of a followed writer: kept, and the follower woken.
    Raised,
    /// A followed writer at or below what it announced before.
    Known,
    /// A stream roomcache does not follow.
    Ignored,
    /// Refused (counted and logged by the caller).
    Refused(Reason),
}

impl Replication {
    /// The channel's state for the configured event `writers` (which, with
    /// Synapse's main process `master`, are known Synapse processes from the
    /// start).
    pub(crate) fn new(writers: &[WriterName]) -> Replication {
        let processes = writers
            .iter()
            .map(|writer| writer.as_str().to_owned())
            .chain([WriterName::master().as_str().to_owned()])
            .collect();
        Replication {
            state: Mutex::new(State {
                processes,
                ..State::default()
            }),
            wake: Notify::new(),
            writers: writers.iter().cloned().collect(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is plain values updated in one step: usable after a panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection and the announced positions, as one step sees them.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let state = self.state();
        Snapshot {
            connected: state.connected,
            connections: state.connections,
            announced: state.announced.clone(),
        }
    }

    /// Returns once something was announced (or the connection changed)
    /// since the last call returned; at once if it already was.
    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Whether positions of `instance` on `stream` are kept: `Ok(false)`
    /// for a stream roomcache does not follow, an error for a writer (or
    /// process) it does not follow.
    pub(crate) fn admits(&self, stream: &str, instance: &str) -> Result<bool, Reason> {
        let known = match stream {
            EVENTS | BACKFILL => self.writers.contains(instance),
            CACHES | ACCOUNT_DATA => {
                let mut state = self.state();
                let known = state.processes.contains(instance);
                state.unknown_process_seen |= !known;
                known
            }
            _ => return Ok(false),
        };
        if known {
            Ok(true)
        } else {
            Err(Reason::UnknownWriter)
        }
    }

    /// `instance` says it has persisted its rows of `stream` up to
    /// `position`. Kept only for a followed stream and writer
    /// ([`Self::admits`]), and only when higher than before; only then is
    /// the follower woken.
    pub(crate) fn announce(&self, stream: &str, instance: &str, position: i64) -> Outcome {
        match self.admits(stream, instance) {
            Ok(true) => {}
            Ok(false) => return Outcome::Ignored,
            Err(reason) => return Outcome::Refused(reason),
        }
        let outcome = {
            let mut state = self.state();
            let announced = &mut state.announced;
            match (stream, self.writers.get(instance)) {
                (EVENTS, Some(writer)) => raise(
                    announced,
                    position,
                    |a| a.events.get(writer).copied(),
                    |a| {
                        a.events.insert(writer.clone(), position);
                    },
                ),
                (CACHES, _) => raise(
                    announced,
                    position,
                    |a| a.caches.get(instance).copied(),
                    |a| {
                        a.caches.insert(instance.to_owned(), position);
                    },
                ),
                (BACKFILL, Some(writer)) => raise(
                    announced,
                    position,
                    |a| a.backfill.get(writer).copied(),
                    |a| {
                        a.backfill.insert(writer.clone(), position);
                    },
                ),
                (ACCOUNT_DATA, _) => raise(
                    announced,
                    position,
                    |a| Some(a.account_data),
                    |a| a.account_data = position,
                ),
                _ => Outcome::Ignored,
            }
        };
        if outcome == Outcome::Raised {
            self.wake.notify_one();
        }
        outcome
    }

    /// The follower refused `position`, announced for `instance` on
    /// `stream` (beyond what Synapse has allocated): unless something
    /// else was announced since, the writer is back at `instead`.
    pub(crate) fn take_back(&self, stream: &str, instance: &str, position: i64, instead: i64) {
        let mut state = self.state();
        let announced = &mut state.announced;
        match stream {
            EVENTS if announced.events.get(instance) == Some(&position) => {
                if let Some(writer) = self.writers.get(instance) {
                    Arc::make_mut(announced)
                        .events
                        .insert(writer.clone(), instead);
                }
            }
            CACHES if announced.caches.get(instance) == Some(&position) => {
                Arc::make_mut(announced)
                    .caches
                    .insert(instance.to_owned(), instead);
            }
            ACCOUNT_DATA if announced.account_data == position => {
                Arc::make_mut(announced).account_data = instead;
            }
            _ => {}
        }
    }

    /// Synapse's processes, as found in its database: their caches and
    /// account-data announcements are kept from now on (the set only grows,
    /// with names Synapse itself wrote).
    pub(crate) fn learn_processes<'a>(&self, processes: impl IntoIterator<Item = &'a str>) {
        let mut state = self.state();
        for process in processes {
            if !state.processes.contains(process) {
                state.processes.insert(process.to_owned());
            }
        }
    }

    /// True once after a caches or account-data announcement of a process
    /// not known yet was refused (the follower then looks for new processes
    /// in Synapse's database, at most every few seconds).
    pub(crate) fn take_unknown_process_seen(&self) -> bool {
        std::mem::take(&mut self.state().unknown_process_seen)
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

/// Raises a position kept in `announced` (read by `get`, written by `set`)
/// to `position` when that is higher, copying the map only if a step still
/// holds the previous version.
fn raise(
    announced: &mut Arc<Announced>,
    position: i64,
    get: impl Fn(&Announced) -> Option<i64>,
    set: impl FnOnce(&mut Announced),
) -> Outcome {
    if get(announced).is_some_and(|known| known >= position) {
        return Outcome::Known;
    }
    set(Arc::make_mut(announced));
    Outcome::Raised
}

/// Counts and logs a refused announcement.
pub(crate) fn refused(stream: &str, reason: Reason, instance: &str, position: i64) {
    rejected::reject(followed_stream(stream), reason, instance, position);
}

/// `stream` as a label value: one of the followed streams' names.
fn followed_stream(stream: &str) -> &'static str {
    match stream {
        EVENTS => EVENTS,
        CACHES => CACHES,
        BACKFILL => BACKFILL,
        _ => ACCOUNT_DATA,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writers() -> Vec<WriterName> {
        vec![
            WriterName::parse("p1").unwrap(),
            WriterName::parse("p2").unwrap(),
        ]
    }

    #[tokio::test]
    async fn announced_positions_only_grow_and_wake_the_follower() {
        let replication = Replication::new(&writers());
        assert_eq!(replication.announce(EVENTS, "p1", 7), Outcome::Raised);
        assert_eq!(replication.announce(EVENTS, "p1", 5), Outcome::Known);
        assert_eq!(replication.announce(EVENTS, "p2", 3), Outcome::Raised);
        assert_eq!(replication.announce(CACHES, "master", 11), Outcome::Raised);
        assert_eq!(
            replication.announce(ACCOUNT_DATA, "master", 4),
            Outcome::Raised
        );
        assert_eq!(replication.announce(BACKFILL, "p2", 2), Outcome::Raised);
        assert_eq!(replication.announce(BACKFILL, "p2", 2), Outcome::Known);
        let snapshot = replication.snapshot();
        let p = |name: &str| WriterName::parse(name).unwrap();
        assert_eq!(
            snapshot.announced.events,
            BTreeMap::from([(p("p1"), 7), (p("p2"), 3)])
        );
        assert_eq!(snapshot.announced.caches.get("master"), Some(&11));
        assert_eq!(snapshot.announced.account_data, 4);
        assert_eq!(snapshot.announced.backfill, BTreeMap::from([(p("p2"), 2)]));
        // The wake-ups coalesce into one.
        replication.woken().await;
        replication.set_connected(true);
        replication.set_connected(true);
        replication.set_connected(false);
        replication.set_connected(true);
        replication.woken().await;
        let snapshot = replication.snapshot();
        assert!(snapshot.connected);
        assert_eq!(snapshot.connections, 2);
    }

    #[test]
    fn writers_and_streams_not_followed_keep_nothing() {
        let replication = Replication::new(&writers());
        for (stream, instance) in [
            (EVENTS, "p9"),
            (BACKFILL, "p9"),
            (EVENTS, "x".repeat(10_000).as_str()),
            (CACHES, "stranger"),
            (ACCOUNT_DATA, "stranger"),
        ] {
            assert_eq!(
                replication.announce(stream, instance, 9_999_999_999),
                Outcome::Refused(Reason::UnknownWriter)
            );
        }
        assert_eq!(replication.announce("typing", "p1", 5), Outcome::Ignored);
        assert_eq!(*replication.snapshot().announced, Announced::default());
        // The follower looks for new processes; one found is followed.
        assert!(replication.take_unknown_process_seen());
        assert!(!replication.take_unknown_process_seen());
        replication.learn_processes(["stranger"]);
        assert_eq!(replication.announce(CACHES, "stranger", 3), Outcome::Raised);
        assert_eq!(replication.announce(CACHES, "p1", 4), Outcome::Raised);
    }

    #[test]
    fn a_step_s_snapshot_is_shared_and_a_refused_position_is_taken_back() {
        let replication = Replication::new(&writers());
        replication.announce(EVENTS, "p2", 9_999_999_999);
        let held = replication.snapshot();
        let again = replication.snapshot();
        assert!(Arc::ptr_eq(&held.announced, &again.announced));
        // The follower refuses it; a later announcement is kept.
        replication.take_back(EVENTS, "p2", 9_999_999_999, 40);
        let p2 = WriterName::parse("p2").unwrap();
        assert_eq!(replication.snapshot().announced.events.get(&p2), Some(&40));
        assert_eq!(held.announced.events.get(&p2), Some(&9_999_999_999));
        replication.announce(EVENTS, "p2", 41);
        replication.take_back(EVENTS, "p2", 9_999_999_999, 40);
        assert_eq!(replication.snapshot().announced.events.get(&p2), Some(&41));
    }
}
