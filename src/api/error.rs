//! Every error the API answers: a status and a Matrix-style `errcode`.
//!
//! Owns: [`ApiError`], its JSON form, its log line, and the mapping of the
//! other modules' errors to a status and an errcode. May not touch:
//! anything but errors.

use actix_web::error::{JsonPayloadError, PayloadError};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;
use tracing::{info, warn};

use crate::error_chain;
use crate::feed::FeedError;
use crate::reads::ReadError;
use crate::room_list::RoomListError;
use crate::supervisor::BatchError;

/// An error answer: `{"errcode": "...", "error": "..."}` with a status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{errcode}: {message}")]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) errcode: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        errcode: &'static str,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            errcode,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(errcode: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, errcode, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "M_NOT_FOUND", message)
    }

    pub(crate) fn unavailable(errcode: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, errcode, message)
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
        super::json_answer(
            self.status,
            &json!({
                "errcode": self.errcode,
                "error": self.message,
            }),
        )
    }
}

impl From<FeedError> for ApiError {
    fn from(e: FeedError) -> Self {
        let errcode = match e {
            FeedError::OutOfOrder { .. } => "ROOMCACHE_OUT_OF_ORDER",
            FeedError::TooLarge { .. } => {
                return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE", e.to_string())
            }
            _ => "M_INVALID_PARAM",
        };
        ApiError::bad_request(errcode, e.to_string())
    }
}

impl From<BatchError> for ApiError {
    fn from(e: BatchError) -> Self {
        let message = error_chain(&e);
        match e {
            BatchError::Invalid(invalid) => ApiError::from(invalid),
            BatchError::UnknownWriter(_) => {
                ApiError::bad_request("ROOMCACHE_UNKNOWN_WRITER", message)
            }
            BatchError::Rule(rule) if rule.is_unknown_event() => {
                ApiError::bad_request("ROOMCACHE_UNKNOWN_EVENT", message)
            }
            BatchError::Rule(_) => ApiError::bad_request("M_BAD_JSON", message),
            BatchError::Conflict(_) => {
                ApiError::new(StatusCode::CONFLICT, "ROOMCACHE_CONFLICT", message)
            }
            BatchError::Content(_) => ApiError::bad_request("ROOMCACHE_REJECTED_CONTENT", message),
            BatchError::Store(_) | BatchError::Mailbox(_) | BatchError::ShuttingDown => {
                ApiError::unavailable("ROOMCACHE_UNAVAILABLE", message)
            }
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::TooManyRooms { .. } => {
                ApiError::bad_request("ROOMCACHE_TOO_MANY_ROOMS", e.to_string())
            }
            ReadError::PageLimit { .. } => ApiError::bad_request("M_INVALID_PARAM", e.to_string()),
            ReadError::FallbackUnavailable(_) => {
                ApiError::unavailable("ROOMCACHE_UNAVAILABLE", error_chain(&e))
            }
            ReadError::SourceDegraded(_) => {
                ApiError::unavailable("ROOMCACHE_SOURCE_DEGRADED", e.to_string())
            }
        }
    }
}

impl From<RoomListError> for ApiError {
    fn from(e: RoomListError) -> Self {
        ApiError::bad_request("M_INVALID_PARAM", e.to_string())
    }
}

/// Maps a JSON body error to `M_NOT_JSON` (not JSON at all) or `M_BAD_JSON`
/// (JSON of the wrong shape).
pub(crate) fn json_error(error: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match error.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::bad_request("M_NOT_JSON", format!("body is not valid JSON: {error}"))
        }
        Category::Data => ApiError::bad_request("M_BAD_JSON", format!("invalid request: {error}")),
    }
}

pub(crate) fn payload_error(error: &PayloadError) -> ApiError {
    match error {
        PayloadError::Overflow => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "M_TOO_LARGE",
            "request body is larger than request_body_limit",
        ),
        timeout if super::limits::is_body_timeout(timeout) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "ROOMCACHE_BODY_TIMEOUT",
            "the request body did not arrive within request_body_timeout_ms",
        ),
        other => ApiError::bad_request("M_BAD_JSON", format!("cannot read body: {other}")),
    }
}

/// The error of a JSON body that could not be taken.
pub(crate) fn json_payload_error(error: &JsonPayloadError) -> ApiError {
    match error {
        JsonPayloadError::Deserialize(inner) => json_error(inner),
        JsonPayloadError::Payload(inner) => payload_error(inner),
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            payload_error(&PayloadError::Overflow)
        }
        JsonPayloadError::ContentType => {
            ApiError::bad_request("M_NOT_JSON", "Content-Type must be application/json")
        }
        other => ApiError::bad_request("M_NOT_JSON", other.to_string()),
    }
}
