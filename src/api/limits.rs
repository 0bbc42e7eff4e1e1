//! Time limits on request bodies: a body that is not fully received within
//! `request_body_timeout_ms` ends the request with 408 (the HTTP layer's
//! own settings bound the request head, idle keep-alive connections and the
//! number of connections; see `server::serve`).
//!
//! Owns: the body deadline middleware and its payload stream. May not
//! touch: what handlers do with the body.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::HttpMessage;
use futures_util::Stream;
use tokio::time::Sleep;

/// The longest time a request's body may take to arrive.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyTimeout(pub(crate) Duration);

/// The error a payload read past its deadline ends with.
pub(super) fn is_body_timeout(error: &PayloadError) -> bool {
    matches!(error, PayloadError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut)
}

/// A request payload that fails once its deadline has passed.
struct DeadlinePayload {
    inner: Payload,
    deadline: Pin<Box<Sleep>>,
    expired: bool,
}

impl Stream for DeadlinePayload {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = Pin::new(&mut this.inner).poll_next(cx) {
            return Poll::Ready(item);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.expired = true;
            let error = std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the request body did not arrive within request_body_timeout_ms",
            );
            return Poll::Ready(Some(Err(PayloadError::Io(error))));
        }
        Poll::Pending
    }
}

use std::future::Future as _;

/// Puts a deadline on the body of every request that has one.
pub(crate) async fn limit_body_time(
    mut request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let has_body = request.headers().contains_key(header::CONTENT_LENGTH)
        || request.headers().contains_key(header::TRANSFER_ENCODING);
    let timeout = request.app_data::<BodyTimeout>().copied();
    if let (true, Some(BodyTimeout(timeout))) = (has_body, timeout) {
        let payload = DeadlinePayload {
            inner: request.take_payload(),
            deadline: Box::pin(tokio::time::sleep(timeout)),
            expired: false,
        };
        request.set_payload(Payload::Stream {
            payload: Box::pin(payload),
        });
    }
    next.call(request).await
}
