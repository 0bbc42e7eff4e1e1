//! Preparing a group: each batch claims its writer's range, and its rows
//! are applied in their rooms' actors on top of any pending state.
//!
//! Owns: the split of a batch's rows by room and the claim's lifetime while
//! it is prepared (abandoned on any failure). May not touch: SQL, the read
//! index, the rules' internals (the actors apply them).

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::Addr;
use futures_util::future::join_all;
use roomcache_core::{Claim, WriterName};
use tracing::warn;

use super::queued::{Queued, Submission};
use super::room_actor::{Abort, BatchSeq, Prepare, PreparedRoom, RoomActor};
use super::{BatchError, Shared};
use crate::feed::{FeedRow, ValidBatch};
use crate::model::{RoomId, RowChange};
use crate::rules::RulesContext;

/// One prepared batch waiting for the group's commit.
#[derive(Debug)]
pub(super) struct Prepared {
    pub(super) seq: BatchSeq,
    /// The writer's range this batch applies; finished after the group is
    /// committed and published, abandoned if the commit fails (`None` for
    /// the caches stream's invalidations, which claim no writer's range).
    pub(super) claim: Option<Claim>,
    pub(super) position: i64,
    /// The caches stream's positions written with the batch (source mode).
    pub(super) caches_positions: BTreeMap<String, i64>,
    /// The backfill stream's positions written with the batch (source mode).
    pub(super) backfill_positions: BTreeMap<String, i64>,
    pub(super) applied_rows: usize,
    /// Each room's actor and what it prepared.
    pub(super) rooms: Vec<(Addr<RoomActor>, PreparedRoom)>,
    /// Changes that belong to no room (account data), in stream order.
    pub(super) user_changes: Vec<RowChange>,
    pub(super) queued: Queued,
}

/// What a batch's rows become once applied in its rooms.
struct Applied {
    applied_rows: usize,
    rooms: Vec<(Addr<RoomActor>, PreparedRoom)>,
    user_changes: Vec<RowChange>,
}

/// Prepares one group: each batch in turn, each in its rooms' actors.
pub(super) struct GroupPreparer {
    shared: Shared,
}

impl GroupPreparer {
    pub(super) fn new(shared: &Shared) -> Self {
        GroupPreparer {
            shared: shared.clone(),
        }
    }

    /// Returns the prepared batches (refused batches are answered here).
    pub(super) async fn run(self, batches: Vec<(BatchSeq, Queued)>) -> Vec<Prepared> {
        let mut prepared: Vec<Prepared> = Vec::new();
        for (seq, queued) in batches {
            let outcome = match &queued.submission {
                Submission::Feed(batch) => self.prepare(seq, batch).await,
                Submission::Invalidations(batch) => self
                    .apply(seq, WriterName::master().as_str(), batch.rows.iter())
                    .await
                    .map(|applied| (None, applied)),
                Submission::Backfill(batch) => self
                    .apply(seq, &batch.writer, batch.rows.iter())
                    .await
                    .map(|applied| (None, applied)),
            };
            match outcome {
                Ok((claim, applied)) => prepared.push(Prepared {
                    seq,
                    position: claim.as_ref().map_or(0, |c| c.up_to.max(c.after)),
                    claim,
                    caches_positions: match &queued.submission {
                        Submission::Invalidations(batch) => batch.caches_positions.clone(),
                        Submission::Feed(_) | Submission::Backfill(_) => BTreeMap::new(),
                    },
                    backfill_positions: match &queued.submission {
                        Submission::Backfill(batch) => batch.positions.clone(),
                        Submission::Feed(_) | Submission::Invalidations(_) => BTreeMap::new(),
                    },
                    applied_rows: applied.applied_rows,
                    rooms: applied.rooms,
                    user_changes: applied.user_changes,
                    queued,
                }),
                Err(error) => {
                    warn!(writer = queued.writer(), error = %crate::error_chain(&error), "feed batch refused");
                    queued.answer(Err(error));
                }
            }
        }
        prepared
    }

    /// Claims the batch's range of its writer's stream and applies the new
    /// rows in their rooms' actors; on any failure the claim is abandoned
    /// and every room drops what it prepared for it.
    async fn prepare(
        &self,
        seq: BatchSeq,
        batch: &ValidBatch,
    ) -> Result<(Option<Claim>, Applied), BatchError> {
        // Rows at or below the end of the writer's last claim (durable, or
        // claimed by an earlier batch of this group) are skipped.
        let tracker = self.shared.write_path.tracker();
        let claim = tracker.claim(batch.writer(), batch.last_stream_id().unwrap_or(i64::MIN))?;
        let rows = batch.rows().iter().filter(|r| claim.covers(r.stream_id()));
        match self.apply(seq, batch.writer().as_str(), rows).await {
            Ok(applied) => Ok((Some(claim), applied)),
            Err(error) => {
                tracker.abandon(&claim);
                Err(error)
            }
        }
    }

    /// Applies `rows` (of `writer`) in their rooms' actors.
    async fn apply(
        &self,
        seq: BatchSeq,
        writer: &str,
        rows: impl Iterator<Item = &FeedRow>,
    ) -> Result<Applied, BatchError> {
        let mut by_room: BTreeMap<RoomId, Vec<FeedRow>> = BTreeMap::new();
        let mut applied_rows = 0;
        let mut user_changes = Vec::new();
        // The rooms get copies (cheap: event contents are shared); the batch
        // keeps its rows, to be prepared again if the group it joins is
        // withdrawn.
        for row in rows {
            applied_rows += 1;
            if let Some(room) = row.room_id() {
                by_room.entry(room.clone()).or_default().push(row.clone());
            } else if let FeedRow::AccountData(data) = &row {
                user_changes.extend(data.change().map(RowChange::AccountData));
            }
        }
        let addresses = self
            .shared
            .rooms
            .actors(self.shared.write_path.store(), by_room.keys())
            .await
            .map_err(BatchError::Store)?;
        let context = Arc::new(RulesContext {
            server_name: self.shared.settings.server_name.to_string(),
            writer: writer.to_owned(),
            held_state: self.shared.settings.held_state.clone(),
        });
        let sends = by_room
            .into_values()
            .zip(&addresses)
            .map(|(rows, address)| {
                address.send(Prepare {
                    seq,
                    context: context.clone(),
                    rows,
                })
            });
        let results = join_all(sends).await;
        let mut rooms = Vec::with_capacity(results.len());
        let mut failure = None;
        for (result, address) in results.into_iter().zip(&addresses) {
            match result {
                Ok(Ok(room)) => rooms.push((address.clone(), room)),
                Ok(Err(e)) => failure = failure.or(Some(BatchError::Rule(e))),
                Err(e) => failure = failure.or(Some(BatchError::Mailbox(e))),
            }
        }
        if let Some(error) = failure {
            for address in &addresses {
                address.do_send(Abort { seq });
            }
            return Err(error);
        }
        Ok(Applied {
            applied_rows,
            rooms,
            user_changes,
        })
    }
}
