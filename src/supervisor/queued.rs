//! A batch waiting in the feed pipeline's queue, and where its answer goes.
//!
//! Owns: [`Queued`] (a writer's batch or source mode's invalidations, when
//! it arrived, the sender of its answer) and the metrics of answers. May
//! not touch: anything the batch's rows change (the pipeline prepares and
//! commits them).

use std::time::Instant;

use tokio::sync::oneshot;

use super::{BackfillBatch, BatchAck, BatchError, InvalidationBatch};
use crate::feed::ValidBatch;

/// What waits in the queue: a writer's batch, or (source mode) forgets and
/// purges of the caches stream, or backfilled events.
#[derive(Debug)]
pub(super) enum Submission {
    Feed(ValidBatch),
    Invalidations(InvalidationBatch),
    Backfill(BackfillBatch),
}

/// A batch waiting for its commit, and where to send its answer.
#[derive(Debug)]
pub(super) struct Queued {
    pub(super) submission: Submission,
    reply: oneshot::Sender<Result<BatchAck, BatchError>>,
    received: Instant,
}

/// Where a queued batch's answer arrives.
type Answer = oneshot::Receiver<Result<BatchAck, BatchError>>;

impl Queued {
    /// A batch to queue, and the receiver of its answer.
    pub(super) fn new(batch: ValidBatch) -> (Queued, Answer) {
        Self::queue(Submission::Feed(batch))
    }

    /// Forgets and purges to queue, and the receiver of their answer.
    pub(super) fn invalidations(batch: InvalidationBatch) -> (Queued, Answer) {
        Self::queue(Submission::Invalidations(batch))
    }

    /// Backfilled events to queue, and the receiver of their answer.
    pub(super) fn backfill(batch: BackfillBatch) -> (Queued, Answer) {
        Self::queue(Submission::Backfill(batch))
    }

    fn queue(submission: Submission) -> (Queued, Answer) {
        let (reply, answer) = oneshot::channel();
        let queued = Queued {
            submission,
            reply,
            received: Instant::now(),
        };
        (queued, answer)
    }

    /// The writer whose batch this is (for logs).
    pub(super) fn writer(&self) -> &str {
        match &self.submission {
            Submission::Feed(batch) => batch.writer().as_str(),
            Submission::Invalidations(_) => "(caches stream)",
            Submission::Backfill(_) => "(backfill stream)",
        }
    }

    /// Answers the batch (the writer may have gone: nothing to do then).
    pub(super) fn answer(self, outcome: Result<BatchAck, BatchError>) {
        let label = match &outcome {
            Ok(ack) => {
                metrics::counter!("roomcache_feed_rows_total").increment(ack.applied_rows as u64);
                metrics::histogram!("roomcache_batch_seconds")
                    .record(self.received.elapsed().as_secs_f64());
                "committed"
            }
            Err(BatchError::Conflict(_) | BatchError::Content(_) | BatchError::Store(_)) => {
                "failed"
            }
            Err(_) => "refused",
        };
        metrics::counter!("roomcache_feed_batches_total", "outcome" => label).increment(1);
        let _ = self.reply.send(outcome);
    }
}
