//! Room lists computed by scanning plain rows, written for obviousness, not
//! speed. The reads' fallback uses it while some of a user's rooms are
//! queued for recalculation (their rows come from the source, not the
//! index), and the index's property test holds the fast path to it.
//!
//! Owns: the scan. May not touch: the index (it reads only plain rows and
//! the helpers of [`crate::room_list`], so a bug in the index's layout
//! cannot hide in it).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use crate::model::{JoinedRoomRow, Membership, MembershipSnapshot, RoomId, UserId};

use roomcache_core::StreamToken;

use super::{
    answer_ranges, needed_prefix, rooms_in_spaces, within_budget, Filters, ListAnswer, ListOptions,
    ListRequest, NameNeedle, OtherRooms, RoomListEntry, RoomLists,
};

/// Plain rows of one user, as the scan reads them.
#[derive(Debug, Clone, Default)]
pub(crate) struct ScanData {
    /// The joined rows of the user's joined rooms (others are ignored).
    pub(crate) joined_rooms: Vec<JoinedRoomRow>,
    /// The user's snapshots (others are ignored).
    pub(crate) snapshots: Vec<MembershipSnapshot>,
    pub(crate) account: UserAccountData,
    /// Children of (at least) the spaces the lists filter on (the user's
    /// membership in each is among `snapshots`).
    pub(crate) space_children: Vec<(RoomId, Vec<RoomId>)>,
}

/// A user's DM rooms and room tags, from their account data.
#[derive(Debug, Clone, Default)]
pub(crate) struct UserAccountData {
    pub(crate) dm: BTreeSet<RoomId>,
    pub(crate) tags: BTreeMap<RoomId, Vec<String>>,
}

/// True when a snapshot at `(instance, position)` comes after `token`.
fn is_after(token: &StreamToken, instance: &str, position: i64) -> bool {
    position > token.position(instance)
}

/// Every list of a request computed by scanning every row.
pub(crate) fn scan_room_lists<'l>(
    data: &ScanData,
    user: &UserId,
    lists: impl IntoIterator<Item = (&'l String, &'l ListRequest)>,
    options: ListOptions<'_>,
) -> RoomLists {
    let mine: Vec<&MembershipSnapshot> = data
        .snapshots
        .iter()
        .filter(|s| &s.user_id == user)
        .collect();
    let mut other: BTreeSet<RoomId> = BTreeSet::new();
    let lists = lists
        .into_iter()
        .map(|(name, list)| {
            let rooms = listed_rooms(data, &mine, user, list, options);
            other.extend(other_rooms(data, &rooms, options));
            (name.clone(), cut(list, rooms, options))
        })
        .collect();
    let memberships_after_at = options.at.map(|at| {
        let mut rooms: Vec<RoomId> = mine
            .iter()
            .filter(|s| is_after(at, &s.event_instance_name, s.event_stream_ordering))
            .map(|s| s.room_id.clone())
            .collect();
        rooms.sort();
        rooms
    });
    let rooms = (!options.room_ids.is_empty()).then(|| {
        mine.iter()
            .filter(|s| options.room_ids.contains(&s.room_id))
            .filter(|s| !is_forgotten(s, options))
            .map(|s| (s.room_id.clone(), listed_room(data, s).1))
            .collect()
    });
    RoomLists {
        lists,
        memberships_after_at,
        other_rooms: (!options.other_rooms.is_none()).then(|| other.into_iter().collect()),
        rooms,
        account_data_position: None,
        unaffected: false,
        waited_us: None,
    }
}

/// A listed room: its recency, whether it is newly left, and its entry.
type Row = (i64, bool, RoomListEntry);

