//! roomcache's concurrency core, model-checked with loom.
//!
//! Owns the parts whose correctness depends on interleavings, each std-only
//! and built on the `sync` shim so that `tests/loom_*.rs` can explore every
//! interleaving under `--cfg roomcache_loom`:
//!
//! * [`WriterName`]: the one rule for a writer's (instance's) name;
//! * [`StreamToken`]: positions in the events stream and their text form;
//! * [`PositionTracker`]: per-writer durable positions, claims of batches
//!   being applied, the linear and vector tokens, and waiters for a token;
//! * [`PublishGate`]: the hand-off from a committed group to readers. The
//!   only way to move a position is inside [`PublishGate::publish`], which
//!   hands out the [`Publication`] that [`PositionTracker::finish`] and
//!   [`PositionTracker::advance`] require.
//!
//! May not touch: actors, the database, the read index's contents, clocks,
//! anything async beyond a plain `Future` (loom cannot see inside tokio,
//! actix or dashmap).

mod publish;
mod sync;
mod token;
mod tracker;
mod writer;

pub use publish::{Publication, PublishGate};
pub use token::{StreamToken, TokenParseError};
pub use tracker::{Claim, PositionError, PositionTracker, WaitForToken};
pub use writer::{WriterName, WriterNameError, MAX_WRITER_NAME_LENGTH};
