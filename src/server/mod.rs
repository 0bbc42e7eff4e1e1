//! Wiring and lifecycle of `roomcache serve` and `roomcache import`: load,
//! bind, serve, drain, clean up.
//!
//! Owns: the order of start-up (migrate, let the supervisor's start-up load
//! everything, then bind the socket), the socket file (stale ones replaced,
//! live ones refused, mode 0660 before it can accept, removed on clean
//! shutdown when it is still ours) and graceful
//! shutdown on SIGTERM/SIGINT. May not touch: rules, SQL, routes, rows.

use anyhow::Context as _;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

mod serve;
mod socket;

pub(crate) use serve::{import, serve};
use socket::{bind_socket, claim_socket_path};

/// Installs the Prometheus recorder (once per process).
pub(crate) fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
            ],
        )
        .context("configuring metrics buckets")?
        .install_recorder()
        .context("installing the metrics recorder")
}
