//! Tests of the read index: a property test holding the fast path to a
//! naive reference over plain rows, and examples of the ordering and
//! newly-left rules.
//!
//! Owns: test-only code. May not touch: the index's layout; the index is
//! tested through the methods of `ReadIndex`, as its callers use it.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::json;

use super::ReadIndex;
use crate::model::{
    AccountData, EventId, JoinedRoomRow, Membership, MembershipSnapshot, RoomId, RoomMetadata,
    RowChange, UserId, DIRECT_ACCOUNT_DATA, TAG_ACCOUNT_DATA,
};
use crate::room_list::scan::{scan_room_lists, ScanData, UserAccountData};
use crate::room_list::{
    direct_rooms, tag_names, Filters, ListAnswer, ListRequest, OtherRooms, RoomListRequest,
};
use roomcache_core::{PublishGate, StreamToken, WriterName};

const USERS: [&str; 3] = ["@u0:hs", "@u1:hs", "@u2:hs"];
const ROOMS: usize = 8;
const TYPES: [Option<&str>; 4] = [None, Some("m.space"), Some("org.custom"), Some("")];
const NAMES: [Option<&str>; 5] = [
    None,
    Some("Tea"),
    Some("tEam"),
    Some("Coffee"),
    Some("École"),
];
const TAGS: [&str; 3] = ["a", "b", "m.favourite"];
const MEMBERSHIPS: [Membership; 5] = [
    Membership::Join,
    Membership::Invite,
    Membership::Knock,
    Membership::Leave,
    Membership::Ban,
];

fn room(i: usize) -> RoomId {
    RoomId::parse(&format!("!r{}:hs", i % ROOMS)).unwrap()
}

fn user(i: usize) -> UserId {
    UserId::parse(USERS[i % USERS.len()]).unwrap()
}

fn metadata(bits: u32) -> RoomMetadata {
    RoomMetadata {
        room_type: TYPES[(bits % 4) as usize].map(str::to_owned),
        room_name: NAMES[((bits / 4) % 5) as usize].map(str::to_owned),
        is_encrypted: (bits / 20) % 2 == 1,
        tombstone_successor_room_id: (bits / 40).is_multiple_of(3).then(|| "!next:hs".to_owned()),
    }
}

/// Decodes a generated operation into a committed change.
fn change(op: (u8, u8, u8, i8, u32)) -> RowChange {
    let (kind, a, b, position, bits) = op;
    let (a, b) = (a as usize, b as usize);
    let position = i64::from(position);
    match kind % 8 {
        0 | 1 => RowChange::UpsertJoinedRoom(JoinedRoomRow {
            room_id: room(a),
            event_stream_ordering: position,
            bump_stamp: (bits % 3 != 0).then_some(i64::from(bits % 7) - 2),
            metadata: metadata(bits / 3),
        }),
        2 => RowChange::DeleteJoinedRoom(room(a)),
        3 | 4 => RowChange::UpsertSnapshot(MembershipSnapshot {
            room_id: room(a),
            user_id: user(b),
            sender: if bits % 3 == 0 { user(b + 1) } else { user(b) },
            membership_event_id: EventId::parse(&format!("$e{bits}")).unwrap(),
            membership: MEMBERSHIPS[(bits / 3 % 5) as usize],
            forgotten: bits / 15 % 5 == 0,
            event_stream_ordering: position,
            event_instance_name: if bits / 75 % 2 == 0 { "master" } else { "w1" }.into(),
            has_known_state: bits / 150 % 4 != 0,
            metadata: metadata(bits / 600),
        }),
        5 => RowChange::DeleteSnapshot(room(a), user(b)),
        6 => RowChange::SpaceChildren {
            space_room_id: room(a),
            children: (0..ROOMS)
                .filter(|i| bits >> i & 1 == 1)
                .map(room)
                .collect(),
        },
        _ => {
            if bits % 2 == 0 {
                let rooms: Vec<String> = (0..ROOMS)
                    .filter(|i| bits >> (i + 1) & 1 == 1)
                    .map(|i| room(i).to_string())
                    .collect();
                RowChange::AccountData(AccountData {
                    user_id: user(b),
                    room_id: None,
                    data_type: DIRECT_ACCOUNT_DATA.into(),
                    content: json!({"@x:hs": rooms, "@y:hs": "!r0:hs"}),
                })
            } else {
                let tags: serde_json::Map<String, serde_json::Value> = TAGS
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| bits >> (i + 1) & 1 == 1)
                    .map(|(_, t)| ((*t).to_owned(), json!({})))
                    .collect();
                RowChange::AccountData(AccountData {
                    user_id: user(b),
                    room_id: Some(room(a)),
                    data_type: TAG_ACCOUNT_DATA.into(),
                    content: json!({ "tags": tags }),
                })
            }
        }
    }
}

