//! The HTTP/JSON API served on the Unix socket.
//!
//! Owns: routes, request parsing, the JSON of answers and the mapping of
//! every error to a status and a Matrix-style `errcode`. May not touch: the
//! rules, SQL, room actors. Reads come from the read index and the position
//! tracker only; feed batches go to the supervisor.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use actix_web::error::{JsonPayloadError, PayloadError};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::{info, warn};

use crate::feed::{FeedBatch, FeedError};
use crate::index::ReadIndex;
use crate::model::{RoomId, UserId};
use crate::positions::{PositionTracker, StreamToken};
use crate::room_list::{RoomListError, RoomListRequest};
use crate::supervisor::{BatchError, SubmitBatch, Supervisor};

/// Everything the handlers share.
pub struct ApiState {
    pub supervisor: Addr<Supervisor>,
    pub index: Arc<ReadIndex>,
    pub tracker: Arc<PositionTracker>,
    pub metrics: PrometheusHandle,
    /// Source mode's status (queue length, source position).
    pub source: Arc<crate::source::SourceStatus>,
    pub ready: AtomicBool,
    pub wait_timeout: Duration,
    pub max_wait_timeout: Duration,
}

/// An error answer: `{"errcode": "...", "error": "..."}` with a status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{errcode}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub errcode: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, errcode: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            errcode,
            message: message.into(),
        }
    }

    fn bad_request(errcode: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, errcode, message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "M_NOT_FOUND", message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        if self.status.is_server_error() {
            warn!(status = self.status.as_u16(), errcode = self.errcode, error = %self.message, "request failed");
        } else {
            info!(status = self.status.as_u16(), errcode = self.errcode, error = %self.message, "request refused");
        }
        metrics::counter!("roomcache_errors_total", "errcode" => self.errcode).increment(1);
        HttpResponse::build(self.status).json(json!({
            "errcode": self.errcode,
            "error": self.message,
        }))
    }
}

impl From<FeedError> for ApiError {
    fn from(e: FeedError) -> Self {
        let errcode = match e {
            FeedError::OutOfOrder { .. } => "ROOMCACHE_OUT_OF_ORDER",
            _ => "M_INVALID_PARAM",
        };
        ApiError::bad_request(errcode, e.to_string())
    }
}

impl From<BatchError> for ApiError {
    fn from(e: BatchError) -> Self {
        let message = e.to_string();
        match e {
            BatchError::UnknownWriter(_) => {
                ApiError::bad_request("ROOMCACHE_UNKNOWN_WRITER", message)
            }
            BatchError::Rule(crate::rules::RuleError::UnknownEvent { .. }) => {
                ApiError::bad_request("ROOMCACHE_UNKNOWN_EVENT", message)
            }
            BatchError::Rule(_) => ApiError::bad_request("M_BAD_JSON", message),
            BatchError::Conflict(_) => {
                ApiError::new(StatusCode::CONFLICT, "ROOMCACHE_CONFLICT", message)
            }
            BatchError::Store(_) | BatchError::Mailbox(_) | BatchError::ShuttingDown => {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ROOMCACHE_UNAVAILABLE",
                    message,
                )
            }
        }
    }
}

/// Maps a JSON body error to `M_NOT_JSON` (not JSON at all) or `M_BAD_JSON`
/// (JSON of the wrong shape).
pub fn json_error(error: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match error.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::bad_request("M_NOT_JSON", format!("body is not valid JSON: {error}"))
        }
        Category::Data => ApiError::bad_request("M_BAD_JSON", format!("invalid request: {error}")),
    }
}

fn payload_error(error: &PayloadError) -> ApiError {
    match error {
        PayloadError::Overflow => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "M_TOO_LARGE",
            "request body is larger than request_body_limit",
        ),
        other => ApiError::bad_request("M_BAD_JSON", format!("cannot read body: {other}")),
    }
}

