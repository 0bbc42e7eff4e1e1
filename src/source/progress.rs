//! Source mode's progress, as `GET /v1/status` shows it.
//!
//! Owns: [`SourceProgress`]. May not touch: anything that runs (the
//! follower and start-up report to it; the API reads it).

/// Source mode's progress, for `GET /v1/status`: the follower reports the
/// source's position, start-up the rooms it invalidated.
#[derive(Debug, Default)]
pub(crate) struct SourceProgress {
    source_position: std::sync::atomic::AtomicI64,
    invalidated_at_start: std::sync::atomic::AtomicUsize,
}

impl SourceProgress {
    pub(crate) fn set_source_position(&self, position: i64) {
        self.source_position
            .store(position, std::sync::atomic::Ordering::Release);
    }

    pub(crate) fn source_position(&self) -> i64 {
        self.source_position
            .load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn set_invalidated_at_start(&self, rooms: usize) {
        self.invalidated_at_start
            .store(rooms, std::sync::atomic::Ordering::Release);
    }

    pub(crate) fn invalidated_at_start(&self) -> usize {
        self.invalidated_at_start
            .load(std::sync::atomic::Ordering::Acquire)
    }
}
