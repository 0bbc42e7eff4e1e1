//! The one write path: every change that reaches Postgres, the read index
//! and the positions goes through [`WritePath::commit`]; source mode's
//! import batches, which nothing shows before start-up loads them and which
//! move no position, through [`WritePath::commit_unpublished`]. The write
//! path holds the one [`StoreWriter`], so no other code commits.
//!
//! Owns: the order "commit in Postgres → publish the rows to the read index
//! and finish claims or advance positions, in one publication of the
//! publish gate". Only the gate hands out the [`Publication`] that the read
//! index and the position tracker require, so no other code can show a row
//! or move a position. May not touch: the rules, room actors, SQL (the
//! store's), HTTP.

use std::sync::Arc;

use roomcache_core::{Claim, PositionTracker, Publication, StreamToken, WriterName};
use tracing::instrument;

use crate::index::ReadIndex;
use crate::model::{RoomId, RowChange, SnapshotView};
use crate::rules::{HeldStateTypes, RoomMemory};
use crate::store::{CommitGroup, ImportProgress, Store, StoreError, StoreWriter};

/// What one commit makes durable, then visible.
#[derive(Debug, Default)]
pub(crate) struct CommitUnit<'rows> {
    group: CommitGroup,
    visible: Vec<&'rows [RowChange]>,
    claims: Vec<&'rows Claim>,
    advances: Vec<(WriterName, i64)>,
    lowered: Vec<(WriterName, i64)>,
}

impl<'rows> CommitUnit<'rows> {
    /// Row changes to write, then publish.
    pub(crate) fn rows(&mut self, changes: &'rows [RowChange]) {
        self.group.add_changes(changes);
        self.visible.push(changes);
    }

    /// The rules' memory of a room (`None`: forget it).
    pub(crate) fn memory(&mut self, room: RoomId, memory: Option<RoomMemory>) {
        self.group.set_memory(room, memory);
    }

    /// A batch's claim: its writer's position `position` is written with
    /// the rows, and the claim finished once they are published.
    pub(crate) fn finish(&mut self, claim: &'rows Claim, position: i64) {
        self.group.advance(&claim.writer, position);
        self.claims.push(claim);
    }

    /// Moves `writer` to `position` (every row up to it is applied).
    pub(crate) fn advance(&mut self, writer: &WriterName, position: i64) {
        self.group.advance(writer, position);
        self.advances.push((writer.clone(), position));
    }

    /// Source mode's repair: moves `writer` back to `position` (a position
    /// found ahead of what the source has allocated). The tracker follows
    /// only when the writer has no claim open; the repair lowers only while
    /// nothing is being applied.
    pub(crate) fn lower(&mut self, writer: &WriterName, position: i64) {
        self.group
            .lower(crate::store::EVENTS_STREAM, writer.as_str(), position);
        self.lowered.push((writer.clone(), position));
    }

    /// Source mode: lowers the backfill stream's position of Synapse
    /// writer `instance` to `position` (a repair; positions otherwise only
    /// grow).
    pub(crate) fn lower_backfill(&mut self, instance: &str, position: i64) {
        self.group
            .lower(crate::store::BACKFILL_STREAM, instance, position);
    }

    /// Queues `rooms` for recalculation while their rows stay visible
    /// (reads use the fallback for queued rooms; the drain replaces the
    /// rows).
    pub(crate) fn enqueue(&mut self, rooms: &[RoomId]) {
        self.group.enqueue(rooms);
    }

    /// Start-up invalidation: deletes every row of `rooms` and queues them
    /// for recalculation (called before the rows are loaded: nothing to
    /// publish).
    pub(crate) fn invalidate(&mut self, rooms: &[RoomId]) {
        self.group.invalidate(rooms);
    }

    /// Source mode: the import's progress, written with this commit (the
    /// hand-over, which marks it finished).
    pub(crate) fn import_progress(&mut self, progress: ImportProgress) {
        self.group.set_import_progress(progress);
    }

    /// Source mode: Synapse's account-data stream is applied up to
    /// `position` with this commit.
    pub(crate) fn account_data_position(&mut self, position: i64) {
        self.group.set_account_data_position(position);
    }

    /// Records the types the rooms' held state is computed for.
    pub(crate) fn held_state_types(&mut self, types: HeldStateTypes) {
        self.group.set_held_state_types(types);
    }

    /// Takes recomputed rooms off the recalculation queue.
    pub(crate) fn dequeue(&mut self, rooms: &[RoomId]) {
        self.group.dequeue(rooms);
    }

