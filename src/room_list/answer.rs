//! The answer of `POST /v1/users/{user_id}/room_list`: entries, ranges,
//! counts, and the room budget every answer is built within.
//!
//! Owns: the answer's JSON and the range rules of §6.9. May not touch: the
//! index (it calls these helpers), I/O.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::ser::{SerializeSeq, SerializeStruct};
use serde::{Deserialize, Serialize, Serializer};

use super::{ListOptions, ListRequest};

use crate::model::{EventId, Membership, RoomId, UserId};

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
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
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
    #[serde(default)]
    pub settled: Option<Vec<RoomListEntry>>,
    #[serde(default)]
    pub unsettled: Option<Vec<RoomListEntry>>,
    /// With `entries: changed` or `changed_only`: the rooms of `ranges`
    /// and `settled` whose entry may not have changed after this position
    /// (recency and the membership's position at or before it) are written
    /// as `{"room_id", "recency"}` only, or left out.
    #[serde(skip)]
    pub entries_since: Option<UnchangedAfter>,
}

/// Which entries of an answer's ranges and settled rooms are unchanged
/// (after `position`), and whether they are left out or written short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnchangedAfter {
    pub position: i64,
    pub left_out: bool,
}

impl Serialize for ListAnswer {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields =
            2 + usize::from(self.settled.is_some()) + usize::from(self.unsettled.is_some());
        let mut list = serializer.serialize_struct("ListAnswer", fields)?;
        list.serialize_field("count", &self.count)?;
        let since = self.entries_since;
        let ranges: Vec<RangeView<'_>> = self
            .ranges
            .iter()
            .map(|range| RangeView {
                range: range.range,
                rooms: EntriesView(&range.rooms, since),
            })
            .collect();
        list.serialize_field("ranges", &ranges)?;
        if let Some(settled) = &self.settled {
            list.serialize_field("settled", &EntriesView(settled, since))?;
        }
        if let Some(unsettled) = &self.unsettled {
            list.serialize_field("unsettled", unsettled)?;
        }
        list.end()
    }
}

/// A range as the answer writes it.
#[derive(Serialize)]
struct RangeView<'a> {
    range: (u64, u64),
    rooms: EntriesView<'a>,
}

/// Entries, those unchanged after the position (when given) written short
/// or left out.
struct EntriesView<'a>(&'a [RoomListEntry], Option<UnchangedAfter>);

impl EntriesView<'_> {
    fn unchanged(&self, entry: &RoomListEntry) -> bool {
        self.1.is_some_and(|after| {
            entry.recency <= after.position && entry.event_stream_ordering <= after.position
        })
    }
}

impl Serialize for EntriesView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let left_out = self.1.is_some_and(|after| after.left_out);
        let shown = if left_out {
            self.0.iter().filter(|entry| !self.unchanged(entry)).count()
        } else {
            self.0.len()
        };
        let mut entries = serializer.serialize_seq(Some(shown))?;
        for entry in self.0 {
            if !self.unchanged(entry) {
                entries.serialize_element(entry)?;
            } else if !left_out {
                entries.serialize_element(&ShortEntry {
                    room_id: &entry.room_id,
                    recency: entry.recency,
                })?;
            }
        }
        entries.end()
    }
}

/// An entry the caller has seen before: its room and where it sorts.
#[derive(Serialize)]
struct ShortEntry<'a> {
    room_id: &'a RoomId,
    recency: i64,
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
    /// How long the answer waited, in microseconds: for account data to
    /// be followed and for the cache's token to cover `wait_for`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waited_us: Option<u64>,
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
            waited_us: None,
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
