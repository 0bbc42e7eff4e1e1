//! The source's error type: why reading Synapse's database, or handing
//! what was read to the supervisor, failed.
//!
//! Owns: [`SourceError`]. May not touch: anything else (it only names
//! failures).

/// Why reading Synapse's database failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SourceError {
    #[error("invalid source database URL")]
    BadUrl(#[source] tokio_postgres::Error),
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
    #[error("the source database holds an invalid value ({what}): {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("roomcache's database failed")]
    Store(#[from] crate::store::StoreError),
    #[error("the rules refused the source's rows")]
    Rule(#[from] crate::rules::RuleError),
    #[error("the supervisor refused a batch")]
    Batch(#[from] crate::supervisor::BatchError),
    #[error("the supervisor is not running")]
    Mailbox(#[from] actix::MailboxError),
}
