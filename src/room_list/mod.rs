//! Room lists (spec `sliding-sync-tables.md` §6): the request, its filters,
//! the sort order, ranges and counts, and the entries of the answer.
//!
//! Owns: the JSON of `POST /v1/users/{user_id}/room_list` (request and
//! answer), its validation, the meaning of every filter and the range rules
//! of §6.9. May not touch: I/O, actors, SQL, locks — the read index
//! ([`crate::index`]) runs the fast path over its own layout, under its own
//! lock, with the helpers of this module (its tests hold the fast path to a
//! naive reference over plain rows, kept with them).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{EventId, Membership, RoomId, UserId};
use roomcache_core::StreamToken;

pub(crate) mod scan;

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
    /// hidden (see [`ListAnswer::unsettled`], [`RoomLists::memberships_after_at`]).
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
    /// [`RoomLists::other_rooms`].
    #[serde(default, skip_serializing_if = "OtherRooms::is_none")]
    pub other_rooms: OtherRooms,
    /// The user's entries in these rooms, whatever the lists
    /// ([`RoomLists::rooms`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub room_ids: Vec<RoomId>,
    /// When not to wait for `wait_for`: see [`Unaffected`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unaffected: Option<Unaffected>,
}

/// The caller vouches that after `since` nothing happened that concerns
/// the user (no membership of theirs changed, their account data is
/// waited for separately) except, perhaps, in `rooms` (every room with an
/// event after `since`). When the cache has reached `since` but not
/// `wait_for`, and none of `rooms` is a room where the user has a
/// membership or a space a list filters on, it answers at once, at its
/// token, with `unaffected: true`: the lists are then the same as at
/// `wait_for`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unaffected {
    pub since: StreamToken,
    pub rooms: Vec<RoomId>,
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
    /// Most rooms the answer may hold (`None`: no limit).
    pub budget: Option<&'a RoomBudget>,
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
            budget: None,
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

/// One room of a list, as the answer gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomListEntry {
    pub room_id: RoomId,
    pub membership: Membership,
    pub sender: UserId,
    pub membership_event_id: EventId,
    /// Position of the membership event.
    pub event_stream_ordering: i64,
    pub event_instance_name: String,
    /// §6.10 for this cache: joined rooms report the joined row's bump
    /// stamp when present, else the membership position; never negative.
    pub bump_stamp: i64,
    pub room_type: Option<String>,
    pub room_name: Option<String>,
    pub is_encrypted: bool,
    pub tombstone_successor_room_id: Option<String>,
    pub has_known_state: bool,
    /// The position the list is sorted by: for a join, the room's latest
    /// event (the joined row's `event_stream_ordering`, or the membership
    /// position when the room has no joined row); otherwise the
    /// membership position.
    pub recency: i64,
}

/// The rooms of one requested range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeAnswer {
    pub range: (u64, u64),
    pub rooms: Vec<RoomListEntry>,
}

/// The answer for one list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListAnswer {
    /// Rooms in the list after filters, independent of the ranges.
    pub count: usize,
    /// One entry per requested range, in request order (empty when
    /// `unsettled` is given).
    pub ranges: Vec<RangeAnswer>,
    /// With `at`, when some matching rooms sort by a position after
    /// `at.stream` (their order as of `at` is unknown to the cache): the
    /// first rooms of the list without them, in order, as many as the
    /// ranges reach (`settled`), and those rooms (`unsettled`, newest
    /// first). The caller places them and cuts the ranges itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled: Option<Vec<RoomListEntry>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsettled: Option<Vec<RoomListEntry>>,
}

/// Everything a room-list request answers, besides the token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomLists {
    pub lists: BTreeMap<String, ListAnswer>,
    /// With `at`: the rooms where the user's membership is after `at`
    /// (for its writer), in any state (also left or forgotten), by room
    /// ID. The lists show their memberships as of the answer's token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memberships_after_at: Option<Vec<RoomId>>,
    /// With `other_rooms`: the rooms it asks for, over every list, by room ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_rooms: Option<Vec<RoomId>>,
    /// With `room_ids`: the user's entry in each of those rooms where the
    /// user has a membership that is not forgotten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<BTreeMap<RoomId, RoomListEntry>>,
    /// Source mode: the account-data stream position followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_data_position: Option<i64>,
    /// With `unaffected`: the cache answered before reaching `wait_for`,
    /// the request's rooms being unaffected since `unaffected.since`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unaffected: bool,
}

