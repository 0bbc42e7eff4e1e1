//! Positions found ahead of what the source has allocated, repaired
//! (source mode).
//!
//! A writer's durable position above the highest position Synapse has
//! allocated on the events stream cannot be true: a position never handed
//! out was never persisted. It comes from a bogus announcement an older
//! roomcache believed, or from Synapse's own `stream_positions` after
//! Synapse adopted one, or from a hand edit; rows of the writer between
//! where roomcache really was and that position may have been skipped, and
//! the bogus advance applied others out of turn. Such a position is logged
//! as an error and lowered to the highest point provably safe
//! ([`safe_point`]); every room with anything of the writer after that
//! point, up to the allocated maximum (nothing can be beyond), and every
//! room whose cached rows come from a position above it (a database
//! restored behind roomcache), is recomputed through the recalculation
//! queue and its drain, and the follower reads the writer's rows from there
//! on. No re-import: only those rooms.
//!
//! At start-up ([`at_start`], before any row is loaded) the rooms are
//! invalidated like start-up's own check does, then the positions lowered;
//! a crash in between repeats the repair at the next start. While serving
//! ([`while_serving`], the follower asks before each step's reads) the rooms
//! are queued with their rows kept (reads use the fallback for them) and
//! the positions lowered in one commit, then the queue is drained at once.
//!
//! The backfill stream gets the same treatment while serving
//! ([`backfill_while_serving`]): a writer's backfill position above
//! Synapse's own row for it (a database restored behind roomcache) is
//! lowered to that row, and every room whose held latest events include a
//! backfilled event beyond it is recomputed.
//!
//! Owns: finding such writers, their safe points and the order of the
//! repair through the one write path. May not touch: SQL (the store's),
//! Synapse's tables (only through [`Upstream`]), HTTP.

use std::collections::BTreeMap;

use roomcache_core::{StreamToken, WriterName};
use tracing::{error, info};

use super::commit::{CommitUnit, WritePath};
use super::recalc::{drain, RecalculationError, Upstream};
use super::{Recalculate, Shared};
use crate::model::RoomId;
use crate::store::ImportProgress;

/// Rooms invalidated per transaction by a repair at start-up.
const INVALIDATION_CHUNK: usize = 1000;

/// What a repair does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Repair {
    /// Each writer found ahead: its position, and the one it is lowered to.
    pub(crate) lowered: BTreeMap<WriterName, (i64, i64)>,
    /// Rooms with anything of those writers after their lowered positions.
    pub(crate) rooms: Vec<RoomId>,
    /// The highest position the source had allocated.
    pub(crate) allocated: i64,
}

/// The highest point of a writer found ahead that is provably safe (every
/// row of the writer up to it was applied): what roomcache last read the
/// writer's rows up to (written with every position it moves; a position
/// moved any other way leaves it behind) when that is within what the
/// source has allocated; else the position the import computed every room
/// at, likewise; else 0 (every row of the writer is read again).
pub(crate) fn safe_point(
    read_up_to: Option<i64>,
    import: Option<&ImportProgress>,
    allocated: i64,
) -> i64 {
    let within = |position: &i64| *position <= allocated;
    read_up_to
        .filter(within)
        .or_else(|| {
            import
                .filter(|progress| progress.finished)
                .map(|progress| progress.target_position)
                .filter(within)
        })
        .unwrap_or(0)
}

/// The writers whose durable position is above what the source has
/// allocated, where each is lowered to, and the rooms to recompute; `None`
/// when no writer is ahead.
async fn plan(
    write_path: &WritePath,
    upstream: &dyn Upstream,
) -> Result<Option<Repair>, RecalculationError> {
    let durable = write_path.tracker().positions();
    let allocated = upstream.allocated().await?;
    if durable.values().all(|position| *position <= allocated) {
        return Ok(None);
    }
    let store = write_path.store();
    let read_up_to = store.read_up_to().await?;
    let import = store.import_progress().await?;
    let mut lowered = BTreeMap::new();
    let (mut from, mut to) = (durable.clone(), durable.clone());
    for (writer, position) in durable.iter().filter(|(_, p)| **p > allocated) {
        let read = read_up_to.get(writer).copied().flatten();
        let safe = safe_point(read, import.as_ref(), allocated);
        lowered.insert(writer.clone(), (*position, safe));
        from.insert(writer.clone(), safe);
        to.insert(writer.clone(), allocated);
    }
    let mut rooms = upstream
        .changed_rooms(
            &StreamToken::of_writers(&from),
            &StreamToken::of_writers(&to),
        )
        .await?;
    rooms.extend(store.rooms_with_rows_after(allocated).await?);
    rooms.sort();
    rooms.dedup();
    for (writer, (position, safe)) in &lowered {
        error!(
            %writer,
            position,
            allocated,
            lowered_to = safe,
            rooms = rooms.len(),
            "a writer's position is ahead of what Synapse has allocated on the events stream \
             (a bogus announcement was believed); lowering it and recomputing the rooms \
             changed since"
        );
        metrics::counter!("roomcache_source_positions_repaired_total", "stream" => "events")
            .increment(1);
    }
    Ok(Some(Repair {
        lowered,
        rooms,
        allocated,
    }))
}

