//! The vocabulary shared by every layer: Matrix identifiers, memberships and
//! the two row types of the sliding-sync tables.
//!
//! Owns: validation of identifiers (so every other module can trust a
//! `RoomId` once it holds one) and the plain data of `JoinedRoomRow` and
//! `MembershipSnapshot`. May not touch: actors, I/O, the database.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

mod current_state;
mod latest_events;

pub use current_state::{
    CurrentStateIds, HeldStateTypes, ELEMENT_X_TYPES, ELEMENT_X_WILDCARD_TYPES,
};
pub use latest_events::{
    InitialTimeline, LatestEvents, TimelineEvent, TimelineUnknown, DEFAULT_TIMELINE_EVENTS,
};

/// Longest identifier accepted, in bytes (the Matrix limit for room, user and event IDs).
pub const MAX_ID_LENGTH: usize = 255;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} must start with '{sigil}': {value:?}")]
    WrongSigil {
        kind: &'static str,
        sigil: char,
        value: String,
    },
    #[error("{kind} is empty after its sigil: {value:?}")]
    Empty { kind: &'static str, value: String },
    #[error("{kind} is longer than {MAX_ID_LENGTH} bytes")]
    TooLong { kind: &'static str },
    #[error("{kind} contains a NUL, whitespace or control character: {value:?}")]
    BadCharacter { kind: &'static str, value: String },
    #[error("{kind} has no ':server' part: {value:?}")]
    NoServer { kind: &'static str, value: String },
}

fn check_common(kind: &'static str, sigil: char, value: &str) -> Result<(), IdError> {
    if !value.starts_with(sigil) {
        return Err(IdError::WrongSigil {
            kind,
            sigil,
            value: value.to_owned(),
        });
    }
    if value.len() <= 1 {
        return Err(IdError::Empty {
            kind,
            value: value.to_owned(),
        });
    }
    if value.len() > MAX_ID_LENGTH {
        return Err(IdError::TooLong { kind });
    }
    let bad = if value.is_ascii() {
        // The common case, without decoding characters.
        value
            .bytes()
            .any(|b| b.is_ascii_control() || b.is_ascii_whitespace())
    } else {
        value.chars().any(|c| c.is_control() || c.is_whitespace())
    };
    if bad {
        return Err(IdError::BadCharacter {
            kind,
            value: value.to_owned(),
        });
    }
    Ok(())
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $sigil:literal, $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates `value` and wraps it.
            pub fn parse(value: &str) -> Result<Self, IdError> {
                Self::check(value)?;
                Ok(Self(Arc::from(value)))
            }

            /// Validates `value` without copying it.
            pub fn check(value: &str) -> Result<(), IdError> {
                check_common($kind, $sigil, value)?;
                let extra: fn(&str) -> Result<(), IdError> = $check;
                extra(value)
            }

            /// Wraps a value that [`Self::check`] accepted already.
            pub(crate) fn from_checked(value: &str) -> Self {
                debug_assert!(Self::check(value).is_ok(), "unchecked {}: {value:?}", $kind);
                Self(Arc::from(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        /// Maps keyed by the identifier can be searched with a `&str`
        /// (hash and equality are the string's).
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", &*self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }
    };
}

identifier!(
    /// A room ID: `!opaque:server`, or `!hash` for room version 12 and later.
    RoomId,
    "room ID",
    '!',
    |_| Ok(())
);

identifier!(
    /// A user ID: `@localpart:server`.
    UserId,
    "user ID",
    '@',
    |value| match value.split_once(':') {
        Some((local, server)) if local.len() > 1 && !server.is_empty() => Ok(()),
        _ => Err(IdError::NoServer {
            kind: "user ID",
            value: value.to_owned(),
        }),
    }
);

identifier!(
    /// An event ID: `$opaque` (any room version).
    EventId,
    "event ID",
    '$',
    |_| Ok(())
);

impl UserId {
    /// The server part of the user ID (everything after the first ':').
    pub fn server_name(&self) -> &str {
        self.0.split_once(':').map(|(_, s)| s).unwrap_or_default()
    }
}

/// A membership value of `m.room.member` content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Membership {
    Join,
    Invite,
    Knock,
    Leave,
    Ban,
}

impl Membership {
    pub fn as_str(self) -> &'static str {
        match self {
            Membership::Join => "join",
            Membership::Invite => "invite",
            Membership::Knock => "knock",
            Membership::Leave => "leave",
            Membership::Ban => "ban",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "join" => Membership::Join,
            "invite" => Membership::Invite,
            "knock" => Membership::Knock,
            "leave" => Membership::Leave,
            "ban" => Membership::Ban,
            _ => return None,
        })
    }
}

/// The values of a room's relevant state as the sliding-sync tables store
/// them (spec §2.1). Shared by the joined-room row and the snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomMetadata {
    pub room_type: Option<String>,
    pub room_name: Option<String>,
    pub is_encrypted: bool,
    pub tombstone_successor_room_id: Option<String>,
}

/// One row of `sliding_sync_joined_rooms`: a room the server takes part in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinedRoomRow {
    pub room_id: RoomId,
    /// Stream ordering of the latest event in the room.
    pub event_stream_ordering: i64,
    /// Stream ordering of the latest bump-type event, if any is known.
    pub bump_stamp: Option<i64>,
    #[serde(flatten)]
    pub metadata: RoomMetadata,
}

