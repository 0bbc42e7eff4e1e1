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
    #[error("source database error")]
    Database(#[from] tokio_postgres::Error),
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
