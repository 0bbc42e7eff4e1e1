//! The HTTP/JSON API served on the Unix socket.
//!
//! Owns: routes, request parsing, the JSON of answers and the mapping of
//! every error to a status and a Matrix-style `errcode` ([`error`]). Feed
//! batches go to the supervisor ([`feed`]); reads go through the one read
//! path, [`Reads`] ([`reads`]); operations (health, status, metrics) are in
//! [`ops`]; source mode's wake-up is [`source`]. May not touch: the rules, SQL, room actors, the read index or
//! the tracker directly — it imports only the reads service, the
//! supervisor's messages and the model.

mod error;
mod feed;
mod limits;
mod ops;
mod reads;
mod room_data;
mod source;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use actix::Addr;
use actix_web::http::header::ContentType;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;

pub(crate) use error::ApiError;
pub(crate) use limits::{limit_body_time, BodyTimeout};

use crate::reads::Reads;
use crate::source::health::SourceHealth;
use crate::source::SourceProgress;
use crate::supervisor::Supervisor;

/// Everything the handlers share.
pub(crate) struct ApiState {
    pub(crate) supervisor: Addr<Supervisor>,
    pub(crate) reads: Reads,
    pub(crate) metrics: PrometheusHandle,
    /// Source mode's progress (`None` when roomcache is fed over the socket).
    pub(crate) source: Option<Arc<SourceProgress>>,
    /// Source mode: whether the source can be read.
    pub(crate) source_health: Option<Arc<SourceHealth>>,
    /// Start-up has finished.
    pub(crate) ready: AtomicBool,
}

/// An answer's JSON body, ending with a newline (so that answers read
/// well on a terminal and split into lines).
pub(crate) fn json_answer<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> HttpResponse {
    match serde_json::to_vec(value) {
        Ok(mut body) => {
            body.push(b'\n');
            HttpResponse::build(status)
                .content_type(ContentType::json())
                .body(body)
        }
        Err(error) => {
            tracing::error!(%error, "an answer could not be encoded as JSON");
            HttpResponse::InternalServerError()
                .content_type(ContentType::json())
                .body("{\"errcode\":\"M_UNKNOWN\",\"error\":\"the answer could not be encoded\"}\n")
        }
    }
}

/// Registers the routes of the metrics listener (`metrics_address`):
/// `GET /metrics` and `GET /health` only.
pub(crate) fn configure_metrics(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(ops::metrics_text))
        .route("/health", web::get().to(ops::health))
        .default_service(web::to(ops::unknown_endpoint));
}

/// Wraps every request in a `request` span (method, path) and logs its
/// status and duration at debug level.
pub(crate) async fn trace_request(
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
pub(crate) fn configure(cfg: &mut web::ServiceConfig, body_limit: usize) {
    cfg.app_data(
        web::PathConfig::default()
            .error_handler(|e, _| ApiError::bad_request("M_INVALID_PARAM", e.to_string()).into()),
    )
    .app_data(
        web::QueryConfig::default()
            .error_handler(|e, _| ApiError::bad_request("M_INVALID_PARAM", e.to_string()).into()),
    )
    .app_data(web::PayloadConfig::new(body_limit))
    .app_data(
        web::JsonConfig::default()
            .limit(body_limit)
            .content_type_required(false)
            .error_handler(|e, _| error::json_payload_error(&e).into()),
    )
    // Routes with parameters are matched by a regular expression each, in
    // this order: the hottest read comes first (a room list paid for three
    // failed matches before, ~12 % of its CPU in the server).
    .route(
        "/v1/users/{user_id}/room_list",
        web::post().to(reads::post_room_list),
    )
    .route("/v1/feed", web::post().to(feed::post_feed))
    .route("/v1/source/wake", web::post().to(source::wake))
    .route("/v1/positions", web::get().to(reads::get_positions))
    .route("/v1/rooms/data", web::post().to(room_data::post_room_data))
    .route("/v1/rooms/{room_id}", web::get().to(reads::get_room))
    .route(
        "/v1/users/{user_id}/rooms",
        web::get().to(reads::get_user_rooms),
    )
    .route(
        "/v1/users/{user_id}/rooms/{room_id}",
        web::get().to(reads::get_user_room),
    )
    .route("/v1/status", web::get().to(ops::get_status))
    .route("/health", web::get().to(ops::health))
    .route("/metrics", web::get().to(ops::metrics_text))
    .default_service(web::to(ops::unknown_endpoint));
}