/// The rooms of one list after every filter and exclusion, newest first
/// (ties by room ID).
fn listed_rooms(
    data: &ScanData,
    mine: &[&MembershipSnapshot],
    user: &UserId,
    list: &ListRequest,
    options: ListOptions<'_>,
) -> Vec<Row> {
    let account = &data.account;
    let filters = &list.filters;
    let children: Option<BTreeSet<&RoomId>> = filters.spaces.as_ref().map(|spaces| {
        let membership_in = |space: &RoomId| {
            mine.iter()
                .find(|s| &s.room_id == space)
                .map(|s| s.membership)
        };
        let children_of = |space: &RoomId| {
            data.space_children
                .iter()
                .filter(|(s, _)| s == space)
                .flat_map(|(_, children)| children)
                .collect::<Vec<&RoomId>>()
        };
        rooms_in_spaces(spaces, membership_in, children_of)
    });
    let needle = filters.room_name_like.as_deref().map(NameNeedle::new);
    let mut rooms: Vec<Row> = Vec::new();
    for snapshot in mine {
        let Some(newly_left) = listing(snapshot, user, options) else {
            continue;
        };
        if list.exclude_rooms.contains(&snapshot.room_id)
            || (snapshot.membership == Membership::Invite
                && options.ignored_inviters.contains(&snapshot.sender))
        {
            continue;
        }
        let (position, entry) = listed_room(data, snapshot);
        if passes(filters, &entry, account, children.as_ref(), needle.as_ref()) {
            rooms.push((position, newly_left, entry));
        }
    }
    rooms.sort_by(|a, b| (Reverse(a.0), &a.2.room_id).cmp(&(Reverse(b.0), &b.2.room_id)));
    rooms
}

/// The list's answer from its sorted rooms: ranges, or with `at` and
/// rooms sorting after it, the settled prefix and the unsettled rooms.
fn cut(list: &ListRequest, rooms: Vec<Row>, options: ListOptions<'_>) -> ListAnswer {
    let count = rooms.len();
    let need = needed_prefix(&list.ranges);
    let (unsettled, settled): (Vec<Row>, Vec<Row>) = rooms
        .into_iter()
        .partition(|(position, _, entry)| options.is_unsettled_room(*position, &entry.room_id));
    if need == 0 || unsettled.is_empty() {
        let ranges = answer_ranges(
            &list.ranges,
            count,
            &settled,
            |(_, _, e)| Some(e.clone()),
            options.budget,
        );
        return ListAnswer {
            count,
            ranges,
            ..ListAnswer::default()
        };
    }
    let entries = |rows: Vec<Row>| rows.into_iter().map(|(_, _, e)| e).collect();
    let settled: Vec<Row> = settled.into_iter().take(need).collect();
    if !within_budget(
        options.budget,
        settled.len().saturating_add(unsettled.len()),
    ) {
        return ListAnswer {
            count,
            ..ListAnswer::default()
        };
    }
    ListAnswer {
        count,
        ranges: Vec::new(),
        settled: Some(entries(settled)),
        unsettled: Some(entries(unsettled)),
        entries_since: None,
    }
}

/// The list's rooms `other_rooms` asks for: all, or those whose recency,
/// membership or room's latest event is after `from_token.stream`
/// (newly-left rooms always).
fn other_rooms(data: &ScanData, rooms: &[Row], options: ListOptions<'_>) -> Vec<RoomId> {
    let since = match options.other_rooms {
        OtherRooms::None => return Vec::new(),
        OtherRooms::All => i64::MIN,
        OtherRooms::Changed => options.from_token.map_or(i64::MIN, |t| t.stream),
    };
    let room_changed = |room_id: &RoomId| {
        data.joined_rooms
            .iter()
            .any(|j| &j.room_id == room_id && j.event_stream_ordering > since)
    };
    rooms
        .iter()
        .filter(|(position, newly_left, entry)| {
            *newly_left
                || *position > since
                || room_changed(&entry.room_id)
                || options.moved_rooms.contains(&entry.room_id)
        })
        .map(|(_, _, entry)| entry.room_id.clone())
        .collect()
}

