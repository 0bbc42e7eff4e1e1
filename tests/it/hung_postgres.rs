//! A hung Postgres (issue 12, item 8): a database that accepts connections
//! but never answers (its processes stopped with SIGSTOP) must not hang
//! writers forever. After `commit_timeout_ms` the batch is answered 503,
//! and once the database answers again the batch can be resent.
//!
//! The test runs its own private cluster (`scripts/pg`, port
//! `ROOMCACHE_TEST_SPARE_PG_PORT`, else the test cluster's port + 4), so
//! stopping it stalls no other test; it stops and resumes only that
//! cluster's processes, by process id.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

use crate::support::server::{block_port, ServerOptions, TestServer};

fn spare_port() -> u16 {
    block_port("ROOMCACHE_TEST_SPARE_PG_PORT", 4)
}

fn scripts_pg() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pg")
}

/// A private cluster, stopped and deleted (by `scripts/pg remove`: as root
/// it lives in a directory of its own under $TMPDIR) when dropped.
struct PrivateCluster {
    dir: PathBuf,
    _parent: tempfile::TempDir,
    port: u16,
}

impl PrivateCluster {
    fn start() -> PrivateCluster {
        let parent = tempfile::tempdir().expect("temporary directory");
        let dir = parent.path().join("pg");
        let port = spare_port();
        let status = Command::new(scripts_pg())
            .arg("start")
            .arg(&dir)
            .arg(port.to_string())
            .arg("--fast")
            .status()
            .expect("running scripts/pg");
        assert!(status.success(), "scripts/pg start failed");
        PrivateCluster {
            dir,
            _parent: parent,
            port,
        }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/roomcache", self.port)
    }

    /// The postmaster and every process it started.
    fn processes(&self) -> Vec<Pid> {
        let pid_file = self.dir.join("data/postmaster.pid");
        let text = std::fs::read_to_string(&pid_file).expect("postmaster.pid");
        let postmaster: i32 = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .expect("postmaster pid");
        let mut pids = vec![Pid::from_raw(postmaster)];
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // The parent pid is the second field after the command's ")".
            let parent = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            if parent == Some(postmaster) {
                pids.push(Pid::from_raw(pid));
            }
        }
        pids
    }

    fn signal_all(&self, signal: Signal) {
        for pid in self.processes() {
            let _ = kill(pid, signal);
        }
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        self.signal_all(Signal::SIGCONT);
        let _ = Command::new(scripts_pg())
            .arg("remove")
            .arg(&self.dir)
            .status();
    }
}

fn message_batch(stream_id: i64, event_id: &str) -> serde_json::Value {
    json!({"writer": "master", "rows": [
        {"kind": "event", "stream_id": stream_id, "event": {"event_id": event_id,
            "room_id": "!hung:example.org", "type": "m.room.message",
            "sender": "@alice:example.org", "content": {"body": "x"}}}
    ]})
}

#[tokio::test]
async fn a_hung_postgres_times_out_commits_with_503() {
    let cluster = PrivateCluster::start();
    let mut server = TestServer::start_with(ServerOptions {
        database_url: Some(cluster.url()),
        extra_env: vec![
            ("ROOMCACHE_COMMIT_TIMEOUT_MS".into(), "1500".into()),
            ("ROOMCACHE_STATEMENT_TIMEOUT_MS".into(), "1500".into()),
        ],
        ..ServerOptions::default()
    })
    .await;
    server.feed(&message_batch(2, "$m2")).await;

    cluster.signal_all(Signal::SIGSTOP);
    let answer = tokio::time::timeout(
        Duration::from_secs(20),
        server.post("/v1/feed", &message_batch(3, "$m3")),
    )
    .await;
    cluster.signal_all(Signal::SIGCONT);
    let answer = answer.expect("a writer hung on a stopped Postgres");
    answer.assert_error(503, "ROOMCACHE_UNAVAILABLE");
    assert!(answer.text.contains("commit_timeout_ms"), "{}", answer.text);

    // Postgres answers again: the writer resends and goes on.
    let resent = server.feed(&message_batch(3, "$m3")).await;
    assert_eq!(resent["position"], 3);
    server.feed(&message_batch(4, "$m4")).await;
    let positions = server.get("/v1/positions").await;
    assert_eq!(positions.body["positions"]["master"], 4);
    server.assert_postgres_matches_served().await;
    server.stop().await;
}