/// Publishes `changes` in a publication of a gate of its own.
fn publish(index: &ReadIndex, changes: &[RowChange]) {
    PublishGate::new().publish(|publication| index.publish(changes, publication));
}

/// The final rows after the changes, as plain data.
struct Model {
    joined_rooms: Vec<JoinedRoomRow>,
    snapshots: Vec<MembershipSnapshot>,
    account_data: Vec<AccountData>,
    space_children: Vec<(RoomId, Vec<RoomId>)>,
}

/// A user's `m.direct` rooms and `m.tag` tags from account data rows in
/// stream order (the last row of each key wins).
fn account_from_rows(rows: &[AccountData], user: &UserId) -> UserAccountData {
    let mut account = UserAccountData::default();
    for data in rows.iter().filter(|a| &a.user_id == user) {
        match (&data.room_id, data.data_type.as_str()) {
            (None, DIRECT_ACCOUNT_DATA) => {
                account.dm = direct_rooms(&data.content).into_iter().collect()
            }
            (Some(room), TAG_ACCOUNT_DATA) => {
                account.tags.insert(room.clone(), tag_names(&data.content));
            }
            _ => {}
        }
    }
    account
}

impl Model {
    /// What the scan reads for `user`: every row (the scan picks the user's).
    fn scan_data(&self, user: &UserId) -> ScanData {
        ScanData {
            joined_rooms: self.joined_rooms.clone(),
            snapshots: self.snapshots.clone(),
            account: account_from_rows(&self.account_data, user),
            space_children: self.space_children.clone(),
        }
    }
}

fn model(changes: &[RowChange]) -> Model {
    let mut joined: BTreeMap<RoomId, JoinedRoomRow> = BTreeMap::new();
    let mut snapshots: BTreeMap<(RoomId, UserId), MembershipSnapshot> = BTreeMap::new();
    let mut account: BTreeMap<(UserId, Option<RoomId>, String), AccountData> = BTreeMap::new();
    let mut children: BTreeMap<RoomId, Vec<RoomId>> = BTreeMap::new();
    for change in changes {
        match change {
            RowChange::UpsertJoinedRoom(row) => {
                joined.insert(row.room_id.clone(), row.clone());
            }
            RowChange::DeleteJoinedRoom(room) => {
                joined.remove(room);
            }
            RowChange::UpsertSnapshot(s) => {
                snapshots.insert((s.room_id.clone(), s.user_id.clone()), s.clone());
            }
            RowChange::DeleteSnapshot(room, user) => {
                snapshots.remove(&(room.clone(), user.clone()));
            }
            RowChange::SpaceChildren {
                space_room_id,
                children: list,
            } => {
                children.insert(space_room_id.clone(), list.clone());
            }
            RowChange::AccountData(data) => {
                account.insert(
                    (
                        data.user_id.clone(),
                        data.room_id.clone(),
                        data.data_type.clone(),
                    ),
                    data.clone(),
                );
            }
            RowChange::Dequeue(_)
            | RowChange::CurrentState { .. }
            | RowChange::LatestEvents { .. } => {}
        }
    }
    Model {
        joined_rooms: joined.into_values().collect(),
        snapshots: snapshots.into_values().collect(),
        account_data: account.into_values().collect(),
        space_children: children.into_iter().collect(),
    }
}

fn filters(bits: u64) -> Filters {
    let pick = |shift: u32| bits >> shift & 3;
    let boolean = |shift: u32| match pick(shift) {
        0 | 1 => None,
        2 => Some(false),
        _ => Some(true),
    };
    let types = |shift: u32| match pick(shift) {
        0 | 1 => None,
        2 => Some(vec![None, Some("m.space".to_owned())]),
        _ => Some(vec![Some("org.custom".to_owned()), Some("unseen".into())]),
    };
    let tags = |shift: u32| match pick(shift) {
        0 | 1 => None,
        2 => Some(vec!["a".to_owned()]),
        _ => Some(vec!["b".to_owned(), "m.favourite".into(), "zzz".into()]),
    };
    Filters {
        is_dm: boolean(0),
        spaces: match pick(2) {
            0 | 1 => None,
            2 => Some(vec![room(1), room(2)]),
            _ => Some(Vec::new()),
        },
        is_encrypted: boolean(4),
        is_invite: boolean(6),
        room_types: types(8),
        not_room_types: types(10),
        room_name_like: match pick(12) {
            0 => None,
            1 => Some(String::new()),
            2 => Some("TEA".into()),
            _ => Some("éc".into()),
        },
        tags: tags(14),
        not_tags: tags(16),
    }
}

