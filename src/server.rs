//! Wiring and lifecycle of `roomcache serve`: load, bind, serve, drain, clean up.
//!
//! Owns: the order of start-up (migrate and load everything before the
//! socket accepts a request), the socket file (stale ones replaced, live ones
//! refused, mode 0660, removed on clean shutdown) and graceful shutdown on
//! SIGTERM/SIGINT. May not touch: rules, SQL, routes.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use actix_web::{web, App, HttpServer};
use anyhow::{bail, Context as _};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::info;

use crate::api::{self, ApiState};
use crate::config::Settings;
use crate::index::ReadIndex;
use crate::model::RowChange;
use crate::positions::PositionTracker;
use crate::source::{self, SourceDatabase, SourceStatus};
use crate::store::Store;
use crate::supervisor::Supervisor;

/// Installs the Prometheus recorder (once per process).
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
            ],
        )
        .context("configuring metrics buckets")?
        .install_recorder()
        .context("installing the metrics recorder")
}

/// Makes `path` free for a new socket: a stale socket file (nobody accepts
/// on it) is removed; a live one, or a file that is not a socket, is refused.
pub fn claim_socket_path(path: &Path) -> anyhow::Result<()> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).with_context(|| {
                    format!("creating the socket directory {}", parent.display())
                })?;
            }
            return Ok(());
        }
        Err(e) => return Err(e).with_context(|| format!("inspecting {}", path.display())),
    };
    if !metadata.file_type().is_socket() {
        bail!(
            "{} exists and is not a socket; refusing to replace it (choose another socket_path)",
            path.display()
        );
    }
    match UnixStream::connect(path) {
        Ok(_) => bail!(
            "another process (a running roomcache?) is serving on {}; stop it or choose another socket_path",
            path.display()
        ),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused || e.kind() == ErrorKind::NotFound => {
            info!(socket = %path.display(), "removing a stale socket file left by an earlier run");
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale socket {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("probing the socket {}", path.display())),
    }
}

/// Removes the socket file when dropped (clean shutdown or start-up failure after bind).
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.0) {
            Ok(()) => info!(socket = %self.0.display(), "socket file removed"),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(socket = %self.0.display(), error = %e, "cannot remove the socket file")
            }
        }
    }
}

/// Hands the heap freed after loading (the rows as read from Postgres, a
/// multiple of what the index keeps) back to the operating system; glibc
/// would otherwise keep it in the process.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; it only returns free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The import's settings from roomcache's settings.
pub fn import_options(settings: &Settings, progress_bar: bool) -> source::import::ImportOptions {
    source::import::ImportOptions {
        server_name: settings.server_name.clone(),
        writers: settings.writers.clone(),
        batch_rooms: settings.source_import_batch_rooms,
        progress_bar,
    }
}

/// Runs `roomcache import`: the import from the Synapse database
/// (`source_database_url`) into roomcache's database, then exits.
pub async fn import(settings: Settings) -> anyhow::Result<()> {
    let Some(database_url) = settings.database_url.clone() else {
        bail!(
            "no database_url is configured (config file, ROOMCACHE_DATABASE_URL or --database-url)"
        );
    };
    let Some(source_url) = settings.source_database_url.clone() else {
        bail!("no source_database_url is configured: the import reads a Synapse database");
    };
    let store = Store::from_settings(&settings, &database_url)
        .await
        .context("connecting to Postgres and applying migrations")?;
    let source_database = SourceDatabase::connect(&source_url)
        .await
        .context("connecting to the Synapse database (source_database_url)")?;
    let started = std::time::Instant::now();
    let summary =
        source::import::run_import(&store, &source_database, &import_options(&settings, true))
            .await
            .context("importing from the Synapse database")?;
    let seconds = started.elapsed().as_secs_f64();
    if summary.ran {
        println!(
            "imported {} rooms, {} rows at stream position {} in {:.2} s",
            summary.rooms, summary.rows, summary.target_position, seconds
        );
    } else {
        println!(
            "the import had already finished ({} rooms, {} rows at stream position {}); nothing to do",
            summary.rooms, summary.rows, summary.target_position
        );
    }
    Ok(())
}

