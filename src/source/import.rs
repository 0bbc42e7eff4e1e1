//! The import: every joined-room row, membership snapshot and rules memory
//! computed from Synapse's tables, in batches of rooms, resumable.
//!
//! How: each room's history up to a fixed stream position (its events,
//! ex-outliers and current-state deltas, read by [`super::read`], and its
//! backfilled events) is
//! replayed through the same pure rules the live feed uses
//! ([`crate::rules::apply_rows`]), from an empty state, in stream order; then
//! the `forgotten` flags of the current memberships are applied. This
//! reproduces what Synapse's live path wrote, event by event (which its own
//! background rebuild does not), and yields the rules' [`RoomMemory`] so the
//! live feed continues exactly. Owns: the import loop, its progress (table
//! `source_import_progress`, written in the same transaction as each batch's
//! rows) and its progress bar / log lines. May not touch: Synapse's tables
//! (read-only), the rules' internals, positions and the read index: the
//! batches are written before anything is served (they become visible when
//! start-up loads the rows), and the hand-over of the writers' positions at
//! the end goes through the supervisor's write path.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing::{info, warn};

use super::range::StreamRange;
use super::read::{self, forget_rows};
use super::{queries, SourceDatabase, SourceError};
use roomcache_core::{StreamToken, WriterName};

use crate::config::Settings;
use crate::feed::FeedRow;
use crate::model::RoomId;
use crate::rules::{apply_rows, RoomState, RulesContext};
use crate::store::{ImportProgress, Store};
use crate::supervisor::commit::{CommitUnit, UnpublishedUnit, WritePath};
use crate::supervisor::recalc::RecomputedRooms;

/// What the rules need of the deployment to replay rooms.
#[derive(Debug, Clone)]
pub(crate) struct RulesSettings {
    pub(crate) server_name: String,
    pub(crate) held_state: std::sync::Arc<crate::rules::HeldStateTypes>,
}

impl RulesSettings {
    /// What the rules need of the deployment, from the settings.
    pub(crate) fn of(settings: &Settings) -> RulesSettings {
        RulesSettings {
            server_name: settings.server_name.clone(),
            held_state: settings.held_state_types(),
        }
    }
}

/// Replays one room's rows (all writers, stream order) from an empty state.
fn replay_room(
    room_id: &RoomId,
    rows: Vec<(String, FeedRow)>,
    rules: &RulesSettings,
) -> Result<RoomState, crate::rules::RuleError> {
    let mut state = RoomState::default();
    let mut rows = rows.into_iter().peekable();
    while let Some((writer, first)) = rows.next() {
        // One run of rows of one writer, moved (not copied) into one call.
        let mut feed = vec![first];
        while let Some((_, row)) = rows.next_if(|(next, _)| *next == writer) {
            feed.push(row);
        }
        let context = RulesContext {
            server_name: rules.server_name.clone(),
            writer,
            held_state: rules.held_state.clone(),
        };
        state = apply_rows(&state, room_id, &feed, &context)?.state;
    }
    Ok(state)
}

/// A batch of rooms as read from Synapse: every room's rows in stream
/// order (forgets last), ready to replay.
pub(crate) struct ReadRooms {
    by_room: BTreeMap<RoomId, Vec<(String, FeedRow)>>,
    read: Duration,
}

/// Reads the rows of `rooms` at `to` (each writer's rows up to its
/// position in the token), with every backfilled event of theirs that is
/// committed (Synapse's initial-timeline query selects them at any token).
pub(crate) async fn read_rooms(
    source: &SourceDatabase,
    rooms: &[String],
    to: &StreamToken,
    server_name: &str,
) -> Result<ReadRooms, SourceError> {
    let started = Instant::now();
    let range = read::read_range(source, &StreamRange::up_to(to), Some(rooms), server_name).await?;
    let forgotten = read::forgotten_memberships(source, to, Some(rooms)).await?;
    let backfilled = read::backfilled_rows_of_rooms(source, rooms).await?;
    let mut by_room: BTreeMap<RoomId, Vec<(String, FeedRow)>> = BTreeMap::new();
    add_to_rooms(&mut by_room, range.rows);
    let forget_writer = |rows: &Vec<(String, FeedRow)>| {
        rows.last()
            .map(|(w, _)| w.clone())
            .unwrap_or_else(|| "master".to_owned())
    };
    for membership in forgotten {
        let rows = by_room.entry(membership.room_id.clone()).or_default();
        let writer = forget_writer(rows);
        // The rules apply a group's forgets after its memberships.
        let stream_id = to.max_position().max(1);
        for row in forget_rows(stream_id, &[membership]) {
            rows.push((writer.clone(), row));
        }
    }
    // Backfilled events last (stream id 0: they move and bump nothing), as
    // Synapse backfills once it has the live events: a backfilled
    // redaction changes no value computed before, as when followed.
    add_to_rooms(&mut by_room, backfilled);
    Ok(ReadRooms {
        by_room,
        read: started.elapsed(),
    })
}