fn token((stream, ahead): (i64, i64)) -> StreamToken {
    let mut token = StreamToken::linear(stream);
    if ahead > 0 {
        token
            .instance_map
            .insert(WriterName::parse("w1").unwrap(), stream + ahead);
    }
    token
}

/// The rooms of `bits` (one bit per room).
fn rooms_of(bits: u32) -> Vec<RoomId> {
    (0..ROOMS)
        .filter(|i| bits >> i & 1 == 1)
        .map(room)
        .collect()
}

/// A generated list: filter bits, ranges, excluded-room bits.
type GeneratedList = (u64, Vec<(u64, u64)>, u32);

/// A request of several lists with the options decoded from `bits`.
fn request(
    lists: &[GeneratedList],
    from_token: Option<(i64, i64)>,
    at: Option<(i64, i64)>,
    bits: u64,
) -> RoomListRequest {
    let lists = lists
        .iter()
        .enumerate()
        .map(|(i, (filter_bits, ranges, exclude))| {
            let list = ListRequest {
                ranges: ranges.clone(),
                filters: filters(*filter_bits),
                exclude_rooms: rooms_of(*exclude & 0x1f1),
            };
            (format!("l{i}"), list)
        })
        .collect();
    RoomListRequest {
        lists,
        from_token: from_token.map(token),
        at: at.map(token),
        forgotten_rooms: rooms_of((bits & 0xff) as u32 & 0x96),
        only_forgotten_rooms: bits >> 24 & 1 == 1,
        ignored_inviters: (0..USERS.len())
            .filter(|i| bits >> (8 + i) & 1 == 1)
            .map(user)
            .collect(),
        other_rooms: match (bits >> 12 & 3, from_token) {
            (1, _) => OtherRooms::All,
            (2 | 3, Some(_)) => OtherRooms::Changed,
            _ => OtherRooms::None,
        },
        room_ids: rooms_of((bits >> 16) as u32 & 0xff),
        ..RoomListRequest::default()
    }
}

/// A generated request: its lists, `from_token`, `at` and option bits.
type GeneratedRequest = (
    Vec<GeneratedList>,
    Option<(i64, i64)>,
    Option<(i64, i64)>,
    u64,
);