/// Runs `roomcache serve` until SIGTERM/SIGINT. Must be called inside an actix system.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let metrics = install_metrics()?;
    let Some(database_url) = settings.database_url.clone() else {
        bail!("no database_url is configured (config file, ROOMCACHE_DATABASE_URL or --database-url); scripts/run starts a private Postgres when none is given");
    };
    claim_socket_path(&settings.socket_path)?;

    let store = Store::from_settings(&settings, &database_url)
        .await
        .context("connecting to Postgres and applying migrations")?;
    // Source mode: import on first start, then the start-up check (§4),
    // both before any row is loaded, so no stale row is ever served.
    let source_status = Arc::new(SourceStatus::default());
    let mut source_start = None;
    if let Some(url) = &settings.source_database_url {
        source_status.enabled.store(true, Ordering::Release);
        let source_database = SourceDatabase::connect(url)
            .await
            .context("connecting to the Synapse database (source_database_url)")?;
        if settings.source_import_on_start {
            source::import::run_import(&store, &source_database, &import_options(&settings, true))
                .await
                .context("importing from the Synapse database")?;
        }
        let invalidation =
            source::startup::invalidate_changed_rooms(&store, &source_database, &settings.writers)
                .await
                .context("checking for rooms changed in Synapse while roomcache was down")?;
        source_status
            .invalidated_at_start
            .store(invalidation.queued.len() as i64, Ordering::Release);
        source_start = Some((Arc::new(source_database), invalidation));
    }

    let started = std::time::Instant::now();
    let loaded = store
        .load_all_but_snapshots()
        .await
        .context("loading the cached rows")?;
    let recalculation_queue = loaded.recalculation_queue.clone();
    let tracker = Arc::new(PositionTracker::new(&settings.writers, &loaded.positions));
    let index = Arc::new(ReadIndex::from_rows(loaded.joined_rooms, Vec::new()));
    // Snapshots stream into the index in chunks: the rows as read from
    // Postgres never all sit in memory beside the index.
    store
        .load_snapshots(|chunk| {
            let changes: Vec<RowChange> =
                chunk.into_iter().map(RowChange::UpsertSnapshot).collect();
            index.publish(&changes);
        })
        .await
        .context("loading the cached snapshots")?;
    let room_list_data: Vec<RowChange> = loaded
        .space_children
        .into_iter()
        .map(|(space_room_id, children)| RowChange::SpaceChildren {
            space_room_id,
            children,
        })
        .chain(loaded.account_data.into_iter().map(RowChange::AccountData))
        .collect();
    index.publish(&room_list_data);
    drop(room_list_data);
    release_freed_memory();
    info!(
        joined_rooms = index.joined_room_count(),
        snapshots = index.snapshot_count(),
        token = %tracker.token(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "loaded the cached rows"
    );
    metrics::gauge!("roomcache_joined_rooms").set(index.joined_room_count() as f64);
    metrics::gauge!("roomcache_snapshots").set(index.snapshot_count() as f64);

    let supervisor = Supervisor::new(
        store.clone(),
        index.clone(),
        tracker.clone(),
        &settings.server_name,
        settings.commit_batch_size,
        Duration::from_millis(settings.commit_linger_ms),
    )
    .start();

    if let Some((source_database, invalidation)) = source_start {
        let follower = source::follow::Follower {
            source: source_database,
            store: store.clone(),
            supervisor: supervisor.clone(),
            tracker: tracker.clone(),
            index: index.clone(),
            status: source_status.clone(),
            server_name: settings.server_name.clone(),
            writers: settings.writers.clone(),
            poll_interval: Duration::from_millis(settings.source_poll_interval_ms),
            batch_size: settings.source_batch_size,
        };
        let batch_rooms = settings.source_import_batch_rooms;
        let delay = Duration::from_millis(settings.source_recalculation_delay_ms);
        source_status.set_queue(
            follower.source.clone(),
            invalidation.to,
            &settings.server_name,
            &recalculation_queue,
        );
        actix_rt::spawn(async move {
            if invalidation.from > 0 || !recalculation_queue.is_empty() {
                if !delay.is_zero() && !recalculation_queue.is_empty() {
                    tokio::time::sleep(delay).await;
                }
                let drained = source::startup::drain_queue(
                    &follower.store,
                    &follower.source,
                    &follower.index,
                    &follower.tracker,
                    &follower.status,
                    &recalculation_queue,
                    invalidation.to,
                    &follower.writers,
                    &follower.server_name,
                    batch_rooms,
                )
                .await;
                if let Err(error) = drained {
                    tracing::error!(%error, "recomputing the queued rooms failed; restart to retry (the queue is kept)");
                    return;
                }
            }
            follower.run().await;
        });
    }

    let state = web::Data::new(ApiState {
        supervisor,
        index,
        tracker: tracker.clone(),
        metrics,
        source: source_status.clone(),
        ready: AtomicBool::new(false),
        wait_timeout: Duration::from_millis(settings.wait_timeout_ms),
        max_wait_timeout: Duration::from_millis(settings.max_wait_timeout_ms),
    });
    let body_limit = settings.request_body_limit;
    let app_state = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .wrap(actix_web::middleware::from_fn(api::trace_request))
            .app_data(app_state.clone())
            .configure(|cfg| api::configure(cfg, body_limit))
    })
    .shutdown_timeout(30)
    .bind_uds(&settings.socket_path)
    .with_context(|| format!("binding {}", settings.socket_path.display()))?;
    let socket = SocketFile(settings.socket_path.clone());
    std::fs::set_permissions(&socket.0, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("setting the mode of {}", socket.0.display()))?;
    state.ready.store(true, Ordering::Release);
    info!(socket = %settings.socket_path.display(), "roomcache is ready");
    server.run().await.context("serving")?;
    info!("in-flight requests drained; shutting down");
    drop(socket);
    Ok(())
}
