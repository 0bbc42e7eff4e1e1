//! The one read path: every read endpoint answers through [`Reads`].
//!
//! Owns: waiting for a token (`wait_for`, bounded by the settings), taking
//! the token and the rows as one snapshot through the publish gate, and the
//! one fallback policy for rooms queued for recalculation ([`fallback`]):
//! a read that touches a queued room answers with that room's rows computed
//! from the source at the queue's position, in place of cached rows (there
//! are none: they were deleted at start-up), and says so with `fallback:
//! true`. May not touch: the write path (it never publishes or advances),
//! SQL, HTTP (the API maps its answers and errors).

mod fallback;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use roomcache_core::{PositionTracker, StreamToken, WriterName};
use tracing::warn;

use crate::index::ReadIndex;
use crate::model::{JoinedRoomRow, MembershipSnapshot, RoomId, UserId};
use crate::room_list::{ListAnswer, RoomBudget, RoomListRequest};
use crate::source::SourceError;
use crate::supervisor::recalc::{RecalculationQueue, Upstream};

pub(crate) use fallback::Fallback;

/// Why a read could not be answered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("rooms are being recomputed and the Synapse database cannot be read")]
    FallbackUnavailable(#[source] SourceError),
    #[error("the ranges ask for {asked} rooms (after clamping each range to its list's count); at most {max} rooms are answered at once (max_room_list_rooms): ask for smaller ranges")]
    TooManyRooms { asked: usize, max: usize },
    #[error("`limit` must be between 1 and {max} (max_user_rooms_page)")]
    PageLimit { max: usize },
}

/// How long a read may wait for a token.
#[derive(Debug, Clone, Default)]
pub(crate) struct Wait {
    /// Answer only once the cache's token covers this token (or at the timeout).
    pub(crate) target: Option<StreamToken>,
    /// The caller's timeout; the settings' default when absent.
    pub(crate) timeout: Option<Duration>,
}

/// An answer with the token it is consistent with.
#[derive(Debug)]
pub(crate) struct Answer<T> {
    pub(crate) value: T,
    pub(crate) token: StreamToken,
    /// The wait for the requested token timed out: the answer is at an earlier token.
    pub(crate) timed_out: bool,
    /// Some rows of the answer were computed by the fallback.
    pub(crate) fallback: bool,
}

/// Which page of a user's rooms to read.
#[derive(Debug, Clone, Default)]
pub(crate) struct PageRequest {
    /// Rooms after this room ID (the previous page's `next_from`).
    pub(crate) from: Option<RoomId>,
    /// Most rooms in the page.
    pub(crate) limit: Option<usize>,
}

/// One page of a user's rooms.
#[derive(Debug)]
pub(crate) struct RoomsPage {
    pub(crate) rooms: Vec<MembershipSnapshot>,
    /// The last room ID of this page when more rooms follow.
    pub(crate) next_from: Option<RoomId>,
}

/// The read side's settings.
#[derive(Debug, Clone)]
pub(crate) struct ReadSettings {
    pub(crate) wait_timeout: Duration,
    pub(crate) max_wait_timeout: Duration,
    /// Most rooms one room-list answer holds, across its lists and ranges.
    pub(crate) max_room_list_rooms: usize,
    /// Most snapshots in one page of a user's rooms.
    pub(crate) max_user_rooms_page: usize,
}

/// See the module documentation.
#[derive(Clone)]
pub(crate) struct Reads {
    index: Arc<ReadIndex>,
    tracker: Arc<PositionTracker>,
    fallback: Fallback,
    settings: ReadSettings,
}

impl Reads {
    pub(crate) fn new(
        index: Arc<ReadIndex>,
        tracker: Arc<PositionTracker>,
        queue: Arc<RecalculationQueue>,
        upstream: Option<Arc<dyn Upstream>>,
        settings: ReadSettings,
    ) -> Self {
        Reads {
            index,
            tracker,
            fallback: Fallback::new(queue, upstream),
            settings,
        }
    }

    /// Waits until the cache's token covers `wait.target`, or the timeout
    /// (at most `max_wait_timeout`) passes. Entries of writers that are not
    /// configured are clamped away first (the cache could never reach
    /// them). Returns true when the wait timed out.
    async fn wait(&self, wait: &Wait) -> bool {
        let Some(requested) = &wait.target else {
            return false;
        };
        let (target, clamped) = self.tracker.clamp(requested);
        if clamped {
            warn!(wait_for = %requested, clamped = %target, "wait_for names writers that are not configured; ignoring them");
        }
        let timeout = wait
            .timeout
            .unwrap_or(self.settings.wait_timeout)
            .min(self.settings.max_wait_timeout);
        let timed_out = tokio::time::timeout(timeout, self.tracker.wait_for(target))
            .await
            .is_err();
        if timed_out {
            metrics::counter!("roomcache_wait_timeouts_total").increment(1);
        }
        timed_out
    }

    /// Waits, then reads the token and runs `read` as one snapshot: the
    /// value reflects exactly the rows at or below the token.
    async fn read_at_token<T>(&self, wait: &Wait, read: impl FnMut(&ReadIndex) -> T) -> Answer<T> {
        let timed_out = self.wait(wait).await;
        let mut read = read;
        let (token, value) = self
            .tracker
            .gate()
            .read(|| (self.tracker.token(), read(&self.index)));
        Answer {
            value,
            token,
            timed_out,
            fallback: false,
        }
    }

