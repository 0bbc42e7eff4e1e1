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
mod room_data;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use roomcache_core::{PositionTracker, StreamToken, WriterName};
use tracing::warn;

use crate::index::ReadIndex;
use crate::model::{JoinedRoomRow, MembershipSnapshot, RoomId, UserId};
use crate::room_list::{RoomBudget, RoomListRequest, RoomLists, UnchangedAfter};
use crate::source::health::SourceHealth;
use crate::source::AccountDataPosition;
use crate::supervisor::recalc::{RecalculationQueue, Upstream, UpstreamError};

pub(crate) use fallback::Fallback;
pub(crate) use room_data::{HeldStateSettings, RoomData};

/// Why a read could not be answered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("rooms are being recomputed and the Synapse database cannot be read")]
    FallbackUnavailable(#[source] UpstreamError),
    #[error("the answer would hold {asked} rooms (each range clamped to its list's count); at most {max} rooms are answered at once (max_room_list_rooms): ask for smaller ranges")]
    TooManyRooms { asked: usize, max: usize },
    #[error("`limit` must be between 1 and {max} (max_user_rooms_page)")]
    PageLimit { max: usize },
    /// The token asked for is not reached and cannot be while the source
    /// cannot be read (so the read is refused at once, not after waiting).
    #[error("{0}; the requested token is not reached and cannot be until it can")]
    SourceDegraded(String),
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
    /// How long the read waited for its token.
    pub(crate) waited: Duration,
}

/// What reads share with source mode's follower.
pub(crate) struct SourceFollowing {
    pub(crate) account_data: Arc<AccountDataPosition>,
    pub(crate) poll_now: Arc<tokio::sync::Notify>,
    pub(crate) health: Arc<SourceHealth>,
}

impl<T, U> Answer<(T, U)> {
    /// The answer of the first value, and the second.
    fn split(self) -> (Answer<T>, U) {
        let (value, extra) = self.value;
        let answer = Answer {
            value,
            token: self.token,
            timed_out: self.timed_out,
            fallback: self.fallback,
            waited: self.waited,
        };
        (answer, extra)
    }
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
    /// The rooms' data: the types held and whether the stored state is theirs.
    pub(crate) held_state: HeldStateSettings,
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

/// See the module documentation.
#[derive(Clone)]
pub(crate) struct Reads {
    index: Arc<ReadIndex>,
    tracker: Arc<PositionTracker>,
    fallback: Fallback,
    /// Source mode: how far account data is followed.
    account_data: Option<Arc<AccountDataPosition>>,
    /// Source mode: wakes the follower when a reader waits for more.
    poll_now: Option<Arc<tokio::sync::Notify>>,
    /// Source mode: whether the follower can read the source.
    health: Option<Arc<SourceHealth>>,
    settings: ReadSettings,
}

impl Reads {
    pub(crate) fn new(
        index: Arc<ReadIndex>,
        tracker: Arc<PositionTracker>,
        queue: Arc<RecalculationQueue>,
        upstream: Option<Arc<dyn Upstream>>,
        source: Option<SourceFollowing>,
        settings: ReadSettings,
    ) -> Self {
        let (account_data, poll_now, health) = match source {
            Some(s) => (Some(s.account_data), Some(s.poll_now), Some(s.health)),
            None => (None, None, None),
        };
        Reads {
            index,
            tracker,
            fallback: Fallback::new(queue, upstream),
            account_data,
            poll_now,
            health,
            settings,
        }
    }

    /// A read that would have to wait while the source cannot be read is
    /// refused at once.
    fn refuse_when_degraded(&self) -> Result<(), ReadError> {
        match self.health.as_ref().and_then(|h| h.degraded()) {
            Some(degraded) => {
                metrics::counter!("roomcache_reads_refused_degraded_total").increment(1);
                Err(ReadError::SourceDegraded(degraded.describe()))
            }
            None => Ok(()),
        }
    }

    /// Source mode: the follower polls now rather than after its pause.
    fn poll_source_now(&self) {
        self.wake_source();
    }

    /// Source mode: the follower reads the source now rather than at its
    /// next poll (a step already running is followed by another); false
    /// in feed mode (nothing to wake).
    pub(crate) fn wake_source(&self) -> bool {
        match &self.poll_now {
            Some(poll_now) => {
                poll_now.notify_one();
                true
            }
            None => false,
        }
    }

