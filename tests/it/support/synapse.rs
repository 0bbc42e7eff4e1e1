//! Shared by the source-mode tests: a private copy of a Synapse fixture
//! database in the test cluster, the fixture's CSV, the rows of both tables
//! in the CSV's form, and a source-mode test server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use roomcache::store::LoadedRows;
use serde_json::Value;
use tokio_postgres::NoTls;

use super::server::{self, unique_schema, ServerOptions, TestServer};

pub(crate) const SERVER_NAME: &str = "oracle.test";
/// The fixture's events-stream position (`stream_positions`).
pub(crate) const FIXTURE_POSITION: i64 = 3029;

/// The multi-writer fixture (`workers.*`): its server name, its event
/// writers, and the position every writer reaches (`stream_positions` has
/// p1 at 439 and the idle p2 at 412; the positions in use between them are
/// consecutive, so both are safe up to 439).
pub(crate) const WORKERS_SERVER_NAME: &str = "localhost";
pub(crate) const WORKERS_WRITERS: [&str; 2] = ["p1", "p2"];
pub(crate) const WORKERS_FIXTURE_POSITION: i64 = 439;

pub(crate) fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/synapse")
        .join(name)
}

/// The test cluster's URL with another database name.
pub(crate) fn url_for_database(database: &str) -> String {
    let base = server::database_url();
    match base.rsplit_once('/') {
        Some((prefix, _)) => format!("{prefix}/{database}"),
        None => panic!("unexpected database URL {base}"),
    }
}

/// A private copy of the fixture's Synapse database.
pub(crate) struct SynapseDatabase {
    pub(crate) name: String,
    pub(crate) url: String,
}

impl SynapseDatabase {
    pub(crate) async fn load(fixture_name: &str) -> SynapseDatabase {
        let name = unique_schema("synapse");
        let (admin, connection) = tokio_postgres::connect(&url_for_database("postgres"), NoTls)
            .await
            .expect("connect to the test cluster");
        tokio::spawn(connection);
        admin
            .batch_execute(&format!(
                "CREATE DATABASE {name} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
            ))
            .await
            .expect("create the Synapse database");
        let url = url_for_database(&name);
        let mut gunzip = Command::new("gunzip")
            .arg("-c")
            .arg(fixture(fixture_name))
            .stdout(Stdio::piped())
            .spawn()
            .expect("gunzip");
        let status = Command::new("psql")
            .args(["-q", "-v", "ON_ERROR_STOP=1", "-o", "/dev/null", &url])
            .stdin(gunzip.stdout.take().expect("gunzip output"))
            .status()
            .expect("psql");
        assert!(gunzip.wait().expect("gunzip").success(), "gunzip failed");
        assert!(status.success(), "loading the dump failed");
        SynapseDatabase { name, url }
    }

    pub(crate) async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .expect("connect to the Synapse database");
        tokio::spawn(connection);
        client
    }
}

/// A CSV field: `None` for NULL (an empty unquoted field).
pub(crate) type Field = Option<String>;

/// Parses the fixture's CSV (header row; NULL is empty, "" is the empty string).
pub(crate) fn parse_csv(text: &str) -> Vec<Vec<Field>> {
    let mut records = Vec::new();
    let mut record: Vec<Field> = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut in_quotes = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    field.push('"');
                    chars.next();
                } else {
                    in_quotes = false;
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            '"' => {
                in_quotes = true;
                quoted = true;
            }
            ',' => {
                record.push((quoted || !field.is_empty()).then(|| std::mem::take(&mut field)));
                quoted = false;
            }
            '\n' => {
                record.push((quoted || !field.is_empty()).then(|| std::mem::take(&mut field)));
                quoted = false;
                records.push(std::mem::take(&mut record));
            }
            '\r' => {}
            other => field.push(other),
        }
    }
    if !record.is_empty() || !field.is_empty() {
        record.push((quoted || !field.is_empty()).then_some(field));
        records.push(record);
    }
    records.remove(0);
    records
}

pub(crate) fn text(value: &str) -> Field {
    Some(value.to_owned())
}

pub(crate) fn boolean(value: bool) -> Field {
    text(if value { "t" } else { "f" })
}

/// The rows of both tables as the fixture's CSV writes them, keyed.
#[derive(Debug, PartialEq)]
pub(crate) struct Tables {
    pub(crate) joined: BTreeMap<String, Vec<Field>>,
    pub(crate) snapshots: BTreeMap<(String, String), Vec<Field>>,
}

impl Tables {
    pub(crate) fn from_csv(joined: &str, snapshots: &str) -> Tables {
        let joined_text = std::fs::read_to_string(fixture(joined)).expect("joined CSV");
        let snapshot_text = std::fs::read_to_string(fixture(snapshots)).expect("snapshot CSV");
        Tables {
            joined: parse_csv(&joined_text)
                .into_iter()
                .map(|r| (r[0].clone().unwrap_or_default(), r))
                .collect(),
            snapshots: parse_csv(&snapshot_text)
                .into_iter()
                .map(|r| {
                    (
                        (
                            r[0].clone().unwrap_or_default(),
                            r[1].clone().unwrap_or_default(),
                        ),
                        r,
                    )
                })
                .collect(),
        }
    }

