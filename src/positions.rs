//! Per-writer stream positions, the tokens built from them, and the waiters
//! for a token.
//!
//! Owns: each configured writer's *durable* position (every row of that
//! writer up to it is applied, committed and published), the linear token
//! (minimum over writers), the vector token, and the list of readers waiting
//! for a token. May not touch: actors, the database, the read index. It is
//! std-only and built on [`crate::sync`], so `loom_tests/` can model-check it.
//!
//! The supervisor is the only caller of [`PositionTracker::advance`], and it
//! calls it only after the rows up to that position are committed in
//! Postgres and published to the read index ("apply, then advance, then
//! wake").

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll, Waker};

use serde::{Deserialize, Serialize};

use crate::sync::{lock, Mutex};

/// A position in the events stream, as a vector token: `stream` is the
/// position every writer has reached; `instance_map` lists the writers that
/// are ahead of it, with their positions (always greater than `stream`).
///
/// Text form: `s<stream>` when no writer is ahead, otherwise
/// `m<stream>~<writer>.<position>~<writer>.<position>…` (writers sorted by
/// name; writer names are restricted to `[A-Za-z0-9_-]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamToken {
    pub stream: i64,
    pub instance_map: BTreeMap<String, i64>,
}

impl StreamToken {
    /// A token with no writer ahead of `stream`.
    pub fn linear(stream: i64) -> Self {
        Self {
            stream,
            instance_map: BTreeMap::new(),
        }
    }

    /// The position of `writer` in this token.
    pub fn position(&self, writer: &str) -> i64 {
        self.instance_map
            .get(writer)
            .copied()
            .unwrap_or(self.stream)
    }

    /// The largest position in the token.
    pub fn max_position(&self) -> i64 {
        self.instance_map
            .values()
            .copied()
            .max()
            .unwrap_or(self.stream)
            .max(self.stream)
    }

    /// True when every writer's position in `self` is at or below its
    /// position in `other` (a partial order).
    pub fn is_before_or_eq(&self, other: &StreamToken) -> bool {
        self.stream <= other.stream
            && self
                .instance_map
                .keys()
                .chain(other.instance_map.keys())
                .all(|w| self.position(w) <= other.position(w))
    }

    /// The least upper bound of two tokens in the per-writer order.
    pub fn copy_and_advance(&self, other: &StreamToken) -> StreamToken {
        let stream = self.stream.max(other.stream);
        let mut instance_map = BTreeMap::new();
        for writer in self.instance_map.keys().chain(other.instance_map.keys()) {
            let position = self.position(writer).max(other.position(writer));
            if position > stream {
                instance_map.insert(writer.clone(), position);
            }
        }
        StreamToken {
            stream,
            instance_map,
        }
    }

    /// Clamps every position of the token to at most `max`.
    pub fn bound(&self, max: i64) -> StreamToken {
        if self.max_position() <= max {
            return self.clone();
        }
        let stream = self.stream.min(max);
        let instance_map = self
            .instance_map
            .iter()
            .map(|(w, p)| (w.clone(), (*p).min(max)))
            .filter(|(_, p)| *p > stream)
            .collect();
        StreamToken {
            stream,
            instance_map,
        }
    }
}

impl fmt::Display for StreamToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.instance_map.is_empty() {
            return write!(f, "s{}", self.stream);
        }
        write!(f, "m{}", self.stream)?;
        for (writer, position) in &self.instance_map {
            write!(f, "~{writer}.{position}")?;
        }
        Ok(())
    }
}

/// Why a token's text form was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid stream token {0:?}: expected s<N> or m<N>~<writer>.<N>…")]
pub struct TokenParseError(pub String);

/// True for names allowed as writer names (and so in token text).
pub fn is_valid_writer_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl FromStr for StreamToken {
    type Err = TokenParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = || TokenParseError(text.to_owned());
        if let Some(rest) = text.strip_prefix('s') {
            let stream = rest.parse::<i64>().map_err(|_| fail())?;
            return Ok(StreamToken::linear(stream));
        }
        let rest = text.strip_prefix('m').ok_or_else(fail)?;
        let mut parts = rest.split('~');
        let stream = parts
            .next()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(fail)?;
        let mut instance_map = BTreeMap::new();
        for part in parts.filter(|p| !p.is_empty()) {
            let (writer, position) = part.rsplit_once('.').ok_or_else(fail)?;
            let position = position.parse::<i64>().map_err(|_| fail())?;
            if !is_valid_writer_name(writer) {
                return Err(fail());
            }
            if position > stream {
                instance_map.insert(writer.to_owned(), position);
            }
        }
        Ok(StreamToken {
            stream,
            instance_map,
        })
    }
}

impl Serialize for StreamToken {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StreamToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug)]
struct TrackerState {
    positions: BTreeMap<String, i64>,
    waiters: Vec<Waker>,
}

impl TrackerState {
    fn token(&self) -> StreamToken {
        let stream = self.positions.values().copied().min().unwrap_or(0);
        let instance_map = self
            .positions
            .iter()
            .filter(|(_, p)| **p > stream)
            .map(|(w, p)| (w.clone(), *p))
            .collect();
        StreamToken {
            stream,
            instance_map,
        }
    }
}

