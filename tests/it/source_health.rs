//! Source mode tells the truth about reading Synapse's database: a role
//! missing a grant is refused at start-up with the GRANT to run; a grant
//! revoked while running makes `/health` and `/v1/status` say degraded,
//! naming the table, sets `roomcache_source_healthy` to 0, and refuses at
//! once the reads that would wait for a token (503
//! `ROOMCACHE_SOURCE_DEGRADED`), until the grant is back.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::server::{unique_schema, TestServer};
use crate::support::synapse::{source_options, url_for_database, SynapseDatabase};

/// A login role of the test cluster with `SELECT` on every table and
/// sequence of `synapse` but `unreadable`.
async fn reader_role(synapse: &SynapseDatabase, unreadable: &[&str]) -> String {
    let role = unique_schema("reader");
    let client = synapse.client().await;
    let mut sql = format!(
        "CREATE ROLE {role} LOGIN;
         GRANT USAGE ON SCHEMA public TO {role};
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role};
         GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {role};"
    );
    for table in unreadable {
        sql.push_str(&format!("REVOKE SELECT ON {table} FROM {role};"));
    }
    client
        .batch_execute(&sql)
        .await
        .expect("creating the reader role");
    role
}

/// The Synapse database's URL as `role`.
fn url_as(synapse: &SynapseDatabase, role: &str) -> String {
    url_for_database(&synapse.name).replacen(
        "postgres://postgres@",
        &format!("postgres://{role}@"),
        1,
    )
}

#[tokio::test]
async fn a_missing_grant_is_refused_at_start_naming_the_grant() {
    let synapse = SynapseDatabase::load("small.sql.gz").await;
    let role = reader_role(&synapse, &["room_account_data"]).await;
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_roomcache"))
        .args(["serve", "--config", "/dev/null", "--socket-path"])
        .arg(dir.path().join("rc.sock"))
        .args(["--database-url", &url_for_database("roomcache_test")])
        .args(["--schema", &unique_schema("grants")])
        .args(["--source-database-url", &url_as(&synapse, &role)])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "role {role} cannot read 1 of the 15 tables and 3 sequences of Synapse's that \
             roomcache reads: no SELECT privilege on room_account_data (as a superuser, in \
             Synapse's database: GRANT SELECT ON room_account_data TO {role};)"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Polls `/health` until `done` says its answer is the one awaited.
async fn wait_for_health(server: &TestServer, done: impl Fn(u16, &str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = server.get("/health").await;
        if done(answer.status.as_u16(), &answer.text) {
            return answer.text;
        }
        assert!(
            Instant::now() < deadline,
            "/health stayed {}: {}",
            answer.status,
            answer.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {sample} in:\n{text}"))
}

#[tokio::test]
async fn a_grant_revoked_while_following_degrades_until_it_is_back() {
    let synapse = SynapseDatabase::load("small.sql.gz").await;
    let role = reader_role(&synapse, &[]).await;
    let mut options = source_options(&synapse).build();
    let source_flag = options
        .extra_args
        .iter()
        .position(|a| a == "--source-database-url")
        .unwrap();
    options.extra_args[source_flag + 1] = url_as(&synapse, &role);
    let server = TestServer::start_with(options).await;
    let metrics = server.get("/metrics").await.text;
    assert_eq!(metric(&metrics, "roomcache_source_healthy "), 1.0);
    assert_eq!(
        metric(
            &metrics,
            "roomcache_source_errors_total{reason=\"permission_denied\"} "
        ),
        0.0
    );

    let admin = synapse.client().await;
    admin
        .batch_execute(&format!("REVOKE SELECT ON stream_positions FROM {role}"))
        .await
        .unwrap();
    let health = wait_for_health(&server, |status, _| status == 503).await;
    let answer: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(answer["errcode"], "ROOMCACHE_SOURCE_DEGRADED", "{health}");
    let error = answer["error"].as_str().unwrap();
    assert!(error.contains("permission_denied"), "{error}");
    assert!(
        error.contains(&format!("GRANT SELECT ON stream_positions TO {role};")),
        "{error}"
    );

    let status = server.get("/v1/status").await.body;
    assert_eq!(status["ready"], false, "{status}");
    assert_eq!(status["status"], "degraded", "{status}");
    assert_eq!(status["source"]["healthy"], false, "{status}");
    assert_eq!(
        status["source"]["degraded"]["reason"], "permission_denied",
        "{status}"
    );
    let metrics = server.get("/metrics").await.text;
    assert_eq!(metric(&metrics, "roomcache_source_healthy "), 0.0);
    assert!(
        metric(
            &metrics,
            "roomcache_source_errors_total{reason=\"permission_denied\"} "
        ) >= 1.0
    );

    // A room list waiting for a token not reached is refused at once, not
    // after its minute-long wait.
    let request = json!({
        "lists": {"all": {"ranges": [[0, 10]]}},
        "wait_for": "s99999999",
        "timeout_ms": 60000,
    });
    let answer = server
        .post("/v1/users/@alice:oracle.test/room_list", &request)
        .await;
    let message = answer.assert_error(503, "ROOMCACHE_SOURCE_DEGRADED");
    assert!(message.contains("stream_positions"), "{message}");
    // Without a token to wait for, reads answer as before.
    let plain = server
        .post(
            "/v1/users/@alice:oracle.test/room_list",
            &json!({"lists": {"all": {"ranges": [[0, 10]]}}}),
        )
        .await;
    assert_eq!(plain.status.as_u16(), 200, "{}", plain.text);

    admin
        .batch_execute(&format!("GRANT SELECT ON stream_positions TO {role}"))
        .await
        .unwrap();
    wait_for_health(&server, |status, _| status == 200).await;
    let status = server.get("/v1/status").await.body;
    assert_eq!(status["status"], "ready", "{status}");
    assert_eq!(
        status["source"]["degraded"],
        serde_json::Value::Null,
        "{status}"
    );
    let metrics = server.get("/metrics").await.text;
    assert_eq!(metric(&metrics, "roomcache_source_healthy "), 1.0);
}
