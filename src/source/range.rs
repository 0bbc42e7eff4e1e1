//! A range of the events stream between two vector tokens, as Synapse reads
//! rows between tokens: a row of writer `w` at position `p` is in the range
//! when `from.position(w) < p <= to.position(w)`; a writer absent from a
//! token's map is at the token's `stream`.
//!
//! Owns: [`StreamRange`] and the parameters its per-writer filter passes to
//! the queries of [`super::queries`] ([`WriterBounds`]). May not touch: SQL
//! text (the queries module's), running queries.

use roomcache_core::StreamToken;
use tokio_postgres::types::ToSql;

/// The rows after `from` and up to `to`, per writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamRange {
    pub(crate) from: StreamToken,
    pub(crate) to: StreamToken,
}

impl StreamRange {
    /// Every writer's rows in `(from, to]`.
    #[cfg(test)]
    pub(crate) fn linear(from: i64, to: i64) -> StreamRange {
        StreamRange {
            from: StreamToken::linear(from),
            to: StreamToken::linear(to),
        }
    }

    /// Every row up to `to`.
    pub(crate) fn up_to(to: &StreamToken) -> StreamRange {
        StreamRange {
            from: StreamToken::linear(0),
            to: to.clone(),
        }
    }

    /// The lowest position past which a row can be in the range.
    pub(crate) fn lowest(&self) -> i64 {
        self.from.stream
    }

    /// The highest position a row of the range can have.
    pub(crate) fn highest(&self) -> i64 {
        self.to.max_position()
    }

    /// True when no writer's range holds a position.
    pub(crate) fn is_empty(&self) -> bool {
        self.to.is_before_or_eq(&self.from)
    }

    /// The per-writer filter's parameters, or `None` when both tokens are
    /// linear (then `(lowest, highest]` alone is the range).
    pub(crate) fn writer_bounds(&self) -> Option<WriterBounds> {
        if self.from.instance_map.is_empty() && self.to.instance_map.is_empty() {
            return None;
        }
        let names = |token: &StreamToken| {
            token
                .instance_map
                .keys()
                .map(|w| w.as_str().to_owned())
                .collect()
        };
        let positions = |token: &StreamToken| token.instance_map.values().copied().collect();
        Some(WriterBounds {
            from_writers: names(&self.from),
            from_positions: positions(&self.from),
            from_stream: self.from.stream,
            to_writers: names(&self.to),
            to_positions: positions(&self.to),
            to_stream: self.to.stream,
        })
    }
}

/// The six parameters of the per-writer filter, in the order
/// `queries::writer_bounds_filter` numbers them.
#[derive(Debug)]
pub(crate) struct WriterBounds {
    from_writers: Vec<String>,
    from_positions: Vec<i64>,
    from_stream: i64,
    to_writers: Vec<String>,
    to_positions: Vec<i64>,
    to_stream: i64,
}

impl WriterBounds {
    /// How many parameters the filter takes.
    pub(crate) const COUNT: usize = 6;

    pub(crate) fn parameters(&self) -> [&(dyn ToSql + Sync); Self::COUNT] {
        [
            &self.from_writers,
            &self.from_positions,
            &self.from_stream,
            &self.to_writers,
            &self.to_positions,
            &self.to_stream,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(text: &str) -> StreamToken {
        text.parse().unwrap()
    }

    #[test]
    fn a_range_between_vector_tokens_spans_its_lowest_and_highest_positions() {
        let range = StreamRange {
            from: token("m5~p1.9"),
            to: token("m7~p1.12~p2.8"),
        };
        assert_eq!((range.lowest(), range.highest()), (5, 12));
        assert!(!range.is_empty());
        assert!(range.writer_bounds().is_some());
        let linear = StreamRange::linear(3, 3);
        assert!(linear.is_empty());
        assert!(linear.writer_bounds().is_none());
        assert!(StreamRange::up_to(&token("s4")).writer_bounds().is_none());
        // A writer ahead in `from` and not moved in `to` adds nothing.
        let behind = StreamRange {
            from: token("m5~p1.9"),
            to: token("m5~p1.9"),
        };
        assert!(behind.is_empty());
    }
}
