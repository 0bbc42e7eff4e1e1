//! The API's socket file: its path checked against what the kernel accepts,
//! a stale file replaced, a live one refused, mode 0660 before anyone can
//! connect, removed on clean shutdown when it is still ours.
//!
//! Owns: [`claim_socket_path`], [`bind_socket`] and [`SocketFile`] (the
//! path's limit is the settings' check, `config::check_socket_path`). May
//! not touch: anything served on the socket.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use tracing::info;

use crate::config::check_socket_path;

/// Makes `path` free for a new socket: a stale socket file (nobody accepts
/// on it) is removed; a live one, or a file that is not a socket, is refused.
pub(crate) fn claim_socket_path(path: &Path) -> anyhow::Result<()> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            std::fs::create_dir_all(parent_of(path)).with_context(|| {
                format!(
                    "creating the socket directory {}",
                    parent_of(path).display()
                )
            })?;
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

/// The directory a socket path names its file in (`.` for a bare name).
fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Opens a directory for the `*at` calls below.
fn open_directory(path: &Path) -> anyhow::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("opening the directory {}", path.display()))
}

fn c_name(name: &OsStr) -> anyhow::Result<CString> {
    CString::new(name.as_bytes()).context("a file name with a NUL byte")
}

/// Binds the API's socket at `path` with mode 0660 before anyone can
/// connect: the socket is bound in a fresh 0700 directory beside `path`
/// (nobody else can reach it there, whatever the umask), its mode set, then
/// hard-linked to `path` (which fails rather than replace a file that
/// appeared meanwhile) and unlinked from the private directory.
///
/// The socket is bound through the private directory's descriptor
/// (`/proc/self/fd/N/s`), a short path whatever the length of the
/// directory's own path, so every path [`check_socket_path`] accepts binds;
/// no process-wide state (working directory, umask) is changed.
pub(crate) fn bind_socket(path: &Path) -> anyhow::Result<(UnixListener, SocketFile)> {
    check_socket_path(path).map_err(anyhow::Error::msg)?;
    let file_name = path
        .file_name()
        .context("the socket path has no file name")?;
    let parent = open_directory(parent_of(path))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let private_path =
        parent_of(path).join(format!(".roomcache-bind-{}-{nanos}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private_path)
        .with_context(|| format!("creating {}", private_path.display()))?;
    let result = open_directory(&private_path)
        .and_then(|private| bind_in(&private, &parent, file_name, path));
    let _ = std::fs::remove_dir_all(&private_path);
    result
}

/// The socket bound as `s` in the open private directory, linked to
/// `file_name` in the open directory `parent` (`path`).
fn bind_in(
    private: &File,
    parent: &File,
    file_name: &OsStr,
    path: &Path,
) -> anyhow::Result<(UnixListener, SocketFile)> {
    let bound = format!("/proc/self/fd/{}/s", private.as_raw_fd());
    let listener = UnixListener::bind(&bound).with_context(|| {
        format!(
            "binding the socket for {} (through {bound}: is /proc mounted?)",
            path.display()
        )
    })?;
    let temporary = c_name(OsStr::new("s"))?;
    let target = c_name(file_name)?;
    // SAFETY: both descriptors are open directories and both names are
    // NUL-terminated strings that outlive the calls.
    let changed = unsafe { libc::fchmodat(private.as_raw_fd(), temporary.as_ptr(), 0o660, 0) };
    if changed != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("setting the mode of the socket for {}", path.display()));
    }
    // SAFETY: as above.
    let linked = unsafe {
        libc::linkat(
            private.as_raw_fd(),
            temporary.as_ptr(),
            parent.as_raw_fd(),
            target.as_ptr(),
            0,
        )
    };
    if linked != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("linking the socket to {}", path.display()));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SOCKET_PATH_MAX;

    /// A path of exactly `length` bytes: a short file name in a directory
    /// (made) whose path takes the rest, as a deep socket directory does.
    fn path_of_length(dir: &Path, length: usize) -> PathBuf {
        let name = "rc.sock";
        let base = dir.as_os_str().len() + 1 + name.len() + 1;
        assert!(
            length > base + 1,
            "the temporary directory's path is too long"
        );
        let deep = dir.join("d".repeat(length - base));
        std::fs::create_dir(&deep).unwrap();
        deep.join(name)
    }

    #[test]
    fn the_longest_path_the_kernel_accepts_binds_with_mode_0660() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = path_of_length(dir.path(), SOCKET_PATH_MAX);
        assert_eq!(path.as_os_str().len(), 107);
        let (listener, socket) = bind_socket(&path).unwrap();
        let metadata = std::fs::symlink_metadata(&path).unwrap();
        assert!(metadata.file_type().is_socket());
        assert_eq!(metadata.permissions().mode() & 0o777, 0o660);
        // It accepts at that path, and nothing is left beside it.
        let _client = UnixStream::connect(&path).unwrap();
        listener.accept().unwrap();
        let entries: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(entries, vec![path.file_name().unwrap().to_owned()]);
        drop(socket);
        assert!(!path.exists());
    }

    #[test]
    fn one_byte_more_is_refused_naming_the_path_and_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_of_length(dir.path(), SOCKET_PATH_MAX + 1);
        let error = bind_socket(&path).err().unwrap().to_string();
        assert!(error.contains(&path.display().to_string()), "{error}");
        assert!(error.contains("108 bytes long"), "{error}");
        assert!(error.contains("at most 107 bytes"), "{error}");
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            0
        );
    }

    #[test]
    fn a_relative_path_counts_as_written() {
        assert!(check_socket_path(Path::new("var/roomcache.sock")).is_ok());
        assert!(check_socket_path(&PathBuf::from("s".repeat(107))).is_ok());
        assert!(check_socket_path(&PathBuf::from("s".repeat(108))).is_err());
        assert!(check_socket_path(Path::new("/")).is_err());
    }
}
