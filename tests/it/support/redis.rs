//! A real redis-server for the tests, on a Unix socket in a temporary
//! directory (no port to collide with anything), stopped when dropped; and
//! `PUBLISH` through redis-cli.
//!
//! redis-server comes from Debian's packages: `scripts/test` installs it
//! (`scripts/synapse redis install`). A test without it fails, saying so.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A redis-server listening on `socket` only.
pub(crate) struct RedisServer {
    child: Option<Child>,
    pub(crate) socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// A socket path where no Redis runs yet; [`RedisServer::start`] starts one.
    pub(crate) fn stopped() -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("roomcache-redis")
            .tempdir()
            .expect("temporary directory");
        RedisServer {
            child: None,
            socket: dir.path().join("redis.sock"),
            _dir: dir,
        }
    }

    /// The URL roomcache connects to.
    pub(crate) fn url(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }

    /// Starts redis-server and waits until it answers.
    pub(crate) fn start(&mut self) {
        assert!(self.child.is_none(), "redis already runs");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(&self.socket)
            .args(["--unixsocketperm", "700"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "redis-server is missing: scripts/synapse redis install (Debian's redis-server)",
            );
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.cli(&["PING"]) != "PONG" {
            assert!(Instant::now() < deadline, "redis-server did not answer");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops redis-server (its clients see the connection close).
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    /// Runs one redis-cli command; returns its output (empty on failure).
    fn cli(&self, arguments: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .arg("-s")
            .arg(&self.socket)
            .args(arguments)
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli is missing: scripts/synapse redis install");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Publishes `message` on `channel`; returns how many subscribers got it.
    pub(crate) fn publish(&self, channel: &str, message: &str) -> usize {
        self.cli(&["PUBLISH", channel, message])
            .parse()
            .expect("PUBLISH answers a count")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
