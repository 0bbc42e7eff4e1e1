//! The request of `POST /v1/users/{user_id}/room_list`: its lists, filters,
//! ranges and options, and its validation.
//!
//! Owns: the request's JSON and every check made before anything is read.
//! May not touch: the index, the answer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use roomcache_core::StreamToken;

use crate::model::{RoomId, UserId};

use super::RoomBudget;

/// Most lists in one request (Synapse's limit).
pub const MAX_LISTS: usize = 100;
/// Most ranges in one list.
pub const MAX_RANGES: usize = 100;
/// Most values in one filter's list (`spaces`, `room_types`, `tags` ...).
pub const MAX_FILTER_VALUES: usize = 1000;
/// Longest list name and `room_name_like` text, in bytes.
pub const MAX_TEXT_LENGTH: usize = 1000;
/// Most values of a request-level room or user list (`forgotten_rooms`,
/// `ignored_inviters`, `room_ids`) and of a list's `exclude_rooms`.
pub const MAX_REQUEST_ROOMS: usize = 100_000;

/// `POST /v1/users/{user_id}/room_list`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomListRequest {
    /// The lists to compute, by the caller's name for them.
    pub lists: BTreeMap<String, ListRequest>,
    /// The caller's previous position: self-leaves after it are newly left
    /// and listed (§6.3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_token: Option<StreamToken>,
    /// Answer only once the cache's token covers this token (or at the timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for: Option<StreamToken>,
    /// How long to wait for `wait_for`, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Source mode: answer only once account data (`m.direct`, `m.tag`) is
    /// followed up to this position of Synapse's account-data stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for_account_data: Option<i64>,
    /// The caller's own token: what happened after it is reported, not
    /// hidden (see `ListAnswer::unsettled`, `RoomLists::memberships_after_at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<StreamToken>,
    /// Rooms the caller knows the user has forgotten (forgets have no
    /// stream position, so the cache may not have seen them yet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forgotten_rooms: Vec<RoomId>,
    /// True: the user's rooms are forgotten exactly when listed in
    /// `forgotten_rooms` (the cache's own forgotten flags are not read), so
    /// the answer reflects the caller's one reading of them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub only_forgotten_rooms: bool,
    /// Invites sent by these users are not listed (ignored users).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored_inviters: Vec<UserId>,
    /// Which rooms of the lists, beyond their ranges, to name in
    /// `RoomLists::other_rooms`.
    #[serde(default, skip_serializing_if = "OtherRooms::is_none")]
    pub other_rooms: OtherRooms,
    /// The user's entries in these rooms, whatever the lists
    /// (`RoomLists::rooms`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub room_ids: Vec<RoomId>,
    /// When not to wait for `wait_for`: see [`Unaffected`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unaffected: Option<Unaffected>,
    /// How much of each room of the lists' ranges (and settled rooms) the
    /// answer gives: see [`Entries`].
    #[serde(default, skip_serializing_if = "Entries::is_all")]
    pub entries: Entries,
}

/// How much of each room of the lists' ranges and settled rooms an answer
/// gives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entries {
    /// Every entry whole.
    #[default]
    All,
    /// Whole only for the rooms whose entry may have changed after
    /// `from_token` (its recency or the membership's position after
    /// `from_token.stream`); the others as `{"room_id", "recency"}` (the
    /// caller has seen them before). Unsettled rooms and `rooms` are whole.
    Changed,
    /// Like `Changed`, but the others are left out: a caller that holds
    /// the whole list as of `from_token` puts the rooms that came back in
    /// place (each range and `settled` then hold only the rooms whose
    /// entry may have changed, in order; `count` is the whole list's).
    ChangedOnly,
}

impl Entries {
    pub fn is_all(&self) -> bool {
        *self == Entries::All
    }

    /// Whether unchanged entries are written short (`Some(false)`), left
    /// out (`Some(true)`), or whole like the others (`None`).
    pub(crate) fn unchanged_left_out(&self) -> Option<bool> {
        match self {
            Entries::All => None,
            Entries::Changed => Some(false),
            Entries::ChangedOnly => Some(true),
        }
    }
}

