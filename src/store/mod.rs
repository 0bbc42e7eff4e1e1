//! Write-through to Postgres: migrations, loading at start-up, and the group
//! commit of row changes together with the stream positions they cover.
//!
//! Owns: the connection pool, the SQL of roomcache's schema, and the rule
//! that a group's rows and its writers' positions commit in one transaction
//! (so after any crash rows and positions agree). May not touch: actors,
//! the read index, the position tracker; the supervisor's write path
//! publishes after `StoreWriter::commit` returns (only the write path holds
//! the one `StoreWriter`).
//!
//! `load` reads rows back (start-up, room actors), `commit` writes a
//! `CommitGroup`, `rows` maps rows to and from the tables' columns.

mod commit;
mod instance_lock;
mod load;
mod positions;
mod room_state;
mod rows;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;
use tracing::{info, instrument};

use crate::config::Settings;
use crate::model::IdError;

pub(crate) use commit::{CommitGroup, StoreWriter};
pub(crate) use instance_lock::InstanceLock;
pub use load::LoadedRows;
pub(crate) use positions::ImportProgress;

/// The name of the events stream in `stream_positions`.
pub(crate) const EVENTS_STREAM: &str = "events";
/// Source mode: the row of `stream_positions` recording how far Synapse's
/// account-data stream (the minimum over its writers) is applied.
pub(crate) const ACCOUNT_DATA_STREAM: &str = "account_data";
pub(crate) const ACCOUNT_DATA_SOURCE: &str = "source";

/// Source mode: the name of Synapse's caches stream in `stream_positions`
/// (positions of the cache invalidations roomcache has read, per Synapse
/// process).
pub(crate) const CACHES_STREAM: &str = "caches";

