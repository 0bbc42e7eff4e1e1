//! Operations: health, status, Prometheus metrics, unknown endpoints.
//!
//! Owns: those endpoints' answers, and readiness: ready once start-up has
//! finished and, in source mode, while the source can be read (else
//! `degraded`, with the reason). May not touch: rows.

use std::sync::atomic::Ordering;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::{json_answer, ApiError, ApiState};
use crate::source::health::Degraded;
use crate::supervisor::LiveRoomActors;

pub(super) async fn unknown_endpoint(request: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "M_UNRECOGNIZED",
        format!("no endpoint {} {}", request.method(), request.path()),
    ))
}

/// Where start-up and the source stand: `starting`, `ready`, or
/// `degraded` (source mode cannot read what it follows) with why.
fn readiness(state: &ApiState) -> (&'static str, Option<Degraded>) {
    if !state.ready.load(Ordering::Acquire) {
        return ("starting", None);
    }
    match state.source_health.as_ref().and_then(|h| h.degraded()) {
        Some(degraded) => ("degraded", Some(degraded)),
        None => ("ready", None),
    }
}

pub(super) async fn get_status(state: web::Data<ApiState>) -> HttpResponse {
    let reads = &state.reads;
    let (positions, token) = reads.positions();
    let room_actors = state.supervisor.send(LiveRoomActors).await.ok();
    let (status, degraded) = readiness(&state);
    let (held_rooms, held_bytes) = reads.held_state_memory();
    let (timeline_rooms, timeline_bytes) = reads.latest_events_memory();
    json_answer(
        StatusCode::OK,
        &json!({
            "ready": status == "ready",
            "status": status,
            "joined_rooms": reads.joined_room_count(),
            "snapshots": reads.snapshot_count(),
            "room_data": {
                "rooms": held_rooms,
                "bytes": held_bytes,
                "latest_events": {"rooms": timeline_rooms, "bytes": timeline_bytes},
            },
            "room_actors": room_actors,
            "positions": positions,
            "token": token,
            "recalculation_queue": reads.recalculation_queue_length(),
            "source": state.source.as_ref().map(|source| json!({
                "position": source.source_position(),
                "invalidated_at_start": source.invalidated_at_start(),
                "healthy": degraded.is_none(),
                "degraded": degraded.as_ref().map(|d| json!({
                    "part": d.part,
                    "reason": d.reason,
                    "failures": d.failures,
                    "error": d.describe(),
                })),
            })),
        }),
    )
}

/// 200 `{"status":"ready"}` once start-up has finished and (source mode)
/// the source can be read; else 503 with why.
pub(super) async fn health(state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    match readiness(&state) {
        ("ready", _) => Ok(json_answer(StatusCode::OK, &json!({"status": "ready"}))),
        (_, Some(degraded)) => Err(ApiError::unavailable(
            "ROOMCACHE_SOURCE_DEGRADED",
            degraded.describe(),
        )),
        _ => Err(ApiError::unavailable(
            "ROOMCACHE_NOT_READY",
            "start-up has not finished",
        )),
    }
}

pub(super) async fn metrics_text(state: web::Data<ApiState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
