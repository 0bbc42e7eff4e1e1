//! Per-writer stream positions, the tokens built from them, and the waiters
//! for a token.
//!
//! Owns: each configured writer's *durable* position (every row of that
//! writer up to it is applied, committed and published), the claims of
//! batches being applied (so batches may finish out of order), the linear
//! token (minimum over writers), the vector token, and the readers waiting
//! for a token. May not touch: actors, the database, the read index, clocks.
//! It is std-only and built on [`crate::sync`], so the loom models can
//! check it.
//!
//! Protocol (spec Part A, adapted to a *reader* of writers' streams):
//!
//! 1. [`PositionTracker::claim`] reserves the range `(after, up_to]` of a
//!    writer for one batch, atomically with reading where the previous
//!    claim ended, so two batches never claim the same row and there is no
//!    window between "read the position" and "register the claim" (the
//!    reader's form of the in-flight fetch guard, PR #11045).
//! 2. The caller applies and commits the rows of the claim, then, inside
//!    one publication of the [`PublishGate`], publishes them to the read
//!    index and calls [`PositionTracker::finish`] (or
//!    [`PositionTracker::abandon`] if the commit failed). `finish` and
//!    `advance` take the [`Publication`] as proof.
//! 3. A writer's durable position moves by the contiguous-prefix rule
//!    (spec A.3): to the end of the highest finished claim below the lowest
//!    unfinished one. It never moves back.
//! 4. The linear position `L` is the minimum durable position over the
//!    configured writers, and nothing else: bare positions never feed a
//!    gap-free walk (option S1 of spec A.13), so a writer that announces a
//!    position taken from the shared sequence cannot push `L` onto another
//!    writer's unapplied row.
//! 5. Waiters are registered and checked under the same lock that
//!    `finish`/`advance` take, and woken after it is released, so no
//!    wake-up is lost.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::publish::{Publication, PublishGate};
use crate::sync::{lock, Mutex};
use crate::token::StreamToken;
use crate::writer::WriterName;

/// Why the tracker refused a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PositionError {
    #[error("writer {0:?} is not configured (settings: writers)")]
    UnknownWriter(WriterName),
}

/// A batch's reservation of a writer's range `(after, up_to]`.
///
/// Rows of the batch at or below `after` are already durable or claimed by
/// an earlier batch and must be skipped; the others are the batch's to
/// apply. An empty claim (`up_to <= after`) reserves nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub writer: WriterName,
    pub after: i64,
    pub up_to: i64,
}

impl Claim {
    /// True when the claim reserves no id.
    pub fn is_empty(&self) -> bool {
        self.up_to <= self.after
    }

    /// True when the row `stream_id` is this claim's to apply.
    pub fn covers(&self, stream_id: i64) -> bool {
        self.after < stream_id && stream_id <= self.up_to
    }
}

/// One writer's progress as this view sees it.
#[derive(Debug, Default)]
struct WriterProgress {
    /// Every row of the writer at or below it is applied, committed and published.
    durable: i64,
    /// Upper ends of claims not yet finished.
    in_flight: BTreeSet<i64>,
    /// Upper ends of finished claims that lie above an unfinished one, so
    /// they cannot be folded into `durable` yet.
    finished: BTreeSet<i64>,
}

impl WriterProgress {
    /// The end of the last claim (or the durable position if none is open).
    fn claimed_up_to(&self) -> i64 {
        let in_flight = self.in_flight.last().copied().unwrap_or(i64::MIN);
        let finished = self.finished.last().copied().unwrap_or(i64::MIN);
        self.durable.max(in_flight).max(finished)
    }

    /// The contiguous-prefix rule (spec A.3): `durable` moves to the largest
    /// finished end strictly below the lowest unfinished one. Returns true
    /// when it moved.
    fn fold(&mut self) -> bool {
        let candidate = match self.in_flight.first().copied() {
            Some(lowest_unfinished) => {
                let below: Vec<i64> = self.finished.range(..lowest_unfinished).copied().collect();
                for end in &below {
                    self.finished.remove(end);
                }
                below.last().copied()
            }
            None => {
                let last = self.finished.last().copied();
                self.finished.clear();
                last
            }
        };
        match candidate {
            Some(end) if end > self.durable => {
                self.durable = end;
                true
            }
            _ => false,
        }
    }
}

#[derive(Debug)]
struct Waiter {
    target: StreamToken,
    waker: Waker,
}