    /// A room's joined-room row.
    pub(crate) async fn room(
        &self,
        room: &RoomId,
        wait: &Wait,
    ) -> Result<Answer<Option<JoinedRoomRow>>, ReadError> {
        let mut answer = self
            .read_at_token(wait, |index| index.joined_room(room))
            .await;
        if let Some(rows) = self.fallback.rows(std::slice::from_ref(room), None).await? {
            answer.value = rows.joined_rooms.into_iter().next();
            answer.fallback = true;
        }
        Ok(answer)
    }

    /// A user's snapshot in a room.
    pub(crate) async fn snapshot(
        &self,
        user: &UserId,
        room: &RoomId,
        wait: &Wait,
    ) -> Result<Answer<Option<MembershipSnapshot>>, ReadError> {
        let mut answer = self
            .read_at_token(wait, |index| index.snapshot(user, room))
            .await;
        if let Some(rows) = self
            .fallback
            .rows(std::slice::from_ref(room), Some(user))
            .await?
        {
            answer.value = rows.snapshots.into_iter().find(|s| &s.user_id == user);
            answer.fallback = true;
        }
        Ok(answer)
    }

    /// One page of a user's snapshots, by room ID: those after `after`, at
    /// most `limit` (at most `max_user_rooms_page`; that when absent). The
    /// page's `next_from` is set when more rooms follow.
    pub(crate) async fn user_rooms(
        &self,
        user: &UserId,
        page: &PageRequest,
        wait: &Wait,
    ) -> Result<Answer<RoomsPage>, ReadError> {
        let max = self.settings.max_user_rooms_page;
        let limit = page.limit.unwrap_or(max);
        if limit == 0 || limit > max {
            return Err(ReadError::PageLimit { max });
        }
        let after = page.from.as_ref();
        let mut answer = self
            .read_at_token(wait, |index| {
                let (rooms, more) = index.snapshots_of_user_page(user, after, limit);
                let next_from = more
                    .then(|| rooms.last().map(|s| s.room_id.clone()))
                    .flatten();
                RoomsPage { rooms, next_from }
            })
            .await;
        if let Some(rows) = self.fallback.rows_of_user(user).await? {
            // The fallback's rows of queued rooms replace the cached ones
            // within this page's window of room IDs.
            let page = &mut answer.value;
            let in_window = |room: &RoomId| {
                after.is_none_or(|a| room > a)
                    && page.next_from.as_ref().is_none_or(|last| room <= last)
            };
            let computed = rows
                .snapshots
                .into_iter()
                .filter(|s| in_window(&s.room_id))
                .collect();
            let cached = std::mem::take(&mut page.rooms);
            page.rooms = fallback::merge_snapshots(cached, computed, &rows.rooms);
            answer.fallback = true;
        }
        Ok(answer)
    }

    /// A user's room lists (spec §6), refused when their ranges would hold
    /// more than `max_room_list_rooms` rooms.
    pub(crate) async fn room_lists(
        &self,
        user: &UserId,
        request: &RoomListRequest,
        wait: &Wait,
    ) -> Result<Answer<BTreeMap<String, ListAnswer>>, ReadError> {
        let lists = || {
            request
                .lists
                .iter()
                .map(|(name, list)| (name.clone(), list))
        };
        let from_token = request.from_token.as_ref();
        let max = self.settings.max_room_list_rooms;
        let fallback_rows = self.fallback.rows_of_user(user).await?;
        let answer = match &fallback_rows {
            None => {
                self.read_at_token(wait, |index| {
                    let mut budget = RoomBudget::new(max);
                    let lists = index
                        .room_lists(user, lists(), from_token, &mut budget)
                        .into_iter()
                        .collect();
                    (lists, budget)
                })
                .await
            }
            Some(rows) => {
                self.read_at_token(wait, |index| {
                    let mut budget = RoomBudget::new(max);
                    let lists = fallback::scan_room_lists(
                        index,
                        user,
                        lists(),
                        from_token,
                        rows,
                        &mut budget,
                    );
                    (lists, budget)
                })
                .await
            }
        };
        let (lists, budget) = answer.value;
        if let Some((asked, max)) = budget.exceeded() {
            return Err(ReadError::TooManyRooms { asked, max });
        }
        Ok(Answer {
            value: lists,
            token: answer.token,
            timed_out: answer.timed_out,
            fallback: fallback_rows.is_some(),
        })
    }

    /// Each configured writer's durable position and the token, as one snapshot.
    pub(crate) fn positions(&self) -> (BTreeMap<WriterName, i64>, StreamToken) {
        self.tracker
            .gate()
            .read(|| (self.tracker.positions(), self.tracker.token()))
    }

    pub(crate) fn token(&self) -> StreamToken {
        self.tracker.token()
    }

    pub(crate) fn joined_room_count(&self) -> usize {
        self.index.joined_room_count()
    }

    pub(crate) fn snapshot_count(&self) -> u64 {
        self.index.snapshot_count()
    }

    /// Rooms waiting for recalculation.
    pub(crate) fn recalculation_queue_length(&self) -> usize {
        self.fallback.queue_length()
    }
}
