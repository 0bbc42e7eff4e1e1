//! Write-through to Postgres: migrations, loading at start-up, and the group
//! commit of row changes together with the stream positions they cover.
//!
//! Owns: the connection pool, the SQL of roomcache's schema, and the rule
//! that a group's rows and its writers' positions commit in one transaction
//! (so after any crash rows and positions agree). May not touch: actors,
//! the read index, the position tracker; the supervisor's write path
//! publishes after [`Store::commit`] returns.
//!
//! [`load`] reads rows back (start-up, room actors), [`commit`] writes a
//! [`CommitGroup`], [`rows`] maps rows to and from the tables' columns.

mod commit;
mod load;
mod rows;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;
use tracing::{info, instrument};

use crate::config::Settings;
use crate::model::IdError;

pub(crate) use commit::{CommitGroup, ImportProgress};
pub use load::LoadedRows;

/// The name of the events stream in `stream_positions`.
pub(crate) const EVENTS_STREAM: &str = "events";
/// Source mode: the row of `stream_positions` recording how far Synapse's
/// account-data stream (the minimum over its writers) is applied.
pub(crate) const ACCOUNT_DATA_STREAM: &str = "account_data";
pub(crate) const ACCOUNT_DATA_SOURCE: &str = "source";

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
        let mut config: tokio_postgres::Config =
            database_url.parse().map_err(StoreError::BadUrl)?;
        config.options(format!("-c search_path={schema}"));
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
        Ok(Store { pool })
    }

    /// Connects with the settings' database URL.
    pub(crate) async fn from_settings(settings: &Settings, url: &str) -> Result<Store, StoreError> {
        Self::connect(url, &settings.schema, settings.pool_size).await
    }

    /// A pooled connection, for tools and tests that read the tables.
    pub async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.pool.get().await?)
    }
}
