//! The settings of the rooms' data: which current state each room holds
//! (`room_state_types`, `room_state_wildcard_types`) and its bound
//! (`max_room_state_keys`), how many latest events it holds
//! (`room_timeline_events`), with their defaults (what Element X's room
//! list and room subscriptions ask for) and their validation.
//!
//! Owns: those defaults and checks. May not touch: anything that runs.

use super::{ConfigError, Settings};
use std::sync::Arc;

use crate::model::{HeldStateTypes, ELEMENT_X_TYPES, ELEMENT_X_WILDCARD_TYPES};

pub(super) const DEFAULT_MAX_KEYS: usize = 1000;

/// Most types both lists may name together (the index numbers them).
const MAX_TYPES: usize = 255;

/// Most latest events a room may hold (each takes 64 bytes in the index).
const MAX_TIMELINE_EVENTS: usize = 1000;

/// The longest event type Matrix allows, in bytes.
const MAX_TYPE_BYTES: usize = 255;

pub(super) fn default_types() -> Vec<String> {
    ELEMENT_X_TYPES.iter().map(|t| (*t).to_owned()).collect()
}

pub(super) fn default_wildcard_types() -> Vec<String> {
    ELEMENT_X_WILDCARD_TYPES
        .iter()
        .map(|t| (*t).to_owned())
        .collect()
}

impl Settings {
    /// The current state each room holds, from these settings.
    pub(crate) fn held_state_types(&self) -> Arc<HeldStateTypes> {
        Arc::new(
            HeldStateTypes::new(
                self.room_state_types.iter().cloned(),
                self.room_state_wildcard_types.iter().cloned(),
                self.max_room_state_keys,
            )
            .with_timeline_events(self.room_timeline_events),
        )
    }

    pub(super) fn validate_room_state(&self) -> Result<(), ConfigError> {
        for (key, types) in [
            ("room_state_types", &self.room_state_types),
            ("room_state_wildcard_types", &self.room_state_wildcard_types),
        ] {
            for event_type in types {
                if let Some(reason) = refusal(event_type) {
                    return Err(ConfigError::Invalid { key, reason });
                }
            }
        }
        if self.room_state_types.len() + self.room_state_wildcard_types.len() > MAX_TYPES {
            return Err(ConfigError::Invalid {
                key: "room_state_types",
                reason: format!(
                    "room_state_types and room_state_wildcard_types name at most {MAX_TYPES} \
                     types together"
                ),
            });
        }
        if self.room_timeline_events > MAX_TIMELINE_EVENTS {
            return Err(ConfigError::Invalid {
                key: "room_timeline_events",
                reason: format!("at most {MAX_TIMELINE_EVENTS}"),
            });
        }
        if self.max_room_state_keys == 0 {
            return Err(ConfigError::Invalid {
                key: "max_room_state_keys",
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

/// Why an event type cannot be held, if it cannot.
fn refusal(event_type: &str) -> Option<String> {
    if event_type.is_empty() || event_type.len() > MAX_TYPE_BYTES {
        return Some(format!(
            "{event_type:?}: an event type has 1 to {MAX_TYPE_BYTES} bytes"
        ));
    }
    if event_type.contains(['\0', '*']) {
        return Some(format!("{event_type:?} contains a NUL byte or `*`"));
    }
    if event_type == "m.room.member" {
        return Some(
            "m.room.member is not held (a room's members are unbounded); the homeserver's \
             own per-key cache answers members"
                .into(),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_wildcards_and_empty_types_are_refused() {
        let mut settings = Settings::default();
        assert!(settings.validate().is_ok());
        settings.room_state_wildcard_types = vec!["m.room.member".into()];
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("room_state_wildcard_types"), "{error}");
        settings.room_state_wildcard_types = vec![];
        settings.room_state_types = vec!["*".into()];
        assert!(settings.validate().is_err());
        settings.room_state_types = vec![String::new()];
        assert!(settings.validate().is_err());
        settings.room_state_types = vec![];
        settings.max_room_state_keys = 0;
        assert!(settings.validate().is_err());
    }
}
