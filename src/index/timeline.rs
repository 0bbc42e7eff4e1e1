//! The rooms' latest events as the read index keeps them
//! ([`LatestEventsRecord`]): each event's ID as its 32 bytes when it is a
//! hash ([`StoredEventId`]), its orderings, its writer interned.
//!
//! Owns: that encoding and its exact round trip to
//! [`LatestEvents`](crate::model::LatestEvents). May not touch: locks, the
//! rest of the index's records, the rules that compute the window, the
//! answer's computation (the model's).

use super::event_id::StoredEventId;
use super::records::Interner;
use crate::model::{LatestEvents, TimelineEvent};

/// One held event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TimelineEntry {
    event_id: StoredEventId,
    topological_ordering: i64,
    stream_ordering: i64,
    /// Interned in the index's instances.
    instance: u32,
    rejected: bool,
}

/// A room's latest events (a room holding none has no record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LatestEventsRecord {
    events: Box<[TimelineEntry]>,
    complete: bool,
    unordered: bool,
}

impl LatestEventsRecord {
    /// The record of `window`; `None` when it holds nothing.
    pub(super) fn new(window: &LatestEvents, instances: &mut Interner<String>) -> Option<Self> {
        if window.is_empty() {
            return None;
        }
        let events = window
            .events()
            .iter()
            .map(|event| TimelineEntry {
                event_id: StoredEventId::new(event.event_id.as_str()),
                topological_ordering: event.topological_ordering,
                stream_ordering: event.stream_ordering,
                instance: instances.intern_str(&event.instance_name, str::to_owned),
                rejected: event.rejected,
            })
            .collect();
        Some(LatestEventsRecord {
            events,
            complete: window.is_complete(),
            unordered: window.is_unordered(),
        })
    }

    /// The window the record holds.
    pub(super) fn window(&self, instances: &Interner<String>) -> LatestEvents {
        let events = self
            .events
            .iter()
            .map(|entry| TimelineEvent {
                event_id: entry.event_id.event_id(),
                topological_ordering: entry.topological_ordering,
                stream_ordering: entry.stream_ordering,
                instance_name: instances
                    .get(entry.instance)
                    .map_or("master", String::as_str)
                    .into(),
                rejected: entry.rejected,
            })
            .collect();
        LatestEvents::from_parts(events, self.complete, self.unordered)
    }

    /// Heap bytes the record holds (for the memory figures).
    pub(super) fn heap_bytes(&self) -> usize {
        self.events.len() * std::mem::size_of::<TimelineEntry>()
            + self
                .events
                .iter()
                .map(|e| e.event_id.heap_bytes())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EventId;

    #[test]
    fn records_round_trip_with_hash_ids_in_32_bytes() {
        let hash = "$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg";
        let event = |id: &str, topological_ordering: i64, instance: &str| TimelineEvent {
            event_id: EventId::parse(id).unwrap(),
            topological_ordering,
            stream_ordering: topological_ordering * 10,
            instance_name: instance.into(),
            rejected: instance == "w2",
        };
        let window = LatestEvents::from_parts(
            vec![event(hash, 5, "master"), event("$opaque:hs", 3, "w2")],
            false,
            false,
        );
        let mut instances = Interner::new();
        let record = LatestEventsRecord::new(&window, &mut instances).unwrap();
        assert_eq!(record.window(&instances), window);
        assert!(matches!(record.events[0].event_id, StoredEventId::Hash(_)));
        assert_eq!(
            LatestEventsRecord::new(&LatestEvents::default(), &mut instances),
            None
        );
        eprintln!(
            "a held event takes {} bytes in the index",
            std::mem::size_of::<TimelineEntry>()
        );
    }
}
