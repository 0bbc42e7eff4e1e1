//! Settings: defaults, `config/roomcache.toml`, `ROOMCACHE_*` environment
//! variables and command-line flags, in increasing order of precedence.
//!
//! Owns: the [`Settings`] struct and its validation, and (in [`print`]) the
//! settings as a config file with passwords masked. May not touch: anything
//! that runs; every other module receives a validated `Settings`.

mod print;
mod room_state;

use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::{Deserialize, Serialize};

use roomcache_core::WriterName;

/// Every setting of roomcache. Field names are the TOML keys; the
/// environment variable of a key is `ROOMCACHE_` + the key in upper case.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Settings {
    /// The homeserver's server name: users of this server are local users.
    pub(crate) server_name: String,
    /// Path of the Unix socket the API listens on.
    pub(crate) socket_path: PathBuf,
    /// Postgres URL (`postgres://user@host/db` or key=value form) of roomcache's own database.
    pub(crate) database_url: Option<String>,
    /// Postgres schema holding roomcache's tables (created if missing).
    pub(crate) schema: String,
    /// Number of Postgres connections in the pool.
    pub(crate) pool_size: usize,
    /// How long start-up waits for another process's instance lock on the
    /// schema (one roomcache per schema), in milliseconds.
    pub(crate) instance_lock_wait_ms: u64,
    /// Postgres `statement_timeout` of roomcache's connections, in
    /// milliseconds (0: the server's default).
    pub(crate) statement_timeout_ms: u64,
    /// Longest a group commit (or the loading of the rooms it needs) may
    /// take, in milliseconds; then its batches get 503 and may be resent.
    pub(crate) commit_timeout_ms: u64,
    /// Most feed batches committed together in one transaction (group commit).
    pub(crate) commit_batch_size: usize,
    /// How long to wait for more batches before a group commit, in milliseconds.
    pub(crate) commit_linger_ms: u64,
    /// Largest request body accepted, in bytes.
    pub(crate) request_body_limit: usize,
    /// Longest time a request's head may take to arrive, in milliseconds
    /// (then 408 and the connection is closed).
    pub(crate) request_head_timeout_ms: u64,
    /// Longest time a request's body may take to arrive, in milliseconds
    /// (then 408 `ROOMCACHE_BODY_TIMEOUT`).
    pub(crate) request_body_timeout_ms: u64,
    /// How long an idle keep-alive connection is kept open, in milliseconds.
    pub(crate) keep_alive_ms: u64,
    /// Most connections served at once (further ones wait in the socket's
    /// backlog until one closes).
    pub(crate) max_connections: usize,
    /// The event writers (instance names) whose streams feed the cache.
    pub(crate) writers: Vec<WriterName>,
    /// Room actors unused for this long are stopped (re-created from
    /// Postgres on next use), in milliseconds.
    pub(crate) room_actor_idle_ms: u64,
    /// Default time a read with `wait_for` waits for the token, in milliseconds.
    pub(crate) wait_timeout_ms: u64,
    /// Longest `timeout_ms` a reader may ask for, in milliseconds.
    pub(crate) max_wait_timeout_ms: u64,
    /// Most rooms one room-list answer holds, across its lists and ranges
    /// (ranges clamped to each list's count); more: 400.
    pub(crate) max_room_list_rooms: usize,
    /// Most rooms in one page of `GET /v1/users/{user_id}/rooms` (and the
    /// default page size).
    pub(crate) max_user_rooms_page: usize,
    /// Log filter (`info`, `debug`, `roomcache=debug,actix_web=warn`, ...).
    pub(crate) log_level: String,
    /// Log format: `text` or `json`.
    pub(crate) log_format: LogFormat,
    /// Address (`127.0.0.1:9477`) of a TCP listener serving only `GET
    /// /metrics` and `GET /health`, for Prometheus (the socket's API is full
    /// write access). Unset: metrics only on the socket.
    pub(crate) metrics_address: Option<SocketAddr>,
    /// Source mode: Postgres URL of a Synapse database to import and follow
    /// (read-only). Unset: rows come from the socket feed.
    pub(crate) source_database_url: Option<String>,
    /// Source mode: milliseconds between polls of Synapse's stream position.
    pub(crate) source_poll_interval_ms: u64,
    /// Source mode: URL of the Redis Synapse's workers replicate over
    /// (`redis://host:port/`); roomcache then follows Synapse's replication
    /// stream and reads new rows as soon as they are announced. Unset:
    /// polling only.
    pub(crate) source_redis_url: Option<String>,
    /// Source mode: longest line of Synapse's replication stream read, in
    /// bytes; longer ones are dropped once read (and counted).
    pub(crate) source_redis_max_line_bytes: usize,
    /// Source mode: most events-stream positions read per follow step.
    pub(crate) source_batch_size: i64,
    /// Source mode: rooms per import (and recalculation) batch.
    pub(crate) source_import_batch_rooms: usize,
    /// Source mode: import every row from Synapse's tables on first start
    /// (false: follow the stream from position 0 instead).
    pub(crate) source_import_on_start: bool,
    /// Source mode: milliseconds to wait at start before recomputing the
    /// queued rooms (reads use the fallback meanwhile).
    pub(crate) source_recalculation_delay_ms: u64,
    /// State types whose current event at state key `""` each room holds
    /// (the rooms' data, `POST /v1/rooms/data`).
    pub(crate) room_state_types: Vec<String>,
    /// State types whose current events at every state key each room holds.
    pub(crate) room_state_wildcard_types: Vec<String>,
    /// Most state keys a room holds; a room that goes over it is answered as
    /// unknown (the homeserver computes its data) until it is recomputed.
    pub(crate) max_room_state_keys: usize,
    /// Latest events each room holds for the initial timeline (the rooms'
    /// data); a timeline needing more is answered as unknown.
    pub(crate) room_timeline_events: usize,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    Text,
    Json,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            server_name: "localhost".into(),
            socket_path: PathBuf::from("var/roomcache.sock"),
            database_url: None,
            schema: "roomcache".into(),
            pool_size: 8,
            instance_lock_wait_ms: 5_000,
            statement_timeout_ms: 60_000,
            commit_timeout_ms: 30_000,
            commit_batch_size: 64,
            commit_linger_ms: 0,
            request_body_limit: 16 * 1024 * 1024,
            request_head_timeout_ms: 5_000,
            request_body_timeout_ms: 10_000,
            keep_alive_ms: 5_000,
            max_connections: 1024,
            writers: vec![WriterName::master()],
            room_actor_idle_ms: 300_000,
            wait_timeout_ms: 5_000,
            max_wait_timeout_ms: 60_000,
            max_room_list_rooms: 10_000,
            max_user_rooms_page: 1_000,
            log_level: "info".into(),
            log_format: LogFormat::Text,
            metrics_address: None,
            source_database_url: None,
            source_poll_interval_ms: 200,
            source_redis_url: None,
            source_redis_max_line_bytes: 65_536,
            source_batch_size: 10_000,
            source_import_batch_rooms: 100,
            source_import_on_start: true,
            source_recalculation_delay_ms: 0,
            room_state_types: room_state::default_types(),
            room_state_wildcard_types: room_state::default_wildcard_types(),
            max_room_state_keys: room_state::DEFAULT_MAX_KEYS,
            room_timeline_events: crate::model::DEFAULT_TIMELINE_EVENTS,
        }
    }
}

