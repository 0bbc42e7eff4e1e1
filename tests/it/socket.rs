//! The Unix socket's life cycle: mode 0660, removed on clean shutdown, a
//! stale file replaced, a live one refused.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::process::Command;

use crate::support::server::{database_url, TestServer};

#[tokio::test]
async fn socket_mode_stale_replacement_and_live_refusal() {
    let mut server = TestServer::start().await;
    let metadata = std::fs::metadata(&server.socket).unwrap();
    assert!(metadata.file_type().is_socket());
    assert_eq!(metadata.permissions().mode() & 0o777, 0o660);

    // A second roomcache on the same socket is refused with a clear message,
    // and the first one keeps serving.
    let output = Command::new(env!("CARGO_BIN_EXE_roomcache"))
        .args(["serve", "--config", "/dev/null", "--socket-path"])
        .arg(&server.socket)
        .args([
            "--database-url",
            &server.database_url,
            "--schema",
            &server.schema,
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is serving on"), "{stderr}");
    assert_eq!(server.get("/health").await.status, 200);

    // kill -9 leaves the socket file behind; the next start replaces it.
    server.kill().await;
    assert!(
        server.socket.exists(),
        "a killed server leaves its socket file"
    );
    server.spawn().await;
    assert!(server.log().contains("removing a stale socket file"));
    assert_eq!(server.get("/health").await.status, 200);

    // A clean stop removes the socket file.
    server.stop().await;
    assert!(!server.socket.exists());
}

#[tokio::test]
async fn a_file_that_is_not_a_socket_is_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("roomcache.sock");
    std::fs::write(&path, "precious").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_roomcache"))
        .args(["serve", "--config", "/dev/null", "--socket-path"])
        .arg(&path)
        .args(["--database-url", &database_url()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not a socket"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
}

/// Item 4 of issue 12: one instance per schema. A second server on the same
/// schema with another socket refuses to start (the first keeps serving);
/// a server whose lock is lost exits at once with a clear message.
#[tokio::test]
async fn one_instance_per_schema() {
    let mut server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let other_socket = dir.path().join("other.sock");
    let stderr_path = dir.path().join("second.log");
    let mut second = Command::new(env!("CARGO_BIN_EXE_roomcache"))
        .args(["serve", "--config", "/dev/null", "--socket-path"])
        .arg(&other_socket)
        .env("ROOMCACHE_INSTANCE_LOCK_WAIT_MS", "300")
        .args([
            "--database-url",
            &server.database_url,
            "--schema",
            &server.schema,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = second.kill();
            let _ = second.wait();
            break None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let status =
        status.unwrap_or_else(|| panic!("a second server on the schema kept running:\n{stderr}"));
    assert!(!status.success());
    assert!(
        stderr.contains("another roomcache holds schema"),
        "{stderr}"
    );
    assert!(!other_socket.exists(), "the refused server left a socket");
    assert_eq!(server.get("/health").await.status, 200);

    // The lock's session ends (an operator's pg_terminate_backend, a
    // failover): the server stops at once.
    let client = server.store().await.client().await.unwrap();
    let terminated = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_locks \
             WHERE locktype = 'advisory' AND objsubid = 2 \
             AND classid = x'726d6368'::int::oid AND objid = hashtext($1)::oid",
            &[&server.schema],
        )
        .await
        .unwrap();
    let terminated: i64 = terminated.get(0);
    assert_eq!(terminated, 1);
    let status = server.wait_for_exit().await;
    assert_eq!(status.code(), Some(3), "{}", server.log());
    assert!(
        server
            .log()
            .contains("instance lock on the schema was lost"),
        "{}",
        server.log()
    );
}

/// Item 4 of issue 12: a server's shutdown leaves alone a socket file that
/// is no longer its own.
#[tokio::test]
async fn shutdown_leaves_a_socket_file_that_is_not_ours() {
    let mut server = TestServer::start().await;
    std::fs::remove_file(&server.socket).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(&server.socket).unwrap();
    server.stop().await;
    let metadata = std::fs::symlink_metadata(&server.socket).expect("the other socket is kept");
    assert!(metadata.file_type().is_socket());
}
