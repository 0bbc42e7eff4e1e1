//! The pipeline's transitions, without Postgres or actors: batches are
//! source mode's invalidations tagged by a caches-stream position, and a
//! prepared batch has no rooms and no claim.

use std::collections::BTreeMap;
use std::time::Duration;

use roomcache_core::StreamToken;

use super::{Action, CommitFailure, CommitOutcome, Pipeline, Prepared};
use crate::supervisor::queued::{Queued, Submission};
use crate::supervisor::room_actor::BatchSeq;
use crate::supervisor::{BatchError, InvalidationBatch};

const LINGER: Duration = Duration::from_millis(5);

/// A batch known by `tag`.
fn batch(tag: i64) -> Queued {
    let batch = InvalidationBatch {
        rows: Vec::new(),
        caches_positions: BTreeMap::from([("tag".to_owned(), tag)]),
    };
    Queued::invalidations(batch).0
}

fn tag(queued: &Queued) -> i64 {
    match &queued.submission {
        Submission::Invalidations(batch) => batch.caches_positions["tag"],
        Submission::Feed(_) | Submission::Backfill(_) => {
            unreachable!("the tests queue invalidations")
        }
    }
}

/// Every batch of a group prepared, at position `10 * tag`.
fn prepared(group: Vec<(BatchSeq, Queued)>) -> Vec<Prepared> {
    group
        .into_iter()
        .map(|(seq, queued)| Prepared {
            seq,
            claim: None,
            position: 10 * tag(&queued),
            caches_positions: BTreeMap::new(),
            backfill_positions: BTreeMap::new(),
            applied_rows: 1,
            rooms: Vec::new(),
            user_changes: Vec::new(),
            queued,
        })
        .collect()
}

fn tags(group: &[(BatchSeq, Queued)]) -> Vec<(BatchSeq, i64)> {
    group
        .iter()
        .map(|(seq, queued)| (*seq, tag(queued)))
        .collect()
}

fn queued_tags(pipeline: &Pipeline) -> Vec<i64> {
    pipeline.queue.iter().map(tag).collect()
}

/// The actions as text, and the group a `Commit` hands over.
fn describe(actions: Vec<Action>) -> (Vec<String>, Option<Vec<Prepared>>) {
    let mut committed = None;
    let text = actions
        .into_iter()
        .map(|action| match action {
            Action::PrepareNextGroup { after: None } => "prepare".to_owned(),
            Action::PrepareNextGroup { after: Some(after) } => {
                format!("prepare after {} ms", after.as_millis())
            }
            Action::Commit(group) => {
                let tags: Vec<i64> = group.iter().map(|b| tag(&b.queued)).collect();
                committed = Some(group);
                format!("commit {tags:?}")
            }
            Action::CommitRooms { last_seq, rooms } => {
                format!("commit {} rooms up to {last_seq}", rooms.len())
            }
            Action::Withdraw(withdrawal) => format!("withdraw from {}", withdrawal.first_seq),
            Action::Answer(answers) => {
                let answers: Vec<String> = answers
                    .iter()
                    .map(|(queued, answer)| match answer {
                        Ok(ack) => format!("{} at {} ({})", tag(queued), ack.position, ack.token),
                        Err(BatchError::Store(_)) => format!("{} unavailable", tag(queued)),
                        Err(error) => format!("{} {error}", tag(queued)),
                    })
                    .collect();
                format!("answer {}", answers.join(", "))
            }
            Action::ReapRowless => "reap rowless".to_owned(),
        })
        .collect();
    (text, committed)
}

fn unavailable() -> CommitOutcome {
    CommitOutcome::of(Err(crate::store::StoreError::Timeout { after_ms: 1 }), 1)
}

#[test]
fn a_group_lingers_for_more_batches_unless_it_is_full() {
    let mut pipeline = Pipeline::new(2, LINGER);
    assert!(pipeline.is_idle());
    assert_eq!(
        describe(pipeline.submit(batch(1))).0,
        ["prepare after 5 ms"]
    );
    assert!(!pipeline.is_idle(), "a lingering group counts as preparing");
    assert!(describe(pipeline.submit(batch(2))).0.is_empty());
    assert!(describe(pipeline.submit(batch(3))).0.is_empty());
    assert_eq!(tags(&pipeline.next_group()), [(1, 1), (2, 2)]);
    assert_eq!(queued_tags(&pipeline), [3]);

    let mut full = Pipeline::new(1, LINGER);
    assert_eq!(describe(full.submit(batch(1))).0, ["prepare"]);
    let mut eager = Pipeline::new(2, Duration::ZERO);
    assert_eq!(describe(eager.submit(batch(1))).0, ["prepare"]);
}