#[derive(Debug)]
struct TrackerState {
    writers: BTreeMap<WriterName, WriterProgress>,
    waiters: BTreeMap<u64, Waiter>,
    next_waiter: u64,
}

impl TrackerState {
    fn token(&self) -> StreamToken {
        let stream = self.writers.values().map(|w| w.durable).min().unwrap_or(0);
        let instance_map = self
            .writers
            .iter()
            .filter(|(_, w)| w.durable > stream)
            .map(|(name, w)| (name.clone(), w.durable))
            .collect();
        StreamToken {
            stream,
            instance_map,
        }
    }

    /// Removes the waiters the current token covers and returns their wakers.
    fn take_covered_waiters(&mut self) -> Vec<Waker> {
        if self.waiters.is_empty() {
            return Vec::new();
        }
        let token = self.token();
        let covered: Vec<u64> = self
            .waiters
            .iter()
            .filter(|(_, w)| w.target.is_before_or_eq(&token))
            .map(|(id, _)| *id)
            .collect();
        covered
            .into_iter()
            .filter_map(|id| self.waiters.remove(&id))
            .map(|w| w.waker)
            .collect()
    }
}

/// The durable position of every configured writer, the open claims, and
/// the readers waiting for a token. Shared (`Arc`) between the supervisor,
/// which claims, finishes and abandons, and the API, which reads and waits.
#[derive(Debug)]
pub struct PositionTracker {
    state: Mutex<TrackerState>,
    gate: PublishGate,
}

impl PositionTracker {
    /// Starts from the positions loaded from `stream_positions`.
    ///
    /// A configured writer without a stored position starts at 0: the cache
    /// has applied none of its rows, so it must not skip any (spec invariant
    /// 18d starts such a writer at the linear position, which is safe for a
    /// writer's own view but would make a reader skip the rows of a writer
    /// that had not sent anything before a restart; a writer with no history
    /// moves itself forward with a position row). Stored positions of
    /// writers that are not configured are ignored but kept in the table,
    /// so a writer added back resumes from what the cache really applied.
    pub fn new(writers: &[WriterName], stored: &BTreeMap<WriterName, i64>) -> Self {
        let writers = writers
            .iter()
            .map(|w| {
                let progress = WriterProgress {
                    durable: stored.get(w).copied().unwrap_or(0),
                    ..WriterProgress::default()
                };
                (w.clone(), progress)
            })
            .collect();
        Self {
            state: Mutex::new(TrackerState {
                writers,
                waiters: BTreeMap::new(),
                next_waiter: 0,
            }),
            gate: PublishGate::new(),
        }
    }

    /// The gate through which committed groups are published (rows, then
    /// [`PositionTracker::finish`]) and through which reads take their
    /// token and rows as one snapshot. Its publications are the only ones
    /// [`PositionTracker::finish`] and [`PositionTracker::advance`] accept.
    pub fn gate(&self) -> &PublishGate {
        &self.gate
    }

    pub fn is_configured(&self, writer: &str) -> bool {
        lock(&self.state).writers.contains_key(writer)
    }

    /// The durable position of `writer`, if it is configured.
    pub fn position(&self, writer: &str) -> Option<i64> {
        lock(&self.state).writers.get(writer).map(|w| w.durable)
    }

    /// Every configured writer's durable position.
    pub fn positions(&self) -> BTreeMap<WriterName, i64> {
        lock(&self.state)
            .writers
            .iter()
            .map(|(name, w)| (name.clone(), w.durable))
            .collect()
    }

    /// The end of `writer`'s last claim: the durable position, or higher
    /// while batches are being applied.
    pub fn claimed_up_to(&self, writer: &str) -> Option<i64> {
        lock(&self.state)
            .writers
            .get(writer)
            .map(WriterProgress::claimed_up_to)
    }

    /// The current vector token: `stream` is the linear position (minimum
    /// over the configured writers), the map holds the writers ahead of it.
    pub fn token(&self) -> StreamToken {
        lock(&self.state).token()
    }

    /// The linear position: every row at or below it, of every configured
    /// writer, is applied.
    pub fn linear_position(&self) -> i64 {
        lock(&self.state).token().stream
    }

    /// Reserves `writer`'s range after its last claim up to `up_to` for one
    /// batch. The claim is empty when `up_to` is not above the last claim
    /// (a replay of rows already durable or being applied).
    pub fn claim(&self, writer: &WriterName, up_to: i64) -> Result<Claim, PositionError> {
        let mut state = lock(&self.state);
        let progress = state
            .writers
            .get_mut(writer)
            .ok_or_else(|| PositionError::UnknownWriter(writer.clone()))?;
        let after = progress.claimed_up_to();
        if up_to > after {
            progress.in_flight.insert(up_to);
        }
        Ok(Claim {
            writer: writer.clone(),
            after,
            up_to,
        })
    }

