//! The fallback for rooms queued for recalculation (spec §5).
//!
//! Owns: which queued rooms a read touches (the room read, or the queued
//! rooms where the user has a membership in the source), computing their
//! rows from the source at the queue's position, and merging them into an
//! answer in place of the index's rows. May not touch: the queue itself
//! (the supervisor's), the write path.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::ReadError;
use crate::index::ReadIndex;
use crate::model::{JoinedRoomRow, MembershipSnapshot, RoomId, RowChange, UserId};
use crate::room_list::scan::{self, ScanData};
use crate::room_list::{RoomBudget, RoomListRequest, RoomLists};
use crate::supervisor::recalc::{RecalculationQueue, Upstream};

/// Rows the fallback computed for some queued rooms.
#[derive(Debug, Default)]
pub(crate) struct FallbackRows {
    /// The queued rooms these rows stand for (a room may have no row).
    pub(crate) rooms: Vec<RoomId>,
    pub(crate) joined_rooms: Vec<JoinedRoomRow>,
    pub(crate) snapshots: Vec<MembershipSnapshot>,
    /// The children of those of the rooms that are spaces with children.
    pub(crate) space_children: Vec<(RoomId, Vec<RoomId>)>,
}

/// See the module documentation.
#[derive(Clone)]
pub(crate) struct Fallback {
    queue: Arc<RecalculationQueue>,
    /// The source (source mode only; without one nothing is ever queued).
    upstream: Option<Arc<dyn Upstream>>,
}

impl Fallback {
    pub(crate) fn new(queue: Arc<RecalculationQueue>, upstream: Option<Arc<dyn Upstream>>) -> Self {
        Fallback { queue, upstream }
    }

    pub(crate) fn queue_length(&self) -> usize {
        self.queue.len()
    }

    /// Whether `room` is queued for recalculation.
    pub(crate) fn is_queued(&self, room: &RoomId) -> bool {
        self.queue.contains(room)
    }

    /// The rows of the queued rooms among `rooms` (only `user`'s snapshots
    /// when given); `None` when none of them is queued.
    pub(crate) async fn rows(
        &self,
        rooms: &[RoomId],
        user: Option<&UserId>,
    ) -> Result<Option<FallbackRows>, ReadError> {
        let Some(upstream) = &self.upstream else {
            return Ok(None);
        };
        let queued: Vec<RoomId> = rooms
            .iter()
            .filter(|room| self.queue.contains(room))
            .cloned()
            .collect();
        if queued.is_empty() {
            return Ok(None);
        }
        let recomputed = upstream
            .recompute(&queued, &self.queue.position())
            .await
            .map_err(ReadError::FallbackUnavailable)?;
        let mut rows = FallbackRows {
            rooms: queued,
            ..FallbackRows::default()
        };
        for change in recomputed.changes {
            match change {
                RowChange::UpsertJoinedRoom(row) => rows.joined_rooms.push(row),
                RowChange::UpsertSnapshot(snapshot)
                    if user.is_none_or(|u| *u == snapshot.user_id) =>
                {
                    rows.snapshots.push(snapshot)
                }
                RowChange::SpaceChildren {
                    space_room_id,
                    children,
                } => rows.space_children.push((space_room_id, children)),
                _ => {}
            }
        }
        metrics::counter!("roomcache_fallback_reads_total").increment(1);
        Ok(Some(rows))
    }

    /// The rows of every queued room where `user` has a membership in the
    /// source; `None` when there is none.
    pub(crate) async fn rows_of_user(
        &self,
        user: &UserId,
    ) -> Result<Option<FallbackRows>, ReadError> {
        let Some(upstream) = &self.upstream else {
            return Ok(None);
        };
        if self.queue.is_empty() {
            return Ok(None);
        }
        let queued = self.queue.rooms();
        let mine = upstream
            .rooms_of_user(user, &queued)
            .await
            .map_err(ReadError::FallbackUnavailable)?;
        if mine.is_empty() {
            return Ok(None);
        }
        self.rows(&mine, Some(user)).await
    }
}

/// The index's snapshots of a user with those of the fallback's `rooms`
/// replaced by the fallback's, sorted by room ID.
pub(crate) fn merge_snapshots(
    cached: Vec<MembershipSnapshot>,
    computed: Vec<MembershipSnapshot>,
    rooms: &[RoomId],
) -> Vec<MembershipSnapshot> {
    let replaced: BTreeSet<&RoomId> = rooms.iter().collect();
    let mut merged: Vec<MembershipSnapshot> = cached
        .into_iter()
        .filter(|s| !replaced.contains(&s.room_id))
        .chain(computed)
        .collect();
    merged.sort_by(|a, b| a.room_id.cmp(&b.room_id));
    merged
}

/// A user's room lists over the index's rows with the fallback's rows in
/// place of the queued rooms', by scanning (the index's fast path cannot
/// mix in rows it does not hold; this runs only while rooms are queued).
pub(crate) fn scan_room_lists(
    index: &ReadIndex,
    user: &UserId,
    request: &RoomListRequest,
    budget: &RoomBudget,
    rows: &FallbackRows,
    moved_rooms: &[RoomId],
) -> RoomLists {
    let snapshots = merge_snapshots(
        index.snapshots_of_user(user),
        rows.snapshots.clone(),
        &rows.rooms,
    );
    let replaced: BTreeSet<&RoomId> = rows.rooms.iter().collect();
    let joined_rooms: Vec<JoinedRoomRow> = snapshots
        .iter()
        .filter(|s| !replaced.contains(&s.room_id))
        .filter_map(|s| index.joined_room(&s.room_id))
        .chain(rows.joined_rooms.iter().cloned())
        .collect();
    // Spaces among the queued rooms: their children as computed from the
    // source (the index holds none for them: invalidation deleted them).
    let spaces: BTreeSet<RoomId> = request
        .lists
        .values()
        .filter_map(|list| list.filters.spaces.as_ref())
        .flatten()
        .filter(|space| !replaced.contains(space))
        .cloned()
        .collect();
    let mut space_children = index.space_children_of(&spaces);
    space_children.extend(rows.space_children.iter().cloned());
    let data = ScanData {
        joined_rooms,
        snapshots,
        account: index.account_of(user),
        space_children,
    };
    let mut options = request.options();
    options.budget = Some(budget);
    options.moved_rooms = moved_rooms;
    scan::scan_room_lists(&data, user, &request.lists, options)
}
