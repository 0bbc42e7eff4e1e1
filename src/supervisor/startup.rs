//! Start-up: the rows committed in Postgres become the read index, and in
//! source mode the rooms that changed while roomcache was down are
//! invalidated and queued (spec §4), before anything is served.
//!
//! Owns: the steps — the write path over the stored positions ([`open`]),
//! the repair of positions ahead of the source and the invalidation
//! ([`invalidate_changed_rooms`]), loading rows into the index and reading
//! the queue ([`load`]); `server/serve.rs` runs them (source mode's
//! through `source::start`) in the order
//! "positions → (source mode: import hand-over, repair of positions ahead
//! of the source, then invalidation) → load". Source mode only tells it
//! what changed ([`Upstream::changed_rooms`]); it decides, deletes and
//! queues, through the one write path. May not touch: SQL (the store's),
//! Synapse's tables, HTTP.

use std::sync::Arc;
use std::time::Instant;

use roomcache_core::{PositionTracker, StreamToken, WriterName};
use tracing::{info, warn};

use super::commit::{CommitUnit, WritePath};
use super::recalc::{RecalculationError, RecalculationQueue, Upstream};
use crate::index::ReadIndex;
use crate::model::{RoomId, RowChange};
use crate::rules::HeldStateTypes;
use crate::store::{Store, StoreError, StoreWriter};

/// Rooms deleted and queued per transaction at start-up.
const INVALIDATION_CHUNK: usize = 1000;

/// The write path over an empty read index and the stored positions: what
/// the rest of start-up works with.
pub(crate) async fn open(
    store: Store,
    writer: StoreWriter,
    writers: &[WriterName],
) -> Result<WritePath, StoreError> {
    let positions = store.positions().await?;
    let tracker = Arc::new(PositionTracker::new(writers, &positions));
    Ok(WritePath::new(
        store,
        writer,
        Arc::new(ReadIndex::default()),
        tracker,
    ))
}

/// The outcome of the start-up check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invalidation {
    /// roomcache's durable token before the check.
    pub(crate) from: StreamToken,
    /// The source token the queued rooms will be recomputed at: the
    /// source's safe token, and no writer below its durable position (a
    /// writer's rows up to it were applied, so they are committed).
    pub(crate) to: StreamToken,
    /// Rooms newly queued by this check.
    pub(crate) queued: Vec<RoomId>,
}

/// §4: deletes the rows of every room that changed in the source since
/// roomcache's durable token and queues them. Does nothing when roomcache
/// covers nothing yet (every position 0: following from the start). First,
/// a writer whose durable position is ahead of what the source has
/// allocated is repaired ([`super::repair::at_start`]): the check then runs
/// from where it is lowered to.
pub(crate) async fn invalidate_changed_rooms(
    write_path: &WritePath,
    upstream: &dyn Upstream,
) -> Result<Invalidation, RecalculationError> {
    super::repair::at_start(write_path, upstream).await?;
    let from = write_path.tracker().token();
    let to = upstream.safe_token(&from).await?.copy_and_advance(&from);
    if from == StreamToken::linear(0) {
        return Ok(Invalidation {
            from,
            to,
            queued: Vec::new(),
        });
    }
    let queued = upstream.changed_rooms(&from, &to).await?;
    for chunk in queued.chunks(INVALIDATION_CHUNK) {
        let mut unit = CommitUnit::default();
        unit.invalidate(chunk);
        write_path.commit(unit).await?;
    }
    info!(
        from = %from,
        to = %to,
        rooms = queued.len(),
        "start-up check: rooms changed in Synapse since the cached position were invalidated and queued"
    );
    Ok(Invalidation { from, to, queued })
}

/// The rooms' data: whether the stored held state is of the configured
/// types. A schema without rooms records them; a schema whose rooms were
/// computed for other types (or before the held state existed) has every
/// room invalidated and queued when `recompute` (source mode: the queue
/// recomputes them, and reads treat queued rooms as unknown meanwhile), and
/// is left incomplete otherwise (feed mode: every room unknown). Returns
/// whether the held state is complete.
pub(crate) async fn check_held_state_types(
    write_path: &WritePath,
    types: &HeldStateTypes,
    recompute: bool,
) -> Result<bool, StoreError> {
    let store = write_path.store();
    let stored = store.held_state_types().await?;
    if stored.as_ref().is_some_and(|s| s.same_types(types)) {
        return Ok(true);
    }
    let rooms = store.cached_room_ids().await?;
    if !rooms.is_empty() && !recompute {
        warn!(
            rooms = rooms.len(),
            "the rooms' held state was computed for other state types than room_state_types \
             and room_state_wildcard_types name (or before roomcache held it); every room's \
             data is answered as unknown: restore the setting, or start from an empty schema"
        );
        return Ok(false);
    }
    let mut chunks = rooms.chunks(INVALIDATION_CHUNK).peekable();
    loop {
        let mut unit = CommitUnit::default();
        if let Some(chunk) = chunks.next() {
            unit.invalidate(chunk);
        }
        if chunks.peek().is_none() {
            unit.held_state_types(types.clone());
            write_path.commit(unit).await?;
            break;
        }
        write_path.commit(unit).await?;
    }
    if !rooms.is_empty() {
        info!(
            rooms = rooms.len(),
            "the held state types changed (or the held state is new): every room was queued \
             to be recomputed"
        );
    }
    Ok(true)
}

/// Loads every committed row into the read index (snapshots streamed in
/// chunks, so the rows as read never all sit beside the index) and returns
/// the recalculation queue, recomputed at `queue_position`.
pub(crate) async fn load(
    write_path: &WritePath,
    queue_position: StreamToken,
) -> Result<Arc<RecalculationQueue>, StoreError> {
    let started = Instant::now();
    let store = write_path.store();
    let loaded = store.load_all_but_snapshots().await?;
    let joined: Vec<RowChange> = loaded
        .joined_rooms
        .into_iter()
        .map(RowChange::UpsertJoinedRoom)
        .collect();
    write_path.publish_loaded(&joined);
    drop(joined);
    store
        .load_snapshots(|chunk| write_path.publish_loaded_snapshots(chunk))
        .await?;
    let room_list_data: Vec<RowChange> = loaded
        .space_children
        .into_iter()
        .map(|(space_room_id, children)| RowChange::SpaceChildren {
            space_room_id,
            children,
        })
        .chain(loaded.account_data.into_iter().map(RowChange::AccountData))
        .chain(
            loaded
                .current_states
                .into_iter()
                .map(|(room_id, state)| RowChange::CurrentState { room_id, state }),
        )
        .chain(
            loaded
                .latest_events
                .into_iter()
                .map(|(room_id, events)| RowChange::LatestEvents { room_id, events }),
        )
        .collect();
    write_path.publish_loaded(&room_list_data);
    drop(room_list_data);
    crate::memory::release_freed_memory();
    let index = write_path.index();
    info!(
        joined_rooms = index.joined_room_count(),
        snapshots = index.snapshot_count(),
        token = %write_path.tracker().token(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "loaded the cached rows"
    );
    metrics::gauge!("roomcache_joined_rooms").set(index.joined_room_count() as f64);
    metrics::gauge!("roomcache_snapshots").set(index.snapshot_count() as f64);
    Ok(RecalculationQueue::new(
        loaded.recalculation_queue,
        queue_position,
    ))
}