    /// Marks a claim applied, committed and published. The writer's durable
    /// position moves by the contiguous-prefix rule, and the waiters the
    /// new token covers are woken. Returns true when the position moved.
    /// Finishing an empty, abandoned or already finished claim does nothing.
    pub fn finish(&self, claim: &Claim, publication: &Publication<'_>) -> bool {
        debug_assert!(
            publication.is_of(&self.gate),
            "a publication of another gate"
        );
        if claim.is_empty() {
            return false;
        }
        let (moved, wakers) = {
            let mut state = lock(&self.state);
            let Some(progress) = state.writers.get_mut(&claim.writer) else {
                return false;
            };
            if !progress.in_flight.remove(&claim.up_to) {
                return false;
            }
            progress.finished.insert(claim.up_to);
            let moved = progress.fold();
            let wakers = if moved {
                state.take_covered_waiters()
            } else {
                Vec::new()
            };
            (moved, wakers)
        };
        for waker in wakers {
            waker.wake();
        }
        moved
    }

    /// Withdraws a claim whose rows were not committed, together with every
    /// later claim of the same writer (their rows were prepared on top of
    /// it and are rolled back with it: the supervisor commits a group in
    /// one transaction). The writer's next claim starts where the earlier
    /// claims end, so the rows are applied when the writer sends them again.
    pub fn abandon(&self, claim: &Claim) {
        if claim.is_empty() {
            return;
        }
        let mut state = lock(&self.state);
        if let Some(progress) = state.writers.get_mut(&claim.writer) {
            let withdrawn: Vec<i64> = progress.in_flight.range(claim.up_to..).copied().collect();
            for end in withdrawn {
                progress.in_flight.remove(&end);
            }
            let withdrawn: Vec<i64> = progress.finished.range(claim.up_to..).copied().collect();
            for end in withdrawn {
                progress.finished.remove(&end);
            }
        }
    }

    /// Moves `writer` forward to `position`: a claim of everything up to it
    /// that finishes at once. It takes effect only once earlier claims have
    /// finished, so it never passes a row being applied. Call it only when
    /// every row of `writer` up to `position` is applied (or known not to
    /// exist). Returns true when the durable position moved.
    pub fn advance(
        &self,
        writer: &WriterName,
        position: i64,
        publication: &Publication<'_>,
    ) -> bool {
        match self.claim(writer, position) {
            Ok(claim) if !claim.is_empty() => self.finish(&claim, publication),
            _ => false,
        }
    }

    /// Moves `writer` back to `position`, below its durable position: the
    /// repair of a position that ran ahead of its source (it claimed rows
    /// the source never allocated), by the one write path once the lower
    /// position is durable. The only way a position ever goes down; tokens
    /// handed out before may be ahead of the tracker's afterwards.
    ///
    /// Refused (false, nothing changes) while the writer has a claim open:
    /// the caller lowers only while no batch is being applied. Also false
    /// when `position` is not below the durable position.
    pub fn lower(&self, writer: &WriterName, position: i64, publication: &Publication<'_>) -> bool {
        debug_assert!(
            publication.is_of(&self.gate),
            "a publication of another gate"
        );
        let mut state = lock(&self.state);
        let Some(progress) = state.writers.get_mut(writer) else {
            return false;
        };
        if !progress.in_flight.is_empty() || position >= progress.durable {
            return false;
        }
        progress.durable = position;
        progress.finished.clear();
        true
    }

    /// True when `writer` has no claim open (nothing of it is being applied).
    pub fn is_idle(&self, writer: &str) -> bool {
        lock(&self.state)
            .writers
            .get(writer)
            .is_none_or(|w| w.in_flight.is_empty())
    }

    /// `target` without the entries of writers that are not configured:
    /// the cache can never reach them, so a wait for them could only time
    /// out (the reader's form of future-token clamping, spec A.6 item 7).
    /// Returns the clamped token and whether anything was removed.
    pub fn clamp(&self, target: &StreamToken) -> (StreamToken, bool) {
        let state = lock(&self.state);
        let instance_map: BTreeMap<WriterName, i64> = target
            .instance_map
            .iter()
            .filter(|(w, _)| state.writers.contains_key(*w))
            .map(|(w, p)| (w.clone(), *p))
            .collect();
        let clamped = instance_map.len() != target.instance_map.len();
        (
            StreamToken {
                stream: target.stream,
                instance_map,
            },
            clamped,
        )
    }

