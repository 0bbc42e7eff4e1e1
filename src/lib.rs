//! roomcache: a sidecar cache server for a Matrix homeserver's sliding-sync
//! room tables.
//!
//! Data flows one way, and the modules follow it:
//!
//! ```text
//! feed / source → supervisor → room actor → rules → store → index → reads → api
//! ```
//!
//! * [`feed`]: the rows writers push, and their validation; `source`: the
//!   same rows read from a Synapse database (source mode);
//! * `supervisor`: the one writer — the feed pipeline, the room actors'
//!   registry, start-up and the recalculation queue, and the one write path
//!   (commit → publish → advance, through the publish gate of
//!   [`roomcache_core`], the loom-checked positions and tokens);
//! * `supervisor::room_actor`: one actor per room, a thin shell around
//!   [`rules`], the update rules of the spec as pure functions;
//! * [`store`]: Postgres (migrations, loading, write-through);
//! * [`index`]: the committed rows, as queries read them; [`room_list`]: room
//!   lists' requests, filters and ranges;
//! * `reads`: the one read path (waiting for a token, the gate, the
//!   fallback for queued rooms); `api`: HTTP/JSON over the Unix socket;
//! * `config`: settings; `server`: wiring and lifecycle; [`cli`]: the
//!   command line; [`model`]: the shared vocabulary.
//!
//! The public items are the command line and what the integration tests
//! and benchmarks drive in process (the model, feed rows, the pure rules,
//! the read index, the store's loading); everything else is crate-private.

mod api;
pub mod cli;
mod config;
pub mod feed;
pub mod index;
mod memory;
pub mod model;
mod reads;
pub mod room_list;
pub mod rules;
mod server;
mod source;
pub mod store;
mod supervisor;

/// An error with its chain of causes, for log lines and error messages
/// (each error's `Display` names only itself).
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let part = inner.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = inner.source();
    }
    text
}

/// Reports why roomcache stops, once: a log line for log collectors when
/// logging JSON, else `roomcache: <why>` on stderr.
pub(crate) fn report_failure(why: &str, json_logs: bool) {
    if json_logs {
        tracing::error!(error = %why, "roomcache stopped");
    } else {
        eprintln!("roomcache: {why}");
    }
}
