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
    answer_ranges, Filters, ListAnswer, ListRequest, NameNeedle, RoomBudget, RoomListEntry,
};

/// Plain rows of one user, as the scan reads them.
#[derive(Debug, Clone, Default)]
pub(crate) struct ScanData {
    /// The joined rows of the user's joined rooms (others are ignored).
    pub(crate) joined_rooms: Vec<JoinedRoomRow>,
    /// The user's snapshots (others are ignored).
    pub(crate) snapshots: Vec<MembershipSnapshot>,
    pub(crate) account: UserAccountData,
    /// Children of (at least) the spaces the lists filter on.
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

/// A list computed by scanning every row.
pub(crate) fn scan_list(
    data: &ScanData,
    user: &UserId,
    list: &ListRequest,
    from_token: Option<&StreamToken>,
    budget: &mut RoomBudget,
) -> ListAnswer {
    let account = &data.account;
    let filters = &list.filters;
    let children: Option<BTreeSet<&RoomId>> = filters.spaces.as_ref().map(|spaces| {
        data.space_children
            .iter()
            .filter(|(space, _)| spaces.contains(space))
            .flat_map(|(_, children)| children.iter())
            .collect()
    });
    let needle = filters.room_name_like.as_deref().map(NameNeedle::new);
    let mut rooms: Vec<(i64, RoomListEntry)> = Vec::new();
    for snapshot in data.snapshots.iter().filter(|s| &s.user_id == user) {
        if !is_listed(snapshot, user, from_token) {
            continue;
        }
        let (position, entry) = listed_room(data, snapshot);
        if passes(filters, &entry, account, children.as_ref(), needle.as_ref()) {
            rooms.push((position, entry));
        }
    }
    rooms.sort_by(|a, b| (Reverse(a.0), &a.1.room_id).cmp(&(Reverse(b.0), &b.1.room_id)));
    let count = rooms.len();
    ListAnswer {
        count,
        ranges: answer_ranges(
            &list.ranges,
            count,
            &rooms,
            |(_, e)| Some(e.clone()),
            budget,
        ),
    }
}

/// Whether the user's snapshot lists its room at all: not forgotten, and
/// not a self-leave unless newly left after `from_token`.
fn is_listed(
    snapshot: &MembershipSnapshot,
    user: &UserId,
    from_token: Option<&StreamToken>,
) -> bool {
    if snapshot.forgotten {
        return false;
    }
    let self_leave = snapshot.membership == Membership::Leave && &snapshot.sender == user;
    let newly_left = self_leave
        && from_token.is_some_and(|t| {
            is_after(
                t,
                &snapshot.event_instance_name,
                snapshot.event_stream_ordering,
            )
        });
    !self_leave || newly_left
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
