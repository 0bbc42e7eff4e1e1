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
//! * [`room_list`]: room-list requests, filters, ranges (§6);
//! * [`positions`]: per-writer durable positions, claims, tokens and waiters (loom-checked, over [`sync`]);
//! * [`publish`]: the publish gate, so reads see rows and token as one snapshot (loom-checked);
//! * [`api`]: HTTP/JSON over the Unix socket;
//! * [`source`]: source mode, importing and following a Synapse database;
//! * [`config`]: settings; [`server`]: wiring and lifecycle; [`model`]: shared vocabulary.

#[cfg(not(loom))]
pub mod api;
#[cfg(not(loom))]
pub mod config;
#[cfg(not(loom))]
pub mod feed;
#[cfg(not(loom))]
pub mod index;
#[cfg(not(loom))]
pub mod model;
pub mod positions;
pub mod publish;
#[cfg(not(loom))]
pub mod room;
#[cfg(not(loom))]
pub mod room_list;
#[cfg(not(loom))]
pub mod rules;
#[cfg(not(loom))]
pub mod server;
#[cfg(not(loom))]
pub mod source;
#[cfg(not(loom))]
pub mod store;
#[cfg(not(loom))]
pub mod supervisor;
pub mod sync;
