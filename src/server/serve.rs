//! The sequence of `roomcache serve` and `roomcache import`.
//!
//! Owns: which parts are built, in which order, and handing each its
//! settings. May not touch: rows, SQL, routes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::AsyncContext;
use actix_web::{web, App, HttpServer};
use anyhow::{bail, Context as _};
use roomcache_core::StreamToken;
use tracing::info;

use super::{bind_socket, claim_socket_path, install_metrics};
use crate::api::{self, ApiState};
use crate::config::{LogFormat, Settings};
use crate::reads::{HeldStateSettings, ReadSettings, Reads, SourceFollowing};
use crate::source::access::check_tables;
use crate::source::import::{run_import, ImportOptions};
use crate::source::{self, SourceDatabase, SourceHandle};
use crate::store::{InstanceLock, Store, StoreWriter};
use crate::supervisor::startup;
use crate::supervisor::{Supervisor, SupervisorSettings};

fn database_url(settings: &Settings) -> anyhow::Result<String> {
    match &settings.database_url {
        Some(url) => Ok(url.clone()),
        None => bail!("no database_url is configured (config file, ROOMCACHE_DATABASE_URL or --database-url); scripts/run starts a private Postgres when none is given"),
    }
}

/// Where a Postgres URL points, for error messages: host(s), port(s),
/// database and user, never the password.
pub(crate) fn describe_database(url: &str) -> String {
    let Ok(config) = url.parse::<tokio_postgres::Config>() else {
        return "an unparsable URL".to_owned();
    };
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    format!(
        "host {}, port {}, database {}, user {}",
        if hosts.is_empty() {
            "localhost (default)".to_owned()
        } else {
            hosts.join(",")
        },
        if ports.is_empty() {
            "5432 (default)".to_owned()
        } else {
            ports.join(",")
        },
        config
            .get_dbname()
            .unwrap_or("(the user's name, by default)"),
        config
            .get_user()
            .unwrap_or("(the system user's name, by default)"),
    )
}

/// Connects to Synapse's database and checks that every table roomcache
/// reads is readable: a missing grant stops start-up, naming it.
async fn connect_source(url: &str) -> anyhow::Result<Arc<SourceDatabase>> {
    let source = SourceDatabase::connect(url).await.with_context(|| {
        format!(
            "connecting to the Synapse database (source_database_url: {})",
            describe_database(url)
        )
    })?;
    let report = check_tables(&source)
        .await
        .context("checking which of Synapse's tables roomcache's role can read")?;
    if let Some(explanation) = report.explain() {
        bail!(
            "the Synapse database (source_database_url: {}): {explanation}",
            describe_database(url)
        );
    }
    Ok(Arc::new(source))
}