    fn timeout(&self, wait: &Wait) -> Duration {
        wait.timeout
            .unwrap_or(self.settings.wait_timeout)
            .min(self.settings.max_wait_timeout)
    }

    /// Source mode: waits until account data is followed up to `target`
    /// (bounded like every wait); returns the wait that is left for the
    /// token and whether this one timed out. Without account data
    /// following (feed mode) there is nothing to wait for.
    async fn wait_for_account_data(
        &self,
        target: Option<i64>,
        wait: &Wait,
    ) -> Result<(Wait, bool), ReadError> {
        let (Some(target), Some(position)) = (target, &self.account_data) else {
            return Ok((wait.clone(), false));
        };
        let timeout = self.timeout(wait);
        let started = std::time::Instant::now();
        if position.get().is_none_or(|p| p < target) {
            self.refuse_when_degraded()?;
            self.poll_source_now();
        }
        let timed_out = tokio::time::timeout(timeout, position.wait_for(target))
            .await
            .is_err();
        if timed_out {
            metrics::counter!("roomcache_wait_timeouts_total").increment(1);
        }
        let left = Wait {
            target: wait.target.clone(),
            timeout: Some(timeout.saturating_sub(started.elapsed())),
        };
        Ok((left, timed_out))
    }

    /// Waits until the cache's token covers `wait.target`, or the timeout
    /// (at most `max_wait_timeout`) passes. Entries of writers that are not
    /// configured are clamped away first (the cache could never reach
    /// them). Returns true when the wait timed out; refuses at once when
    /// the source cannot be read and the token is not reached.
    async fn wait(&self, wait: &Wait) -> Result<bool, ReadError> {
        let Some(requested) = &wait.target else {
            return Ok(false);
        };
        let (target, clamped) = self.tracker.clamp(requested);
        if clamped {
            warn!(wait_for = %requested, clamped = %target, "wait_for names writers that are not configured; ignoring them");
        }
        if !target.is_before_or_eq(&self.tracker.token()) {
            self.refuse_when_degraded()?;
            self.poll_source_now();
        }
        let timeout = self.timeout(wait);
        let timed_out = tokio::time::timeout(timeout, self.tracker.wait_for(target))
            .await
            .is_err();
        if timed_out {
            metrics::counter!("roomcache_wait_timeouts_total").increment(1);
        }
        Ok(timed_out)
    }

    /// Waits, then reads the token and runs `read` as one snapshot: the
    /// value reflects exactly the rows at or below the token.
    async fn read_at_token<T>(
        &self,
        wait: &Wait,
        read: impl FnMut(&ReadIndex) -> T,
    ) -> Result<Answer<T>, ReadError> {
        let started = std::time::Instant::now();
        let timed_out = self.wait(wait).await?;
        let waited = started.elapsed();
        let mut read = read;
        let (token, value) = self
            .tracker
            .gate()
            .read(|| (self.tracker.token(), read(&self.index)));
        Ok(Answer {
            value,
            token,
            timed_out,
            fallback: false,
            waited,
        })
    }

