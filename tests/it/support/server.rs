//! Test harness: a real `roomcache serve` process on a real Unix socket,
//! against the Postgres that `scripts/test` starts (its URL in
//! `ROOMCACHE_TEST_DATABASE_URL`). Each server gets its own schema, so tests
//! run in parallel without seeing each other's rows.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use roomcache::model::{JoinedRoomRow, MembershipSnapshot};
use roomcache::store::{LoadedRows, Store};
use serde_json::Value;
use tokio::net::UnixStream;

static NEXT_SCHEMA: AtomicU64 = AtomicU64::new(0);

/// The Postgres URL of the test cluster; tests fail loudly without it.
pub(crate) fn database_url() -> String {
    std::env::var("ROOMCACHE_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!("ROOMCACHE_TEST_DATABASE_URL is not set: run the tests with scripts/test, which starts a private Postgres")
    })
}

/// A port of scripts/test's block: the environment variable `variable`
/// when set, else the test database's port + `offset`.
pub(crate) fn block_port(variable: &str, offset: u16) -> u16 {
    if let Ok(port) = std::env::var(variable) {
        return port
            .parse()
            .unwrap_or_else(|_| panic!("{variable} is not a port"));
    }
    let url = database_url();
    let port: u16 = url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("the test database URL names a port");
    port + offset
}

/// A fresh schema name, unique across processes and runs.
pub(crate) fn unique_schema(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        NEXT_SCHEMA.fetch_add(1, Ordering::Relaxed),
        nanos % 1_000_000_000
    )
}

/// An HTTP answer: status and JSON body (`Value::Null` for a non-JSON body,
/// whose text is kept in `text`).
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: Value,
    pub(crate) text: String,
}

impl Answer {
    /// Asserts a 4xx error with the given errcode and returns the message.
    pub(crate) fn assert_error(&self, status: u16, errcode: &str) -> String {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status, body: {}",
            self.text
        );
        assert_eq!(
            self.body["errcode"], errcode,
            "unexpected errcode, body: {}",
            self.text
        );
        let message = self.body["error"].as_str().unwrap_or_default().to_owned();
        assert!(!message.is_empty(), "error message missing: {}", self.text);
        message
    }
}

/// Posts JSON to a socket without a `TestServer` (for tasks that outlive a
/// borrow); `None` when the socket cannot be reached.
pub(crate) async fn post_to(socket: &Path, path: &str, body: &Value) -> Option<Answer> {
    let bytes = Bytes::from(serde_json::to_vec(body).ok()?);
    send(
        socket,
        Method::POST,
        path,
        Some((bytes, "application/json")),
    )
    .await
    .ok()
}

/// One HTTP request on a fresh connection to `socket`; `Err` when the
/// socket cannot be reached or the connection breaks.
pub(crate) async fn send(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<(Bytes, &str)>,
) -> Result<Answer, String> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://localhost{path}"))
        .header("host", "localhost");
    let body = match body {
        Some((bytes, content_type)) => {
            request = request.header("content-type", content_type);
            bytes
        }
        None => Bytes::new(),
    };
    let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok(Answer { status, body, text })
}

/// Options of a test server.
#[derive(Debug, Clone)]
pub(crate) struct ServerOptions {
    pub(crate) server_name: String,
    pub(crate) writers: Vec<String>,
    pub(crate) extra_args: Vec<String>,
    pub(crate) extra_env: Vec<(String, String)>,
    /// Another Postgres than the test cluster.
    pub(crate) database_url: Option<String>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            server_name: "example.org".into(),
            writers: vec!["master".into()],
            extra_args: Vec::new(),
            extra_env: Vec::new(),
            database_url: None,
        }
    }
}

/// A running roomcache process.
pub(crate) struct TestServer {
    child: Option<Child>,
    pub(crate) options: ServerOptions,
    pub(crate) socket: PathBuf,
    pub(crate) schema: String,
    pub(crate) database_url: String,
    pub(crate) log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts a server with default options (server name `example.org`, writer `master`).
    pub(crate) async fn start() -> TestServer {
        Self::start_with(ServerOptions::default()).await
    }

