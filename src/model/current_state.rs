//! The rooms' data as plain values: each room's current state event IDs of
//! the held types ([`HeldStateTypes`], a setting). The rules keep it as a
//! pure function of the room's state rows (`rules/delta.rs` calls
//! [`CurrentStateIds::set`], `rules/membership.rs`
//! [`CurrentStateIds::server_left`]); a row change carries it to the store
//! and the index, which is why it lives in the shared vocabulary.
//!
//! Owns: [`CurrentStateIds`], its bound and its stored (JSON) form. May not
//! touch: when a row sets or removes a key (the rules'), actors, the
//! database.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::EventId;

/// The types Element X asks for at state key `""` (its room list and its
/// room subscriptions, which add `m.room.pinned_events`).
pub const ELEMENT_X_TYPES: [&str; 12] = [
    "m.room.name",
    "m.room.encryption",
    "m.room.topic",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.power_levels",
    "m.room.join_rules",
    "m.room.tombstone",
    "m.room.create",
    "m.room.history_visibility",
    "m.member_hints",
    "m.room.pinned_events",
];

/// The types Element X asks for with every state key (`*`).
pub const ELEMENT_X_WILDCARD_TYPES: [&str; 4] = [
    "org.matrix.msc3401.call.member",
    "m.space.parent",
    "m.space.child",
    "m.beacon_info",
];

/// Which current state each room holds: the key `""` of `types`, every key
/// of `wildcard_types`; at most `max_keys` keys per room. And how many of
/// its latest events each room holds for the initial timeline
/// (`timeline_events`; see `latest_events.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldStateTypes {
    pub types: BTreeSet<String>,
    pub wildcard_types: BTreeSet<String>,
    pub max_keys: usize,
    /// Stored before the latest events were held: 0 (none kept).
    #[serde(default)]
    pub timeline_events: usize,
}

impl HeldStateTypes {
    pub fn new(
        types: impl IntoIterator<Item = String>,
        wildcard_types: impl IntoIterator<Item = String>,
        max_keys: usize,
    ) -> Self {
        HeldStateTypes {
            types: types.into_iter().collect(),
            wildcard_types: wildcard_types.into_iter().collect(),
            max_keys,
            timeline_events: super::DEFAULT_TIMELINE_EVENTS,
        }
    }

    /// The same, holding `events` latest events per room.
    pub fn with_timeline_events(mut self, events: usize) -> Self {
        self.timeline_events = events;
        self
    }

    /// Element X's types (the settings' defaults), at most `max_keys` keys.
    pub fn element_x(max_keys: usize) -> Self {
        HeldStateTypes::new(
            ELEMENT_X_TYPES.iter().map(|t| (*t).to_owned()),
            ELEMENT_X_WILDCARD_TYPES.iter().map(|t| (*t).to_owned()),
            max_keys,
        )
    }

    /// Whether rooms hold the current event of `(event_type, state_key)`.
    pub fn holds(&self, event_type: &str, state_key: &str) -> bool {
        self.wildcard_types.contains(event_type)
            || (state_key.is_empty() && self.types.contains(event_type))
    }

    /// Whether the types held are the same as `other`'s, and latest events
    /// are kept by both or by neither (the bounds may differ: a room over a
    /// lower bound is simply unknown, and a window says itself whether it
    /// holds all of its room's events).
    pub fn same_types(&self, other: &HeldStateTypes) -> bool {
        self.types == other.types
            && self.wildcard_types == other.wildcard_types
            && (self.timeline_events == 0) == (other.timeline_events == 0)
    }
}

/// A held state key: (type, state key).
pub(crate) type StateKey = (String, String);

/// A room's current state event IDs of the held types, or the fact that it
/// went over the bound (then nothing is held and the room is unknown until
/// it is recomputed, or until the server leaves it and its state is empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CurrentStateIds {
    keys: Arc<BTreeMap<StateKey, EventId>>,
    overflowed: bool,
}

impl CurrentStateIds {
    /// The held keys and their events; `None` when the room went over the
    /// bound.
    pub fn keys(&self) -> Option<&BTreeMap<StateKey, EventId>> {
        (!self.overflowed).then_some(&*self.keys)
    }

    /// Applies one state row: `event_id` becomes current at the key
    /// (`None`: the key is removed). Keys not held are ignored.
    pub(crate) fn set(
        &mut self,
        types: &HeldStateTypes,
        event_type: &str,
        state_key: &str,
        event_id: Option<&EventId>,
    ) {
        if self.overflowed || !types.holds(event_type, state_key) {
            return;
        }
        let key = (event_type.to_owned(), state_key.to_owned());
        match event_id {
            Some(id) => {
                if self.keys.get(&key) != Some(id) {
                    Arc::make_mut(&mut self.keys).insert(key, id.clone());
                }
            }
            None => {
                if self.keys.contains_key(&key) {
                    Arc::make_mut(&mut self.keys).remove(&key);
                }
            }
        }
        if self.keys.len() > types.max_keys {
            self.keys = Arc::default();
            self.overflowed = true;
        }
    }

