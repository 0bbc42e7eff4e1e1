//! The rooms' data, second part: each room's latest events for the initial
//! timeline, as plain values. Synapse 1.163.2 answers a room's initial
//! Sliding Sync timeline with one query on `events` (facts read in its
//! `paginate_room_events_by_topological_ordering`, backwards from the
//! request's token, no lower bound): the room's events that are not
//! outliers (rejected and soft-failed ones included; backfilled ones, with
//! negative stream orderings, too) whose stream ordering is at most the
//! token's highest position, ordered by (topological ordering, stream
//! ordering) descending, twice the limit fetched; then those persisted by a
//! writer after that writer's position in the token are dropped, `limited`
//! is "twice the limit fetched, or more than the limit left", the first
//! `limit` are kept, and fetching them drops the rejected ones.
//!
//! [`LatestEvents`] holds the top of that order (at most a setting's
//! number of events), and [`LatestEvents::initial_timeline`] answers the
//! query from it exactly, or says it cannot.
//!
//! Owns: the held window, its bound, its stored form and the answer. May
//! not touch: which feed rows reach it (the rules'), actors, the database.

use std::sync::Arc;

use roomcache_core::StreamToken;
use serde::{Deserialize, Serialize};

use super::EventId;

/// Events held per room by default: with the held state (measured at
/// ~440 bytes a room on the fixtures) this keeps a room under 1 KiB in the
/// read index (docs/synapse.md A.7).
pub const DEFAULT_TIMELINE_EVENTS: usize = 8;

/// One event of a room's timeline, where Synapse's query places it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEvent {
    pub event_id: EventId,
    /// `events.topological_ordering` (the event's depth).
    pub topological_ordering: i64,
    /// `events.stream_ordering` (negative when backfilled).
    pub stream_ordering: i64,
    /// `events.instance_name`: the writer that persisted it.
    pub instance_name: Arc<str>,
    /// Rejected: selected by the query, dropped when fetched.
    pub rejected: bool,
}

impl TimelineEvent {
    fn order(&self) -> (i64, i64) {
        (self.topological_ordering, self.stream_ordering)
    }
}

/// A room's latest events (those not outliers), newest first in Synapse's
/// order; at most the setting's number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatestEvents {
    events: Arc<Vec<TimelineEvent>>,
    /// Every such event of the room is held (none fell below the window).
    complete: bool,
    /// An event came without its topological ordering: its place, and so
    /// the room's order, is unknown until the room is recomputed or purged.
    unordered: bool,
}

impl Default for LatestEvents {
    fn default() -> Self {
        LatestEvents {
            events: Arc::default(),
            complete: true,
            unordered: false,
        }
    }
}

/// Why a room's initial timeline cannot be answered exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimelineUnknown {
    /// Fewer events are held than the answer needs.
    NotHeld,
    /// An event of the room came without its topological ordering.
    Unordered,
}

/// The initial timeline at a token: the rows Synapse's query keeps (newest
/// first, rejected ones included and flagged) and its `limited`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialTimeline {
    pub events: Vec<TimelineEvent>,
    pub limited: bool,
}

impl LatestEvents {
    /// The held events, newest first.
    pub fn events(&self) -> &[TimelineEvent] {
        &self.events
    }

    /// Whether every event of the room (not an outlier) is held.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Whether an event's place was unknown (nothing is held then).
    pub fn is_unordered(&self) -> bool {
        self.unordered
    }