/// Adds each row (with its writer) to its room's rows.
fn add_to_rooms(
    by_room: &mut BTreeMap<RoomId, Vec<(String, FeedRow)>>,
    rows: Vec<(String, FeedRow)>,
) {
    for (writer, row) in rows {
        if let Some(room) = row.room_id() {
            by_room.entry(room.clone()).or_default().push((writer, row));
        }
    }
}

/// Replays every room of a batch read by [`read_rooms`] (pure: no I/O).
pub(crate) fn replay_rooms(read: ReadRooms, rules: &RulesSettings) -> RecomputedRooms {
    let started = Instant::now();
    let rooms = read.by_room.len();
    let mut computed = RecomputedRooms::default();
    for (room, rows) in read.by_room {
        match replay_room(&room, rows, rules) {
            Ok(state) => {
                let (changes, memory) = state.rows_from_nothing(&room);
                computed.changes.extend(changes);
                computed
                    .memories
                    .extend(memory.map(|memory| (room, memory)));
            }
            Err(error) => {
                warn!(room_id = %room, %error, "the rules refused this room's history; it is left without rows");
                computed.refused.push(room);
            }
        }
    }
    tracing::debug!(
        rooms,
        read_ms = read.read.as_millis() as u64,
        replay_ms = started.elapsed().as_millis() as u64,
        "computed a batch of rooms"
    );
    computed
}

/// Computes the rows of `rooms` at `to` (each writer's rows up to its
/// position in the token).
pub(crate) async fn compute_rooms(
    source: &SourceDatabase,
    rooms: &[String],
    to: &StreamToken,
    rules: &RulesSettings,
) -> Result<RecomputedRooms, SourceError> {
    let read = read_rooms(source, rooms, to, &rules.server_name).await?;
    Ok(replay_rooms(read, rules))
}

