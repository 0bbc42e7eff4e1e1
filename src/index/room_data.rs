//! The rooms' data as the read index keeps it: each room's current state
//! event IDs of the held types ([`HeldStateRecord`]), compactly — the type
//! as a one-byte id into the index's [`HeldTypeNames`], the state key only
//! when not `""`, the event ID as its 32 bytes when it is a hash
//! ([`StoredEventId`]).
//!
//! Owns: that encoding and its exact round trip. May not touch: locks,
//! the rest of the index's records, the rules that compute the state.

use rustc_hash::FxHashMap;

use super::event_id::StoredEventId;
use crate::model::EventId;
use crate::rules::CurrentStateIds;

/// The held types seen, numbered (at most 256: the settings allow 255).
#[derive(Debug, Default)]
pub(super) struct HeldTypeNames {
    ids: FxHashMap<Box<str>, u8>,
    names: Vec<Box<str>>,
}

impl HeldTypeNames {
    /// The id of `name`, numbering it when new; `None` once 256 types are
    /// numbered (the settings never allow so many).
    fn id(&mut self, name: &str) -> Option<u8> {
        if let Some(id) = self.ids.get(name) {
            return Some(*id);
        }
        let id = u8::try_from(self.names.len()).ok()?;
        self.names.push(name.into());
        self.ids.insert(name.into(), id);
        Some(id)
    }

    fn name(&self, id: u8) -> &str {
        self.names.get(usize::from(id)).map_or("", |n| n)
    }
}

/// One held key of a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HeldEntry {
    state_type: u8,
    /// `None` for the state key `""`.
    state_key: Option<Box<str>>,
    event_id: StoredEventId,
}

/// A room's current state of the held types, as the index keeps it
/// (a room holding none has no record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum HeldStateRecord {
    Held(Box<[HeldEntry]>),
    /// The room went over `max_room_state_keys`: unknown.
    Overflowed,
}

/// One held key of a room, as read back.
pub(crate) type HeldKey = (String, String, EventId);

impl HeldStateRecord {
    /// The record of `state`; `None` when it holds nothing. A type beyond
    /// the 256th is left out, making the room unknown.
    pub(super) fn new(state: &CurrentStateIds, names: &mut HeldTypeNames) -> Option<Self> {
        if state.is_empty() {
            return None;
        }
        let Some(keys) = state.keys() else {
            return Some(HeldStateRecord::Overflowed);
        };
        let mut entries = Vec::with_capacity(keys.len());
        for ((event_type, state_key), event_id) in keys {
            let Some(state_type) = names.id(event_type) else {
                return Some(HeldStateRecord::Overflowed);
            };
            entries.push(HeldEntry {
                state_type,
                state_key: (!state_key.is_empty()).then(|| state_key.as_str().into()),
                event_id: StoredEventId::new(event_id.as_str()),
            });
        }
        Some(HeldStateRecord::Held(entries.into_boxed_slice()))
    }

    /// The held keys, in the order of (type, state key) of the stored
    /// form; `None` when the room is unknown.
    pub(super) fn keys(&self, names: &HeldTypeNames) -> Option<Vec<HeldKey>> {
        let HeldStateRecord::Held(entries) = self else {
            return None;
        };
        Some(
            entries
                .iter()
                .map(|entry| {
                    (
                        names.name(entry.state_type).to_owned(),
                        entry.state_key.as_deref().unwrap_or("").to_owned(),
                        entry.event_id.event_id(),
                    )
                })
                .collect(),
        )
    }

    /// Heap bytes the record holds (for the memory figures).
    pub(super) fn heap_bytes(&self) -> usize {
        match self {
            HeldStateRecord::Overflowed => 0,
            HeldStateRecord::Held(entries) => {
                entries.len() * std::mem::size_of::<HeldEntry>()
                    + entries
                        .iter()
                        .map(|e| {
                            e.state_key.as_ref().map_or(0, |k| k.len()) + e.event_id.heap_bytes()
                        })
                        .sum::<usize>()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn records_round_trip_and_keep_hash_ids_in_32_bytes() {
        let hash = "$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg";
        let keys: BTreeMap<(String, String), EventId> = [
            (("m.room.name", ""), hash),
            (("m.space.child", "!child:hs"), "$opaque:hs"),
        ]
        .into_iter()
        .map(|((t, k), e)| ((t.to_owned(), k.to_owned()), EventId::parse(e).unwrap()))
        .collect();
        let mut names = HeldTypeNames::default();
        let record = HeldStateRecord::new(&CurrentStateIds::from_keys(keys), &mut names).unwrap();
        let read: Vec<(String, String, String)> = record
            .keys(&names)
            .unwrap()
            .into_iter()
            .map(|(t, k, e)| (t, k, e.as_str().to_owned()))
            .collect();
        assert_eq!(
            read,
            [
                ("m.room.name".into(), String::new(), hash.into()),
                (
                    "m.space.child".into(),
                    "!child:hs".into(),
                    "$opaque:hs".into()
                ),
            ]
        );
        let HeldStateRecord::Held(entries) = &record else {
            panic!("held");
        };
        assert!(matches!(entries[0].event_id, StoredEventId::Hash(_)));
        assert_eq!(entries[0].state_key, None);
        assert_eq!(
            HeldStateRecord::new(&CurrentStateIds::default(), &mut names),
            None
        );
        let over = HeldStateRecord::new(&CurrentStateIds::overflowed(), &mut names).unwrap();
        assert_eq!(over.keys(&names), None);
    }
}