    /// A future that completes, with the tracker's token, once that token
    /// covers `target`. Dropping it (for example at a timeout) removes its
    /// registration.
    pub fn wait_for(&self, target: StreamToken) -> WaitForToken<'_> {
        WaitForToken {
            tracker: self,
            target,
            registration: None,
        }
    }

    /// Number of registered waiters (for tests and metrics).
    pub fn waiter_count(&self) -> usize {
        lock(&self.state).waiters.len()
    }
}

/// Completes when the tracker's token covers the target. The check and the
/// registration of the waker happen under the lock `finish` takes, so no
/// wake-up can be lost between them.
#[derive(Debug)]
pub struct WaitForToken<'a> {
    tracker: &'a PositionTracker,
    target: StreamToken,
    registration: Option<u64>,
}

impl Future for WaitForToken<'_> {
    type Output = StreamToken;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<StreamToken> {
        let this = self.get_mut();
        let mut state = lock(&this.tracker.state);
        let token = state.token();
        if this.target.is_before_or_eq(&token) {
            if let Some(id) = this.registration.take() {
                state.waiters.remove(&id);
            }
            return Poll::Ready(token);
        }
        if let Some(waiter) = this.registration.and_then(|id| state.waiters.get_mut(&id)) {
            if !waiter.waker.will_wake(cx.waker()) {
                waiter.waker = cx.waker().clone();
            }
            return Poll::Pending;
        }
        let id = state.next_waiter;
        state.next_waiter += 1;
        state.waiters.insert(
            id,
            Waiter {
                target: this.target.clone(),
                waker: cx.waker().clone(),
            },
        );
        this.registration = Some(id);
        Poll::Pending
    }
}

impl Drop for WaitForToken<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.registration.take() {
            lock(&self.tracker.state).waiters.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(writer: &str) -> WriterName {
        WriterName::parse(writer).unwrap()
    }

    fn tracker(writers: &[&str], stored: &[(&str, i64)]) -> PositionTracker {
        let writers: Vec<WriterName> = writers.iter().map(|w| name(w)).collect();
        let stored = stored.iter().map(|(w, p)| (name(w), *p)).collect();
        PositionTracker::new(&writers, &stored)
    }

    fn advance(tracker: &PositionTracker, writer: &str, position: i64) -> bool {
        tracker
            .gate()
            .publish(|publication| tracker.advance(&name(writer), position, publication))
    }

    #[test]
    fn linear_token_is_the_minimum_and_the_map_holds_writers_ahead() {
        let t = tracker(&["a", "b"], &[("a", 3), ("b", 5)]);
        assert_eq!(t.token().to_string(), "m3~b.5");
        assert!(advance(&t, "a", 6));
        assert_eq!(t.token().to_string(), "m5~a.6");
        assert!(!advance(&t, "a", 2));
        assert_eq!(t.position("a"), Some(6));
    }

    #[test]
    fn a_writer_without_a_stored_position_starts_at_zero() {
        let t = tracker(&["a", "b", "c"], &[("a", 3), ("b", 5), ("gone", 1)]);
        assert_eq!(t.position("c"), Some(0));
        assert!(!t.is_configured("gone"));
    }

    #[test]
    fn a_position_is_lowered_only_when_nothing_of_the_writer_is_in_flight() {
        let t = tracker(&["a", "b"], &[("a", 9_999), ("b", 5)]);
        let lower = |writer: &str, position| {
            t.gate()
                .publish(|publication| t.lower(&name(writer), position, publication))
        };
        let claim = t.claim(&name("a"), 10_000).unwrap();
        assert!(!t.is_idle("a"));
        assert!(!lower("a", 7), "a claim is open");
        t.abandon(&claim);
        assert!(t.is_idle("a"));
        assert!(lower("a", 7));
        assert_eq!(t.token().to_string(), "m5~a.7");
        assert!(!lower("a", 8), "not a lowering");
        assert!(!lower("gone", 1));
        // It moves on from there as before.
        assert!(advance(&t, "a", 8));
        assert_eq!(t.position("a"), Some(8));
    }

    #[test]
    fn claims_of_unknown_writers_are_refused() {
        let t = tracker(&["a"], &[]);
        assert_eq!(
            t.claim(&name("b"), 4),
            Err(PositionError::UnknownWriter(name("b")))
        );
    }
}