/// Whether the user's snapshot lists its room at all (not forgotten, and
/// not a self-leave unless newly left after `from_token`), and if so
/// whether it is newly left.
fn listing(snapshot: &MembershipSnapshot, user: &UserId, options: ListOptions<'_>) -> Option<bool> {
    if is_forgotten(snapshot, options) {
        return None;
    }
    let from_token = options.from_token;
    let self_leave = snapshot.membership == Membership::Leave && &snapshot.sender == user;
    let newly_left = self_leave
        && from_token.is_some_and(|t| {
            is_after(
                t,
                &snapshot.event_instance_name,
                snapshot.event_stream_ordering,
            )
        });
    (!self_leave || newly_left).then_some(newly_left)
}

/// Whether the user's room is forgotten: for the caller, and unless the
/// caller's list is the only one read, in the cache.
fn is_forgotten(snapshot: &MembershipSnapshot, options: ListOptions<'_>) -> bool {
    options.forgotten_rooms.contains(&snapshot.room_id)
        || (snapshot.forgotten && !options.only_forgotten_rooms)
}

/// The room of a snapshot as the list shows it, and its recency (a join
/// reads the joined row when there is one).
fn listed_room(data: &ScanData, snapshot: &MembershipSnapshot) -> (i64, RoomListEntry) {
    let joined = (snapshot.membership == Membership::Join)
        .then(|| {
            data.joined_rooms
                .iter()
                .find(|j| j.room_id == snapshot.room_id)
        })
        .flatten();
    let metadata = joined.map(|j| &j.metadata).unwrap_or(&snapshot.metadata);
    let room_type = joined
        .and_then(|j| j.metadata.room_type.clone())
        .or_else(|| snapshot.metadata.room_type.clone());
    let position = joined.map_or(snapshot.event_stream_ordering, |j| j.event_stream_ordering);
    let entry = RoomListEntry {
        room_id: snapshot.room_id.clone(),
        membership: snapshot.membership,
        sender: snapshot.sender.clone(),
        membership_event_id: snapshot.membership_event_id.clone(),
        event_stream_ordering: snapshot.event_stream_ordering,
        event_instance_name: snapshot.event_instance_name.clone(),
        bump_stamp: joined
            .and_then(|j| j.bump_stamp)
            .unwrap_or(snapshot.event_stream_ordering)
            .max(0),
        room_type,
        room_name: metadata.room_name.clone(),
        is_encrypted: metadata.is_encrypted,
        tombstone_successor_room_id: metadata.tombstone_successor_room_id.clone(),
        has_known_state: snapshot.has_known_state,
        recency: position,
    };
    (position, entry)
}

/// Whether a listed room passes every filter of the list.
fn passes(
    filters: &Filters,
    entry: &RoomListEntry,
    account: &UserAccountData,
    children: Option<&BTreeSet<&RoomId>>,
    needle: Option<&NameNeedle>,
) -> bool {
    let room_tags = account
        .tags
        .get(&entry.room_id)
        .cloned()
        .unwrap_or_default();
    filters
        .is_dm
        .is_none_or(|want| account.dm.contains(&entry.room_id) == want)
        && children.is_none_or(|c| c.contains(&entry.room_id))
        && filters
            .is_encrypted
            .is_none_or(|want| entry.has_known_state && entry.is_encrypted == want)
        && filters
            .is_invite
            .is_none_or(|want| (entry.membership == Membership::Invite) == want)
        && (!filters.filters_room_type() || entry.has_known_state)
        && filters
            .room_types
            .as_ref()
            .is_none_or(|types| types.contains(&entry.room_type))
        && filters
            .not_room_types
            .as_ref()
            .is_none_or(|types| !types.contains(&entry.room_type))
        && needle.is_none_or(|n| {
            entry
                .room_name
                .as_deref()
                .is_some_and(|name| n.matches(name))
        })
        && filters
            .tags
            .as_ref()
            .is_none_or(|wanted| room_tags.iter().any(|t| wanted.contains(t)))
        && filters
            .not_tags
            .as_ref()
            .is_none_or(|unwanted| !room_tags.iter().any(|t| unwanted.contains(t)))
}