    /// Nothing to store: no event, nothing dropped, nothing unordered.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.complete && !self.unordered
    }

    /// A room's window as stored or recomputed.
    pub fn from_parts(events: Vec<TimelineEvent>, complete: bool, unordered: bool) -> Self {
        let mut events = events;
        events.sort_by_key(|e| std::cmp::Reverse(e.order()));
        LatestEvents {
            events: Arc::new(events),
            complete: complete && !unordered,
            unordered,
        }
    }

    /// Keeps at most `capacity` events (a lower setting than stored with).
    pub fn bounded(mut self, capacity: usize) -> Self {
        if self.events.len() > capacity {
            Arc::make_mut(&mut self.events).truncate(capacity);
            self.complete = false;
        }
        self
    }

    /// Whether two values are equal, comparing the shared list by pointer
    /// first (cheap when a batch did not touch it).
    pub fn same_as(&self, other: &LatestEvents) -> bool {
        self.complete == other.complete
            && self.unordered == other.unordered
            && (Arc::ptr_eq(&self.events, &other.events) || self.events == other.events)
    }

    /// An event of the room that is not an outlier came without its
    /// topological ordering: the room's order is unknown from now on.
    pub(crate) fn lose_order(&mut self) {
        if !self.unordered {
            *self = LatestEvents {
                events: Arc::default(),
                complete: false,
                unordered: true,
            };
        }
    }

    /// A new event of the room that is not an outlier, placed by its
    /// orderings (at most `capacity` are held). An event already held is
    /// not held twice.
    pub(crate) fn insert(&mut self, event: TimelineEvent, capacity: usize) {
        if self.unordered {
            return;
        }
        if self.events.iter().any(|e| e.event_id == event.event_id) {
            return;
        }
        let order = event.order();
        let position = self.events.partition_point(|e| e.order() > order);
        if position >= capacity {
            self.complete = false;
            return;
        }
        let events = Arc::make_mut(&mut self.events);
        events.insert(position, event);
        if events.len() > capacity {
            events.truncate(capacity);
            self.complete = false;
        }
    }

    /// Synapse's initial timeline of the room at `token` with `limit`
    /// (at least 1), or why it cannot be answered from the held events.
    /// `complete_known`: whether the rules saw every event of the room, so
    /// that `is_complete` can be trusted (false where backfill is not
    /// followed).
    pub fn initial_timeline(
        &self,
        limit: usize,
        token: &StreamToken,
        complete_known: bool,
    ) -> Result<InitialTimeline, TimelineUnknown> {
        if self.unordered {
            return Err(TimelineUnknown::Unordered);
        }
        let fetch = limit.saturating_mul(2);
        let highest = token.max_position();
        // The held events the query can select: a prefix of all it can
        // select, since every event not held ranks below every held one.
        let selectable: Vec<&TimelineEvent> = self
            .events
            .iter()
            .filter(|e| e.stream_ordering <= highest)
            .collect();
        let within_token =
            |e: &&TimelineEvent| e.stream_ordering <= token.position(&e.instance_name);
        let everything_known = self.complete && complete_known;
        if everything_known || selectable.len() >= fetch {
            let fetched = &selectable[..selectable.len().min(fetch)];
            let kept: Vec<&TimelineEvent> = fetched.iter().copied().filter(within_token).collect();
            let limited = fetched.len() >= fetch || kept.len() > limit;
            return Ok(InitialTimeline {
                events: kept.into_iter().take(limit).cloned().collect(),
                limited,
            });
        }
        // Some events the query fetches are not held; more than `limit`
        // held ones kept still decide the answer (and `limited`).
        let kept: Vec<&TimelineEvent> = selectable.into_iter().filter(within_token).collect();
        if kept.len() > limit {
            return Ok(InitialTimeline {
                events: kept.into_iter().take(limit).cloned().collect(),
                limited: true,
            });
        }
        Err(TimelineUnknown::NotHeld)
    }
}

/// The stored form: `{"events": [[event ID, topological ordering, stream
/// ordering, instance name, rejected], ...], "incomplete": true,
/// "unordered": true}` (the flags only when set).
#[derive(Serialize, Deserialize)]
struct StoredLatestEvents {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    events: Vec<(EventId, i64, i64, String, bool)>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    incomplete: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    unordered: bool,
}

impl Serialize for LatestEvents {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        StoredLatestEvents {
            events: self
                .events
                .iter()
                .map(|e| {
                    (
                        e.event_id.clone(),
                        e.topological_ordering,
                        e.stream_ordering,
                        e.instance_name.to_string(),
                        e.rejected,
                    )
                })
                .collect(),
            incomplete: !self.complete,
            unordered: self.unordered,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for LatestEvents {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let stored = StoredLatestEvents::deserialize(deserializer)?;
        let events = stored
            .events
            .into_iter()
            .map(
                |(event_id, topological_ordering, stream_ordering, instance, rejected)| {
                    TimelineEvent {
                        event_id,
                        topological_ordering,
                        stream_ordering,
                        instance_name: instance.into(),
                        rejected,
                    }
                },
            )
            .collect();
        Ok(LatestEvents::from_parts(
            events,
            !stored.incomplete,
            stored.unordered,
        ))
    }
}

#[cfg(test)]
#[path = "latest_events_tests.rs"]
mod tests;
