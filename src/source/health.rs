//! Whether source mode can read what it follows: each part (the events
//! stream, account data, the recalculation of queued rooms) reports its
//! steps; a part the source refuses (permission denied, a missing table)
//! is degraded at once, one failing for [`FAILURES_BEFORE_DEGRADED`] steps in
//! a row too, until its next successful step.
//!
//! While any part is degraded `/health` and `/v1/status` say so with the
//! reason, reads that would wait for a token answer at once (503
//! `ROOMCACHE_SOURCE_DEGRADED`), the gauge `roomcache_source_healthy` is 0;
//! `roomcache_source_errors_total{reason}` counts every failed step.
//!
//! Owns: [`SourceHealth`], the classification of failures and their log
//! lines (at most one a minute while degraded). May not touch: what the
//! parts do.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::error::SqlState;
use tracing::{error, info, warn};

use super::access::check_tables;
use super::SourceDatabase;
use crate::supervisor::recalc::UpstreamError;

/// Failed steps in a row after which a part whose failures may heal by
/// themselves (a connection lost, a query cancelled) counts as degraded.
pub(crate) const FAILURES_BEFORE_DEGRADED: u64 = 3;

/// How often a degraded part's failure is logged again.
const LOG_AGAIN_AFTER: Duration = Duration::from_secs(60);

/// The reasons `roomcache_source_errors_total` and the health name.
pub(crate) const REASONS: [&str; 5] = [
    "permission_denied",
    "missing_table",
    "schema_mismatch",
    "unreachable",
    "query_failed",
];

/// A part of source mode that reads Synapse's database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SourcePart {
    /// The events and caches streams (the follower's step).
    Events,
    /// Account data (`m.direct`, tags).
    AccountData,
    /// Recomputing the rooms queued at start-up.
    Recalculation,
}

/// Why a part is degraded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Degraded {
    pub(crate) part: SourcePart,
    /// One of [`REASONS`].
    pub(crate) reason: &'static str,
    /// What failed, naming the tables and the missing grant when known.
    pub(crate) error: String,
    /// Failed steps in a row.
    pub(crate) failures: u64,
}

impl Degraded {
    /// One line for answers and logs.
    pub(crate) fn describe(&self) -> String {
        format!(
            "roomcache cannot read Synapse's database ({}, {} failed steps in a row while following {}): {}",
            self.reason,
            self.failures,
            part_name(self.part),
            self.error
        )
    }
}

fn part_name(part: SourcePart) -> &'static str {
    match part {
        SourcePart::Events => "the events stream",
        SourcePart::AccountData => "account data",
        SourcePart::Recalculation => "the recalculation of queued rooms",
    }
}

#[derive(Debug, Default)]
struct PartState {
    failures: u64,
    degraded: Option<Degraded>,
    logged: Option<Instant>,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct SourceHealth {
    parts: Mutex<BTreeMap<SourcePart, PartState>>,
}

impl SourceHealth {
    /// A healthy source; sets the metrics (every reason's counter at 0).
    pub(crate) fn new() -> SourceHealth {
        for reason in REASONS {
            metrics::counter!("roomcache_source_errors_total", "reason" => reason).absolute(0);
        }
        metrics::gauge!("roomcache_source_healthy").set(1.0);
        SourceHealth::default()
    }

    fn parts(&self) -> std::sync::MutexGuard<'_, BTreeMap<SourcePart, PartState>> {
        self.parts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The first degraded part, if any.
    pub(crate) fn degraded(&self) -> Option<Degraded> {
        self.parts().values().find_map(|p| p.degraded.clone())
    }

    /// `part`'s step succeeded: it is healthy again.
    pub(crate) fn succeeded(&self, part: SourcePart) {
        let mut parts = self.parts();
        let Some(state) = parts.get_mut(&part) else {
            return;
        };
        if let Some(was) = state.degraded.take() {
            info!(part = ?part, reason = was.reason, "the source can be read again");
        }
        state.failures = 0;
        state.logged = None;
        Self::publish(&parts);
    }

