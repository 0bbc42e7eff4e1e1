//! Positions in the events stream as tokens, and their text form.
//!
//! Owns: [`StreamToken`], its partial order and its text form. May not
//! touch: the tracker's state (tokens are plain values).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::writer::WriterName;

/// A position in the events stream, as a vector token: `stream` is the
/// position every writer has reached; `instance_map` lists the writers that
/// are ahead of it, with their positions (always greater than `stream`).
///
/// Text form: `s<stream>` when no writer is ahead, otherwise
/// `m<stream>~<writer>.<position>~<writer>.<position>…` (writers sorted by
/// name; see [`WriterName`] for the names allowed).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamToken {
    pub stream: i64,
    pub instance_map: BTreeMap<WriterName, i64>,
}

impl StreamToken {
    /// A token with no writer ahead of `stream`.
    pub fn linear(stream: i64) -> Self {
        Self {
            stream,
            instance_map: BTreeMap::new(),
        }
    }

    /// The token of writers at `positions`: `stream` is their minimum
    /// (0 without writers), the map holds the writers above it.
    pub fn of_writers(positions: &BTreeMap<WriterName, i64>) -> Self {
        let stream = positions.values().copied().min().unwrap_or(0);
        Self {
            stream,
            instance_map: positions
                .iter()
                .filter(|(_, position)| **position > stream)
                .map(|(writer, position)| (writer.clone(), *position))
                .collect(),
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
                .all(|w| self.position(w.as_str()) <= other.position(w.as_str()))
    }

    /// The least upper bound of two tokens in the per-writer order.
    pub fn copy_and_advance(&self, other: &StreamToken) -> StreamToken {
        let stream = self.stream.max(other.stream);
        let mut instance_map = BTreeMap::new();
        for writer in self.instance_map.keys().chain(other.instance_map.keys()) {
            let position = self
                .position(writer.as_str())
                .max(other.position(writer.as_str()));
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
            let writer = WriterName::parse(writer).map_err(|_| fail())?;
            if position > stream {
                instance_map.insert(writer, position);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_text_round_trips() {
        for text in ["s0", "s42", "m3~first.5~second.7", "m3~worker.1.9"] {
            let token: StreamToken = text.parse().unwrap();
            assert_eq!(token.to_string(), text);
        }
        assert_eq!(
            "m3~worker.1.9"
                .parse::<StreamToken>()
                .unwrap()
                .position("worker.1"),
            9
        );
        for bad in ["x1", "m1~a", "m1~a b.4", "s", "m~a.3"] {
            assert_eq!(bad.parse::<StreamToken>(), Err(TokenParseError(bad.into())));
        }
        assert_eq!(
            "m5~".parse::<StreamToken>().unwrap(),
            StreamToken::linear(5)
        );
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
