//! One roomcache per schema: a Postgres session-level advisory lock on a
//! connection of its own, held for the process's lifetime.
//!
//! Owns: the lock's key, taking it (waiting a bounded time for a process
//! that is just exiting) and noticing its loss. May not touch: the pool,
//! the tables, anything that runs after the loss (the server decides).

use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_postgres::NoTls;
use tracing::{info, instrument};

use super::StoreError;

/// The first half of the lock's key: "rmch" (roomcache), so other users of
/// advisory locks in the same database are not confused with it; the second
/// half is `hashtext(schema)`.
const LOCK_CLASS: i32 = 0x726d_6368;

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InstanceLockError {
    #[error("another roomcache holds schema {schema:?} (advisory lock held for more than {waited_ms} ms); two instances on one schema would corrupt it: stop the other one or choose another schema")]
    Held { schema: String, waited_ms: u64 },
    #[error("cannot take the instance lock")]
    Database(#[from] StoreError),
}

/// The held lock. Dropping it closes its connection, which releases it.
#[derive(Debug)]
pub(crate) struct InstanceLock {
    _client: tokio_postgres::Client,
    lost: Option<oneshot::Receiver<String>>,
}

impl InstanceLock {
    /// Takes the lock of `schema`, retrying for up to `wait` (a previous
    /// process may still be exiting).
    #[instrument(skip_all, fields(schema = %schema))]
    pub(crate) async fn acquire(
        database_url: &str,
        schema: &str,
        wait: Duration,
    ) -> Result<InstanceLock, InstanceLockError> {
        let mut config: tokio_postgres::Config = database_url
            .parse()
            .map_err(|e| InstanceLockError::Database(StoreError::BadUrl(e)))?;
        config.application_name("roomcache instance lock");
        config.connect_timeout(Duration::from_secs(10));
        let (client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|e| InstanceLockError::Database(e.into()))?;
        let (lost_sender, lost) = oneshot::channel();
        tokio::spawn(async move {
            let why = match connection.await {
                Ok(()) => "the database closed the lock's connection".to_owned(),
                Err(e) => crate::error_chain(&e),
            };
            let _ = lost_sender.send(why);
        });
        let started = Instant::now();
        loop {
            let row = client
                .query_one(
                    "SELECT pg_try_advisory_lock($1, hashtext($2))",
                    &[&LOCK_CLASS, &schema],
                )
                .await
                .map_err(|e| InstanceLockError::Database(e.into()))?;
            let taken: bool = row
                .try_get(0)
                .map_err(|e| InstanceLockError::Database(e.into()))?;
            if taken {
                info!("instance lock taken: this process is the only roomcache on its schema");
                return Ok(InstanceLock {
                    _client: client,
                    lost: Some(lost),
                });
            }
            if started.elapsed() >= wait {
                return Err(InstanceLockError::Held {
                    schema: schema.to_owned(),
                    waited_ms: wait.as_millis() as u64,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Resolves when the lock is lost (its connection ended), with why.
    /// Resolves once; later calls never resolve.
    pub(crate) async fn lost(&mut self) -> String {
        match self.lost.take() {
            Some(receiver) => receiver
                .await
                .unwrap_or_else(|_| "the lock's connection task stopped".to_owned()),
            None => std::future::pending().await,
        }
    }
}