    /// The server left the room: its current state is empty (known again).
    pub(crate) fn server_left(&mut self) {
        if self.overflowed || !self.keys.is_empty() {
            *self = CurrentStateIds::default();
        }
    }

    /// Whether two values are equal, comparing the shared map by pointer
    /// first (cheap when a batch did not touch it).
    pub fn same_as(&self, other: &CurrentStateIds) -> bool {
        self.overflowed == other.overflowed
            && (Arc::ptr_eq(&self.keys, &other.keys) || self.keys == other.keys)
    }

    /// Whether there is nothing to store (no key, not over the bound).
    pub fn is_empty(&self) -> bool {
        !self.overflowed && self.keys.is_empty()
    }

    /// A room that went over the bound.
    pub fn overflowed() -> Self {
        CurrentStateIds {
            keys: Arc::default(),
            overflowed: true,
        }
    }

    /// A room holding exactly these keys (as loaded from the store).
    pub fn from_keys(keys: BTreeMap<StateKey, EventId>) -> Self {
        CurrentStateIds {
            keys: Arc::new(keys),
            overflowed: false,
        }
    }
}

/// The stored form: `{"overflowed": true}` or `{"keys": [[type, state key,
/// event ID], ...]}`.
#[derive(Serialize, Deserialize)]
struct StoredCurrentState {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    keys: Vec<(String, String, EventId)>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    overflowed: bool,
}

impl Serialize for CurrentStateIds {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        StoredCurrentState {
            keys: self
                .keys
                .iter()
                .map(|((t, k), e)| (t.clone(), k.clone(), e.clone()))
                .collect(),
            overflowed: self.overflowed,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for CurrentStateIds {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let stored = StoredCurrentState::deserialize(deserializer)?;
        if stored.overflowed {
            return Ok(CurrentStateIds::overflowed());
        }
        Ok(CurrentStateIds::from_keys(
            stored
                .keys
                .into_iter()
                .map(|(t, k, e)| ((t, k), e))
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(max_keys: usize) -> HeldStateTypes {
        HeldStateTypes::new(
            ["m.room.name".to_owned()],
            ["m.space.child".to_owned()],
            max_keys,
        )
    }

    fn id(text: &str) -> EventId {
        EventId::parse(text).expect("event id")
    }

    #[test]
    fn only_held_keys_are_kept_and_removals_apply() {
        let types = types(10);
        let mut state = CurrentStateIds::default();
        state.set(&types, "m.room.name", "", Some(&id("$n1")));
        state.set(&types, "m.room.name", "other", Some(&id("$x")));
        state.set(&types, "m.room.topic", "", Some(&id("$t")));
        state.set(&types, "m.space.child", "!a:hs", Some(&id("$c1")));
        state.set(&types, "m.space.child", "!b:hs", Some(&id("$c2")));
        state.set(&types, "m.space.child", "!a:hs", None);
        state.set(&types, "m.room.name", "", Some(&id("$n2")));
        let keys: Vec<_> = state
            .keys()
            .unwrap()
            .iter()
            .map(|((t, k), e)| (t.as_str(), k.as_str(), e.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("m.room.name", "", "$n2"),
                ("m.space.child", "!b:hs", "$c2")
            ]
        );
        let stored = serde_json::to_value(&state).unwrap();
        assert_eq!(
            stored,
            serde_json::json!({"keys": [["m.room.name", "", "$n2"], ["m.space.child", "!b:hs", "$c2"]]})
        );
        assert_eq!(
            serde_json::from_value::<CurrentStateIds>(stored).unwrap(),
            state
        );
    }

    #[test]
    fn going_over_the_bound_forgets_everything_until_the_server_leaves() {
        let types = types(2);
        let mut state = CurrentStateIds::default();
        for (n, child) in ["!a:hs", "!b:hs", "!c:hs"].iter().enumerate() {
            state.set(&types, "m.space.child", child, Some(&id(&format!("$c{n}"))));
        }
        assert_eq!(state.keys(), None);
        assert!(!state.is_empty());
        state.set(&types, "m.room.name", "", Some(&id("$n")));
        assert_eq!(state.keys(), None, "stays unknown");
        let stored = serde_json::to_value(&state).unwrap();
        assert_eq!(stored, serde_json::json!({"overflowed": true}));
        assert_eq!(
            serde_json::from_value::<CurrentStateIds>(stored).unwrap(),
            state
        );
        state.server_left();
        assert_eq!(state.keys(), Some(&BTreeMap::new()));
        assert!(state.is_empty());
    }
}
