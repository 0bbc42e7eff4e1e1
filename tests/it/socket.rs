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
        .args([
            "serve",
            "--config",
            "/nonexistent/roomcache.toml",
            "--socket-path",
        ])
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
        .args([
            "serve",
            "--config",
            "/nonexistent/roomcache.toml",
            "--socket-path",
        ])
        .arg(&path)
        .args(["--database-url", &database_url()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not a socket"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
}
