//! Positions roomcache refuses to believe: counted, and logged at most once
//! per [`LOG_EVERY`] for each stream and reason (a flood of hostile lines
//! must not become a flood of log lines).
//!
//! A position is refused when it comes from a writer roomcache does not
//! follow, with a row Synapse would not parse, or beyond what Synapse has
//! allocated on that stream's sequence (a position that was never handed
//! out cannot have been persisted). Nothing refused moves anything.
//!
//! Owns: the metric `roomcache_source_rejected_positions_total{stream,
//! reason}`, its rate-limited warnings and how much of hostile text a
//! warning or error shows ([`truncated`]). May not touch: positions
//! (whoever refuses decides what happens instead).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::warn;

/// At most 64 bytes of `text` (for error messages of hostile input).
pub(crate) fn truncated(text: &str) -> String {
    let mut end = text.len().min(64);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Warnings for one stream and reason come at most this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Why a position was refused (the metric's `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Reason {
    /// Announced for a writer (or a process) roomcache does not follow.
    UnknownWriter,
    /// Announced on an `RDATA` line whose row Synapse would not parse.
    BadRow,
    /// Announced on Redis beyond Synapse's allocated maximum.
    BeyondAllocated,
    /// A row of Synapse's own `stream_positions` beyond its allocated
    /// maximum (a position Synapse adopted from a bogus announcement).
    StoredBeyondAllocated,
}

impl Reason {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Reason::UnknownWriter => "unknown_writer",
            Reason::BadRow => "bad_row",
            Reason::BeyondAllocated => "beyond_allocated",
            Reason::StoredBeyondAllocated => "stored_beyond_allocated",
        }
    }
}

/// When each kind of warning was last logged, and how many were left out
/// since.
#[allow(clippy::type_complexity)]
static LOGGED: Mutex<Option<HashMap<(&'static str, &'static str), (Instant, u64)>>> =
    Mutex::new(None);

/// Whether a warning of kind `key` may be logged now: `Some(left out since
/// the last one)` at most once per [`LOG_EVERY`] for each key, `None`
/// otherwise (the caller leaves it out).
pub(crate) fn may_log(key: (&'static str, &'static str)) -> Option<u64> {
    let mut logged = LOGGED.lock().unwrap_or_else(PoisonError::into_inner);
    let logged = logged.get_or_insert_with(HashMap::new);
    match logged.get_mut(&key) {
        Some((last, left_out)) if last.elapsed() < LOG_EVERY => {
            *left_out += 1;
            None
        }
        Some((last, left_out)) => {
            *last = Instant::now();
            Some(std::mem::take(left_out))
        }
        None => {
            logged.insert(key, (Instant::now(), 0));
            Some(0)
        }
    }
}

/// Counts a refused position of `stream` (one of the followed streams'
/// names: the label's values stay few) and logs it unless one was logged
/// less than [`LOG_EVERY`] ago.
pub(crate) fn reject(stream: &'static str, reason: Reason, instance: &str, position: i64) {
    metrics::counter!(
        "roomcache_source_rejected_positions_total",
        "stream" => stream,
        "reason" => reason.label()
    )
    .increment(1);
    let Some(left_out) = may_log((stream, reason.label())) else {
        return;
    };
    let instance = truncated(instance);
    warn!(
        stream,
        reason = reason.label(),
        %instance,
        position,
        refused_since_last_warning = left_out,
        "refusing a position of Synapse's replication stream: it moves nothing"
    );
}
