//! What the integration tests share:
//!
//! * `server`: a real `roomcache serve` process on a Unix socket against the
//!   test Postgres (`TestServer`), and the socket client;
//! * `homeserver`: the homeserver simulator that produces feed rows;
//! * `rows`: builders of the expected table rows;
//! * `synapse`: a private copy of a Synapse fixture database, its CSV form and
//!   source-mode server options; `synapse_writes`: events, state, backfill
//!   and positions written into it as Synapse's writers do;
//! * `fixture_servers`: source-mode servers on the fixtures, caught up, and
//!   the rooms' agreement with Synapse;
//! * `fake_synapse`: writes scenarios into an empty Synapse database the way
//!   Synapse persists them;
//! * `redis`: a real redis-server on a Unix socket, and `PUBLISH`.

pub(crate) mod fake_synapse;
pub(crate) mod fixture_servers;
pub(crate) mod homeserver;
pub(crate) mod redis;
pub(crate) mod rows;
pub(crate) mod server;
pub(crate) mod synapse;
pub(crate) mod synapse_writes;