    /// Source mode: the caches stream's position of a Synapse process,
    /// written with this commit (not a writer's position: nothing waits for
    /// it).
    pub(crate) fn caches_position(&mut self, instance: &str, position: i64) {
        self.group.advance_caches(instance, position);
    }

    /// Source mode: the backfill stream's position of a Synapse writer,
    /// written with this commit (not an events-stream position: nothing
    /// waits for it).
    pub(crate) fn backfill_position(&mut self, instance: &str, position: i64) {
        self.group.advance_backfill(instance, position);
    }

    pub(crate) fn row_count(&self) -> usize {
        self.group.row_count()
    }
}

/// What an unpublished commit makes durable: one batch of source mode's
/// import (rows, the rules' memories and the import's progress), which
/// moves no position and which nothing shows until start-up loads the rows
/// into the read index.
#[derive(Debug, Default)]
pub(crate) struct UnpublishedUnit {
    group: CommitGroup,
}

impl UnpublishedUnit {
    /// Row changes to write.
    pub(crate) fn rows(&mut self, changes: &[RowChange]) {
        self.group.add_changes(changes);
    }

    /// The rules' memory of a room (`None`: forget it).
    pub(crate) fn memory(&mut self, room: RoomId, memory: Option<RoomMemory>) {
        self.group.set_memory(room, memory);
    }

    /// The import's progress, written with this commit.
    pub(crate) fn import_progress(&mut self, progress: ImportProgress) {
        self.group.set_import_progress(progress);
    }
}

/// The store, the read index and the tracker, used only in this order.
#[derive(Debug, Clone)]
pub(crate) struct WritePath {
    store: Store,
    /// The one handle that commits (shared by the write path's clones).
    writer: Arc<StoreWriter>,
    index: Arc<ReadIndex>,
    tracker: Arc<PositionTracker>,
}

impl WritePath {
    pub(crate) fn new(
        store: Store,
        writer: StoreWriter,
        index: Arc<ReadIndex>,
        tracker: Arc<PositionTracker>,
    ) -> Self {
        WritePath {
            store,
            writer: Arc::new(writer),
            index,
            tracker,
        }
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn tracker(&self) -> &Arc<PositionTracker> {
        &self.tracker
    }

    pub(crate) fn index(&self) -> &Arc<ReadIndex> {
        &self.index
    }

    /// Commits `unit` in one transaction; once it is durable, publishes its
    /// rows and moves its positions as one step for readers, and returns
    /// the token right after that publication (what a writer's answer
    /// says its rows are visible at). On error nothing of it is visible
    /// anywhere (the caller abandons its claims).
    #[instrument(name = "commit", skip_all, fields(rows = unit.row_count()))]
    pub(crate) async fn commit(&self, unit: CommitUnit<'_>) -> Result<StreamToken, StoreError> {
        self.writer.commit(&unit.group).await?;
        let token = self.tracker.gate().publish(|publication| {
            for changes in &unit.visible {
                self.index.publish(changes, publication);
            }
            for claim in &unit.claims {
                self.tracker.finish(claim, publication);
            }
            for (writer, position) in &unit.advances {
                self.tracker.advance(writer, *position, publication);
            }
            for (writer, position) in &unit.lowered {
                self.tracker.lower(writer, *position, publication);
            }
            self.tracker.token()
        });
        metrics::gauge!("roomcache_joined_rooms").set(self.index.joined_room_count() as f64);
        metrics::gauge!("roomcache_snapshots").set(self.index.snapshot_count() as f64);
        Ok(token)
    }

    /// Source mode's import: commits one batch in one transaction, and
    /// neither publishes it nor moves a position (the import runs before
    /// start-up loads the rows, and its hand-over moves the positions
    /// through [`WritePath::commit`]).
    #[instrument(name = "commit_unpublished", skip_all)]
    pub(crate) async fn commit_unpublished(
        &self,
        unit: &UnpublishedUnit,
    ) -> Result<(), StoreError> {
        self.writer.commit(&unit.group).await
    }

    /// Start-up only: shows snapshots that are already committed (loaded
    /// from Postgres) to readers.
    pub(crate) fn publish_loaded_snapshots(&self, snapshots: &[SnapshotView<'_>]) {
        self.tracker
            .gate()
            .publish(|publication: &Publication<'_>| {
                self.index.publish_loaded_snapshots(snapshots, publication)
            });
    }

    /// Start-up only: shows rows that are already committed (loaded from
    /// Postgres) to readers.
    pub(crate) fn publish_loaded(&self, changes: &[RowChange]) {
        self.tracker
            .gate()
            .publish(|publication: &Publication<'_>| self.index.publish(changes, publication));
    }
}