/// Wraps every request in a `request` span (method, path) and logs its
/// status and duration at debug level.
pub async fn trace_request(
    request: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    use tracing::Instrument;
    let span = tracing::info_span!("request", method = %request.method(), path = %request.path());
    let started = std::time::Instant::now();
    let response = next.call(request).instrument(span.clone()).await?;
    span.in_scope(|| {
        tracing::debug!(
            status = response.status().as_u16(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "answered"
        )
    });
    Ok(response)
}

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig, body_limit: usize) {
    cfg.app_data(
        web::PathConfig::default()
            .error_handler(|e, _| ApiError::bad_request("M_INVALID_PARAM", e.to_string()).into()),
    )
    .app_data(
        web::QueryConfig::default()
            .error_handler(|e, _| ApiError::bad_request("M_INVALID_PARAM", e.to_string()).into()),
    )
    .app_data(
        web::JsonConfig::default()
            .limit(body_limit)
            .content_type_required(false)
            .error_handler(|e, _| {
                match &e {
                    JsonPayloadError::Deserialize(inner) => json_error(inner),
                    JsonPayloadError::Payload(inner) => payload_error(inner),
                    JsonPayloadError::Overflow { .. }
                    | JsonPayloadError::OverflowKnownLength { .. } => {
                        payload_error(&PayloadError::Overflow)
                    }
                    JsonPayloadError::ContentType => {
                        ApiError::bad_request("M_NOT_JSON", "Content-Type must be application/json")
                    }
                    other => ApiError::bad_request("M_NOT_JSON", other.to_string()),
                }
                .into()
            }),
    )
    .route("/v1/feed", web::post().to(post_feed))
    .route("/v1/positions", web::get().to(get_positions))
    .route("/v1/rooms/{room_id}", web::get().to(get_room))
    .route("/v1/users/{user_id}/rooms", web::get().to(get_user_rooms))
    .route(
        "/v1/users/{user_id}/rooms/{room_id}",
        web::get().to(get_user_room),
    )
    .route(
        "/v1/users/{user_id}/room_list",
        web::post().to(post_room_list),
    )
    .route("/v1/status", web::get().to(get_status))
    .route("/health", web::get().to(health))
    .route("/metrics", web::get().to(metrics_text))
    .default_service(web::to(unknown_endpoint));
}

async fn unknown_endpoint(request: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "M_UNRECOGNIZED",
        format!("no endpoint {} {}", request.method(), request.path()),
    ))
}

/// The answer to `POST /v1/feed`.
#[derive(Debug, Serialize, Deserialize)]
pub struct FeedAnswer {
    pub writer: String,
    /// The writer's durable position after this batch.
    pub position: i64,
    /// Rows applied; rows at or below the durable position are skipped.
    pub applied_rows: usize,
    pub token: StreamToken,
}

#[tracing::instrument(name = "feed", skip_all, fields(writer = %batch.writer, rows = batch.rows.len()))]
async fn post_feed(
    state: web::Data<ApiState>,
    batch: web::Json<FeedBatch>,
) -> Result<HttpResponse, ApiError> {
    if state.source.is_enabled() {
        // Source mode: the rows come from Synapse's database; a second
        // writer of the same streams would race the follower.
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "ROOMCACHE_SOURCE_MODE",
            "roomcache follows a Synapse database (source_database_url); the feed is closed",
        ));
    }
    let batch = batch.into_inner();
    batch.validate()?;
    let writer = batch.writer.clone();
    let rows = batch.rows.len();
    let ack = state
        .supervisor
        .send(SubmitBatch(batch))
        .await
        .map_err(BatchError::from)??;
    tracing::debug!(%writer, rows, position = ack.position, "feed batch committed");
    Ok(HttpResponse::Ok().json(FeedAnswer {
        writer,
        position: ack.position,
        applied_rows: ack.applied_rows,
        token: state.tracker.token(),
    }))
}

/// Query parameters every read accepts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadParams {
    /// Answer only once the cache's token covers this token (or at the timeout).
    pub wait_for: Option<StreamToken>,
    /// How long to wait for `wait_for`, in milliseconds.
    pub timeout_ms: Option<u64>,
}

/// Waits until the cache's token covers `wait_for`, or `timeout_ms`
/// (default `wait_timeout_ms`, at most `max_wait_timeout_ms`) passes.
/// Entries of writers that are not configured are clamped away first (the
/// cache could never reach them). Returns true when the wait timed out.
async fn wait(state: &ApiState, params: &ReadParams) -> bool {
    let Some(target) = &params.wait_for else {
        return false;
    };
    let (target, clamped) = state.tracker.clamp(target);
    if clamped {
        warn!(wait_for = %params.wait_for.as_ref().map(ToString::to_string).unwrap_or_default(),
              clamped = %target, "wait_for names writers that are not configured; ignoring them");
    }
    let timeout = params
        .timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(state.wait_timeout)
        .min(state.max_wait_timeout);
    let timed_out = tokio::time::timeout(timeout, state.tracker.wait_for(target))
        .await
        .is_err();
    if timed_out {
        metrics::counter!("roomcache_wait_timeouts_total").increment(1);
    }
    timed_out
}

