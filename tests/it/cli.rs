//! The command line as an operator meets it: start-up failures give one
//! clean message and exit 1 (no panic, printed once, the database named but
//! never its password), `roomcache config` prints a config file that
//! `--config` reads back, a named config file must exist, an invalid log
//! filter is refused, logs carry no colour codes off a terminal, and
//! answers end with a newline.

use std::net::TcpListener;
use std::process::{Command, Output};

use crate::support::server::{block_port, database_url, unique_schema, TestServer};

fn roomcache() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_roomcache"));
    command.env_remove("ROOMCACHE_CONFIG");
    command
}

/// `roomcache serve` with these arguments (after `--config /dev/null`).
fn serve(args: &[&str]) -> Output {
    roomcache()
        .args(["serve", "--config", "/dev/null"])
        .args(args)
        .env("ROOMCACHE_INSTANCE_LOCK_WAIT_MS", "300")
        .output()
        .expect("running roomcache")
}

/// Asserts a failed start: exit status 1, stderr exactly one line
/// `roomcache: ...` containing every one of `expected` (no panic, no log
/// line repeating it); returns that line.
fn assert_one_clean_failure(output: &Output, expected: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("reactor"), "{stderr}");
    let failures: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("roomcache: "))
        .collect();
    assert_eq!(failures.len(), 1, "{stderr}");
    let line = failures[0];
    for part in expected {
        assert!(line.contains(part), "{part:?} missing from {line:?}");
        assert_eq!(
            stderr.matches(part).count(),
            1,
            "{part:?} printed twice:\n{stderr}"
        );
    }
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes off a terminal:\n{stderr}"
    );
    line.to_owned()
}

#[tokio::test]
async fn start_up_failures_give_one_clean_message() {
    let server = TestServer::start().await;
    let socket = server.socket.to_str().unwrap();

    // The socket is taken by a live server.
    let output = serve(&["--socket-path", socket, "--database-url", &database_url()]);
    assert_one_clean_failure(&output, &["is serving on", socket]);

    // An unreachable database: named by host, port and database, never
    // its password.
    let dir = tempfile::tempdir().unwrap();
    let other_socket = dir.path().join("rc.sock");
    let unused = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = unused.local_addr().unwrap().port();
    drop(unused);
    let url = format!("postgres://roomcache:s3cret%20pw@127.0.0.1:{port}/cachedb");
    let output = serve(&[
        "--socket-path",
        other_socket.to_str().unwrap(),
        "--database-url",
        &url,
    ]);
    let line = assert_one_clean_failure(
        &output,
        &[
            "host 127.0.0.1",
            &format!("port {port}"),
            "database cachedb",
            "user roomcache",
        ],
    );
    assert!(!line.contains("s3cret"), "{line}");

    // A socket path longer than the kernel accepts.
    let long = format!("{}/{}", dir.path().display(), "s".repeat(110));
    let output = serve(&["--socket-path", &long, "--database-url", &database_url()]);
    assert_one_clean_failure(&output, &[&long, "at most 107 bytes"]);

    // A failure after the rows are loaded (the metrics listener's port is
    // taken), where the supervisor actor would have started already.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let schema = unique_schema("cli");
    let output = serve(&[
        "--socket-path",
        other_socket.to_str().unwrap(),
        "--database-url",
        &database_url(),
        "--schema",
        &schema,
        "--metrics-address",
        &address,
    ]);
    assert_one_clean_failure(
        &output,
        &[&format!("listening on metrics_address {address}")],
    );
    assert!(
        !other_socket.exists(),
        "the socket of a failed start is left"
    );
}

#[test]
fn config_prints_a_file_that_config_reads_back_with_passwords_masked() {
    let dir = tempfile::tempdir().unwrap();
    let first = roomcache()
        .args(["config", "--config", "/dev/null"])
        .args(["--database-url", "postgres://roomcache:s3cret@db/roomcache"])
        .args([
            "--source-database-url",
            "postgres://reader:p%40ss@db/synapse",
        ])
        .args(["--writers", "p1,p2", "--log-level", "roomcache=debug,info"])
        .output()
        .unwrap();
    assert!(first.status.success(), "{first:?}");
    let text = String::from_utf8(first.stdout).unwrap();
    assert!(
        !text.contains("s3cret") && !text.contains("p%40ss"),
        "{text}"
    );
    assert!(
        text.contains("database_url = \"postgres://roomcache:***@db/roomcache\""),
        "{text}"
    );
    assert!(text.contains("writers = [\"p1\", \"p2\"]"), "{text}");
    let path = dir.path().join("printed.toml");
    std::fs::write(&path, &text).unwrap();
    let second = roomcache()
        .args(["config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(second.status.success(), "{second:?}");
    assert_eq!(String::from_utf8(second.stdout).unwrap(), text);
}

#[test]
fn a_missing_config_file_and_an_invalid_log_filter_are_errors() {
    let output = roomcache()
        .args(["serve", "--config", "/nonexistent/typo.toml"])
        .output()
        .unwrap();
    assert_one_clean_failure(
        &output,
        &["config file /nonexistent/typo.toml does not exist"],
    );

    let output = roomcache()
        .args([
            "config",
            "--config",
            "/dev/null",
            "--log-level",
            "roomcache=verbose",
        ])
        .output()
        .unwrap();
    assert_one_clean_failure(
        &output,
        &["invalid setting `log_level`", "roomcache=verbose"],
    );
}

#[tokio::test]
async fn logs_have_no_colour_codes_and_answers_end_with_a_newline() {
    let server = TestServer::start().await;
    let health = server.get("/health").await;
    assert_eq!(health.text, "{\"status\":\"ready\"}\n");
    let missing = server.get("/v1/nothing").await;
    assert!(missing.text.ends_with("}\n"), "{:?}", missing.text);
    let log = server.log();
    assert!(log.contains("roomcache is ready"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file:\n{log}"
    );
    assert!(!log.contains("NOTICE"), "{log}");
    assert!(!log.contains(".roomcache-bind-"), "{log}");
}

/// The metrics listener's port: `ROOMCACHE_TEST_METRICS_PORT`, else the
/// test database's port + 6 (scripts/test's block of ports).
fn metrics_port() -> u16 {
    block_port("ROOMCACHE_TEST_METRICS_PORT", 6)
}

/// `metrics_address` serves `/metrics` and `/health` over TCP, and nothing
/// of the API (the socket's API is full write access).
#[tokio::test]
async fn the_metrics_listener_serves_only_metrics_and_health() {
    use std::io::{Read, Write};
    let address = format!("127.0.0.1:{}", metrics_port());
    let server = TestServer::start_with(crate::support::server::ServerOptions {
        extra_args: vec!["--metrics-address".into(), address.clone()],
        ..Default::default()
    })
    .await;
    let get = |method: &str, path: &str| -> String {
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    };
    let metrics = get("GET", "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("roomcache_"), "{metrics}");
    let health = get("GET", "/health");
    assert!(
        health.starts_with("HTTP/1.1 200") && health.ends_with("{\"status\":\"ready\"}\n"),
        "{health}"
    );
    for (method, path) in [
        ("POST", "/v1/feed"),
        ("GET", "/v1/status"),
        ("GET", "/v1/positions"),
    ] {
        let answer = get(method, path);
        assert!(
            answer.starts_with("HTTP/1.1 404"),
            "{method} {path}: {answer}"
        );
    }
    drop(server);
}
