//! Handing freed heap back to the operating system. glibc keeps freed
//! memory in the process (per-thread arenas), so a burst of large answers
//! or a large load would otherwise leave the process's RSS at its peak.
//!
//! Owns: [`release_freed_memory`] and the debounced request for it after
//! large answers. May not touch: anything else.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Answers with more rooms than this ask for a release of freed memory.
pub(crate) const LARGE_ANSWER_ROOMS: usize = 1_000;

static RELEASE_WANTED: AtomicBool = AtomicBool::new(false);

/// Returns the free pages of every arena to the operating system.
pub(crate) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; it only returns free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Asks for a release once the current answers are freed (at most one
/// release a second, by [`release_when_asked`]).
pub(crate) fn ask_for_release() {
    RELEASE_WANTED.store(true, Ordering::Relaxed);
}

/// Runs forever: once a second, releases freed memory if asked to.
pub(crate) async fn release_when_asked() {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        every.tick().await;
        if RELEASE_WANTED.swap(false, Ordering::Relaxed) {
            release_freed_memory();
        }
    }
}