/// Waits for `wait_for` (see [`wait`]), then reads the token and runs
/// `read` as one snapshot: the answer reflects exactly the rows at or below
/// the returned token, no more, no less (see `docs/positions.md`).
async fn read_at_token<R>(
    state: &ApiState,
    params: &ReadParams,
    mut read: impl FnMut(&ReadIndex) -> R,
) -> (StreamToken, bool, R) {
    let timed_out = wait(state, params).await;
    let (token, value) = state
        .tracker
        .gate()
        .read(|| (state.tracker.token(), read(&state.index)));
    (token, timed_out, value)
}

fn parse_room(raw: &str) -> Result<RoomId, ApiError> {
    RoomId::parse(raw).map_err(|e| ApiError::bad_request("M_INVALID_PARAM", e.to_string()))
}

fn parse_user(raw: &str) -> Result<UserId, ApiError> {
    UserId::parse(raw).map_err(|e| ApiError::bad_request("M_INVALID_PARAM", e.to_string()))
}

#[tracing::instrument(name = "get_room", skip_all, fields(room_id = %path.as_str()))]
async fn get_room(
    state: web::Data<ApiState>,
    path: web::Path<String>,
    params: web::Query<ReadParams>,
) -> Result<HttpResponse, ApiError> {
    let room_id = parse_room(&path)?;
    let (token, timed_out, room) =
        read_at_token(&state, &params, |index| index.joined_room(&room_id)).await;
    if let Some(room) = room {
        return Ok(
            HttpResponse::Ok().json(json!({"room": room, "token": token, "timed_out": timed_out}))
        );
    }
    // Source mode, §5: a room waiting for recalculation is computed on demand.
    let fallback = source_fallback(&state, &room_id, None).await?;
    let room = fallback
        .and_then(|rows| rows.joined_rooms.into_iter().next())
        .ok_or_else(|| ApiError::not_found(format!("no joined-room row for {room_id}")))?;
    Ok(HttpResponse::Ok()
        .json(json!({"room": room, "token": token, "timed_out": timed_out, "fallback": true})))
}

/// Source mode's §5 fallback for a queued room (`None`: not queued).
async fn source_fallback(
    state: &ApiState,
    room_id: &RoomId,
    user_id: Option<&UserId>,
) -> Result<Option<crate::source::FallbackRows>, ApiError> {
    if !state.source.is_queued(room_id) {
        return Ok(None);
    }
    let rows = state
        .source
        .fallback_rows(std::slice::from_ref(room_id), user_id)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ROOMCACHE_UNAVAILABLE",
                format!(
                    "{room_id} is being recomputed and the Synapse database cannot be read: {e}"
                ),
            )
        })?;
    Ok(Some(rows))
}

#[tracing::instrument(name = "get_user_room", skip_all, fields(path = ?path.as_ref()))]
async fn get_user_room(
    state: web::Data<ApiState>,
    path: web::Path<(String, String)>,
    params: web::Query<ReadParams>,
) -> Result<HttpResponse, ApiError> {
    let user_id = parse_user(&path.0)?;
    let room_id = parse_room(&path.1)?;
    let (token, timed_out, snapshot) =
        read_at_token(&state, &params, |index| index.snapshot(&user_id, &room_id)).await;
    if let Some(snapshot) = snapshot {
        return Ok(HttpResponse::Ok()
            .json(json!({"snapshot": snapshot, "token": token, "timed_out": timed_out})));
    }
    let fallback = source_fallback(&state, &room_id, Some(&user_id)).await?;
    let snapshot = fallback
        .and_then(|rows| rows.snapshots.into_iter().find(|s| s.user_id == user_id))
        .ok_or_else(|| ApiError::not_found(format!("no snapshot for {user_id} in {room_id}")))?;
    Ok(HttpResponse::Ok().json(
        json!({"snapshot": snapshot, "token": token, "timed_out": timed_out, "fallback": true}),
    ))
}

