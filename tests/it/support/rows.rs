//! Builders of expected table rows, for exact assertions:
//!
//! * `joined(room).stream(5).bump(3).name("x").encrypted()`: a
//!   `sliding_sync_joined_rooms` row;
//! * `snapshot(room, user).by(sender).event(&ev).membership("invite").name("x")`:
//!   a `sliding_sync_membership_snapshots` row.
//!
//! What most rows share is the default: no bump stamp, no room type, name or
//! tombstone, not encrypted; a snapshot is a join sent by its own user, with
//! known state, not forgotten, written by writer `master`. `build` gives the
//! library's row, `csv` the Synapse fixture's CSV form of it.

use roomcache::model::{
    EventId, JoinedRoomRow, Membership, MembershipSnapshot, RoomId, RoomMetadata, UserId,
};

use super::homeserver::Ev;
use super::synapse::{boolean, text, Field};

/// The room-state columns both tables have.
#[derive(Debug, Clone, Default)]
struct Metadata {
    room_type: Option<String>,
    room_name: Option<String>,
    is_encrypted: bool,
    tombstone_successor_room_id: Option<String>,
}

impl Metadata {
    fn build(&self) -> RoomMetadata {
        RoomMetadata {
            room_type: self.room_type.clone(),
            room_name: self.room_name.clone(),
            is_encrypted: self.is_encrypted,
            tombstone_successor_room_id: self.tombstone_successor_room_id.clone(),
        }
    }

    /// `room_type, room_name, is_encrypted, tombstone_successor_room_id`.
    fn csv(&self) -> [Field; 4] {
        [
            self.room_type.clone(),
            self.room_name.clone(),
            boolean(self.is_encrypted),
            self.tombstone_successor_room_id.clone(),
        ]
    }
}

/// The setters of the room-state columns, for a builder with a `metadata` field.
macro_rules! metadata_setters {
    () => {
        /// `room_type` (`m.space`, ...).
        pub(crate) fn room_type(mut self, room_type: &str) -> Self {
            self.metadata.room_type = Some(room_type.to_owned());
            self
        }

        /// `room_name`.
        pub(crate) fn name(mut self, room_name: &str) -> Self {
            self.metadata.room_name = Some(room_name.to_owned());
            self
        }

        /// `is_encrypted`.
        pub(crate) fn encrypted(mut self) -> Self {
            self.metadata.is_encrypted = true;
            self
        }

        /// `tombstone_successor_room_id`.
        pub(crate) fn tombstone(mut self, successor: &str) -> Self {
            self.metadata.tombstone_successor_room_id = Some(successor.to_owned());
            self
        }
    };
}

/// An expected joined-room row; see the module comment.
#[derive(Debug, Clone)]
pub(crate) struct JoinedRow {
    room_id: String,
    event_stream_ordering: Option<i64>,
    bump_stamp: Option<i64>,
    metadata: Metadata,
}

/// The joined row of `room_id`; its stream ordering is set with `stream`.
pub(crate) fn joined(room_id: &str) -> JoinedRow {
    JoinedRow {
        room_id: room_id.to_owned(),
        event_stream_ordering: None,
        bump_stamp: None,
        metadata: Metadata::default(),
    }
}

impl JoinedRow {
    /// `event_stream_ordering` (required).
    pub(crate) fn stream(mut self, event_stream_ordering: i64) -> Self {
        self.event_stream_ordering = Some(event_stream_ordering);
        self
    }

    /// `bump_stamp` (NULL unless set).
    pub(crate) fn bump(mut self, bump_stamp: i64) -> Self {
        self.bump_stamp = Some(bump_stamp);
        self
    }

    metadata_setters!();

    fn stream_ordering(&self) -> i64 {
        self.event_stream_ordering
            .unwrap_or_else(|| panic!("expected joined row of {}: no stream()", self.room_id))
    }

    /// The row as the library holds it.
    pub(crate) fn build(&self) -> JoinedRoomRow {
        JoinedRoomRow {
            room_id: RoomId::parse(&self.room_id).unwrap(),
            event_stream_ordering: self.stream_ordering(),
            bump_stamp: self.bump_stamp,
            metadata: self.metadata.build(),
        }
    }