/// Runs `roomcache import`: the import from the Synapse database
/// (`source_database_url`) into roomcache's database, then exits.
pub(crate) async fn import(settings: Settings) -> anyhow::Result<()> {
    let Some(source_url) = settings.source_database_url.clone() else {
        bail!("no source_database_url is configured: the import reads a Synapse database");
    };
    let source = connect_source(&source_url).await?;
    let _lock = lock_schema(&settings).await?;
    let (store, writer) = open_store(&settings).await?;
    let write_path = startup::open(store, writer, &settings.writers)
        .await
        .context("reading the stored positions")?;
    startup::check_held_state_types(&write_path, &settings.held_state_types(), true)
        .await
        .context("checking the held state's types")?;
    let started = std::time::Instant::now();
    let summary = run_import(&write_path, &source, &ImportOptions::of(&settings, true))
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

/// Takes the schema's instance lock (one roomcache per schema).
async fn lock_schema(settings: &Settings) -> anyhow::Result<InstanceLock> {
    let url = database_url(settings)?;
    let lock = InstanceLock::acquire(
        &url,
        &settings.schema,
        Duration::from_millis(settings.instance_lock_wait_ms),
    )
    .await
    .with_context(|| {
        format!(
            "roomcache's database (database_url: {})",
            describe_database(&url)
        )
    })?;
    Ok(lock)
}

/// Connects the pool to roomcache's database and applies the migrations:
/// the store, and the one writer that commits to it (for the write path).
async fn open_store(settings: &Settings) -> anyhow::Result<(Store, StoreWriter)> {
    let url = database_url(settings)?;
    Store::from_settings(settings, &url).await.with_context(|| {
        format!(
            "connecting to roomcache's database (database_url: {}) and applying migrations",
            describe_database(&url)
        )
    })
}

/// Exits the process as soon as the instance lock is lost: another
/// instance may take the schema then, and two writers would mix their rows.
/// Every acknowledged batch is already committed, so exiting loses nothing.
fn exit_when_lock_lost(mut lock: InstanceLock, log_format: LogFormat) {
    actix_rt::spawn(async move {
        let why = lock.lost().await;
        crate::report_failure(
            &format!("the instance lock on the schema was lost ({why}); exiting at once (status {EXIT_LOCK_LOST}) so that no other instance's writes are mixed with ours"),
            log_format == LogFormat::Json,
        );
        std::process::exit(EXIT_LOCK_LOST);
    });
}

/// The exit status after the instance lock was lost (systemd's
/// `Restart=on-failure` starts roomcache again).
const EXIT_LOCK_LOST: i32 = 3;

/// Runs `roomcache serve` until SIGTERM/SIGINT. Must be called inside an
/// actix system.
///
/// Everything that can fail does so before the supervisor actor starts
/// (its address comes from a context that runs it only at the end): an
/// actor dropped with the system after a start-up failure would start
/// outside the runtime.
pub(crate) async fn serve(settings: Settings) -> anyhow::Result<()> {
    let metrics = install_metrics()?;
    claim_socket_path(&settings.socket_path)?;
    let source_database = match &settings.source_database_url {
        Some(url) => Some(connect_source(url).await?),
        None => None,
    };
    let lock = lock_schema(&settings).await?;
    exit_when_lock_lost(lock, settings.log_format);
    let (store, writer) = open_store(&settings).await?;
    let write_path = startup::open(store, writer, &settings.writers)
        .await
        .context("reading the stored positions")?;
    let held_state_complete = startup::check_held_state_types(
        &write_path,
        &settings.held_state_types(),
        source_database.is_some(),
    )
    .await
    .context("checking the held state's types")?;
    let source = match source_database {
        Some(database) => Some(source::start(&settings, database, &write_path).await?),
        None => {
            // Checked in feed mode too (it is not used there).
            source::prepare_subscriber(&settings)?;
            None
        }
    };
    let queue_position = source
        .as_ref()
        .map_or(StreamToken::linear(0), SourceHandle::queue_position);
    let queue = startup::load(&write_path, queue_position)
        .await
        .context("loading the cached rows")?;

    let supervisor_context = actix::Context::<Supervisor>::new();
    let supervisor_address = supervisor_context.address();
    let reads = Reads::new(
        write_path.index().clone(),
        write_path.tracker().clone(),
        queue.clone(),
        source.as_ref().map(SourceHandle::upstream),
        source.as_ref().map(|s| SourceFollowing {
            account_data: s.account_data(),
            poll_now: s.poll_now(),
            health: s.health(),
        }),
        ReadSettings {
            wait_timeout: Duration::from_millis(settings.wait_timeout_ms),
            max_wait_timeout: Duration::from_millis(settings.max_wait_timeout_ms),
            max_room_list_rooms: settings.max_room_list_rooms,
            max_user_rooms_page: settings.max_user_rooms_page,
            held_state: HeldStateSettings {
                types: settings.held_state_types(),
                complete: held_state_complete,
                every_event_seen: source.is_none(),
            },
        },
    );
    let state = web::Data::new(ApiState {
        supervisor: supervisor_address.clone(),
        reads,
        metrics,
        source: source.as_ref().map(SourceHandle::progress),
        source_health: source.as_ref().map(SourceHandle::health),
        ready: AtomicBool::new(false),
    });
    let servers = bind_http(&settings, state.clone())?;

    // Nothing fails from here on until serving.
    supervisor_context.run(Supervisor::new(
        write_path.clone(),
        queue.clone(),
        SupervisorSettings {
            server_name: Arc::from(settings.server_name.as_str()),
            held_state: settings.held_state_types(),
            batch_size: settings.commit_batch_size,
            linger: Duration::from_millis(settings.commit_linger_ms),
            idle_actor_timeout: Duration::from_millis(settings.room_actor_idle_ms),
        },
    ));
    if let Some(source) = source {
        source.follow(&settings, &write_path, &queue, supervisor_address);
    }
    run_http(&settings, servers, &state).await
}

/// The API's server bound to the socket, and the metrics listener's.
struct BoundServers {
    api: actix_web::dev::Server,
    socket: super::socket::SocketFile,
    metrics: Option<actix_web::dev::Server>,
}

/// Binds the socket (and `metrics_address`) and builds the servers; they
/// run once polled.
fn bind_http(settings: &Settings, state: web::Data<ApiState>) -> anyhow::Result<BoundServers> {
    let body_limit = settings.request_body_limit;
    let app_state = state.clone();
    let (listener, socket) = bind_socket(&settings.socket_path)?;
    let body_timeout = api::BodyTimeout(Duration::from_millis(settings.request_body_timeout_ms));
    // actix-web's connection cap is per worker thread.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_worker = settings.max_connections.div_ceil(workers);
    let keep_alive = match settings.keep_alive_ms {
        0 => actix_web::http::KeepAlive::Disabled,
        ms => actix_web::http::KeepAlive::Timeout(Duration::from_millis(ms)),
    };
    let api = HttpServer::new(move || {
        App::new()
            .wrap(actix_web::middleware::from_fn(api::limit_body_time))
            .wrap(actix_web::middleware::from_fn(api::trace_request))
            .app_data(app_state.clone())
            .app_data(body_timeout)
            .configure(|cfg| api::configure(cfg, body_limit))
    })
    .workers(workers)
    .max_connections(per_worker)
    .client_request_timeout(Duration::from_millis(settings.request_head_timeout_ms))
    .client_disconnect_timeout(Duration::from_secs(1))
    .keep_alive(keep_alive)
    .shutdown_timeout(30)
    .listen_uds(listener)
    .with_context(|| format!("serving on {}", socket.path().display()))?
    .run();
    let metrics = match settings.metrics_address {
        None => None,
        Some(address) => Some(
            HttpServer::new(move || {
                App::new()
                    .app_data(state.clone())
                    .configure(api::configure_metrics)
            })
            .workers(1)
            .client_request_timeout(Duration::from_millis(settings.request_head_timeout_ms))
            .shutdown_timeout(5)
            .bind(address)
            .with_context(|| format!("listening on metrics_address {address}"))?
            .run(),
        ),
    };
    Ok(BoundServers {
        api,
        socket,
        metrics,
    })
}

/// Serves until SIGTERM/SIGINT, drains, removes the socket.
async fn run_http(
    settings: &Settings,
    servers: BoundServers,
    state: &web::Data<ApiState>,
) -> anyhow::Result<()> {
    actix_rt::spawn(crate::memory::release_when_asked());
    let metrics = servers.metrics.map(|server| {
        let handle = server.handle();
        actix_rt::spawn(server);
        handle
    });
    state.ready.store(true, Ordering::Release);
    info!(
        socket = %settings.socket_path.display(),
        metrics_address = settings.metrics_address.map(|a| a.to_string()),
        "roomcache is ready"
    );
    servers.api.await.context("serving")?;
    if let Some(metrics) = metrics {
        metrics.stop(true).await;
    }
    info!("in-flight requests drained; shutting down");
    drop(servers.socket);
    Ok(())
}
