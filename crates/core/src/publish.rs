//! The publish gate: the hand-off from a committed group to readers, so a
//! read sees the read index and the position token as one snapshot.
//!
//! Owns: the publication epoch (a sequence lock) and the publisher's mutex.
//! May not touch: the read index, the tracker, the database — it runs the
//! closures it is given. Std-only, built on [`crate::sync`], so the loom
//! models can check it.
//!
//! The supervisor calls [`PublishGate::publish`] only after Postgres has
//! committed a group, with a closure that publishes the group's rows to the
//! read index and then finishes its claims in the position tracker
//! ("commit, then publish, then advance"). The closure receives a
//! [`Publication`], which only this gate can make: the tracker's
//! `finish`/`advance` and the read index's `publish` require one, so no
//! code can move a position or show a row outside a publication. Readers call
//! [`PublishGate::read`] with a closure that reads the token and then the
//! rows. The epoch is odd while a publication runs; a read that saw the
//! same even epoch before and after its closure overlapped no publication,
//! so its rows are exactly those at or below its token. A read that keeps
//! colliding with publications takes the publisher's mutex instead, so it
//! waits for at most one publication and never starves.
//!
//! Why the optimistic path is sound without fences: every datum a read
//! closure looks at is behind a lock (the read index's `RwLock`, the
//! tracker's mutex). If the read saw anything a publication wrote, the
//! publication's first epoch increment happens-before that lock
//! acquisition and so before the second epoch load, which then cannot
//! return the first value.

use crate::sync::{lock, AtomicU64, Mutex, Ordering};

/// Optimistic attempts before a read takes the publisher's mutex. Loom
/// models have few publications, so under loom one collision is enough to
/// reach the fallback path and have it checked too.
#[cfg(not(roomcache_loom))]
const OPTIMISTIC_ATTEMPTS: usize = 3;
#[cfg(roomcache_loom)]
const OPTIMISTIC_ATTEMPTS: usize = 1;

/// Proof that the holder runs inside [`PublishGate::publish`]: the only
/// place one is made. Whatever moves a position or shows rows to readers
/// takes `&Publication`.
#[derive(Debug)]
pub struct Publication<'gate> {
    gate: &'gate PublishGate,
}

impl Publication<'_> {
    /// True when this publication runs in `gate`.
    pub fn is_of(&self, gate: &PublishGate) -> bool {
        std::ptr::eq(self.gate, gate)
    }
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct PublishGate {
    epoch: AtomicU64,
    publishing: Mutex<()>,
}

/// Makes the epoch even again when a publication ends, even by a panic.
struct EndOfPublication<'a>(&'a AtomicU64);

impl Drop for EndOfPublication<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl PublishGate {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `apply` (publish committed rows, then advance positions) as one
    /// step for readers. Call it only after the rows are committed.
    pub fn publish<R>(&self, apply: impl FnOnce(&Publication<'_>) -> R) -> R {
        let _publisher = lock(&self.publishing);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let _end = EndOfPublication(&self.epoch);
        apply(&Publication { gate: self })
    }

    /// Runs `read` so that it overlaps no publication; `read` may run more
    /// than once, so it must have no side effects.
    pub fn read<R>(&self, mut read: impl FnMut() -> R) -> R {
        for _ in 0..OPTIMISTIC_ATTEMPTS {
            let before = self.epoch.load(Ordering::SeqCst);
            if before % 2 == 1 {
                break;
            }
            let value = read();
            if self.epoch.load(Ordering::SeqCst) == before {
                return value;
            }
        }
        let _publisher = lock(&self.publishing);
        read()
    }

    /// Number of publications so far.
    pub fn publications(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst) / 2
    }
}

#[cfg(all(test, not(roomcache_loom)))]
mod tests {
    use super::*;

    #[test]
    fn publications_are_counted_and_reads_see_their_effects() {
        let gate = PublishGate::new();
        let value = Mutex::new(0);
        assert_eq!(gate.read(|| *lock(&value)), 0);
        let returned = gate.publish(|publication| {
            assert!(publication.is_of(&gate));
            assert!(!publication.is_of(&PublishGate::new()));
            *lock(&value) = 7;
            "done"
        });
        assert_eq!(returned, "done");
        assert_eq!(gate.read(|| *lock(&value)), 7);
        assert_eq!(gate.publications(), 1);
    }

    #[test]
    fn a_panicking_publication_leaves_the_gate_usable() {
        let gate = PublishGate::new();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            gate.publish(|_| panic!("publication failed"))
        }));
        assert!(outcome.is_err());
        assert_eq!(gate.publications(), 1, "the epoch is even again");
        assert_eq!(gate.read(|| 5), 5);
    }
}
