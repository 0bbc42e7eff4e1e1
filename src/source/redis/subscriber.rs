//! The subscription to Synapse's replication channel, kept up for as long
//! as roomcache runs.
//!
//! Each session: connect, `SUBSCRIBE` to the channel, then `PUBLISH
//! REPLICATE` on a second connection (only once subscribed, so no answer is
//! missed), then read lines until the connection ends. A failed or ended
//! session is logged (a warning once per outage: the follower keeps
//! following by polling), counted, and retried with a growing pause (up to
//! [`MAX_RETRY_PAUSE`]). Each line is checked before anything is kept of
//! it: its size, its command, its writer, its row. Owns: the connections to
//! Redis. May not touch: any database, the follower's state beyond
//! [`Replication`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tracing::{debug, info, info_span, warn, Instrument};

use super::wire::{self, Command, RowToken};
use super::{refused, rows, Outcome, Replication};
use crate::source::rejected::{self, Reason};

/// First pause before reconnecting; it doubles up to [`MAX_RETRY_PAUSE`].
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(100);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);
/// A session ends to free the buffers oversized lines grew at most this
/// often (a new session calls for a full check of forgets and purges); one
/// owed meanwhile comes when the interval is over.
const SIZE_RESTART_EVERY: Duration = Duration::from_secs(10);
/// Freed memory is handed back after this many lines (a flood's queue).
const RELEASE_EVERY_LINES: u64 = 10_000;
/// Longest wait for Redis to accept a connection or answer a command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a session with Redis ended (each is retried).
#[derive(Debug, thiserror::Error)]
pub(crate) enum SubscriberError {
    #[error("the Redis URL (source_redis_url) is invalid")]
    BadUrl(#[source] redis::RedisError),
    #[error("connecting to Redis failed")]
    Connect(#[source] redis::RedisError),
    #[error("subscribing to the replication channel failed")]
    Subscribe(#[source] redis::RedisError),
    #[error("publishing REPLICATE failed")]
    Replicate(#[source] redis::RedisError),
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the connection to Redis closed")]
    Closed,
    /// Ended on purpose: an oversized line grew the connection's buffers.
    #[error("a line over source_redis_max_line_bytes was read")]
    OversizedLine,
}

/// Subscribes to `channel` on the Redis at `url` and tells `replication`.
pub(crate) struct Subscriber {
    client: redis::Client,
    channel: String,
    replication: Arc<Replication>,
    /// Longer lines are dropped once read (`source_redis_max_line_bytes`).
    max_line_bytes: usize,
}

/// Runs `future` with [`COMMAND_TIMEOUT`].
async fn in_time<T>(
    future: impl std::future::Future<Output = Result<T, SubscriberError>>,
) -> Result<T, SubscriberError> {
    tokio::time::timeout(COMMAND_TIMEOUT, future)
        .await
        .map_err(|_| SubscriberError::Timeout(COMMAND_TIMEOUT))?
}

impl Subscriber {
    /// A subscriber of `channel` (Synapse's server name) on `url`
    /// (`redis://[:password@]host:port/`); nothing connects
    /// yet.
    pub(crate) fn new(
        url: &str,
        channel: &str,
        replication: Arc<Replication>,
        max_line_bytes: usize,
    ) -> Result<Subscriber, SubscriberError> {
        Ok(Subscriber {
            client: redis::Client::open(url).map_err(SubscriberError::BadUrl)?,
            channel: channel.to_owned(),
            replication,
            max_line_bytes,
        })
    }

    /// Keeps a subscription up until the process stops.
    pub(crate) async fn run(self) {
        let mut pause = FIRST_RETRY_PAUSE;
        let mut in_outage = false;
        let mut last_size_restart = None;
        loop {
            let span = info_span!("redis_session", channel = %self.channel);
            let outcome = self
                .session(&mut in_outage, &mut last_size_restart)
                .instrument(span)
                .await;
            self.replication.set_connected(false);
            let error = match outcome {
                Ok(never) => match never {},
                Err(error) => error,
            };
            metrics::counter!("roomcache_source_redis_disconnects_total").increment(1);
            if let SubscriberError::OversizedLine = error {
                // The connection and its buffers are dropped by now.
                info!("subscribing again, so the buffer an oversized line of the replication channel took is freed");
                crate::memory::ask_for_release();
                continue;
            }
            if !in_outage {
                warn!(error = %crate::error_chain(&error),
                    "Synapse's replication stream over Redis is unavailable; following by polling until it is back");
                in_outage = true;
                pause = FIRST_RETRY_PAUSE;
            } else {
                debug!(error = %crate::error_chain(&error), "Redis still unavailable");
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_RETRY_PAUSE);
        }
    }

    /// One session: subscribe, announce, read until the connection ends
    /// (or until a line over the size limit has grown the connection's
    /// buffers, at most once per [`SIZE_RESTART_EVERY`]: then a new session
    /// starts with buffers of normal size).
    async fn session(
        &self,
        in_outage: &mut bool,
        last_size_restart: &mut Option<Instant>,
    ) -> Result<std::convert::Infallible, SubscriberError> {
        let mut pubsub = in_time(async {
            self.client
                .get_async_pubsub()
                .await
                .map_err(SubscriberError::Connect)
        })
        .await?;
        in_time(async {
            pubsub
                .subscribe(&self.channel)
                .await
                .map_err(SubscriberError::Subscribe)
        })
        .await?;
        in_time(self.publish_replicate()).await?;
        self.replication.set_connected(true);
        if std::mem::take(in_outage) {
            info!("Synapse's replication stream over Redis is back; following it again");
        } else {
            info!("following Synapse's replication stream over Redis");
        }
        let mut messages = pubsub.into_on_message();
        let mut lines: u64 = 0;
        // An oversized line read since the last restart, owed one.
        let mut restart_owed = false;
        loop {
            let next_restart = last_size_restart.map_or_else(tokio::time::Instant::now, |t| {
                (t + SIZE_RESTART_EVERY).into()
            });
            let message = tokio::select! {
                message = messages.next() => message,
                () = tokio::time::sleep_until(next_restart), if restart_owed => None,
            };
            let Some(message) = message else {
                if restart_owed {
                    *last_size_restart = Some(Instant::now());
                    return Err(SubscriberError::OversizedLine);
                }
                break;
            };
            restart_owed |= self.handle(message.get_payload_bytes());
            if restart_owed && last_size_restart.is_none_or(|t| t.elapsed() >= SIZE_RESTART_EVERY) {
                *last_size_restart = Some(Instant::now());
                return Err(SubscriberError::OversizedLine);
            }
            lines += 1;
            if lines.is_multiple_of(RELEASE_EVERY_LINES) {
                // A flood's messages, queued and freed by now: hand them back.
                crate::memory::ask_for_release();
            }
        }
        Err(SubscriberError::Closed)
    }

    /// `PUBLISH <channel> REPLICATE`: every Synapse process answers with
    /// its positions.
    async fn publish_replicate(&self) -> Result<(), SubscriberError> {
        let mut connection = self
            .client
            .get_multiplexed_async_connection()
            .await
            .map_err(SubscriberError::Connect)?;
        redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg("REPLICATE")
            .query_async::<i64>(&mut connection)
            .await
            .map_err(SubscriberError::Replicate)?;
        Ok(())
    }

    /// One line of the channel: positions of followed writers are
    /// remembered (waking the follower); other commands are ignored; a line
    /// roomcache cannot read, or one over the size limit, is counted and
    /// logged (at most every few seconds), never fatal. True when the line
    /// was over the size limit.
    fn handle(&self, line: &[u8]) -> bool {
        let oversized = line.len() > self.max_line_bytes;
        let kind = if oversized {
            if let Some(left_out) = rejected::may_log(("redis", "oversized")) {
                warn!(
                    bytes = line.len(),
                    limit = self.max_line_bytes,
                    left_out,
                    "dropping a line of the replication channel over source_redis_max_line_bytes"
                );
            }
            // Its buffer is freed by now: hand it back soon.
            crate::memory::ask_for_release();
            "oversized"
        } else {
            match wire::parse(line) {
                Ok(Command::Rdata {
                    stream,
                    instance,
                    token,
                    row,
                }) => {
                    if let RowToken::Position(position) = token {
                        self.announce(stream, instance, position, Some(row));
                    }
                    "rdata"
                }
                Ok(Command::Position {
                    stream,
                    instance,
                    new,
                    ..
                }) => {
                    self.announce(stream, instance, new, None);
                    "position"
                }
                Ok(Command::Other(_)) => "other",
                Err(error) => {
                    if let Some(left_out) = rejected::may_log(("redis", "unreadable")) {
                        let shown = String::from_utf8_lossy(&line[..line.len().min(200)]);
                        warn!(%error, line = %shown, left_out, "ignoring a line of the replication channel");
                    }
                    match error {
                        wire::WireError::UnknownCommand(_) => "unknown",
                        _ => "malformed",
                    }
                }
            }
        };
        metrics::counter!("roomcache_source_redis_lines_total", "kind" => kind).increment(1);
        oversized
    }

    /// A position announced on a numbered `RDATA` (with its `row`) or a
    /// `POSITION` line: the writer is checked first (an unknown one costs
    /// nothing more), then the row, then it is kept if higher.
    fn announce(&self, stream: &str, instance: &str, position: i64, row: Option<&str>) {
        match self.replication.admits(stream, instance) {
            Ok(false) => return,
            Ok(true) => {}
            Err(reason) => return refused(stream, reason, instance, position),
        }
        if let Some(Err(error)) = row.map(|row| rows::check(stream, row)) {
            debug!(%error, stream, "an RDATA row Synapse would not parse");
            return refused(stream, Reason::BadRow, instance, position);
        }
        if let Outcome::Refused(reason) = self.replication.announce(stream, instance, position) {
            refused(stream, reason, instance, position);
        }
    }
}