/// The caller vouches that after `since` nothing happened that concerns
/// the user (no membership of theirs changed, their account data is
/// waited for separately) except, perhaps, in `rooms` (every room with an
/// event after `since`). When the cache has reached `since` but not
/// `wait_for`, and none of `rooms` is a room where the user has a
/// membership or a space a list filters on, it answers at once, at its
/// token, with `unaffected: true`: the lists are then the same as at
/// `wait_for`.
///
/// With `reorder_only`, the caller also vouches that none of `rooms` had a
/// change of its current state after `since` (only events that are not
/// state, e.g. messages): the cache then answers at once even when some
/// of them are the user's joined rooms. Such a room's entry is as of the
/// cache's token except its recency, so every list sets it apart as
/// unsettled (the caller places it by its position at `wait_for`), and
/// `other_rooms` names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unaffected {
    pub since: StreamToken,
    pub rooms: Vec<RoomId>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reorder_only: bool,
}

/// What a request asks of all its lists besides their filters and ranges.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListOptions<'a> {
    pub from_token: Option<&'a StreamToken>,
    pub at: Option<&'a StreamToken>,
    pub forgotten_rooms: &'a [RoomId],
    pub only_forgotten_rooms: bool,
    pub ignored_inviters: &'a [UserId],
    pub other_rooms: OtherRooms,
    pub room_ids: &'a [RoomId],
    /// Rooms whose recency is unknown to the cache although their entries
    /// are not (the user's joined rooms with events after the cache's
    /// token, see [`Unaffected::reorder_only`]): set apart as unsettled
    /// in every list they match, and named by `other_rooms`.
    pub moved_rooms: &'a [RoomId],
    /// Most rooms the answer may hold (`None`: no limit).
    pub budget: Option<&'a RoomBudget>,
    /// With `entries: changed_only`: `from_token.stream`; the entries of
    /// ranges and settled rooms unchanged after it are not even made.
    pub left_out_unchanged_after: Option<i64>,
}

impl<'a> ListOptions<'a> {
    /// Only a `from_token` (newly-left rooms after it).
    pub fn after(from_token: Option<&'a StreamToken>) -> Self {
        ListOptions {
            from_token,
            ..ListOptions::default()
        }
    }

    /// With `at`: whether a room sorting by `recency` is unsettled (its
    /// order as of `at` is unknown to the cache).
    pub fn is_unsettled(&self, recency: i64) -> bool {
        self.at.is_some_and(|at| recency > at.stream)
    }

    /// Whether a room is unsettled: it sorts after `at`, or it moved.
    pub fn is_unsettled_room(&self, recency: i64, room: &RoomId) -> bool {
        self.is_unsettled(recency) || self.moved_rooms.contains(room)
    }
}

impl RoomListRequest {
    pub fn options(&self) -> ListOptions<'_> {
        ListOptions {
            from_token: self.from_token.as_ref(),
            at: self.at.as_ref(),
            forgotten_rooms: &self.forgotten_rooms,
            only_forgotten_rooms: self.only_forgotten_rooms,
            ignored_inviters: &self.ignored_inviters,
            other_rooms: self.other_rooms,
            room_ids: &self.room_ids,
            moved_rooms: &[],
            budget: None,
            left_out_unchanged_after: self
                .from_token
                .as_ref()
                .filter(|_| self.entries == Entries::ChangedOnly)
                .map(|token| token.stream),
        }
    }
}

/// Which rooms matching a list but outside its ranges an answer names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OtherRooms {
    /// None (`other_rooms` is absent from the answer).
    #[default]
    None,
    /// Those that may have changed after `from_token`: the room's latest
    /// event or the user's membership is after `from_token.stream`.
    Changed,
    /// All of them.
    All,
}

impl OtherRooms {
    pub fn is_none(&self) -> bool {
        *self == OtherRooms::None
    }
}

/// One list: which rooms (filters) and which rows of the sorted result (ranges).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListRequest {
    /// Inclusive `[start, end]` index ranges into the sorted list.
    #[serde(default)]
    pub ranges: Vec<(u64, u64)>,
    #[serde(default)]
    pub filters: Filters,
    /// Rooms this list leaves out whatever the filters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_rooms: Vec<RoomId>,
}

