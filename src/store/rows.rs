//! The tables' columns and the typed reading of their rows.
//!
//! Owns: the column lists and the mapping of a Postgres row to a
//! [`JoinedRoomRow`] or a [`MembershipSnapshot`]. Every value is read with
//! `try_get` and checked, so a row that another program wrote badly is a
//! clear [`StoreError::Corrupt`], never a panic. May not touch: anything
//! but rows.

use tokio_postgres::types::FromSql;
use tokio_postgres::Row;

use super::{CorruptRow, StoreError};
use crate::model::{
    JoinedRoomRow, Membership, MembershipSnapshot, RoomId, RoomMetadata, SnapshotView, UserId,
};

pub(super) const JOINED_TABLE: &str = "sliding_sync_joined_rooms";
pub(super) const SNAPSHOTS_TABLE: &str = "sliding_sync_membership_snapshots";

pub(super) const JOINED_COLUMNS: &str = "room_id, event_stream_ordering, bump_stamp, room_type, \
     room_name, is_encrypted, tombstone_successor_room_id";

pub(super) const SNAPSHOT_COLUMNS: &str = "room_id, user_id, sender, membership_event_id, \
     membership, forgotten, event_stream_ordering, event_instance_name, has_known_state, \
     room_type, room_name, is_encrypted, tombstone_successor_room_id";

/// Reads column `index` of a row of `table`.
pub(super) fn column<'a, T: FromSql<'a>>(
    row: &'a Row,
    table: &'static str,
    index: usize,
) -> Result<T, StoreError> {
    row.try_get(index)
        .map_err(|e| StoreError::corrupt(table, CorruptRow::Column(e)))
}

/// Reads a room ID from column `index` of a row of `table`.
pub(super) fn room_id(row: &Row, table: &'static str, index: usize) -> Result<RoomId, StoreError> {
    RoomId::parse(column(row, table, index)?).map_err(|e| StoreError::corrupt(table, e))
}

/// Reads a user ID from column `index` of a row of `table`.
pub(super) fn user_id(row: &Row, table: &'static str, index: usize) -> Result<UserId, StoreError> {
    UserId::parse(column(row, table, index)?).map_err(|e| StoreError::corrupt(table, e))
}

/// The four metadata columns starting at `first`.
fn metadata(row: &Row, table: &'static str, first: usize) -> Result<RoomMetadata, StoreError> {
    Ok(RoomMetadata {
        room_type: column(row, table, first)?,
        room_name: column(row, table, first + 1)?,
        is_encrypted: column(row, table, first + 2)?,
        tombstone_successor_room_id: column(row, table, first + 3)?,
    })
}

/// A row of `sliding_sync_joined_rooms` selected with [`JOINED_COLUMNS`].
pub(super) fn joined_from_row(row: &Row) -> Result<JoinedRoomRow, StoreError> {
    let table = JOINED_TABLE;
    Ok(JoinedRoomRow {
        room_id: room_id(row, table, 0)?,
        event_stream_ordering: column(row, table, 1)?,
        bump_stamp: column(row, table, 2)?,
        metadata: metadata(row, table, 3)?,
    })
}

/// A row of `sliding_sync_membership_snapshots` selected with [`SNAPSHOT_COLUMNS`].
pub(super) fn snapshot_from_row(row: &Row) -> Result<MembershipSnapshot, StoreError> {
    Ok(snapshot_view(row)?.to_snapshot())
}

/// The same, borrowed from the row (identifiers checked, not copied).
pub(super) fn snapshot_view(row: &Row) -> Result<SnapshotView<'_>, StoreError> {
    let table = SNAPSHOTS_TABLE;
    let membership: &str = column(row, table, 4)?;
    let membership = Membership::parse(membership)
        .ok_or_else(|| StoreError::corrupt(table, CorruptRow::Membership(membership.to_owned())))?;
    let view = SnapshotView {
        room_id: column(row, table, 0)?,
        user_id: column(row, table, 1)?,
        sender: column(row, table, 2)?,
        membership_event_id: column(row, table, 3)?,
        membership,
        forgotten: column::<i32>(row, table, 5)? != 0,
        event_stream_ordering: column(row, table, 6)?,
        event_instance_name: column(row, table, 7)?,
        has_known_state: column(row, table, 8)?,
        room_type: column(row, table, 9)?,
        room_name: column(row, table, 10)?,
        is_encrypted: column(row, table, 11)?,
        tombstone_successor_room_id: column(row, table, 12)?,
    };
    view.check().map_err(|e| StoreError::corrupt(table, e))?;
    Ok(view)
}