/// The next rooms to import, in `room_id` order after `after`.
async fn next_rooms(
    source: &SourceDatabase,
    after: &str,
    limit: i64,
) -> Result<Vec<String>, SourceError> {
    let rows = source.rows(&queries::NEXT_ROOMS, &[&after, &limit]).await?;
    rows.iter().map(|row| row.column(0)).collect()
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImportSummary {
    pub(crate) target_position: i64,
    pub(crate) rooms: i64,
    pub(crate) rows: i64,
    /// False when the import had finished before and nothing was done.
    pub(crate) ran: bool,
}

/// The import's settings.
#[derive(Debug, Clone)]
pub(crate) struct ImportOptions {
    /// The server name and the held state types the rules replay with.
    pub(crate) rules: RulesSettings,
    /// Writers whose positions become the import's position when it ends.
    pub(crate) writers: Vec<WriterName>,
    /// Rooms per batch (one read, one transaction).
    pub(crate) batch_rooms: usize,
    /// Show a progress bar when stderr is a terminal.
    pub(crate) progress_bar: bool,
}

impl ImportOptions {
    /// The import's settings from roomcache's settings.
    pub(crate) fn of(settings: &Settings, progress_bar: bool) -> ImportOptions {
        ImportOptions {
            rules: RulesSettings::of(settings),
            writers: settings.writers.clone(),
            batch_rooms: settings.source_import_batch_rooms,
            progress_bar,
        }
    }
}

/// Where a run of the import starts.
enum ImportStart {
    /// An import finished before: nothing to do.
    Finished(ImportSummary),
    /// From this progress (a new import's, or an interrupted one's).
    From(ImportProgress),
}

/// Where this run starts: done already, continuing an interrupted import,
/// or a new import up to Synapse's current safe position.
async fn import_start(
    store: &Store,
    source: &SourceDatabase,
    writers: &[WriterName],
) -> Result<ImportStart, SourceError> {
    Ok(match store.import_progress().await? {
        Some(p) if p.finished => ImportStart::Finished(ImportSummary {
            target_position: p.target_position,
            rooms: p.rooms_done,
            rows: p.rows_written,
            ran: false,
        }),
        Some(p) => {
            info!(
                last_room_id = p.last_room_id,
                rooms_done = p.rooms_done,
                target_position = p.target_position,
                "continuing the interrupted import"
            );
            ImportStart::From(p)
        }
        None => {
            let target_position = source.safe_position(writers).await?;
            info!(target_position, "starting the import from Synapse's tables");
            ImportStart::From(ImportProgress {
                target_position,
                last_room_id: String::new(),
                rooms_done: 0,
                rows_written: 0,
                finished: false,
            })
        }
    })
}

/// Before the import reads anything (unless a backfill position is stored
/// already: an import continued): the backfill stream's positions, each
/// Synapse writer's row then (what the import reads includes everything up
/// to it) and 0 for each of `writers` without one, so that following the
/// backfill stream continues from there rather than from the beginning.
async fn initialise_backfill_positions(
    write_path: &WritePath,
    source: &SourceDatabase,
    writers: &[WriterName],
) -> Result<(), SourceError> {
    if !write_path.store().backfill_positions().await?.is_empty() {
        return Ok(());
    }
    let mut positions = read::backfill_positions(source).await?;
    for writer in writers {
        positions.entry(writer.as_str().to_owned()).or_insert(0);
    }
    let mut unit = CommitUnit::default();
    for (writer, position) in &positions {
        unit.backfill_position(writer, *position);
    }
    write_path.commit(unit).await?;
    info!(?positions, "the backfill stream is followed from here");
    Ok(())
}

/// The import's progress bar (on stderr when asked for and a terminal) and
/// log lines.
struct ImportReport {
    bar: ProgressBar,
    /// Rooms to import in all.
    total: i64,
    started: Instant,
    last_log: Instant,
    rooms_at_start: i64,
    rows_at_start: i64,
}

impl ImportReport {
    fn start(total: i64, progress_bar: bool, progress: &ImportProgress) -> ImportReport {
        let bar = ProgressBar::with_draw_target(
            Some(total.max(0) as u64),
            if progress_bar && std::io::stderr().is_terminal() {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} importing rooms {pos}/{len} [{bar:30}] {per_sec} rooms/s, ETA {eta} {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_position(progress.rooms_done.max(0) as u64);
        ImportReport {
            bar,
            total,
            started: Instant::now(),
            last_log: Instant::now(),
            rooms_at_start: progress.rooms_done,
            rows_at_start: progress.rows_written,
        }
    }

    /// Seconds since this run started (never zero).
    fn seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64().max(1e-9)
    }

    /// Rows written per second in this run, over `seconds`.
    fn rows_per_second(&self, progress: &ImportProgress, seconds: f64) -> u64 {
        ((progress.rows_written - self.rows_at_start) as f64 / seconds) as u64
    }

    /// After each batch: the bar moves; a log line at most every 5 seconds.
    fn batch_committed(&mut self, progress: &ImportProgress) {
        self.bar.set_position(progress.rooms_done.max(0) as u64);
        self.bar
            .set_message(format!("{} rows", progress.rows_written));
        if self.last_log.elapsed() >= Duration::from_secs(5) {
            self.last_log = Instant::now();
            let seconds = self.seconds();
            info!(
                rooms_done = progress.rooms_done,
                rooms_total = self.total,
                rows = progress.rows_written,
                rows_per_second = self.rows_per_second(progress, seconds),
                "import progress"
            );
        }
    }

    fn finished(self, progress: &ImportProgress) {
        self.bar.finish_and_clear();
        let seconds = self.seconds();
        info!(
            rooms = progress.rooms_done,
            rows = progress.rows_written,
            seconds,
            rows_per_second = self.rows_per_second(progress, seconds),
            rooms_this_run = progress.rooms_done - self.rooms_at_start,
            target_position = progress.target_position,
            "import finished"
        );
    }
}

/// The commit of one batch of rooms: their rows and rules memories, and
/// `progress` (already counting the batch), in one transaction.
fn batch_unit(computed: &RecomputedRooms, progress: &ImportProgress) -> UnpublishedUnit {
    let mut unit = UnpublishedUnit::default();
    unit.rows(&computed.changes);
    for (room, memory) in &computed.memories {
        unit.memory(room.clone(), Some(memory.clone()));
    }
    unit.import_progress(progress.clone());
    unit
}

/// Replays a batch on a blocking thread, so the next batch is read from
/// Synapse meanwhile.
fn spawn_replay(
    rooms: Vec<String>,
    read: ReadRooms,
    rules: &RulesSettings,
) -> tokio::task::JoinHandle<(Vec<String>, RecomputedRooms)> {
    let rules = rules.clone();
    tokio::task::spawn_blocking(move || (rooms, replay_rooms(read, &rules)))
}

/// Imports the rooms after `progress.last_room_id`, batch by batch, each
/// committed with the progress. Three batches are in flight at once: one
/// read from Synapse, the one before replayed through the rules on a
/// blocking thread, the one before that committed; memory holds at most
/// those three.
async fn import_batches(
    write_path: &WritePath,
    source: &SourceDatabase,
    options: &ImportOptions,
    progress: &mut ImportProgress,
    report: &mut ImportReport,
) -> Result<(), SourceError> {
    let batch_rooms = options.batch_rooms.max(1) as i64;
    let target = progress.target_position;
    let rules = &options.rules;
    let server_name = rules.server_name.as_str();
    let read = |rooms: Vec<String>| async move {
        if rooms.is_empty() {
            return Ok::<_, SourceError>(None);
        }
        let read = read_rooms(source, &rooms, &StreamToken::linear(target), server_name).await?;
        let following = match rooms.last() {
            Some(last) => next_rooms(source, last, batch_rooms).await?,
            None => Vec::new(),
        };
        Ok(Some((rooms, read, following)))
    };
    let first = next_rooms(source, &progress.last_room_id, batch_rooms).await?;
    let mut reading = read(first).await?;
    let mut replaying: Option<tokio::task::JoinHandle<(Vec<String>, RecomputedRooms)>> = None;
    let mut committing: Option<(UnpublishedUnit, ImportProgress)> = None;
    while reading.is_some() || replaying.is_some() || committing.is_some() {
        let following = match reading.take() {
            Some((rooms, read, following)) => {
                let previous = replaying.replace(spawn_replay(rooms, read, rules));
                (following, previous)
            }
            None => (Vec::new(), replaying.take()),
        };
        let (following, replayed) = following;
        let commit = async {
            match committing.take() {
                Some((unit, at)) => write_path
                    .commit_unpublished(&unit)
                    .await
                    .map(|()| Some(at)),
                None => Ok(None),
            }
        };
        let replayed = async {
            match replayed {
                Some(handle) => handle.await.map(Some).map_err(SourceError::Replay),
                None => Ok(None),
            }
        };
        let (committed, replayed, next) = tokio::join!(commit, replayed, read(following));
        if let Some(at) = committed? {
            report.batch_committed(&at);
        }
        if let Some((rooms, computed)) = replayed? {
            if let Some(last) = rooms.last() {
                progress.last_room_id = last.clone();
            }
            progress.rooms_done += rooms.len() as i64;
            progress.rows_written += computed.table_rows() as i64;
            committing = Some((batch_unit(&computed, progress), progress.clone()));
        }
        reading = next?;
    }
    Ok(())
}

/// The hand-over: the writers' positions move to the import's position
/// through the write path, with the progress marked finished.
async fn hand_over(
    write_path: &WritePath,
    writers: &[WriterName],
    progress: &mut ImportProgress,
) -> Result<(), SourceError> {
    progress.finished = true;
    let mut unit = CommitUnit::default();
    for writer in writers {
        unit.advance(writer, progress.target_position);
    }
    unit.import_progress(progress.clone());
    write_path.commit(unit).await?;
    Ok(())
}

/// Runs (or continues) the import until every room is done. Returns at once
/// if an import already finished.
pub(crate) async fn run_import(
    write_path: &WritePath,
    source: &SourceDatabase,
    options: &ImportOptions,
) -> Result<ImportSummary, SourceError> {
    let mut progress = match import_start(write_path.store(), source, &options.writers).await? {
        ImportStart::Finished(summary) => return Ok(summary),
        ImportStart::From(progress) => progress,
    };
    initialise_backfill_positions(write_path, source, &options.writers).await?;
    let total: i64 = source.one_row(&queries::ROOM_COUNT, &[]).await?.column(0)?;
    let mut report = ImportReport::start(total, options.progress_bar, &progress);
    import_batches(write_path, source, options, &mut progress, &mut report).await?;
    hand_over(write_path, &options.writers, &mut progress).await?;
    report.finished(&progress);
    Ok(ImportSummary {
        target_position: progress.target_position,
        rooms: progress.rooms_done,
        rows: progress.rows_written,
        ran: true,
    })
}