    /// The row in the fixture's CSV form (column order of the table).
    pub(crate) fn csv(&self) -> Vec<Field> {
        let mut fields = vec![
            text(&self.room_id),
            text(&self.stream_ordering().to_string()),
            self.bump_stamp.map(|bump| bump.to_string()),
        ];
        fields.extend(self.metadata.csv());
        fields
    }
}

/// An expected membership snapshot; see the module comment.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotRow {
    room_id: String,
    user_id: String,
    sender: Option<String>,
    membership_event: Option<(String, i64)>,
    membership: String,
    forgotten: bool,
    event_instance_name: String,
    has_known_state: bool,
    metadata: Metadata,
}

/// The snapshot of `user_id` in `room_id`; its membership event is set with
/// `event` or `event_at`.
pub(crate) fn snapshot(room_id: &str, user_id: &str) -> SnapshotRow {
    SnapshotRow {
        room_id: room_id.to_owned(),
        user_id: user_id.to_owned(),
        sender: None,
        membership_event: None,
        membership: "join".to_owned(),
        forgotten: false,
        event_instance_name: "master".to_owned(),
        has_known_state: true,
        metadata: Metadata::default(),
    }
}

impl SnapshotRow {
    /// `sender` (the user itself unless set).
    pub(crate) fn by(mut self, sender: &str) -> Self {
        self.sender = Some(sender.to_owned());
        self
    }

    /// `membership_event_id` and `event_stream_ordering`: the event's (required).
    pub(crate) fn event(self, event: &Ev) -> Self {
        self.event_at(&event.id, event.so)
    }

    /// `membership_event_id` and `event_stream_ordering` (required).
    pub(crate) fn event_at(mut self, event_id: &str, stream_ordering: i64) -> Self {
        self.membership_event = Some((event_id.to_owned(), stream_ordering));
        self
    }

    /// `membership` (`join` unless set).
    pub(crate) fn membership(mut self, membership: &str) -> Self {
        self.membership = membership.to_owned();
        self
    }

    /// `forgotten`.
    pub(crate) fn forgotten(mut self) -> Self {
        self.forgotten = true;
        self
    }

    /// `event_instance_name` (`master` unless set).
    pub(crate) fn instance(mut self, event_instance_name: &str) -> Self {
        self.event_instance_name = event_instance_name.to_owned();
        self
    }

    /// `has_known_state` false (the state columns then stay empty).
    pub(crate) fn unknown_state(mut self) -> Self {
        self.has_known_state = false;
        self
    }

    metadata_setters!();

    fn sender(&self) -> &str {
        self.sender.as_deref().unwrap_or(&self.user_id)
    }

    fn membership_event(&self) -> (&str, i64) {
        let (event_id, stream_ordering) = self.membership_event.as_ref().unwrap_or_else(|| {
            panic!(
                "expected snapshot of {} in {}: no event()",
                self.user_id, self.room_id
            )
        });
        (event_id, *stream_ordering)
    }

    /// The row as the library holds it.
    pub(crate) fn build(&self) -> MembershipSnapshot {
        let (event_id, stream_ordering) = self.membership_event();
        MembershipSnapshot {
            room_id: RoomId::parse(&self.room_id).unwrap(),
            user_id: UserId::parse(&self.user_id).unwrap(),
            sender: UserId::parse(self.sender()).unwrap(),
            membership_event_id: EventId::parse(event_id).unwrap(),
            membership: Membership::parse(&self.membership).unwrap(),
            forgotten: self.forgotten,
            event_stream_ordering: stream_ordering,
            event_instance_name: self.event_instance_name.clone(),
            has_known_state: self.has_known_state,
            metadata: self.metadata.build(),
        }
    }

    /// The row in the fixture's CSV form (column order of the table).
    pub(crate) fn csv(&self) -> Vec<Field> {
        let (event_id, stream_ordering) = self.membership_event();
        let mut fields = vec![
            text(&self.room_id),
            text(&self.user_id),
            text(self.sender()),
            text(event_id),
            text(&self.membership),
            text(if self.forgotten { "1" } else { "0" }),
            text(&stream_ordering.to_string()),
            text(&self.event_instance_name),
            boolean(self.has_known_state),
        ];
        fields.extend(self.metadata.csv());
        fields
    }
}
