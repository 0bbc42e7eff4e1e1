//! Wiring and lifecycle of `roomcache serve` and `roomcache import`: load,
//! bind, serve, drain, clean up.
//!
//! Owns: the order of start-up (migrate, let the supervisor's start-up load
//! everything, then bind the socket), the socket file (stale ones replaced,
//! live ones refused, mode 0660, removed on clean shutdown) and graceful
//! shutdown on SIGTERM/SIGINT. May not touch: rules, SQL, routes, rows.

use std::io::ErrorKind;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::info;

mod serve;

pub(crate) use serve::{import, serve};

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

/// Makes `path` free for a new socket: a stale socket file (nobody accepts
/// on it) is removed; a live one, or a file that is not a socket, is refused.
pub(crate) fn claim_socket_path(path: &Path) -> anyhow::Result<()> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).with_context(|| {
                    format!("creating the socket directory {}", parent.display())
                })?;
            }
            return Ok(());
        }
        Err(e) => return Err(e).with_context(|| format!("inspecting {}", path.display())),
    };
    if !metadata.file_type().is_socket() {
        bail!(
            "{} exists and is not a socket; refusing to replace it (choose another socket_path)",
            path.display()
        );
    }
    match UnixStream::connect(path) {
        Ok(_) => bail!(
            "another process (a running roomcache?) is serving on {}; stop it or choose another socket_path",
            path.display()
        ),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused || e.kind() == ErrorKind::NotFound => {
            info!(socket = %path.display(), "removing a stale socket file left by an earlier run");
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale socket {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("probing the socket {}", path.display())),
    }
}

/// Removes the socket file when dropped (clean shutdown or start-up failure after bind).
pub(crate) struct SocketFile(pub(crate) PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.0) {
            Ok(()) => info!(socket = %self.0.display(), "socket file removed"),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(socket = %self.0.display(), error = %e, "cannot remove the socket file")
            }
        }
    }
}