    pub(crate) async fn start_with(options: ServerOptions) -> TestServer {
        let dir = tempfile::Builder::new()
            .prefix("roomcache-test")
            .tempdir()
            .expect("temporary directory");
        let mut server = TestServer {
            child: None,
            socket: dir.path().join("roomcache.sock"),
            log_path: dir.path().join("roomcache.log"),
            schema: unique_schema("t"),
            database_url: options.database_url.clone().unwrap_or_else(database_url),
            options,
            _dir: dir,
        };
        server.spawn().await;
        server
    }

    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_roomcache"));
        command
            .arg("serve")
            .arg("--config")
            .arg("/dev/null")
            .arg("--socket-path")
            .arg(&self.socket)
            .arg("--database-url")
            .arg(&self.database_url)
            .arg("--schema")
            .arg(&self.schema)
            .arg("--server-name")
            .arg(&self.options.server_name)
            .arg("--writers")
            .arg(self.options.writers.join(","))
            .arg("--pool-size")
            .arg("4")
            .args(&self.options.extra_args)
            .env("ROOMCACHE_LOG_LEVEL", "info,roomcache=debug")
            .envs(self.options.extra_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        command
    }

    /// Starts the process and waits until `/health` answers 200.
    pub(crate) async fn spawn(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("log file");
        let child = self
            .command()
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawning roomcache");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "roomcache exited during start-up ({status}):\n{}",
                    self.log()
                );
            }
            if let Ok(answer) = self.try_request(Method::GET, "/health", None).await {
                if answer.status == StatusCode::OK {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "roomcache did not become ready:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The server's log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits (up to 30 s) until the server's log contains `text` (a line
    /// logged after what a test waited for, e.g. after a drain's last commit).
    pub(crate) async fn wait_for_log(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "never logged {text:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends `signal` and waits for the process to exit; returns its exit status.
    pub(crate) async fn stop_with(
        &mut self,
        signal: nix::sys::signal::Signal,
    ) -> std::process::ExitStatus {
        let child = self.child.as_ref().expect("server running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, signal).expect("signal delivered");
        self.wait_for_exit().await
    }

    /// The process id, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits (up to 60 s) for the process to exit by itself.
    pub(crate) async fn wait_for_exit(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server running");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "roomcache did not exit:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Graceful stop (SIGTERM); asserts a clean exit.
    pub(crate) async fn stop(&mut self) {
        let status = self.stop_with(nix::sys::signal::Signal::SIGTERM).await;
        assert!(
            status.success(),
            "roomcache exited with {status}:\n{}",
            self.log()
        );
    }

    /// SIGKILL: no chance to clean up.
    pub(crate) async fn kill(&mut self) {
        self.stop_with(nix::sys::signal::Signal::SIGKILL).await;
    }

    /// Graceful restart on the same schema and socket.
    pub(crate) async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }

    async fn try_request(
        &self,
        method: Method,
        path: &str,
        body: Option<(Bytes, &str)>,
    ) -> Result<Answer, String> {
        send(&self.socket, method, path, body).await
    }

    /// Any request; panics only if the socket cannot be reached.
    pub(crate) async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<(Bytes, &str)>,
    ) -> Answer {
        self.try_request(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("request {path} failed: {e}\n{}", self.log()))
    }

    pub(crate) async fn get(&self, path: &str) -> Answer {
        self.request(Method::GET, path, None).await
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> Answer {
        let bytes = Bytes::from(serde_json::to_vec(body).expect("json"));
        self.request(Method::POST, path, Some((bytes, "application/json")))
            .await
    }

    pub(crate) async fn post_raw(&self, path: &str, body: impl Into<Bytes>) -> Answer {
        self.request(Method::POST, path, Some((body.into(), "application/json")))
            .await
    }

    /// Posts a feed batch and asserts it was committed; returns the answer body.
    pub(crate) async fn feed(&self, batch: &Value) -> Value {
        let answer = self.post("/v1/feed", batch).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "feed refused: {}\n{}",
            answer.text,
            self.log()
        );
        answer.body
    }

    /// The value of a series of `/metrics`: its name, with its labels as
    /// the text shows them (`name{label="value"}`) when it has any.
    pub(crate) async fn metric(&self, series: &str) -> Option<f64> {
        let text = self.get("/metrics").await.text;
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// Waits (up to 30 s) until a series of `/metrics` reads `value`.
    pub(crate) async fn wait_for_metric(&self, series: &str, value: f64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.metric(series).await != Some(value) {
            assert!(
                Instant::now() < deadline,
                "{series} never became {value}:\n{}",
                self.get("/metrics").await.text
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A store on the server's schema, to read what Postgres holds.
    pub(crate) async fn store(&self) -> Store {
        Store::connect(&self.database_url, &self.schema, 1)
            .await
            .expect("connecting to the test database")
    }

    /// The rows a query on the server's schema returns (what Postgres holds).
    pub(crate) async fn stored_rows(
        &self,
        sql: &str,
        parameters: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Vec<tokio_postgres::Row> {
        let store = self.store().await;
        let client = store
            .client()
            .await
            .expect("a connection to the test database");
        client
            .query(sql, parameters)
            .await
            .expect("querying the test database")
    }

    /// Every row Postgres holds for this server.
    pub(crate) async fn rows_in_postgres(&self) -> LoadedRows {
        self.store().await.load_all().await.expect("loading rows")
    }

    /// The joined-room row the API serves, if any.
    pub(crate) async fn served_joined_room(&self, room_id: &str) -> Option<JoinedRoomRow> {
        let answer = self.get(&format!("/v1/rooms/{room_id}")).await;
        match answer.status {
            StatusCode::OK => {
                Some(serde_json::from_value(answer.body["room"].clone()).expect("row"))
            }
            StatusCode::NOT_FOUND => None,
            other => panic!("GET room {room_id}: {other} {}", answer.text),
        }
    }

    /// All snapshots the API serves for a user, by room.
    pub(crate) async fn served_snapshots(&self, user_id: &str) -> Vec<MembershipSnapshot> {
        let answer = self.get(&format!("/v1/users/{user_id}/rooms")).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        serde_json::from_value(answer.body["rooms"].clone()).expect("snapshots")
    }

    /// Asserts that every row in Postgres is served exactly, and that the
    /// server holds no row that Postgres lacks (by the status counts).
    pub(crate) async fn assert_postgres_matches_served(&self) {
        let rows = self.rows_in_postgres().await;
        for row in &rows.joined_rooms {
            let served = self.served_joined_room(row.room_id.as_str()).await;
            assert_eq!(
                served.as_ref(),
                Some(row),
                "joined row of {} differs",
                row.room_id
            );
        }
        let mut users: Vec<&str> = rows.snapshots.iter().map(|s| s.user_id.as_str()).collect();
        users.sort_unstable();
        users.dedup();
        for user in users {
            let mut expected: Vec<&MembershipSnapshot> = rows
                .snapshots
                .iter()
                .filter(|s| s.user_id.as_str() == user)
                .collect();
            expected.sort_by(|a, b| a.room_id.cmp(&b.room_id));
            let served = self.served_snapshots(user).await;
            let served: Vec<&MembershipSnapshot> = served.iter().collect();
            assert_eq!(served, expected, "snapshots of {user} differ");
        }
        let status = self.get("/v1/status").await;
        assert_eq!(status.status, StatusCode::OK, "{}", status.text);
        assert_eq!(
            status.body["joined_rooms"],
            rows.joined_rooms.len(),
            "{}",
            status.text
        );
        assert_eq!(
            status.body["snapshots"],
            rows.snapshots.len(),
            "{}",
            status.text
        );
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