/// Every user's answers to every request, fast path against the reference.
fn lists_match_the_reference(
    index: &ReadIndex,
    data: &Model,
    requests: &[GeneratedRequest],
) -> Result<(), TestCaseError> {
    for (lists, from_token, at, bits) in requests {
        let request = request(lists, *from_token, *at, *bits);
        prop_assert_eq!(request.validate(), Ok(()));
        // Rooms whose recency the cache does not know (an early answer).
        let moved = rooms_of((bits >> 32) as u32 & 0x2b5);
        let mut options = request.options();
        options.moved_rooms = &moved;
        for user_name in USERS.iter().chain(["@nobody:hs"].iter()) {
            let user = UserId::parse(user_name).unwrap();
            let fast = index.room_lists(&user, &request.lists, options);
            let naive = scan_room_lists(&data.scan_data(&user), &user, &request.lists, options);
            prop_assert_eq!(fast, naive, "user {} request {:?}", user_name, request);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// The fast path answers exactly as the naive reference, for every
    /// user, on random rows, filters, ranges, tokens and options.
    #[test]
    fn fast_path_matches_the_reference(
        ops in prop::collection::vec((any::<u8>(), 0u8..8, 0u8..3, -3i8..40, any::<u32>()), 0..80),
        requests in prop::collection::vec(
            (
                prop::collection::vec(
                    (any::<u64>(), prop::collection::vec((0u64..10, 0u64..12), 0..4), any::<u32>()),
                    1..4),
                prop::option::of((0i64..40, 0i64..8)),
                prop::option::of((0i64..40, 0i64..8)),
                any::<u64>(),
            ),
            1..6),
    ) {
        let changes: Vec<RowChange> = ops.into_iter().map(change).collect();
        // Without copies of listed names, with them for every user, and
        // for users in at least two rooms; read after every group of
        // changes, so copies built before a change (a rename, a new room, a
        // re-key) are read after it.
        for copy_names_from in [usize::MAX, 0, 2] {
            let index = ReadIndex::default();
            index.copy_names_from(copy_names_from);
            // Publish in a few groups, as the supervisor does.
            let mut published = 0;
            for chunk in changes.chunks(7) {
                publish(&index, chunk);
                published += chunk.len();
                index.check_listed_names().map_err(TestCaseError::fail)?;
                lists_match_the_reference(&index, &model(&changes[..published]), &requests)?;
            }
            lists_match_the_reference(&index, &model(&changes), &requests)?;
        }
        let index = ReadIndex::default();
        for chunk in changes.chunks(7) {
            publish(&index, chunk);
        }
        let data = model(&changes);
        prop_assert_eq!(index.joined_room_count(), data.joined_rooms.len());
        prop_assert_eq!(index.snapshot_count() as usize, data.snapshots.len());
        for row in &data.joined_rooms {
            let served = index.joined_room(&row.room_id);
            prop_assert_eq!(served.as_ref(), Some(row));
        }
        for user_name in USERS {
            let user = UserId::parse(user_name).unwrap();
            let mut expected: Vec<MembershipSnapshot> = data
                .snapshots
                .iter()
                .filter(|s| s.user_id == user)
                .cloned()
                .collect();
            expected.sort_by(|a, b| a.room_id.cmp(&b.room_id));
            prop_assert_eq!(index.snapshots_of_user(&user), expected);
        }
    }
}

/// Rooms of the name-copy test: enough that name filters match many.
const MANY_ROOMS: usize = 40;

/// A change to `@u0:hs`'s listing in one of [`MANY_ROOMS`] rooms: a message
/// or rename (the joined row, recency in a narrow range, so ties abound),
/// a join, a kick (listed) or self-leave (not), a deleted snapshot.
fn listing_change((kind, room, position, name): (u8, usize, i64, usize)) -> RowChange {
    let room_id = RoomId::parse(&format!("!m{room}:hs")).unwrap();
    let metadata = RoomMetadata {
        room_name: NAMES[name % NAMES.len()].map(str::to_owned),
        is_encrypted: room % 3 == 0,
        ..RoomMetadata::default()
    };
    let (membership, sender) = match kind % 5 {
        0 | 1 => {
            return RowChange::UpsertJoinedRoom(JoinedRoomRow {
                room_id,
                event_stream_ordering: position,
                bump_stamp: None,
                metadata,
            })
        }
        2 => (Membership::Join, user(0)),
        3 if name % 2 == 0 => (Membership::Leave, user(1)),
        3 => (Membership::Leave, user(0)),
        _ => return RowChange::DeleteSnapshot(room_id, user(0)),
    };
    RowChange::UpsertSnapshot(MembershipSnapshot {
        room_id,
        user_id: user(0),
        sender,
        membership_event_id: EventId::parse(&format!("$j{position}")).unwrap(),
        membership,
        forgotten: false,
        event_stream_ordering: position,
        event_instance_name: "master".into(),
        has_known_state: true,
        metadata,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    /// A user in many rooms whose copy of listed names outlives re-keys,
    /// renames, leaves and rejoins (entries rewritten, appended, dead, the
    /// copy compacted) answers exactly as the reference, top rows (with
    /// ties) included.
    #[test]
    fn name_copies_follow_many_changes(
        ops in prop::collection::vec((any::<u8>(), 0..MANY_ROOMS, -3i64..10, 0..5usize), 0..200),
        requests in prop::collection::vec(
            (
                prop::collection::vec(
                    (any::<u64>(), prop::collection::vec((0u64..3, 0u64..5), 1..3), Just(0u32)),
                    1..3),
                Just(None),
                Just(None),
                Just(0u64),
            ),
            1..4),
    ) {
        let joins = (0..MANY_ROOMS).map(|room| listing_change((2, room, room as i64 % 7, room)));
        let changes: Vec<RowChange> = joins.chain(ops.into_iter().map(listing_change)).collect();
        for copy_names_from in [usize::MAX, 0] {
            let index = ReadIndex::default();
            index.copy_names_from(copy_names_from);
            let mut published = 0;
            for chunk in changes.chunks(5) {
                publish(&index, chunk);
                published += chunk.len();
                index.check_listed_names().map_err(TestCaseError::fail)?;
                lists_match_the_reference(&index, &model(&changes[..published]), &requests)?;
            }
        }
    }
}

fn snapshot(
    room_id: &str,
    membership: Membership,
    sender: &str,
    position: i64,
) -> MembershipSnapshot {
    MembershipSnapshot {
        room_id: RoomId::parse(room_id).unwrap(),
        user_id: UserId::parse("@u0:hs").unwrap(),
        sender: UserId::parse(sender).unwrap(),
        membership_event_id: EventId::parse(&format!("$m{position}")).unwrap(),
        membership,
        forgotten: false,
        event_stream_ordering: position,
        event_instance_name: "master".into(),
        has_known_state: true,
        metadata: RoomMetadata::default(),
    }
}

fn ids(answer: &ListAnswer, range: usize) -> Vec<String> {
    answer.ranges[range]
        .rooms
        .iter()
        .map(|e| e.room_id.to_string())
        .collect()
}

#[test]
fn joined_rooms_follow_their_latest_event_and_ties_go_by_room_id() {
    let index = ReadIndex::default();
    publish(
        &index,
        &[
            RowChange::UpsertSnapshot(snapshot("!b:hs", Membership::Join, "@u0:hs", 3)),
            RowChange::UpsertSnapshot(snapshot("!a:hs", Membership::Join, "@u0:hs", 4)),
            RowChange::UpsertSnapshot(snapshot("!c:hs", Membership::Invite, "@x:hs", 10)),
        ],
    );
    let user = UserId::parse("@u0:hs").unwrap();
    let list = ListRequest {
        ranges: vec![(0, 9)],
        filters: Filters::default(),
        ..ListRequest::default()
    };
    // No joined rows yet: membership positions.
    assert_eq!(
        ids(&index.room_list(&user, &list, None), 0),
        ["!c:hs", "!a:hs", "!b:hs"]
    );
    publish(
        &index,
        &[RowChange::UpsertJoinedRoom(JoinedRoomRow {
            room_id: RoomId::parse("!b:hs").unwrap(),
            event_stream_ordering: 10,
            bump_stamp: Some(-5),
            metadata: RoomMetadata::default(),
        })],
    );
    let answer = index.room_list(&user, &list, None);
    // !b moves to 10 and ties with !c: room ID breaks the tie.
    assert_eq!(ids(&answer, 0), ["!b:hs", "!c:hs", "!a:hs"]);
    assert_eq!(answer.ranges[0].rooms[0].bump_stamp, 0, "never negative");
    assert_eq!(
        answer.ranges[0].rooms[2].bump_stamp, 4,
        "membership position"
    );
    // A range of one row inside the tie still answers deterministically.
    let one = ListRequest {
        ranges: vec![(1, 1)],
        filters: Filters::default(),
        ..ListRequest::default()
    };
    assert_eq!(ids(&index.room_list(&user, &one, None), 0), ["!c:hs"]);
}

#[test]
fn self_leaves_are_newly_left_only_after_the_token_of_their_writer() {
    let index = ReadIndex::default();
    let mut on_w1 = snapshot("!w1:hs", Membership::Leave, "@u0:hs", 20);
    on_w1.event_instance_name = "w1".into();
    publish(
        &index,
        &[
            RowChange::UpsertSnapshot(snapshot("!master:hs", Membership::Leave, "@u0:hs", 10)),
            RowChange::UpsertSnapshot(on_w1),
            RowChange::UpsertSnapshot(snapshot("!kick:hs", Membership::Leave, "@admin:hs", 5)),
        ],
    );
    let user = UserId::parse("@u0:hs").unwrap();
    let list = ListRequest {
        ranges: vec![(0, 9)],
        filters: Filters::default(),
        ..ListRequest::default()
    };
    let at = |token: &str| -> Vec<String> {
        let token: StreamToken = token.parse().unwrap();
        ids(&index.room_list(&user, &list, Some(&token)), 0)
    };
    assert_eq!(ids(&index.room_list(&user, &list, None), 0), ["!kick:hs"]);
    assert_eq!(at("s9"), ["!w1:hs", "!master:hs", "!kick:hs"]);
    assert_eq!(at("s10"), ["!w1:hs", "!kick:hs"]);
    assert_eq!(at("m10~w1.20"), ["!kick:hs"]);
    assert_eq!(at("m9~w1.20"), ["!master:hs", "!kick:hs"]);
    assert_eq!(at("s20"), ["!kick:hs"]);
}
