//! The source's error type: why reading Synapse's database, or handing
//! what was read to the supervisor, failed.
//!
//! Owns: [`SourceError`]. May not touch: anything else (it only names
//! failures).

/// Why reading Synapse's database, or handing what was read to the
/// supervisor, failed. No variant repeats its cause's text.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SourceError {
    /// The source database URL does not parse.
    #[error("invalid source database URL")]
    BadUrl(#[source] tokio_postgres::Error),
    /// Connecting, or setting the session read-only, failed.
    #[error("connecting to the source database failed")]
    Connect(#[source] tokio_postgres::Error),
    /// A query against Synapse's schema failed as a whole.
    #[error("the source query for {query} failed")]
    Query {
        query: &'static str,
        #[source]
        cause: tokio_postgres::Error,
    },
    /// A column of a row Synapse's database returned holds what roomcache
    /// cannot read: a schema change, or NULL where a value was expected.
    #[error("the source query for {query} returned an unreadable {column}")]
    Column {
        query: &'static str,
        column: &'static str,
        #[source]
        cause: tokio_postgres::Error,
    },
    /// An `instance_name` in Synapse's tables is not a valid writer name.
    #[error("Synapse's tables name a writer (instance_name) roomcache cannot take")]
    WriterName(#[source] roomcache_core::WriterNameError),
    /// The rows read for one writer do not make a valid feed batch.
    #[error("the feed batch built from the source for writer {writer} is invalid")]
    FeedBatch {
        writer: roomcache_core::WriterName,
        #[source]
        cause: crate::feed::FeedError,
    },
    /// Replaying a batch of the import on its blocking thread did not finish
    /// (the thread panicked or the runtime shut down).
    #[error("replaying a batch of rooms through the rules did not finish")]
    Replay(#[source] tokio::task::JoinError),
    /// roomcache's own database failed (import batches and hand-over, cached rooms).
    #[error("roomcache's database failed")]
    Store(#[from] crate::store::StoreError),
    /// The supervisor refused a feed batch.
    #[error("the supervisor refused a batch")]
    Batch(#[from] crate::supervisor::BatchError),
    /// Repairing positions found ahead of what Synapse has allocated failed.
    #[error("repairing the positions ahead of what Synapse has allocated failed")]
    Repair(#[source] Box<crate::supervisor::recalc::RecalculationError>),
    /// The supervisor's mailbox is closed.
    #[error("the supervisor is not running")]
    Mailbox(#[from] actix::MailboxError),
}