/// The durable position of every configured writer.
#[derive(Debug)]
pub struct PositionTracker {
    state: Mutex<TrackerState>,
}

impl PositionTracker {
    /// Starts from the positions loaded from `stream_positions`. A configured
    /// writer without a stored position starts at the minimum of the stored
    /// ones (0 when none is stored), so adding a writer never drags the token
    /// back; stored positions of writers no longer configured are ignored.
    pub fn new(writers: &[String], stored: &BTreeMap<String, i64>) -> Self {
        let floor = writers
            .iter()
            .filter_map(|w| stored.get(w))
            .copied()
            .min()
            .unwrap_or(0);
        let positions = writers
            .iter()
            .map(|w| (w.clone(), stored.get(w).copied().unwrap_or(floor)))
            .collect();
        Self {
            state: Mutex::new(TrackerState {
                positions,
                waiters: Vec::new(),
            }),
        }
    }

    pub fn is_configured(&self, writer: &str) -> bool {
        lock(&self.state).positions.contains_key(writer)
    }

    /// The durable position of `writer`, if it is configured.
    pub fn position(&self, writer: &str) -> Option<i64> {
        lock(&self.state).positions.get(writer).copied()
    }

    /// Every configured writer's durable position.
    pub fn positions(&self) -> BTreeMap<String, i64> {
        lock(&self.state).positions.clone()
    }

    /// The current vector token.
    pub fn token(&self) -> StreamToken {
        lock(&self.state).token()
    }

    /// Moves `writer` forward to `position` (never back) and wakes every
    /// waiter. Call only once every row of `writer` up to `position` is
    /// committed and published.
    pub fn advance(&self, writer: &str, position: i64) {
        let waiters = {
            let mut state = lock(&self.state);
            match state.positions.get_mut(writer) {
                Some(current) if *current < position => *current = position,
                _ => return,
            }
            std::mem::take(&mut state.waiters)
        };
        for waker in waiters {
            waker.wake();
        }
    }

    /// A future that completes once the tracker's token covers `target`.
    pub fn wait_for<'a>(&'a self, target: &'a StreamToken) -> WaitForToken<'a> {
        WaitForToken {
            tracker: self,
            target,
        }
    }
}

/// Completes when the tracker's token covers the target. The check and the
/// registration of the waker happen under the same lock as `advance`, so no
/// wake-up can be lost between them.
#[derive(Debug)]
pub struct WaitForToken<'a> {
    tracker: &'a PositionTracker,
    target: &'a StreamToken,
}

impl Future for WaitForToken<'_> {
    type Output = StreamToken;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<StreamToken> {
        let mut state = lock(&self.tracker.state);
        let token = state.token();
        if self.target.is_before_or_eq(&token) {
            return Poll::Ready(token);
        }
        if !state.waiters.iter().any(|w| w.will_wake(cx.waker())) {
            state.waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(writers: &[&str], stored: &[(&str, i64)]) -> PositionTracker {
        let writers: Vec<String> = writers.iter().map(|w| w.to_string()).collect();
        let stored = stored.iter().map(|(w, p)| (w.to_string(), *p)).collect();
        PositionTracker::new(&writers, &stored)
    }

    #[test]
    fn token_text_round_trips() {
        for text in ["s0", "s42", "m3~first.5~second.7"] {
            let token: StreamToken = text.parse().unwrap();
            assert_eq!(token.to_string(), text);
        }
        assert!("x1".parse::<StreamToken>().is_err());
        assert!("m1~a".parse::<StreamToken>().is_err());
        assert_eq!(
            "m5~".parse::<StreamToken>().unwrap(),
            StreamToken::linear(5)
        );
    }

    #[test]
    fn linear_token_is_the_minimum_and_the_map_holds_writers_ahead() {
        let t = tracker(&["a", "b"], &[("a", 3), ("b", 5)]);
        assert_eq!(t.token().to_string(), "m3~b.5");
        t.advance("a", 6);
        assert_eq!(t.token().to_string(), "m5~a.6");
        t.advance("a", 2);
        assert_eq!(t.position("a"), Some(6));
    }

    #[test]
    fn a_new_writer_starts_at_the_minimum_of_the_stored_positions() {
        let t = tracker(&["a", "b", "c"], &[("a", 3), ("b", 5), ("gone", 1)]);
        assert_eq!(t.position("c"), Some(3));
        assert!(!t.is_configured("gone"));
    }

    #[test]
    fn lub_and_bound() {
        let a: StreamToken = "m3~x.5".parse().unwrap();
        let b: StreamToken = "m4~y.6".parse().unwrap();
        let lub = a.copy_and_advance(&b);
        assert_eq!(lub.to_string(), "m4~x.5~y.6");
        assert!(a.is_before_or_eq(&lub) && b.is_before_or_eq(&lub));
        assert!(!a.is_before_or_eq(&b) && !b.is_before_or_eq(&a));
        assert_eq!(lub.bound(5).to_string(), "m4~x.5~y.5");
        assert_eq!(lub.bound(4).to_string(), "s4");
    }
}
