//! Source mode's nudge: `POST /v1/source/wake` makes the follower read
//! Synapse's database now rather than at its next poll (the Synapse module
//! sends it from the process that has just persisted events).
//!
//! Owns: that endpoint. May not touch: rows, positions — a wake moves
//! nothing itself: the follower reads the positions Synapse has committed,
//! as it does on every poll, so a wake from anyone is harmless.

use actix_web::error::PayloadError;
use actix_web::{web, HttpResponse};
use serde_json::json;

use super::error::{payload_error, ApiError};
use super::ApiState;

/// The body means nothing, but it is read (up to `request_body_limit`): a
/// connection whose request body is left unread is closed after the answer
/// (`connection: close`), and the module wakes after every batch of events
/// it persists, on its pool of kept-alive connections.
#[tracing::instrument(name = "wake_source", skip_all)]
pub(super) async fn wake(
    state: web::Data<ApiState>,
    body: Result<web::Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    if let Err(error) = body {
        return Err(match error.as_error::<PayloadError>() {
            Some(payload) => payload_error(payload),
            None => ApiError::bad_request("M_BAD_JSON", format!("cannot read body: {error}")),
        });
    }
    metrics::counter!("roomcache_source_wakes_total").increment(1);
    Ok(if state.reads.wake_source() {
        HttpResponse::Accepted().json(json!({"woken": true}))
    } else {
        HttpResponse::Ok().json(json!({"woken": false}))
    })
}
