//! What the integration tests share.

pub(crate) mod fake_synapse;
pub(crate) mod homeserver;
pub(crate) mod rows;
pub(crate) mod server;
pub(crate) mod synapse;
