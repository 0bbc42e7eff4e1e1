//! The synchronisation primitives of the checked core.
//!
//! Under `cfg(roomcache_loom)` these are loom's instrumented types, so the
//! loom models can explore every interleaving; otherwise they are std's.
//! Code in this crate imports from here, never from `std::sync` directly.

#[cfg(roomcache_loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicU64, Ordering},
    Mutex, MutexGuard,
};

#[cfg(not(roomcache_loom))]
pub(crate) use std::sync::{
    atomic::{AtomicU64, Ordering},
    Mutex, MutexGuard,
};

/// Locks a mutex, recovering the data if a panicking thread poisoned it: the
/// checked core keeps its invariants at every unlock, so the data is sound.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