/// The config file read when none is named.
pub(crate) const DEFAULT_CONFIG_PATH: &str = "config/roomcache.toml";

/// The longest socket path the kernel accepts, in bytes: `sun_path` holds
/// 108 bytes, the terminating NUL included. A relative path counts as
/// given (it is resolved from the working directory).
pub(crate) const SOCKET_PATH_MAX: usize = 107;

/// Refuses a socket path the kernel would not bind (too long, empty, a NUL
/// byte, no file name), naming the path and the limit.
pub(crate) fn check_socket_path(path: &Path) -> Result<(), String> {
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() > SOCKET_PATH_MAX {
        return Err(format!(
            "{} is {} bytes long; a Unix socket's path holds at most {SOCKET_PATH_MAX} bytes \
             (sun_path: 108 with the terminating NUL): choose a shorter path (a relative path \
             counts as written)",
            path.display(),
            bytes.len()
        ));
    }
    if bytes.contains(&0) {
        return Err(format!("{} contains a NUL byte", path.display()));
    }
    if path.file_name().is_none() {
        return Err(format!(
            "{:?} does not end in a file name",
            path.as_os_str()
        ));
    }
    Ok(())
}

/// Why the settings were refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("config file {path} does not exist")]
    Missing { path: PathBuf },
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid setting `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// Command-line flags (each also read from its `ROOMCACHE_*` variable).
/// Every flag overrides the config file's key of the same name.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct SettingsArgs {
    /// Config file (TOML); missing keys take their defaults. A file named
    /// here must exist. [default: config/roomcache.toml if it exists, else
    /// every setting's default]
    #[arg(long, env = "ROOMCACHE_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// The homeserver's server name; its users are the local users.
    #[arg(long, env = "ROOMCACHE_SERVER_NAME")]
    pub(crate) server_name: Option<String>,
    /// Unix socket path the API listens on.
    #[arg(long, env = "ROOMCACHE_SOCKET_PATH")]
    pub(crate) socket_path: Option<PathBuf>,
    /// Postgres URL of roomcache's own database.
    #[arg(long, env = "ROOMCACHE_DATABASE_URL")]
    pub(crate) database_url: Option<String>,
    /// Postgres schema for roomcache's tables.
    #[arg(long, env = "ROOMCACHE_SCHEMA")]
    pub(crate) schema: Option<String>,
    /// Postgres connection pool size.
    #[arg(long, env = "ROOMCACHE_POOL_SIZE")]
    pub(crate) pool_size: Option<usize>,
    /// Milliseconds to wait for another process's lock on the schema.
    #[arg(long, env = "ROOMCACHE_INSTANCE_LOCK_WAIT_MS")]
    pub(crate) instance_lock_wait_ms: Option<u64>,
    /// Postgres statement_timeout of roomcache's connections, in ms (0: server default).
    #[arg(long, env = "ROOMCACHE_STATEMENT_TIMEOUT_MS")]
    pub(crate) statement_timeout_ms: Option<u64>,
    /// Milliseconds a group commit may take before its batches get 503.
    #[arg(long, env = "ROOMCACHE_COMMIT_TIMEOUT_MS")]
    pub(crate) commit_timeout_ms: Option<u64>,
    /// Most feed batches per group commit.
    #[arg(long, env = "ROOMCACHE_COMMIT_BATCH_SIZE")]
    pub(crate) commit_batch_size: Option<usize>,
    /// Milliseconds to wait for more batches before a group commit.
    #[arg(long, env = "ROOMCACHE_COMMIT_LINGER_MS")]
    pub(crate) commit_linger_ms: Option<u64>,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "ROOMCACHE_REQUEST_BODY_LIMIT")]
    pub(crate) request_body_limit: Option<usize>,
    /// Milliseconds a request's head may take to arrive.
    #[arg(long, env = "ROOMCACHE_REQUEST_HEAD_TIMEOUT_MS")]
    pub(crate) request_head_timeout_ms: Option<u64>,
    /// Milliseconds a request's body may take to arrive.
    #[arg(long, env = "ROOMCACHE_REQUEST_BODY_TIMEOUT_MS")]
    pub(crate) request_body_timeout_ms: Option<u64>,
    /// Milliseconds an idle keep-alive connection is kept open.
    #[arg(long, env = "ROOMCACHE_KEEP_ALIVE_MS")]
    pub(crate) keep_alive_ms: Option<u64>,
    /// Most connections served at once.
    #[arg(long, env = "ROOMCACHE_MAX_CONNECTIONS")]
    pub(crate) max_connections: Option<usize>,
    /// Event writers, comma-separated (e.g. `master` or `ep1,ep2`).
    #[arg(long, env = "ROOMCACHE_WRITERS", value_delimiter = ',')]
    pub(crate) writers: Option<Vec<WriterName>>,
    /// Stop room actors unused for this many milliseconds.
    #[arg(long, env = "ROOMCACHE_ROOM_ACTOR_IDLE_MS")]
    pub(crate) room_actor_idle_ms: Option<u64>,
    /// Default wait for a read's `wait_for` token, in milliseconds.
    #[arg(long, env = "ROOMCACHE_WAIT_TIMEOUT_MS")]
    pub(crate) wait_timeout_ms: Option<u64>,
    /// Longest wait a reader may ask for, in milliseconds.
    #[arg(long, env = "ROOMCACHE_MAX_WAIT_TIMEOUT_MS")]
    pub(crate) max_wait_timeout_ms: Option<u64>,
    /// Most rooms one room-list answer holds.
    #[arg(long, env = "ROOMCACHE_MAX_ROOM_LIST_ROOMS")]
    pub(crate) max_room_list_rooms: Option<usize>,
    /// Most rooms in one page of a user's rooms.
    #[arg(long, env = "ROOMCACHE_MAX_USER_ROOMS_PAGE")]
    pub(crate) max_user_rooms_page: Option<usize>,
    /// Log filter, e.g. `info` or `roomcache=debug`.
    #[arg(long, env = "ROOMCACHE_LOG_LEVEL")]
    pub(crate) log_level: Option<String>,
    /// Log format.
    #[arg(long, env = "ROOMCACHE_LOG_FORMAT", value_enum)]
    pub(crate) log_format: Option<LogFormat>,
    /// TCP address serving only GET /metrics and GET /health (empty: none).
    #[arg(long, env = "ROOMCACHE_METRICS_ADDRESS")]
    pub(crate) metrics_address: Option<String>,
    /// Source mode: Postgres URL of the Synapse database to follow (read-only).
    #[arg(long, env = "ROOMCACHE_SOURCE_DATABASE_URL")]
    pub(crate) source_database_url: Option<String>,
    /// Source mode: milliseconds between polls of Synapse.
    #[arg(long, env = "ROOMCACHE_SOURCE_POLL_INTERVAL_MS")]
    pub(crate) source_poll_interval_ms: Option<u64>,
    /// Source mode: URL of the Redis Synapse's workers replicate over
    /// (empty: polling only).
    #[arg(long, env = "ROOMCACHE_SOURCE_REDIS_URL")]
    pub(crate) source_redis_url: Option<String>,
    /// Source mode: longest line of the replication stream read, in bytes.
    #[arg(long, env = "ROOMCACHE_SOURCE_REDIS_MAX_LINE_BYTES")]
    pub(crate) source_redis_max_line_bytes: Option<usize>,
    /// Source mode: most stream positions read per follow step.
    #[arg(long, env = "ROOMCACHE_SOURCE_BATCH_SIZE")]
    pub(crate) source_batch_size: Option<i64>,
    /// Source mode: rooms per import batch.
    #[arg(long, env = "ROOMCACHE_SOURCE_IMPORT_BATCH_ROOMS")]
    pub(crate) source_import_batch_rooms: Option<usize>,
    /// Source mode: import from Synapse's tables on first start (true/false).
    #[arg(long, env = "ROOMCACHE_SOURCE_IMPORT_ON_START")]
    pub(crate) source_import_on_start: Option<bool>,
    /// Source mode: milliseconds to wait before recomputing queued rooms.
    #[arg(long, env = "ROOMCACHE_SOURCE_RECALCULATION_DELAY_MS")]
    pub(crate) source_recalculation_delay_ms: Option<u64>,
    /// State types whose key "" each room holds, comma-separated.
    #[arg(long, env = "ROOMCACHE_ROOM_STATE_TYPES", value_delimiter = ',')]
    pub(crate) room_state_types: Option<Vec<String>>,
    /// State types whose every key each room holds, comma-separated.
    #[arg(
        long,
        env = "ROOMCACHE_ROOM_STATE_WILDCARD_TYPES",
        value_delimiter = ','
    )]
    pub(crate) room_state_wildcard_types: Option<Vec<String>>,
    /// Most state keys a room holds.
    #[arg(long, env = "ROOMCACHE_MAX_ROOM_STATE_KEYS")]
    pub(crate) max_room_state_keys: Option<usize>,
    /// Latest events each room holds for the initial timeline.
    #[arg(long, env = "ROOMCACHE_ROOM_TIMELINE_EVENTS")]
    pub(crate) room_timeline_events: Option<usize>,
}

impl Settings {
    /// Reads the config file (a missing file at the default path means
    /// "defaults"; a file named with `--config` or `ROOMCACHE_CONFIG` must
    /// exist), applies the flags and validates the result.
    pub(crate) fn load(args: &SettingsArgs) -> Result<Settings, ConfigError> {
        let mut settings = match &args.config {
            Some(path) => Self::from_file(path)?,
            None => match Self::from_file(Path::new(DEFAULT_CONFIG_PATH)) {
                Err(ConfigError::Missing { .. }) => Settings::default(),
                other => other?,
            },
        };
        macro_rules! override_with {
            ($($field:ident),*) => {
                $(if let Some(value) = &args.$field {
                    settings.$field = value.clone().into();
                })*
            };
        }
        override_with!(
            server_name,
            socket_path,
            schema,
            pool_size,
            instance_lock_wait_ms,
            statement_timeout_ms,
            commit_timeout_ms,
            commit_batch_size,
            commit_linger_ms,
            request_body_limit,
            request_head_timeout_ms,
            request_body_timeout_ms,
            keep_alive_ms,
            max_connections,
            writers,
            room_actor_idle_ms,
            wait_timeout_ms,
            max_wait_timeout_ms,
            max_room_list_rooms,
            max_user_rooms_page,
            log_level,
            log_format,
            source_poll_interval_ms,
            source_redis_max_line_bytes,
            source_batch_size,
            source_import_batch_rooms,
            source_import_on_start,
            source_recalculation_delay_ms,
            room_state_types,
            room_state_wildcard_types,
            max_room_state_keys,
            room_timeline_events
        );
        if let Some(url) = &args.source_redis_url {
            settings.source_redis_url = Some(url.clone()).filter(|u| !u.is_empty());
        }
        if let Some(url) = &args.source_database_url {
            settings.source_database_url = Some(url.clone()).filter(|u| !u.is_empty());
        }
        if let Some(url) = &args.database_url {
            settings.database_url = Some(url.clone()).filter(|u| !u.is_empty());
        }
        if let Some(address) = &args.metrics_address {
            settings.metrics_address = match address.as_str() {
                "" => None,
                text => Some(text.parse().map_err(|e| ConfigError::Invalid {
                    key: "metrics_address",
                    reason: format!("{text:?} is not an address such as 127.0.0.1:9477 ({e})"),
                })?),
            };
        }
        settings.validate()?;
        Ok(settings)
    }

    fn from_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::Missing {
                    path: path.to_owned(),
                })
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Checks every setting; the first problem is reported.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        };
        if let Err(reason) = check_socket_path(&self.socket_path) {
            return invalid("socket_path", &reason);
        }
        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return invalid(
                "log_level",
                &format!(
                    "{:?} is not a log filter ({error}): a level (error, warn, info, debug, \
                     trace) or directives such as roomcache=debug,actix_web=warn",
                    self.log_level
                ),
            );
        }
        if self.server_name.is_empty() || self.server_name.contains(char::is_whitespace) {
            return invalid("server_name", "must be a non-empty server name");
        }
        let schema_ok = !self.schema.is_empty()
            && self.schema.len() <= 63
            && self
                .schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !self.schema.as_bytes()[0].is_ascii_digit();
        if !schema_ok {
            return invalid(
                "schema",
                "must be a lower-case SQL identifier ([a-z_][a-z0-9_]*)",
            );
        }
        if self.pool_size == 0 {
            return invalid("pool_size", "must be at least 1");
        }
        if self.commit_timeout_ms == 0 {
            return invalid("commit_timeout_ms", "must be at least 1");
        }
        if self.commit_batch_size == 0 {
            return invalid("commit_batch_size", "must be at least 1");
        }
        if self.request_body_limit < 1024 {
            return invalid("request_body_limit", "must be at least 1024 bytes");
        }
        if self.request_head_timeout_ms == 0 || self.request_body_timeout_ms == 0 {
            return invalid(
                "request_head_timeout_ms",
                "request_head_timeout_ms and request_body_timeout_ms must be at least 1",
            );
        }
        if self.max_connections == 0 {
            return invalid("max_connections", "must be at least 1");
        }
        if self.writers.is_empty() {
            return invalid("writers", "at least one writer must be configured");
        }
        if self.room_actor_idle_ms == 0 {
            return invalid("room_actor_idle_ms", "must be at least 1");
        }
        if self.source_poll_interval_ms == 0 {
            return invalid("source_poll_interval_ms", "must be at least 1");
        }
        if self.source_redis_max_line_bytes < 1024 {
            return invalid("source_redis_max_line_bytes", "must be at least 1024 bytes");
        }
        if self.source_batch_size < 1 {
            return invalid("source_batch_size", "must be at least 1");
        }
        if self.source_import_batch_rooms == 0 {
            return invalid("source_import_batch_rooms", "must be at least 1");
        }
        if self.max_room_list_rooms == 0 {
            return invalid("max_room_list_rooms", "must be at least 1");
        }
        if self.max_user_rooms_page == 0 {
            return invalid("max_user_rooms_page", "must be at least 1");
        }
        if self.max_wait_timeout_ms < self.wait_timeout_ms {
            return invalid("max_wait_timeout_ms", "must be at least wait_timeout_ms");
        }
        self.validate_room_state()
    }
}

#[cfg(test)]
mod tests;