    /// `part`'s step failed with `failure`. A refusal (permission denied, a
    /// missing table) is explained by asking Postgres which tables the role
    /// cannot read.
    pub(crate) async fn failed(
        &self,
        part: SourcePart,
        failure: &(dyn std::error::Error + 'static),
        source: &SourceDatabase,
    ) {
        let reason = classify(failure);
        metrics::counter!("roomcache_source_errors_total", "reason" => reason).increment(1);
        let text = crate::error_chain(failure);
        let refused = matches!(reason, "permission_denied" | "missing_table");
        let newly_refused = refused
            && self
                .parts()
                .get(&part)
                .is_none_or(|state| state.degraded.as_ref().is_none_or(|d| d.reason != reason));
        let explanation = if newly_refused {
            match check_tables(source).await {
                Ok(report) => report.explain(),
                Err(e) => Some(format!(
                    "{text} (and asking which tables are readable failed: {})",
                    crate::error_chain(&e)
                )),
            }
        } else {
            None
        };
        let mut parts = self.parts();
        let state = parts.entry(part).or_default();
        state.failures += 1;
        let degraded = refused || state.failures >= FAILURES_BEFORE_DEGRADED;
        if !degraded {
            warn!(part = ?part, reason, error = %text, "reading the source failed; retrying");
            return;
        }
        let error = match (explanation, &state.degraded) {
            (Some(explanation), _) => explanation,
            (None, Some(previous)) if previous.reason == reason => previous.error.clone(),
            (None, _) => text,
        };
        let now = Degraded {
            part,
            reason,
            error,
            failures: state.failures,
        };
        let log_now = state
            .logged
            .is_none_or(|at| at.elapsed() >= LOG_AGAIN_AFTER);
        if log_now {
            error!(part = ?part, reason, failures = state.failures, error = %now.error, "the source cannot be read: reads that would wait for a token are refused (503 ROOMCACHE_SOURCE_DEGRADED) until it can");
            state.logged = Some(Instant::now());
        }
        state.degraded = Some(now);
        Self::publish(&parts);
    }

    fn publish(parts: &BTreeMap<SourcePart, PartState>) {
        let healthy = parts.values().all(|p| p.degraded.is_none());
        metrics::gauge!("roomcache_source_healthy").set(if healthy { 1.0 } else { 0.0 });
    }
}

/// The reason of a failure: the SQLSTATE of the Postgres error in its
/// chain, if any.
fn classify(failure: &(dyn std::error::Error + 'static)) -> &'static str {
    let mut cause = Some(failure);
    while let Some(mut error) = cause {
        // Transparent: it reads as the source's error it holds.
        if let Some(upstream) = error.downcast_ref::<UpstreamError>() {
            error = upstream.cause();
        }
        match error.downcast_ref::<super::SourceError>() {
            Some(super::SourceError::Connect(_) | super::SourceError::BadUrl(_)) => {
                return "unreachable"
            }
            Some(super::SourceError::Column { .. }) => return "schema_mismatch",
            _ => {}
        }
        if let Some(postgres) = error.downcast_ref::<tokio_postgres::Error>() {
            return match postgres.code() {
                Some(code) if *code == SqlState::INSUFFICIENT_PRIVILEGE => "permission_denied",
                Some(code) if *code == SqlState::UNDEFINED_TABLE => "missing_table",
                Some(code)
                    if *code == SqlState::UNDEFINED_COLUMN
                        || *code == SqlState::UNDEFINED_FUNCTION =>
                {
                    "schema_mismatch"
                }
                Some(_) => "query_failed",
                None if postgres.is_closed() => "unreachable",
                None => "query_failed",
            };
        }
        cause = error.source();
    }
    "query_failed"
}

#[cfg(test)]
mod tests {
    use super::classify;
    use crate::source::SourceError;
    use crate::supervisor::recalc::{RecalculationError, UpstreamError};

    fn bad_url() -> SourceError {
        let cause = "postgres://host:notaport/db"
            .parse::<tokio_postgres::Config>()
            .unwrap_err();
        SourceError::BadUrl(cause)
    }

    #[test]
    fn a_failure_through_the_upstream_is_classified_by_the_source_error_it_holds() {
        assert_eq!(classify(&bad_url()), "unreachable");
        let recalculation = RecalculationError::Source(UpstreamError::new(bad_url()));
        assert_eq!(classify(&recalculation), "unreachable");
        assert_eq!(
            crate::error_chain(&recalculation),
            format!(
                "reading the source failed: {}",
                crate::error_chain(&bad_url())
            )
        );
    }
}