#[test]
fn one_group_commits_while_the_next_is_prepared_on_top_of_it() {
    let mut pipeline = Pipeline::new(2, Duration::ZERO);
    pipeline.submit(batch(1));
    let first = pipeline.next_group();
    let (actions, committing) = describe(pipeline.group_prepared(prepared(first)));
    assert_eq!(actions, ["commit [1]"]);
    assert_eq!(describe(pipeline.submit(batch(2))).0, ["prepare"]);
    let second = pipeline.next_group();
    assert!(describe(pipeline.submit(batch(3))).0.is_empty());
    assert!(describe(pipeline.group_prepared(prepared(second)))
        .0
        .is_empty());
    assert!(!pipeline.is_idle());

    let outcome = CommitOutcome::Committed {
        token: StreamToken::linear(7),
    };
    let (actions, committing) =
        describe(pipeline.commit_finished(committing.unwrap_or_default(), outcome));
    assert_eq!(
        actions,
        [
            "commit 0 rooms up to 1",
            "answer 1 at 10 (s7)",
            "commit [2]",
            "prepare",
        ]
    );
    assert_eq!(tags(&pipeline.next_group()), [(3, 3)]);
    let outcome = CommitOutcome::Committed {
        token: StreamToken::linear(8),
    };
    let (actions, _) = describe(pipeline.commit_finished(committing.unwrap_or_default(), outcome));
    assert_eq!(actions, ["commit 0 rooms up to 2", "answer 2 at 20 (s8)"]);
    assert!(
        !pipeline.is_idle(),
        "the third group is still being prepared"
    );
    let (actions, third) = describe(pipeline.group_prepared(Vec::new()));
    assert_eq!(actions, ["reap rowless"], "its only batch was refused");
    assert!(third.is_none());
    assert!(pipeline.is_idle());
}

#[test]
fn a_failed_commit_withdraws_the_group_ready_behind_it_and_requeues_it_in_order() {
    let mut pipeline = Pipeline::new(1, Duration::ZERO);
    pipeline.submit(batch(1));
    let first = pipeline.next_group();
    let (_, committing) = describe(pipeline.group_prepared(prepared(first)));
    pipeline.submit(batch(2));
    let second = pipeline.next_group();
    pipeline.group_prepared(prepared(second));
    pipeline.submit(batch(3));

    let (actions, _) =
        describe(pipeline.commit_finished(committing.unwrap_or_default(), unavailable()));
    assert_eq!(
        actions,
        [
            "withdraw from 1",
            "answer 1 unavailable",
            "withdraw from 2",
            "reap rowless",
            "prepare",
        ]
    );
    assert_eq!(queued_tags(&pipeline), [2, 3]);
    assert_eq!(tags(&pipeline.next_group()), [(3, 2)], "renumbered");
}

#[test]
fn a_group_failing_on_its_contents_is_retried_one_batch_per_group() {
    let mut pipeline = Pipeline::new(3, Duration::ZERO);
    for tag in 1..=3 {
        pipeline.submit(batch(tag));
    }
    let group = pipeline.next_group();
    assert_eq!(tags(&group), [(1, 1), (2, 2), (3, 3)]);
    let (_, committing) = describe(pipeline.group_prepared(prepared(group)));
    let (actions, _) = describe(
        pipeline.commit_finished(committing.unwrap_or_default(), CommitOutcome::RetryAlone),
    );
    assert_eq!(actions, ["withdraw from 1", "reap rowless", "prepare"]);
    pipeline.submit(batch(4));
    pipeline.submit(batch(5));
    assert_eq!(queued_tags(&pipeline), [1, 2, 3, 4, 5]);
    for (seq, tag) in [(4, 1), (5, 2), (6, 3)] {
        let group = pipeline.next_group();
        assert_eq!(tags(&group), [(seq, tag)], "alone");
        let (_, committing) = describe(pipeline.group_prepared(prepared(group)));
        let token = StreamToken::linear(tag);
        let outcome = CommitOutcome::Committed { token };
        pipeline.commit_finished(committing.unwrap_or_default(), outcome);
    }
    assert_eq!(
        tags(&pipeline.next_group()),
        [(7, 4), (8, 5)],
        "whole groups again"
    );
}

#[test]
fn a_group_prepared_on_top_of_a_failed_commit_is_withdrawn_once_ready() {
    let mut pipeline = Pipeline::new(2, Duration::ZERO);
    pipeline.submit(batch(1));
    pipeline.submit(batch(2));
    let first = pipeline.next_group();
    let (_, committing) = describe(pipeline.group_prepared(prepared(first)));
    pipeline.submit(batch(3));
    let preparing = pipeline.next_group();
    pipeline.submit(batch(4));

    let (actions, _) = describe(
        pipeline.commit_finished(committing.unwrap_or_default(), CommitOutcome::RetryAlone),
    );
    assert_eq!(
        actions,
        ["withdraw from 1"],
        "batch 3 is still being prepared"
    );
    assert_eq!(
        queued_tags(&pipeline),
        [4],
        "the retried batches are held back"
    );
    assert!(!pipeline.is_idle());

    let (actions, _) = describe(pipeline.group_prepared(prepared(preparing)));
    assert_eq!(actions, ["withdraw from 3", "reap rowless", "prepare"]);
    assert_eq!(queued_tags(&pipeline), [1, 2, 3, 4], "stream order");
    assert_eq!(tags(&pipeline.next_group()), [(4, 1)]);
}

#[test]
fn an_unavailable_database_is_never_retried_batch_by_batch() {
    let timeout = || crate::store::StoreError::Timeout { after_ms: 1 };
    assert!(matches!(
        CommitOutcome::of(Err(timeout()), 3),
        CommitOutcome::Failed {
            failure: CommitFailure::Unavailable,
            ..
        }
    ));
    assert!(matches!(
        CommitOutcome::of(Ok(StreamToken::linear(2)), 3),
        CommitOutcome::Committed { token } if token == StreamToken::linear(2)
    ));
}
