//! What the supervisor asks of Synapse's database to invalidate and
//! recompute rooms, and what the reads' fallback asks for a queued room.
//!
//! Owns: the [`Upstream`] implementation over [`SourceDatabase`] (its
//! [`SourceError`]s handed to the supervisor whole, as the
//! [`UpstreamError`] the supervisor knows). May not
//! touch: SQL text (the queries module's), roomcache's tables, the
//! recalculation queue (the supervisor's).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, TryFutureExt};

use roomcache_core::{StreamToken, WriterName};

use super::database::SourceRow;
use super::import::RulesSettings;
use super::range::StreamRange;
use super::{import, queries, SourceDatabase, SourceError};
use crate::model::{RoomId, UserId};
use crate::supervisor::recalc::{RecomputedRooms, Upstream, UpstreamError};

/// Synapse's database, as the supervisor's source of truth.
pub(crate) struct SynapseUpstream {
    source: Arc<SourceDatabase>,
    rules: RulesSettings,
    /// The configured event writers (their safe positions make the token).
    writers: Vec<WriterName>,
}

impl SynapseUpstream {
    pub(crate) fn new(
        source: Arc<SourceDatabase>,
        rules: RulesSettings,
        writers: &[WriterName],
    ) -> Self {
        SynapseUpstream {
            source,
            rules,
            writers: writers.to_vec(),
        }
    }
}

/// The valid room IDs of `rows` (an invalid one is skipped).
fn room_ids(rows: &[SourceRow]) -> Result<Vec<RoomId>, SourceError> {
    let mut room_ids = Vec::with_capacity(rows.len());
    for row in rows {
        if let Ok(room_id) = RoomId::parse(row.column::<&str>(0)?) {
            room_ids.push(room_id);
        }
    }
    Ok(room_ids)
}

impl SynapseUpstream {
    async fn read_safe_token(&self, floor: &StreamToken) -> Result<StreamToken, SourceError> {
        Ok(self.source.safe_token(&self.writers, floor).await?.token)
    }

    async fn read_changed_rooms(
        &self,
        from: &StreamToken,
        to: &StreamToken,
    ) -> Result<Vec<RoomId>, SourceError> {
        let range = StreamRange {
            from: from.clone(),
            to: to.clone(),
        };
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self.source.changed_room_ids(&range).await?;
        room_ids(&rows)
    }

    async fn recompute_rooms(
        &self,
        rooms: &[RoomId],
        at: &StreamToken,
    ) -> Result<RecomputedRooms, SourceError> {
        let ids: Vec<String> = rooms.iter().map(|r| r.as_str().to_owned()).collect();
        import::compute_rooms(&self.source, &ids, at, &self.rules).await
    }

    async fn read_rooms_of_user(
        &self,
        user: &UserId,
        rooms: &[RoomId],
    ) -> Result<Vec<RoomId>, SourceError> {
        let ids: Vec<&str> = rooms.iter().map(RoomId::as_str).collect();
        let rows = self
            .source
            .rows(&queries::ROOMS_OF_USER, &[&user.as_str(), &ids])
            .await?;
        room_ids(&rows)
    }
}

/// Each answer is [`SynapseUpstream`]'s own, its [`SourceError`] handed on
/// whole as an [`UpstreamError`].
impl Upstream for SynapseUpstream {
    fn safe_token<'a>(
        &'a self,
        floor: &'a StreamToken,
    ) -> BoxFuture<'a, Result<StreamToken, UpstreamError>> {
        self.read_safe_token(floor)
            .map_err(UpstreamError::new)
            .boxed()
    }

    fn allocated(&self) -> BoxFuture<'_, Result<i64, UpstreamError>> {
        self.source.allocated().map_err(UpstreamError::new).boxed()
    }

    fn changed_rooms<'a>(
        &'a self,
        from: &'a StreamToken,
        to: &'a StreamToken,
    ) -> BoxFuture<'a, Result<Vec<RoomId>, UpstreamError>> {
        self.read_changed_rooms(from, to)
            .map_err(UpstreamError::new)
            .boxed()
    }

    fn recompute<'a>(
        &'a self,
        rooms: &'a [RoomId],
        at: &'a StreamToken,
    ) -> BoxFuture<'a, Result<RecomputedRooms, UpstreamError>> {
        self.recompute_rooms(rooms, at)
            .map_err(UpstreamError::new)
            .boxed()
    }

    fn rooms_of_user<'a>(
        &'a self,
        user: &'a UserId,
        rooms: &'a [RoomId],
    ) -> BoxFuture<'a, Result<Vec<RoomId>, UpstreamError>> {
        self.read_rooms_of_user(user, rooms)
            .map_err(UpstreamError::new)
            .boxed()
    }
}