#[tracing::instrument(name = "get_user_rooms", skip_all, fields(user_id = %path.as_str()))]
async fn get_user_rooms(
    state: web::Data<ApiState>,
    path: web::Path<String>,
    params: web::Query<ReadParams>,
) -> Result<HttpResponse, ApiError> {
    let user_id = parse_user(&path)?;
    let (token, timed_out, mut snapshots) =
        read_at_token(&state, &params, |index| index.snapshots_of_user(&user_id)).await;
    if state.source.queue_length() > 0 {
        // Source mode, §5: the user's rooms waiting for recalculation.
        let fallback = state
            .source
            .fallback_rows(&[], Some(&user_id))
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ROOMCACHE_UNAVAILABLE",
                    format!(
                        "rooms are being recomputed and the Synapse database cannot be read: {e}"
                    ),
                )
            })?;
        for snapshot in fallback.snapshots {
            if !snapshots.iter().any(|s| s.room_id == snapshot.room_id) {
                snapshots.push(snapshot);
            }
        }
        snapshots.sort_by(|a, b| a.room_id.cmp(&b.room_id));
    }
    Ok(
        HttpResponse::Ok()
            .json(json!({"rooms": snapshots, "token": token, "timed_out": timed_out})),
    )
}

impl From<RoomListError> for ApiError {
    fn from(e: RoomListError) -> Self {
        ApiError::bad_request("M_INVALID_PARAM", e.to_string())
    }
}

/// `POST /v1/users/{user_id}/room_list`: the user's room lists (spec §6),
/// from the read index, consistent with the token in the answer.
#[tracing::instrument(name = "room_list", skip_all, fields(user_id = %path.as_str()))]
async fn post_room_list(
    state: web::Data<ApiState>,
    path: web::Path<String>,
    request: web::Json<RoomListRequest>,
) -> Result<HttpResponse, ApiError> {
    let user_id = parse_user(&path)?;
    let request = request.into_inner();
    request.validate()?;
    let params = ReadParams {
        wait_for: request.wait_for.clone(),
        timeout_ms: request.timeout_ms,
    };
    let (token, timed_out, lists) = read_at_token(&state, &params, |index| {
        index.room_lists(
            &user_id,
            request
                .lists
                .iter()
                .map(|(name, list)| (name.as_str(), list)),
            request.from_token.as_ref(),
        )
    })
    .await;
    Ok(HttpResponse::Ok().json(RoomListAnswer {
        lists: lists.into_iter().collect(),
        token,
        timed_out,
    }))
}

/// The answer to `POST /v1/users/{user_id}/room_list`, serialized directly.
#[derive(Debug, Serialize)]
struct RoomListAnswer<'a> {
    lists: std::collections::BTreeMap<&'a str, crate::room_list::ListAnswer>,
    token: StreamToken,
    timed_out: bool,
}

/// Each configured writer's durable position: every row of the writer at
/// or below it is applied and committed, and rows at or below it are
/// ignored when sent again. A writer resumes by replaying from there.
async fn get_positions(state: web::Data<ApiState>) -> HttpResponse {
    let (positions, token) = state
        .tracker
        .gate()
        .read(|| (state.tracker.positions(), state.tracker.token()));
    HttpResponse::Ok().json(json!({
        "positions": positions,
        "token": token,
    }))
}

async fn get_status(state: web::Data<ApiState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "ready": state.ready.load(Ordering::Acquire),
        "joined_rooms": state.index.joined_room_count(),
        "snapshots": state.index.snapshot_count(),
        "positions": state.tracker.positions(),
        "token": state.tracker.token(),
        "recalculation_queue": state.source.queue_length(),
        "source": state.source.is_enabled().then(|| json!({
            "position": state.source.source_position(),
            "invalidated_at_start": state.source.invalidated_at_start(),
        })),
    }))
}

async fn health(state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    if state.ready.load(Ordering::Acquire) {
        Ok(HttpResponse::Ok().json(json!({"status": "ready"})))
    } else {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ROOMCACHE_NOT_READY",
            "start-up has not finished",
        ))
    }
}

async fn metrics_text(state: web::Data<ApiState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