    pub(crate) fn from_rows(rows: &LoadedRows) -> Tables {
        Tables {
            joined: rows
                .joined_rooms
                .iter()
                .map(|r| {
                    (
                        r.room_id.to_string(),
                        vec![
                            text(r.room_id.as_str()),
                            text(&r.event_stream_ordering.to_string()),
                            r.bump_stamp.map(|b| b.to_string()),
                            r.metadata.room_type.clone(),
                            r.metadata.room_name.clone(),
                            boolean(r.metadata.is_encrypted),
                            r.metadata.tombstone_successor_room_id.clone(),
                        ],
                    )
                })
                .collect(),
            snapshots: rows
                .snapshots
                .iter()
                .map(|s| {
                    (
                        (s.room_id.to_string(), s.user_id.to_string()),
                        vec![
                            text(s.room_id.as_str()),
                            text(s.user_id.as_str()),
                            text(s.sender.as_str()),
                            text(s.membership_event_id.as_str()),
                            text(s.membership.as_str()),
                            text(if s.forgotten { "1" } else { "0" }),
                            text(&s.event_stream_ordering.to_string()),
                            text(&s.event_instance_name),
                            boolean(s.has_known_state),
                            s.metadata.room_type.clone(),
                            s.metadata.room_name.clone(),
                            boolean(s.metadata.is_encrypted),
                            s.metadata.tombstone_successor_room_id.clone(),
                        ],
                    )
                })
                .collect(),
        }
    }

    /// Every difference, one line each (empty when equal).
    pub(crate) fn differences(&self, expected: &Tables) -> Vec<String> {
        let mut lines = Vec::new();
        for key in self.joined.keys().chain(expected.joined.keys()) {
            let (ours, theirs) = (self.joined.get(key), expected.joined.get(key));
            if ours != theirs && !lines.iter().any(|l: &String| l.contains(key)) {
                lines.push(format!("joined {key}: ours {ours:?} expected {theirs:?}"));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for key in self.snapshots.keys().chain(expected.snapshots.keys()) {
            let (ours, theirs) = (self.snapshots.get(key), expected.snapshots.get(key));
            if ours != theirs && seen.insert(key.clone()) {
                lines.push(format!(
                    "snapshot {key:?}: ours {ours:?} expected {theirs:?}"
                ));
            }
        }
        lines
    }
}

/// The options of a source-mode server reading `synapse`, a builder:
/// `source_options(&synapse).import_on_start(true).server_name(HS).writers(..).build()`.
/// By default it follows from position 0 without importing, as
/// [`SERVER_NAME`].
pub(crate) struct SourceOptions<'a> {
    synapse: &'a SynapseDatabase,
    import_on_start: bool,
    server_name: &'a str,
    writers: Vec<String>,
    poll_interval_ms: u64,
    redis_url: Option<String>,
}

pub(crate) fn source_options(synapse: &SynapseDatabase) -> SourceOptions<'_> {
    SourceOptions {
        synapse,
        import_on_start: false,
        server_name: SERVER_NAME,
        writers: vec!["master".into()],
        poll_interval_ms: 20,
        redis_url: None,
    }
}

impl<'a> SourceOptions<'a> {
    /// `--source-import-on-start`.
    pub(crate) fn import_on_start(mut self, import_on_start: bool) -> Self {
        self.import_on_start = import_on_start;
        self
    }

    /// `--server-name`.
    pub(crate) fn server_name(mut self, server_name: &'a str) -> Self {
        self.server_name = server_name;
        self
    }

    /// `--writers`.
    pub(crate) fn writers(mut self, writers: &[&str]) -> Self {
        self.writers = writers.iter().map(|w| (*w).to_owned()).collect();
        self
    }

    /// `--source-poll-interval-ms` (20 by default).
    pub(crate) fn poll_interval_ms(mut self, milliseconds: u64) -> Self {
        self.poll_interval_ms = milliseconds;
        self
    }

    /// `--source-redis-url`.
    pub(crate) fn redis_url(mut self, url: &str) -> Self {
        self.redis_url = Some(url.to_owned());
        self
    }

    pub(crate) fn build(self) -> ServerOptions {
        let mut extra_args: Vec<String> = vec![
            "--source-database-url".into(),
            self.synapse.url.clone(),
            "--source-import-on-start".into(),
            self.import_on_start.to_string(),
            "--source-poll-interval-ms".into(),
            self.poll_interval_ms.to_string(),
            "--source-batch-size".into(),
            "100".into(),
            "--source-import-batch-rooms".into(),
            "7".into(),
        ];
        if let Some(url) = self.redis_url {
            extra_args.extend(["--source-redis-url".into(), url]);
        }
        ServerOptions {
            server_name: self.server_name.into(),
            writers: self.writers,
            extra_args,
            ..ServerOptions::default()
        }
    }
}

/// Starts the stopped `server` with its recalculation held back (queued
/// rooms stay queued, and the reads' fallback answers for them); its next
/// start recalculates as usual. Returns its status.
pub(crate) async fn spawn_holding_recalculation(server: &mut TestServer) -> Value {
    let arguments = server.options.extra_args.len();
    server
        .options
        .extra_args
        .extend(["--source-recalculation-delay-ms".into(), "600000".into()]);
    server.spawn().await;
    server.options.extra_args.truncate(arguments);
    server.get("/v1/status").await.body
}

/// Waits until the server's position reaches `position` with an empty queue.
pub(crate) async fn wait_for_position(server: &TestServer, position: i64) -> Value {
    wait_for_writers(server, &["master"], position).await
}

/// Waits until every one of `writers` is at `position` with an empty queue.
pub(crate) async fn wait_for_writers(
    server: &TestServer,
    writers: &[&str],
    position: i64,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = server.get("/v1/status").await;
        let body = status.body.clone();
        if writers
            .iter()
            .all(|w| body["positions"][w].as_i64() == Some(position))
            && body["recalculation_queue"].as_i64() == Some(0)
        {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "position {position} not reached: {}\n{}",
            status.text,
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn assert_no_differences(ours: &Tables, expected: &Tables, what: &str) {
    let differences = ours.differences(expected);
    assert!(
        differences.is_empty(),
        "{what}: {} differences:\n{}",
        differences.len(),
        differences.join("\n")
    );
}

pub(crate) use super::synapse_writes::*;