/// One row of `sliding_sync_membership_snapshots`: a local user's latest
/// membership in a room, with the room's metadata as of that membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipSnapshot {
    pub room_id: RoomId,
    pub user_id: UserId,
    pub sender: UserId,
    pub membership_event_id: EventId,
    pub membership: Membership,
    pub forgotten: bool,
    pub event_stream_ordering: i64,
    pub event_instance_name: String,
    pub has_known_state: bool,
    #[serde(flatten)]
    pub metadata: RoomMetadata,
}

/// A membership snapshot's columns borrowed from where they were read
/// (start-up loading streams millions of them): the fields of a
/// [`MembershipSnapshot`], with identifiers checked ([`SnapshotView::check`])
/// but not copied. The read index takes either.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SnapshotView<'a> {
    pub(crate) room_id: &'a str,
    pub(crate) user_id: &'a str,
    pub(crate) sender: &'a str,
    pub(crate) membership_event_id: &'a str,
    pub(crate) membership: Membership,
    pub(crate) forgotten: bool,
    pub(crate) event_stream_ordering: i64,
    pub(crate) event_instance_name: &'a str,
    pub(crate) has_known_state: bool,
    pub(crate) room_type: Option<&'a str>,
    pub(crate) room_name: Option<&'a str>,
    pub(crate) is_encrypted: bool,
    pub(crate) tombstone_successor_room_id: Option<&'a str>,
}

impl<'a> SnapshotView<'a> {
    /// Checks the identifiers, as [`MembershipSnapshot`]'s types do.
    pub(crate) fn check(&self) -> Result<(), IdError> {
        RoomId::check(self.room_id)?;
        UserId::check(self.user_id)?;
        UserId::check(self.sender)?;
        EventId::check(self.membership_event_id)
    }
}

impl SnapshotView<'_> {
    /// The owned row (the view's identifiers are checked).
    pub(crate) fn to_snapshot(self) -> MembershipSnapshot {
        let text = |value: Option<&str>| value.map(str::to_owned);
        MembershipSnapshot {
            room_id: RoomId::from_checked(self.room_id),
            user_id: UserId::from_checked(self.user_id),
            sender: UserId::from_checked(self.sender),
            membership_event_id: EventId::from_checked(self.membership_event_id),
            membership: self.membership,
            forgotten: self.forgotten,
            event_stream_ordering: self.event_stream_ordering,
            event_instance_name: self.event_instance_name.to_owned(),
            has_known_state: self.has_known_state,
            metadata: RoomMetadata {
                room_type: text(self.room_type),
                room_name: text(self.room_name),
                is_encrypted: self.is_encrypted,
                tombstone_successor_room_id: text(self.tombstone_successor_room_id),
            },
        }
    }
}

