//! Operations: health, status, Prometheus metrics, unknown endpoints.
//!
//! Owns: those endpoints' answers. May not touch: rows.

use std::sync::atomic::Ordering;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::{ApiError, ApiState};
use crate::supervisor::LiveRoomActors;

pub(super) async fn unknown_endpoint(request: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "M_UNRECOGNIZED",
        format!("no endpoint {} {}", request.method(), request.path()),
    ))
}

pub(super) async fn get_status(state: web::Data<ApiState>) -> HttpResponse {
    let reads = &state.reads;
    let (positions, token) = reads.positions();
    let room_actors = state.supervisor.send(LiveRoomActors).await.ok();
    HttpResponse::Ok().json(json!({
        "ready": state.ready.load(Ordering::Acquire),
        "joined_rooms": reads.joined_room_count(),
        "snapshots": reads.snapshot_count(),
        "room_actors": room_actors,
        "positions": positions,
        "token": token,
        "recalculation_queue": reads.recalculation_queue_length(),
        "source": state.source.as_ref().map(|source| json!({
            "position": source.source_position(),
            "invalidated_at_start": source.invalidated_at_start(),
        })),
    }))
}

pub(super) async fn health(state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    if state.ready.load(Ordering::Acquire) {
        Ok(HttpResponse::Ok().json(json!({"status": "ready"})))
    } else {
        Err(ApiError::unavailable(
            "ROOMCACHE_NOT_READY",
            "start-up has not finished",
        ))
    }
}

pub(super) async fn metrics_text(state: web::Data<ApiState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