/// At start-up, before any row is loaded: invalidates (deletes and
/// queues) the rooms to recompute, then lowers the positions, each through
/// the write path. The queued rooms are recomputed with the ones start-up's
/// check queues after it, at its position.
pub(crate) async fn at_start(
    write_path: &WritePath,
    upstream: &dyn Upstream,
) -> Result<Option<Repair>, RecalculationError> {
    let Some(repair) = plan(write_path, upstream).await? else {
        return Ok(None);
    };
    for chunk in repair.rooms.chunks(INVALIDATION_CHUNK) {
        let mut unit = CommitUnit::default();
        unit.invalidate(chunk);
        write_path.commit(unit).await?;
    }
    let mut unit = CommitUnit::default();
    for (writer, (_, safe)) in &repair.lowered {
        unit.lower(writer, *safe);
    }
    write_path.commit(unit).await?;
    Ok(Some(repair))
}

/// While serving, with nothing being applied (the follower asks between
/// its steps): queues the rooms to recompute (their rows stay; reads use
/// the fallback for them) and lowers the positions in one commit, then
/// drains the queue at the lowered token. Fails without changing anything
/// when rooms are queued already (start-up's recalculation has not
/// finished).
pub(super) async fn while_serving(
    shared: &Shared,
    job: &Recalculate,
) -> Result<Option<Repair>, RecalculationError> {
    let (write_path, queue) = (&shared.write_path, &shared.queue);
    let Some(repair) = plan(write_path, job.upstream.as_ref()).await? else {
        return Ok(None);
    };
    let mut lowered = write_path.tracker().positions();
    for (writer, (_, safe)) in &repair.lowered {
        lowered.insert(writer.clone(), *safe);
    }
    if !queue.requeue(&repair.rooms, StreamToken::of_writers(&lowered)) {
        return Err(RecalculationError::QueueBusy);
    }
    let mut unit = CommitUnit::default();
    unit.enqueue(&repair.rooms);
    for (writer, (_, safe)) in &repair.lowered {
        unit.lower(writer, *safe);
    }
    if let Err(failure) = write_path.commit(unit).await {
        queue.remove(&repair.rooms);
        return Err(failure.into());
    }
    drain(shared, job).await?;
    info!(
        rooms = repair.rooms.len(),
        token = %write_path.tracker().token(),
        "positions repaired and the rooms changed since recomputed"
    );
    Ok(Some(repair))
}

/// While serving, with nothing being applied (the follower asks between
/// its steps): each Synapse writer of `lowered` (its backfill position in
/// roomcache, and Synapse's row for it, lower) has its position lowered
/// to Synapse's, in one commit with the rooms to recompute queued: those
/// holding a backfilled event beyond the lowest of Synapse's rows (events
/// Synapse may no longer have). Then drains the queue. Returns the rooms.
pub(super) async fn backfill_while_serving(
    shared: &Shared,
    job: &Recalculate,
    lowered: &BTreeMap<String, (i64, i64)>,
) -> Result<Vec<RoomId>, RecalculationError> {
    let (write_path, queue) = (&shared.write_path, &shared.queue);
    let Some(lowest) = lowered.values().map(|(_, to)| *to).min() else {
        return Ok(Vec::new());
    };
    let rooms = write_path
        .store()
        .rooms_with_backfilled_after(lowest)
        .await?;
    for (writer, (position, to)) in lowered {
        error!(
            %writer,
            position,
            synapse = to,
            rooms = rooms.len(),
            "a writer's backfill position is ahead of Synapse's own (its database was \
             restored behind roomcache); lowering it and recomputing the rooms holding \
             backfilled events beyond it"
        );
        metrics::counter!("roomcache_source_positions_repaired_total", "stream" => "backfill")
            .increment(1);
    }
    if !queue.requeue(&rooms, write_path.tracker().token()) {
        return Err(RecalculationError::QueueBusy);
    }
    let mut unit = CommitUnit::default();
    unit.enqueue(&rooms);
    for (writer, (_, to)) in lowered {
        unit.lower_backfill(writer, *to);
    }
    if let Err(failure) = write_path.commit(unit).await {
        queue.remove(&rooms);
        return Err(failure.into());
    }
    drain(shared, job).await?;
    info!(
        rooms = rooms.len(),
        "backfill positions repaired and the rooms holding backfilled events recomputed"
    );
    Ok(rooms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn import(target_position: i64, finished: bool) -> ImportProgress {
        ImportProgress {
            target_position,
            last_room_id: String::new(),
            rooms_done: 0,
            rows_written: 0,
            finished,
        }
    }

    #[test]
    fn the_safe_point_is_the_highest_provable_one_within_what_was_allocated() {
        let done = import(400, true);
        assert_eq!(safe_point(Some(439), Some(&done), 500), 439);
        // Read beyond what is allocated now (a restored database): the
        // import's position, or nothing.
        assert_eq!(safe_point(Some(600), Some(&done), 500), 400);
        assert_eq!(safe_point(Some(600), Some(&done), 300), 0);
        // Written by an older roomcache (nothing read kept beside it).
        assert_eq!(safe_point(None, Some(&done), 500), 400);
        assert_eq!(safe_point(None, Some(&import(400, false)), 500), 0);
        assert_eq!(safe_point(None, None, 500), 0);
    }
}
