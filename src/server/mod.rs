//! Wiring and lifecycle of `roomcache serve` and `roomcache import`: load,
//! bind, serve, drain, clean up.
//!
//! Owns: the order of start-up (migrate, let the supervisor's start-up load
//! everything, then bind the socket), the socket file (stale ones replaced,
//! live ones refused, mode 0660 before it can accept, removed on clean
//! shutdown when it is still ours) and graceful
//! shutdown on SIGTERM/SIGINT. May not touch: rules, SQL, routes, rows.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
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

/// Binds the API's socket at `path` with mode 0660 before anyone can
/// connect: the socket is bound in a fresh 0700 directory beside `path`
/// (nobody else can reach it there, whatever the umask), its mode set, then
/// hard-linked to `path` (which fails rather than replace a file that
/// appeared meanwhile) and unlinked from the private directory.
pub(crate) fn bind_socket(path: &Path) -> anyhow::Result<(UnixListener, SocketFile)> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let private = parent.join(format!(".roomcache-bind-{}-{nanos}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .with_context(|| format!("creating {}", private.display()))?;
    let bound = private.join("socket");
    let result = (|| {
        let listener =
            UnixListener::bind(&bound).with_context(|| format!("binding {}", bound.display()))?;
        std::fs::set_permissions(&bound, std::fs::Permissions::from_mode(0o660))
            .with_context(|| format!("setting the mode of {}", bound.display()))?;
        std::fs::hard_link(&bound, path)
            .with_context(|| format!("linking the socket to {}", path.display()))?;
        let metadata = std::fs::symlink_metadata(path)
            .with_context(|| format!("inspecting {}", path.display()))?;
        Ok((
            listener,
            SocketFile {
                path: path.to_owned(),
                device: metadata.dev(),
                inode: metadata.ino(),
            },
        ))
    })();
    let _ = std::fs::remove_file(&bound);
    let _ = std::fs::remove_dir(&private);
    result
}

/// The socket file this process bound; removed when dropped (clean
/// shutdown or start-up failure after bind) if the path still names it: a
/// file another process put there since is left alone.
pub(crate) struct SocketFile {
    path: PathBuf,
    device: u64,
    inode: u64,
}

impl SocketFile {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours = match std::fs::symlink_metadata(&self.path) {
            Ok(m) => m.dev() == self.device && m.ino() == self.inode,
            Err(e) if e.kind() == ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!(socket = %self.path.display(), error = %e, "cannot inspect the socket file; leaving it");
                return;
            }
        };
        if !ours {
            tracing::warn!(socket = %self.path.display(), "the socket path now names another file; leaving it");
            return;
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => info!(socket = %self.path.display(), "socket file removed"),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(socket = %self.path.display(), error = %e, "cannot remove the socket file")
            }
        }
    }
}