impl RoomLists {
    /// The answer for a user the cache knows nothing of: empty lists.
    pub fn empty<'l>(
        lists: impl IntoIterator<Item = (&'l String, &'l ListRequest)>,
        options: ListOptions<'_>,
    ) -> Self {
        let lists = lists
            .into_iter()
            .map(|(name, list)| {
                let ranges = answer_ranges(&list.ranges, 0, &[] as &[()], |_| None, None);
                (
                    name.clone(),
                    ListAnswer {
                        count: 0,
                        ranges,
                        ..ListAnswer::default()
                    },
                )
            })
            .collect();
        RoomLists {
            lists,
            memberships_after_at: options.at.map(|_| Vec::new()),
            other_rooms: (!options.other_rooms.is_none()).then(Vec::new),
            rooms: (!options.room_ids.is_empty()).then(BTreeMap::new),
            account_data_position: None,
            unaffected: false,
        }
    }
}

/// How many rows of the sorted list the ranges can reach (`end + 1` of the
/// furthest range that is not empty by construction), before capping at
/// the count.
pub fn needed_prefix(ranges: &[(u64, u64)]) -> usize {
    ranges
        .iter()
        .filter(|(start, end)| start <= end)
        .map(|(_, end)| {
            usize::try_from(*end)
                .unwrap_or(usize::MAX)
                .saturating_add(1)
        })
        .max()
        .unwrap_or(0)
}

/// §6.9: the index range `start..=end` of a list of `count` rows, as a
/// half-open range into the sorted rows (empty when `start > end` or
/// `start` is beyond the end).
pub fn range_bounds(range: (u64, u64), count: usize) -> std::ops::Range<usize> {
    let (start, end) = range;
    let start = usize::try_from(start).unwrap_or(usize::MAX);
    let end = usize::try_from(end).unwrap_or(usize::MAX);
    if start > end || start >= count {
        return 0..0;
    }
    start..end.saturating_add(1).min(count)
}

/// How many rooms one answer may hold, across its lists and ranges (the
/// setting `max_room_list_rooms`): each range is clamped to its list's
/// count, and the rooms of every range (and of a list's settled and
/// unsettled rooms) are counted before any is built. Shared by reference
/// through [`ListOptions`].
#[derive(Debug)]
pub struct RoomBudget {
    max: usize,
    asked: AtomicUsize,
}

impl RoomBudget {
    pub fn new(max: usize) -> Self {
        RoomBudget {
            max,
            asked: AtomicUsize::new(0),
        }
    }

    /// Counts `rooms` more; true while the total is within the limit (the
    /// caller then builds them).
    pub fn take(&self, rooms: usize) -> bool {
        let update = self
            .asked
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |asked| {
                Some(asked.saturating_add(rooms))
            });
        let before = match update {
            Ok(before) | Err(before) => before,
        };
        before.saturating_add(rooms) <= self.max
    }

    /// `Some((rooms asked for, limit))` when the answer would hold more
    /// rooms than the limit.
    pub fn exceeded(&self) -> Option<(usize, usize)> {
        let asked = self.asked.load(Ordering::Relaxed);
        (asked > self.max).then_some((asked, self.max))
    }
}

/// Whether `rooms` more rooms fit `budget` (no budget: always).
pub fn within_budget(budget: Option<&RoomBudget>, rooms: usize) -> bool {
    budget.is_none_or(|b| b.take(rooms))
}

/// The rooms of each range, from the sorted rows (which hold at least
/// `min(needed_prefix, count)` rows). When the ranges hold more rooms than
/// `budget` has left, no room is built (the ranges are answered empty) and
/// the budget records it: the caller refuses the request.
pub fn answer_ranges<T: Clone>(
    ranges: &[(u64, u64)],
    count: usize,
    sorted: &[T],
    to_entry: impl Fn(&T) -> Option<RoomListEntry>,
    budget: Option<&RoomBudget>,
) -> Vec<RangeAnswer> {
    let available = count.min(sorted.len());
    let rooms: usize = ranges
        .iter()
        .map(|range| range_bounds(*range, available).len())
        .fold(0, usize::saturating_add);
    let within = within_budget(budget, rooms);
    ranges
        .iter()
        .map(|range| {
            let bounds = if within {
                range_bounds(*range, available)
            } else {
                0..0
            };
            RangeAnswer {
                range: *range,
                rooms: sorted[bounds].iter().filter_map(&to_entry).collect(),
            }
        })
        .collect()
}

/// The lowercase form `room_name_like` compares with.
#[derive(Debug, Clone)]
pub struct NameNeedle {
    lowercase: String,
}

impl NameNeedle {
    pub fn new(text: &str) -> Self {
        NameNeedle {
            lowercase: text.to_lowercase(),
        }
    }

    /// Case-insensitive (Unicode lowercase) substring test; ASCII names are
    /// compared without allocating.
    pub fn matches(&self, name: &str) -> bool {
        let needle = self.lowercase.as_bytes();
        if name.is_ascii() && self.lowercase.is_ascii() {
            if needle.is_empty() {
                return true;
            }
            return name
                .as_bytes()
                .windows(needle.len())
                .any(|window| window.eq_ignore_ascii_case(needle));
        }
        name.to_lowercase().contains(&self.lowercase)
    }
}

