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
    /// An invite (`true`) or anything else (`false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
}

impl RoomListRequest {
    /// Checks the limits that the JSON shape alone does not express.
    pub fn validate(&self) -> Result<(), RoomListError> {
        if self.lists.is_empty() || self.lists.len() > MAX_LISTS {
            return Err(RoomListError::ListCount);
        }
        for (name, list) in &self.lists {
            if name.is_empty() || name.len() > MAX_TEXT_LENGTH {
                return Err(RoomListError::ListName);
            }
            if list.ranges.len() > MAX_RANGES {
                return Err(RoomListError::RangeCount(name.clone()));
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
    /// One entry per requested range, in request order.
    pub ranges: Vec<RangeAnswer>,
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

/// The rooms of each range, from the sorted rows (which hold at least
/// `min(needed_prefix, count)` rows).
pub fn answer_ranges<T: Clone>(
    ranges: &[(u64, u64)],
    count: usize,
    sorted: &[T],
    to_entry: impl Fn(&T) -> Option<RoomListEntry>,
) -> Vec<RangeAnswer> {
    ranges
        .iter()
        .map(|range| {
            let bounds = range_bounds(*range, count.min(sorted.len()));
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
    ascii: bool,
}

impl NameNeedle {
    pub fn new(text: &str) -> Self {
        let lowercase = text.to_lowercase();
        NameNeedle {
            ascii: lowercase.is_ascii(),
            lowercase,
        }
    }

    /// Case-insensitive (Unicode lowercase) substring test; ASCII names are
    /// compared without allocating.
    pub fn matches(&self, name: &str) -> bool {
        let needle = self.lowercase.as_bytes();
        if self.ascii && name.is_ascii() {
            let Some((first, rest)) = needle.split_first() else {
                return true;
            };
            let Some(last_start) = name.len().checked_sub(needle.len()) else {
                return false;
            };
            let name = name.as_bytes();
            // Candidates start with the needle's first byte in either case.
            return name[..=last_start].iter().enumerate().any(|(i, byte)| {
                byte.to_ascii_lowercase() == *first
                    && name[i + 1..i + needle.len()].eq_ignore_ascii_case(rest)
            });
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
                filters: Filters::default(),
            },
        );
        assert_eq!(
            request.validate(),
            Err(RoomListError::RangeCount("b".into()))
        );
    }
}
