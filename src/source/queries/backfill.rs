//! The queries of Synapse's backfill stream: its writers' positions, the
//! events each writer backfilled (or de-outliered while backfilling)
//! after a position, and every backfilled event of some rooms. Part of [`super`]: every SQL string against
//! Synapse's schema.
//!
//! Synapse allocates backfilled events' stream orderings from a sequence
//! of its own, negated (-1, -2, ...), one stream per event writer; each
//! writer's `stream_positions` row (stream `backfill`) holds the lowest
//! ordering below which everything it persisted is committed, as a
//! negative number. Here positions are positive, as Synapse's replication
//! gives them: stream ordering `-n` is position `n`.

use super::{Query, RoomsQuery, EVENT_COLUMN_COUNT, EVENT_COLUMN_NAMES};

/// Reads each writer's position on the backfill stream (positive), from
/// its `stream_positions` row (written by each writer after its own
/// commits).
pub(crate) const BACKFILL_WRITER_POSITIONS: Query = Query {
    name: "the backfill stream's writer positions",
    sql: "SELECT instance_name, -stream_id FROM stream_positions WHERE stream_name = 'backfill'",
    columns: &[
        "stream_positions.instance_name",
        "stream_positions.stream_id",
    ],
};

/// Reads the events each writer of `$1` (`text[]`) persisted on the
/// backfill stream after its position in `$2` and up to its position in
/// `$3` (`bigint[]`, positive), as `event_columns!`, in stream order.
pub(crate) const BACKFILLED_EVENTS: Query = Query {
    name: "backfilled events",
    sql: concat!(
        "SELECT ",
        event_columns!(),
        " FROM UNNEST($1::text[], $2::bigint[], $3::bigint[]) AS b(writer, after, up_to)
          JOIN events e ON e.stream_ordering < -b.after AND e.stream_ordering >= -b.up_to
                       AND COALESCE(e.instance_name, 'master') = b.writer
          ORDER BY e.stream_ordering DESC"
    ),
    columns: &EVENT_COLUMN_NAMES,
};

/// Reads the events each writer of `$1` de-outliered on the backfill
/// stream after its position in `$2` and up to its position in `$3`: the
/// de-outliering's position (positive) and writer (`ex_outlier_stream`),
/// then `event_columns!`, in stream order.
pub(crate) const BACKFILL_EX_OUTLIERS: Query = Query {
    name: "events de-outliered on the backfill stream",
    sql: concat!(
        "SELECT -x.event_stream_ordering, COALESCE(x.instance_name, 'master'), ",
        event_columns!(),
        " FROM UNNEST($1::text[], $2::bigint[], $3::bigint[]) AS b(writer, after, up_to)
          JOIN ex_outlier_stream x
            ON x.event_stream_ordering < -b.after AND x.event_stream_ordering >= -b.up_to
           AND COALESCE(x.instance_name, 'master') = b.writer
          JOIN events e ON e.event_id = x.event_id
          ORDER BY x.event_stream_ordering DESC"
    ),
    columns: &super::around_event_columns::<{ EVENT_COLUMN_COUNT + 2 }>(
        &[
            "ex_outlier_stream.event_stream_ordering",
            "ex_outlier_stream.instance_name",
        ],
        &[],
    ),
};

/// Reads every backfilled event (negative stream ordering) that is not an
/// outlier, as `event_columns!`, in stream order: with the positive range,
/// a room's whole history for the initial timeline's query.
pub(crate) const BACKFILLED_EVENTS_OF_ROOMS: RoomsQuery = RoomsQuery {
    query: Query {
        name: "backfilled events of rooms",
        sql: concat!(
            "SELECT ",
            event_columns!(),
            " FROM events e WHERE e.stream_ordering < 0 AND NOT e.outlier"
        ),
        columns: &EVENT_COLUMN_NAMES,
    },
    room_column: "e.room_id",
    rest: "
          ORDER BY e.stream_ordering DESC",
};
