//! Source mode: roomcache beside a real Synapse, reading nothing but
//! Synapse's Postgres database (read-only).
//!
//! Owns: the read-only connection to Synapse's database and the running of
//! queries on it ([`database`]), every SQL string against Synapse's schema
//! ([`queries`]), the source's errors ([`error`]), the translation of
//! Synapse's tables into feed rows ([`read`]), the import of every row from
//! those tables ([`import`]), what the supervisor asks of the source to
//! invalidate and recompute rooms ([`upstream`]), ranges of the events
//! stream between vector tokens ([`range`]), the follower that tails new
//! events, forgets and purges into the supervisor ([`follow`]), what it
//! learns from Synapse's replication stream over Redis ([`redis`]) and the
//! account data room lists read ([`account_data`]), whether the role can
//! read every table it needs ([`access`]), whether following works
//! ([`health`]) and the positions it refuses to believe ([`rejected`]). May
//! not touch: Synapse's
//! tables (never written: every transaction is read-only), the rules'
//! internals (only [`crate::rules::apply_rows`] is called), roomcache's own
//! tables except through the supervisor and the store's methods, the socket
//! API.

pub(crate) mod access;
pub(crate) mod account_data;
mod database;
mod error;
pub(crate) mod follow;
pub(crate) mod health;
pub(crate) mod import;
mod queries;
mod range;
mod read;
pub(crate) mod redis;
mod rejected;
mod upstream;

pub(crate) use database::{SafeToken, SourceDatabase};
pub(crate) use error::SourceError;
pub(crate) use upstream::SynapseUpstream;