/// The DM rooms of an `m.direct` content (§6.5): every string element of
/// every array value that is a valid room ID.
pub fn direct_rooms(content: &Value) -> Vec<RoomId> {
    let Some(object) = content.as_object() else {
        return Vec::new();
    };
    object
        .values()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|s| RoomId::parse(s).ok())
        .collect()
}

/// The tag names of an `m.tag` content (§6.5): the keys of `content.tags`.
pub fn tag_names(content: &Value) -> Vec<String> {
    content
        .get("tags")
        .and_then(Value::as_object)
        .map(|tags| tags.keys().cloned().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ranges_follow_section_6_9() {
        assert_eq!(range_bounds((0, 19), 5), 0..5);
        assert_eq!(range_bounds((3, 3), 5), 3..4);
        assert_eq!(range_bounds((5, 9), 5), 0..0);
        assert_eq!(range_bounds((4, 2), 5), 0..0);
        assert_eq!(range_bounds((0, u64::MAX), 2), 0..2);
        assert_eq!(needed_prefix(&[(0, 4), (10, 12), (9, 1)]), 13);
        assert_eq!(needed_prefix(&[]), 0);
        assert_eq!(needed_prefix(&[(3, 1)]), 0);
    }

    #[test]
    fn name_needle_is_case_insensitive_for_ascii_and_unicode() {
        let needle = NameNeedle::new("TeA");
        assert!(needle.matches("Afternoon tea"));
        assert!(needle.matches("TEAM"));
        assert!(!needle.matches("Te a"));
        assert!(NameNeedle::new("ÉCOLE").matches("une école"));
        assert!(NameNeedle::new("").matches("anything"));
        // The Kelvin sign lowercases to an ASCII 'k'.
        assert!(NameNeedle::new("k").matches("\u{212A}elvin"));
    }

    #[test]
    fn direct_rooms_take_strings_of_array_values_only() {
        let content = json!({
            "@a:hs": ["!one:hs", "!two:hs", 3, "not a room"],
            "@b:hs": "!three:hs",
            "@c:hs": ["!four:hs"]
        });
        let rooms: Vec<String> = direct_rooms(&content)
            .into_iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(rooms, vec!["!one:hs", "!two:hs", "!four:hs"]);
        assert!(direct_rooms(&json!(["!one:hs"])).is_empty());
    }

    #[test]
    fn tag_names_are_the_keys_of_content_tags() {
        let content = json!({"tags": {"m.favourite": {"order": 0.5}, "u.work": {}}});
        assert_eq!(tag_names(&content), vec!["m.favourite", "u.work"]);
        assert!(tag_names(&json!({"tags": []})).is_empty());
        assert!(tag_names(&json!({})).is_empty());
    }

    #[test]
    fn unknown_filter_fields_and_bad_shapes_do_not_parse() {
        let parse = |v: Value| serde_json::from_value::<RoomListRequest>(v);
        assert!(parse(json!({"lists": {"a": {"filters": {"is_dm": true}}}})).is_ok());
        let stable = parse(json!({"lists": {"a": {"filters": {"is_invited": true}}}})).unwrap();
        assert_eq!(stable.lists["a"].filters.is_invite, Some(true));
        assert!(parse(
            json!({"lists": {"a": {"filters": {"is_invite": true, "is_invited": true}}}})
        )
        .is_err());
        assert!(parse(json!({"lists": {"a": {"filters": {"is_tombstoned": true}}}})).is_err());
        assert!(parse(json!({"lists": {"a": {"filters": {"is_dm": "yes"}}}})).is_err());
        assert!(parse(json!({"lists": {"a": {"ranges": [[0, -1]]}}})).is_err());
        assert!(parse(json!({"lists": {"a": {"ranges": [[0, 1, 2]]}}})).is_err());
        assert!(parse(json!({"lists": {"a": {"timeline_limit": 1}}})).is_err());
        assert!(parse(json!({"lists": {}, "extra": 1})).is_err());
        let ok =
            parse(json!({"lists": {"a": {"filters": {"room_types": [null, "m.space"]}}}})).unwrap();
        assert_eq!(
            ok.lists["a"].filters.room_types,
            Some(vec![None, Some("m.space".to_owned())])
        );
    }

    #[test]
    fn validation_limits() {
        let mut request = RoomListRequest::default();
        assert_eq!(request.validate(), Err(RoomListError::ListCount));
        request.lists.insert("a".into(), ListRequest::default());
        assert_eq!(request.validate(), Ok(()));
        request.lists.insert(
            "b".into(),
            ListRequest {
                ranges: vec![(0, 1); MAX_RANGES + 1],
                ..ListRequest::default()
            },
        );
        assert_eq!(
            request.validate(),
            Err(RoomListError::RangeCount("b".into()))
        );
    }
}