    /// A room's joined-room row.
    pub(crate) async fn room(
        &self,
        room: &RoomId,
        wait: &Wait,
    ) -> Result<Answer<Option<JoinedRoomRow>>, ReadError> {
        let mut answer = self
            .read_at_token(wait, |index| index.joined_room(room))
            .await?;
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
            .await?;
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

    /// One page of a user's snapshots, by room ID: those after `from`, at
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
            .await?;
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

    /// A user's room lists (spec §6).
    pub(crate) async fn room_lists(
        &self,
        user: &UserId,
        request: &RoomListRequest,
        wait: &Wait,
    ) -> Result<Answer<RoomLists>, ReadError> {
        let started = std::time::Instant::now();
        let (wait, account_timed_out) = self
            .wait_for_account_data(request.wait_for_account_data, wait)
            .await?;
        let account_waited = started.elapsed();
        let account_data_position = self.account_data.as_ref().and_then(|p| p.get());
        let moved = self.unaffected(user, request);
        let unaffected = moved.is_some();
        let moved = moved.unwrap_or_default();
        let wait = if unaffected { Wait::default() } else { wait };
        let fallback_rows = self.fallback.rows_of_user(user).await?;
        let max = self.settings.max_room_list_rooms;
        let (mut answer, exceeded) = match fallback_rows {
            None => self
                .read_at_token(&wait, |index| {
                    let budget = RoomBudget::new(max);
                    let mut options = request.options();
                    options.budget = Some(&budget);
                    options.moved_rooms = &moved;
                    let lists = index.room_lists(user, &request.lists, options);
                    (lists, budget.exceeded())
                })
                .await?
                .split(),
            Some(rows) => {
                let (mut answer, exceeded) = self
                    .read_at_token(&wait, |index| {
                        let budget = RoomBudget::new(max);
                        let lists =
                            fallback::scan_room_lists(index, user, request, &budget, &rows, &moved);
                        (lists, budget.exceeded())
                    })
                    .await?
                    .split();
                answer.fallback = true;
                (answer, exceeded)
            }
        };
        if let Some((asked, max)) = exceeded {
            return Err(ReadError::TooManyRooms { asked, max });
        }
        if let (Some(left_out), Some(from_token)) =
            (request.entries.unchanged_left_out(), &request.from_token)
        {
            for list in answer.value.lists.values_mut() {
                list.entries_since = Some(UnchangedAfter {
                    position: from_token.stream,
                    left_out,
                });
            }
        }
        answer.timed_out |= account_timed_out;
        answer.value.account_data_position = account_data_position;
        answer.value.unaffected = unaffected;
        let waited = account_waited.saturating_add(answer.waited);
        answer.value.waited_us = Some(u64::try_from(waited.as_micros()).unwrap_or(u64::MAX));
        if unaffected {
            metrics::counter!("roomcache_room_lists_unaffected_total").increment(1);
        }
        Ok(answer)
    }

    /// Whether a room-list request need not wait for its token, and if so
    /// the rooms whose recency it does not know: the cache has reached
    /// `unaffected.since` but not `wait_for`, and none of the rooms changed
    /// since is the user's or a space the lists filter on (the caller
    /// vouches for the rest) — or, with `reorder_only`, those that are the
    /// user's are joined rooms, whose entries only the recency may have
    /// changed (they are returned). Rows published meanwhile only bring
    /// the answer nearer to `wait_for`.
    fn unaffected(&self, user: &UserId, request: &RoomListRequest) -> Option<Vec<RoomId>> {
        let (Some(unaffected), Some(wait_for)) = (&request.unaffected, &request.wait_for) else {
            return None;
        };
        let (target, _) = self.tracker.clamp(wait_for);
        let (since, _) = self.tracker.clamp(&unaffected.since);
        let token = self.tracker.token();
        if target.is_before_or_eq(&token) || !since.is_before_or_eq(&token) {
            return None;
        }
        let spaces: BTreeSet<&RoomId> = request
            .lists
            .values()
            .filter_map(|list| list.filters.spaces.as_ref())
            .flatten()
            .collect();
        let touched = self.index.touched(user, &unaffected.rooms, &spaces);
        let settled = !touched.space && !touched.other;
        match (settled, touched.joined.is_empty(), unaffected.reorder_only) {
            (true, true, _) => Some(Vec::new()),
            (true, false, true) => Some(touched.joined),
            _ => None,
        }
    }

    /// Each configured writer's durable position and the token, as one snapshot.
    pub(crate) fn positions(&self) -> (BTreeMap<WriterName, i64>, StreamToken) {
        self.tracker
            .gate()
            .read(|| (self.tracker.positions(), self.tracker.token()))
    }

    pub(crate) fn joined_room_count(&self) -> usize {
        self.index.joined_room_count()
    }

    pub(crate) fn snapshot_count(&self) -> u64 {
        self.index.snapshot_count()
    }

    /// Rooms holding state, and the bytes of their held state records.
    pub(crate) fn held_state_memory(&self) -> (usize, usize) {
        self.index.held_state_memory()
    }

    /// Rooms waiting for recalculation.
    pub(crate) fn recalculation_queue_length(&self) -> usize {
        self.fallback.queue_length()
    }
}