/// The filters of a list; every filter given must hold (AND). Absent or
/// `null` means "not filtered on".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    /// In the user's `m.direct` rooms (`true`) or not (`false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_dm: Option<bool>,
    /// A child (through `m.space.child` with a non-empty `via`) of one of these spaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spaces: Option<Vec<RoomId>>,
    /// Known state and this encryption (unknown-state rooms never match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_encrypted: Option<bool>,
    /// An invite (`true`) or anything else (`false`); also accepted as
    /// `is_invited` (the stable specification's name).
    #[serde(default, alias = "is_invited", skip_serializing_if = "Option::is_none")]
    pub is_invite: Option<bool>,
    /// Room type in this list (`null` = no type); unknown-state rooms excluded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_types: Option<Vec<Option<String>>>,
    /// Room type not in this list (`null` = no type); unknown-state rooms excluded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_room_types: Option<Vec<Option<String>>>,
    /// Case-insensitive substring of the room name (unnamed rooms never match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_name_like: Option<String>,
    /// At least one of these tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// None of these tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_tags: Option<Vec<String>>,
}

impl Filters {
    /// True when only per-room attributes the index counts are filtered
    /// on (no spaces, names or tags).
    pub fn attributes_only(&self) -> bool {
        self.spaces.is_none()
            && self.room_name_like.is_none()
            && self.tags.is_none()
            && self.not_tags.is_none()
    }

    /// True when the room type filters apply (they exclude unknown state).
    pub fn filters_room_type(&self) -> bool {
        self.room_types.is_some() || self.not_room_types.is_some()
    }
}

/// Why a room-list request is refused (before anything is read).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomListError {
    #[error("`lists` must hold between 1 and {MAX_LISTS} lists")]
    ListCount,
    #[error("list names must be 1 to {MAX_TEXT_LENGTH} bytes")]
    ListName,
    #[error("list {0:?} has more than {MAX_RANGES} ranges")]
    RangeCount(String),
    #[error("list {list:?}: filter `{filter}` has more than {MAX_FILTER_VALUES} values")]
    FilterValues { list: String, filter: &'static str },
    #[error("list {0:?}: `room_name_like` is longer than {MAX_TEXT_LENGTH} bytes")]
    NameTooLong(String),
    #[error("`{0}` has more than {MAX_REQUEST_ROOMS} values")]
    RequestRooms(&'static str),
    #[error("`other_rooms: changed` needs a `from_token`")]
    ChangedWithoutFromToken,
    #[error("`entries: changed` needs a `from_token`")]
    EntriesWithoutFromToken,
}

impl RoomListRequest {
    /// Checks the limits that the JSON shape alone does not express.
    pub fn validate(&self) -> Result<(), RoomListError> {
        if self.lists.is_empty() || self.lists.len() > MAX_LISTS {
            return Err(RoomListError::ListCount);
        }
        let request_sizes = [
            ("forgotten_rooms", self.forgotten_rooms.len()),
            ("ignored_inviters", self.ignored_inviters.len()),
            ("room_ids", self.room_ids.len()),
            (
                "unaffected.rooms",
                self.unaffected.as_ref().map_or(0, |u| u.rooms.len()),
            ),
        ];
        for (field, size) in request_sizes {
            if size > MAX_REQUEST_ROOMS {
                return Err(RoomListError::RequestRooms(field));
            }
        }
        if self.other_rooms == OtherRooms::Changed && self.from_token.is_none() {
            return Err(RoomListError::ChangedWithoutFromToken);
        }
        if !self.entries.is_all() && self.from_token.is_none() {
            return Err(RoomListError::EntriesWithoutFromToken);
        }
        for (name, list) in &self.lists {
            if name.is_empty() || name.len() > MAX_TEXT_LENGTH {
                return Err(RoomListError::ListName);
            }
            if list.ranges.len() > MAX_RANGES {
                return Err(RoomListError::RangeCount(name.clone()));
            }
            if list.exclude_rooms.len() > MAX_REQUEST_ROOMS {
                return Err(RoomListError::RequestRooms("exclude_rooms"));
            }
            let f = &list.filters;
            let sizes = [
                ("spaces", f.spaces.as_ref().map(Vec::len)),
                ("room_types", f.room_types.as_ref().map(Vec::len)),
                ("not_room_types", f.not_room_types.as_ref().map(Vec::len)),
                ("tags", f.tags.as_ref().map(Vec::len)),
                ("not_tags", f.not_tags.as_ref().map(Vec::len)),
            ];
            for (filter, size) in sizes {
                if size.unwrap_or(0) > MAX_FILTER_VALUES {
                    return Err(RoomListError::FilterValues {
                        list: name.clone(),
                        filter,
                    });
                }
            }
            if f.room_name_like
                .as_ref()
                .is_some_and(|n| n.len() > MAX_TEXT_LENGTH)
            {
                return Err(RoomListError::NameTooLong(name.clone()));
            }
        }
        Ok(())
    }
}
