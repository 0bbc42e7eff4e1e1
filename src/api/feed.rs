//! `POST /v1/feed`: a writer's batch, answered once it is durable.
//!
//! Owns: the feed endpoint's answer. May not touch: the batch's rows beyond
//! validating them (the supervisor applies them).

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use roomcache_core::{StreamToken, WriterName};
use serde::Serialize;

use super::{ApiError, ApiState};
use crate::feed::{FeedBatch, ValidBatch, WireBatch};
use crate::supervisor::{BatchError, SubmitValidBatch};

/// The answer to `POST /v1/feed`.
#[derive(Debug, Serialize)]
struct FeedAnswer {
    writer: WriterName,
    /// The writer's durable position after this batch.
    position: i64,
    /// Rows applied; rows at or below the durable position are skipped.
    applied_rows: usize,
    token: StreamToken,
}

#[tracing::instrument(name = "feed", skip_all, fields(writer = %batch.writer(), rows = batch.rows_len()))]
pub(super) async fn post_feed(
    state: web::Data<ApiState>,
    batch: web::Json<WireBatch>,
) -> Result<HttpResponse, ApiError> {
    if state.source.is_some() {
        // Source mode: the rows come from Synapse's database; a second
        // writer of the same streams would race the follower.
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "ROOMCACHE_SOURCE_MODE",
            "roomcache follows a Synapse database (source_database_url); the feed is closed",
        ));
    }
    let batch = ValidBatch::parse(FeedBatch::from_wire(batch.into_inner())?)?;
    let writer = batch.writer().clone();
    let rows = batch.rows().len();
    let ack = state
        .supervisor
        .send(SubmitValidBatch(batch))
        .await
        .map_err(BatchError::from)??;
    tracing::debug!(%writer, rows, position = ack.position, "feed batch committed");
    Ok(super::json_answer(
        StatusCode::OK,
        &FeedAnswer {
            writer,
            position: ack.position,
            applied_rows: ack.applied_rows,
            token: ack.token,
        },
    ))
}