/// Source mode: the name of Synapse's backfill stream in `stream_positions`
/// (per Synapse writer, how far its backfilled events are applied, as the
/// positive positions Synapse's replication uses: stream ordering `-n` is
/// position `n`).
pub(crate) const BACKFILL_STREAM: &str = "backfill";

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid database URL")]
    BadUrl(#[source] tokio_postgres::Error),
    #[error("cannot get a database connection")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("cannot build the connection pool")]
    Build(#[from] deadpool_postgres::BuildError),
    #[error("database error")]
    Database(#[from] tokio_postgres::Error),
    #[error("migration failed")]
    Migration(#[from] refinery::Error),
    #[error("a stored row of {table} is invalid")]
    Corrupt {
        table: &'static str,
        #[source]
        cause: CorruptRow,
    },
    /// One failure shared by every batch of a failed group commit.
    #[error(transparent)]
    Shared(Arc<StoreError>),
    /// The database did not answer in time (hung, overloaded, unreachable).
    #[error("the database did not answer within {after_ms} ms (commit_timeout_ms)")]
    Timeout { after_ms: u64 },
}

/// Client-side bounds on the store's work.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoreTimeouts {
    /// Postgres' `statement_timeout` on every pooled connection (`None`: the
    /// server's default).
    pub(crate) statement: Option<Duration>,
    /// The longest a group commit, or the loading of room states for one,
    /// may take, waiting for a connection included.
    pub(crate) write: Duration,
}

impl Default for StoreTimeouts {
    fn default() -> Self {
        StoreTimeouts {
            statement: None,
            write: Duration::from_secs(3600),
        }
    }
}

/// What is wrong with a stored row.
#[derive(Debug, thiserror::Error)]
pub enum CorruptRow {
    #[error("a column cannot be read")]
    Column(#[source] tokio_postgres::Error),
    #[error("an identifier is invalid")]
    Identifier(#[from] IdError),
    #[error("unknown membership {0:?}")]
    Membership(String),
    #[error("the rules' memory cannot be read")]
    Memory(#[source] serde_json::Error),
    #[error("a room's current state cannot be read")]
    CurrentState(#[source] serde_json::Error),
    #[error("a room's latest events cannot be read")]
    LatestEvents(#[source] serde_json::Error),
}

impl StoreError {
    /// True when the failure is a uniqueness conflict caused by the data
    /// (e.g. two events claiming one stream ordering), not by the database.
    pub(crate) fn is_conflict(&self) -> bool {
        match self {
            StoreError::Database(e) => {
                e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
            }
            StoreError::Shared(inner) => inner.is_conflict(),
            _ => false,
        }
    }

    /// True when the database refused the data itself (SQLSTATE class 22
    /// "data exception", 23 "integrity constraint violation", 54 "program
    /// limit exceeded", e.g. an index row too large): the batch at fault is
    /// the writer's mistake, and sending it again cannot succeed.
    pub(crate) fn is_caused_by_content(&self) -> bool {
        match self {
            StoreError::Database(e) => e.code().is_some_and(|code| {
                let code = code.code();
                ["22", "23", "54"]
                    .iter()
                    .any(|class| code.starts_with(class))
            }),
            StoreError::Shared(inner) => inner.is_caused_by_content(),
            _ => false,
        }
    }

    fn corrupt(table: &'static str, cause: impl Into<CorruptRow>) -> StoreError {
        StoreError::Corrupt {
            table,
            cause: cause.into(),
        }
    }
}

/// The Postgres side of roomcache.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    write_timeout: Duration,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Connects, creates the schema if needed and applies the migrations.
    #[instrument(skip_all, fields(schema = %schema))]
    pub async fn connect(
        database_url: &str,
        schema: &str,
        pool_size: usize,
    ) -> Result<Store, StoreError> {
        Self::connect_with(database_url, schema, pool_size, StoreTimeouts::default()).await
    }

    /// [`Store::connect`] with bounds on the store's work.
    pub(crate) async fn connect_with(
        database_url: &str,
        schema: &str,
        pool_size: usize,
        timeouts: StoreTimeouts,
    ) -> Result<Store, StoreError> {
        let mut config: tokio_postgres::Config =
            database_url.parse().map_err(StoreError::BadUrl)?;
        // NOTICEs ("already exists, skipping" at every start) are not news.
        let mut options = format!("-c search_path={schema} -c client_min_messages=warning");
        if let Some(statement) = timeouts.statement {
            options.push_str(&format!(" -c statement_timeout={}", statement.as_millis()));
        }
        config.options(options);
        config.application_name("roomcache");
        config.connect_timeout(Duration::from_secs(10));
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager).max_size(pool_size).build()?;
        let mut client = pool.get().await?;
        client
            .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .await?;
        let report = embedded::migrations::runner()
            .set_migration_table_name("roomcache_migrations")
            .run_async(&mut **client)
            .await?;
        for migration in report.applied_migrations() {
            info!(
                version = migration.version(),
                name = migration.name(),
                "applied migration"
            );
        }
        Ok(Store {
            pool,
            write_timeout: timeouts.write,
        })
    }

    /// Runs `work` within the write timeout; past it, the work is dropped
    /// (its transaction, if any, is rolled back when its connection is
    /// next used or closed) and the answer is [`StoreError::Timeout`].
    async fn within_write_timeout<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.write_timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout {
                after_ms: self.write_timeout.as_millis() as u64,
            }),
        }
    }

    /// Connects with the settings' database URL: the store, and the one
    /// [`StoreWriter`] that commits to it (for the write path only).
    pub(crate) async fn from_settings(
        settings: &Settings,
        url: &str,
    ) -> Result<(Store, StoreWriter), StoreError> {
        let timeouts = StoreTimeouts {
            statement: (settings.statement_timeout_ms > 0)
                .then(|| Duration::from_millis(settings.statement_timeout_ms)),
            write: Duration::from_millis(settings.commit_timeout_ms),
        };
        let store = Self::connect_with(url, &settings.schema, settings.pool_size, timeouts).await?;
        Ok((store.clone(), StoreWriter::new(store)))
    }

    /// A pooled connection, for tools and tests that read the tables.
    pub async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.pool.get().await?)
    }
}
