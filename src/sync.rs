//! The synchronisation primitives used by the model-checked core
//! (positions, publish hand-off, waiters).
//!
//! Under `cfg(loom)` these are loom's instrumented types, so `loom_tests/`
//! can explore every interleaving; otherwise they are std's. Code in the
//! checked core imports from here, never from `std::sync` directly.

#[cfg(loom)]
pub use loom::sync::{
    atomic::{AtomicI64, AtomicU64, Ordering},
    Arc, Condvar, Mutex, MutexGuard,
};

#[cfg(not(loom))]
pub use std::sync::{
    atomic::{AtomicI64, AtomicU64, Ordering},
    Arc, Condvar, Mutex, MutexGuard,
};

/// Locks a mutex, recovering the data if a panicking thread poisoned it: the
/// checked core keeps its invariants at every unlock, so the data is sound.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    #[cfg(loom)]
    {
        mutex
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
    #[cfg(not(loom))]
    {
        mutex
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
