//! roomcache: a sidecar cache server for a Matrix homeserver's sliding-sync
//! room tables.
//!
//! Data flows one way, and the modules follow it:
//!
//! ```text
//! feed → supervisor → room (actor) → rules → store → index → api
//!                         positions (tokens, waiters) ─┘
//! ```
//!
//! * [`feed`]: the rows writers push, and their validation;
//! * [`supervisor`]: routing, group commit, and the order commit → publish → advance;
//! * [`room`]: one actor per room, a thin shell around [`rules`];
//! * [`rules`]: the update rules of the spec as pure functions;
//! * [`store`]: Postgres (migrations, loading, write-through);
//! * [`index`]: the committed rows, as queries read them;
//! * [`positions`]: per-writer durable positions, tokens and waiters (loom-checked, over [`sync`]);
//! * [`api`]: HTTP/JSON over the Unix socket;
//! * [`source`]: source mode, importing and following a Synapse database;
//! * [`config`]: settings; [`server`]: wiring and lifecycle; [`model`]: shared vocabulary.

pub mod api;
pub mod config;
pub mod feed;
pub mod index;
pub mod model;
pub mod positions;
pub mod room;
pub mod rules;
pub mod server;
pub mod source;
pub mod store;
pub mod supervisor;
pub mod sync;