impl<'a> From<&'a MembershipSnapshot> for SnapshotView<'a> {
    fn from(s: &'a MembershipSnapshot) -> Self {
        SnapshotView {
            room_id: s.room_id.as_str(),
            user_id: s.user_id.as_str(),
            sender: s.sender.as_str(),
            membership_event_id: s.membership_event_id.as_str(),
            membership: s.membership,
            forgotten: s.forgotten,
            event_stream_ordering: s.event_stream_ordering,
            event_instance_name: &s.event_instance_name,
            has_known_state: s.has_known_state,
            room_type: s.metadata.room_type.as_deref(),
            room_name: s.metadata.room_name.as_deref(),
            is_encrypted: s.metadata.is_encrypted,
            tombstone_successor_room_id: s.metadata.tombstone_successor_room_id.as_deref(),
        }
    }
}

/// One change to the sliding-sync tables, as the store writes it and the
/// read index publishes it. Rows are always written whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowChange {
    UpsertJoinedRoom(JoinedRoomRow),
    DeleteJoinedRoom(RoomId),
    UpsertSnapshot(MembershipSnapshot),
    DeleteSnapshot(RoomId, UserId),
    /// Remove the room from `sliding_sync_joined_rooms_to_recalculate`.
    Dequeue(RoomId),
    /// The space's children through its `m.space.child` state (state keys
    /// whose event has a non-empty `via` array), replacing the previous list.
    SpaceChildren {
        space_room_id: RoomId,
        children: Vec<RoomId>,
    },
    /// A user's account data that room lists read (`m.direct`, `m.tag`).
    AccountData(AccountData),
    /// The room's current state event IDs of the held types (the rooms'
    /// data), replacing the previous.
    CurrentState {
        room_id: RoomId,
        state: CurrentStateIds,
    },
    /// The room's latest events for the initial timeline (the rooms'
    /// data), replacing the previous.
    LatestEvents {
        room_id: RoomId,
        events: LatestEvents,
    },
}

/// One piece of a local user's account data: global (`room_id` none, e.g.
/// `m.direct`) or per room (e.g. `m.tag`). The content is kept as sent; the
/// read index interprets it (spec §6.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountData {
    pub user_id: UserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_id: Option<RoomId>,
    #[serde(rename = "type")]
    pub data_type: String,
    pub content: serde_json::Value,
}

/// The account-data types room lists read.
pub const DIRECT_ACCOUNT_DATA: &str = "m.direct";
pub const TAG_ACCOUNT_DATA: &str = "m.tag";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids_with_and_without_server_part_are_accepted() {
        assert!(RoomId::parse("!abc:example.org").is_ok());
        assert!(RoomId::parse("!Xyz0123hashonly").is_ok());
    }

    #[test]
    fn identifiers_are_refused_with_a_reason() {
        assert!(matches!(
            RoomId::parse("abc:example.org"),
            Err(IdError::WrongSigil { .. })
        ));
        assert!(matches!(RoomId::parse("!"), Err(IdError::Empty { .. })));
        assert!(matches!(
            RoomId::parse("!a\0b:x"),
            Err(IdError::BadCharacter { .. })
        ));
        assert!(matches!(
            UserId::parse("@alice"),
            Err(IdError::NoServer { .. })
        ));
        assert!(matches!(
            UserId::parse("@:server"),
            Err(IdError::NoServer { .. })
        ));
        let long = format!("${}", "a".repeat(300));
        assert!(matches!(
            EventId::parse(&long),
            Err(IdError::TooLong { .. })
        ));
    }

    #[test]
    fn user_server_name_is_after_first_colon() {
        let user = UserId::parse("@alice:example.org:8448").unwrap();
        assert_eq!(user.server_name(), "example.org:8448");
    }
}
