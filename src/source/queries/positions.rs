//! The queries of stream positions in Synapse's database: what each
//! stream's sequence has allocated (`last_value`, or the one before it when
//! `is_called` is false: then `last_value` is the next one), the writers' `stream_positions` rows,
//! the events-stream positions in use and the highest ids in use, and the
//! names of Synapse's processes. Part of [`super`]: every SQL string
//! against Synapse's schema.

use super::Query;

/// Reads the highest position Synapse has allocated on the events stream
/// (its sequence `events_stream_seq`, shared by every event writer), then
/// each writer's row of `stream_positions` for the events stream (written by
/// each writer after its own commits; an idle writer's row does not move):
/// one row per writer, or one row with NULL writer and position when there
/// is none. Both in one statement: the rows are those committed when it
/// starts and the sequence is read after, so no row that was really
/// persisted can be above the allocated maximum.
pub(crate) const EVENTS_STREAM_WRITER_POSITIONS: Query = Query {
    name: "the events stream's allocated maximum (events_stream_seq) and writer positions",
    sql: "SELECT a.allocated, s.instance_name, s.stream_id
          FROM (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END AS allocated
                FROM events_stream_seq) a
          LEFT JOIN stream_positions s ON s.stream_name = 'events'",
    columns: &[
        "events_stream_seq.last_value",
        "stream_positions.instance_name",
        "stream_positions.stream_id",
    ],
};

/// Reads the highest position Synapse has allocated on the events stream
/// (`events_stream_seq`).
pub(crate) const EVENTS_STREAM_ALLOCATED: Query = Query {
    name: "the events stream's allocated maximum (events_stream_seq)",
    sql: "SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END
          FROM events_stream_seq",
    columns: &["events_stream_seq.last_value"],
};

/// Reads the first `$3` events-stream positions in use in `($1, $2]`
/// (stream orderings of `events`, `current_state_delta_stream` and
/// positions of `ex_outlier_stream`; a purged room's events are gone but its
/// deltas stay), in order: each is a committed row, so a run of consecutive
/// ones after a safe position is safe too. Each table is read for its first
/// `$3` only, along its index.
pub(crate) const EVENTS_STREAM_POSITIONS_IN_USE: Query = Query {
    name: "events-stream positions in use",
    sql: "SELECT id FROM (
                 (SELECT stream_ordering AS id FROM events
                  WHERE stream_ordering > $1 AND stream_ordering <= $2
                  ORDER BY stream_ordering LIMIT $3)
                 UNION (SELECT stream_id FROM current_state_delta_stream
                  WHERE stream_id > $1 AND stream_id <= $2
                  ORDER BY stream_id LIMIT $3)
                 UNION (SELECT event_stream_ordering FROM ex_outlier_stream
                  WHERE event_stream_ordering > $1 AND event_stream_ordering <= $2
                  ORDER BY event_stream_ordering LIMIT $3)
             ) ids ORDER BY id LIMIT $3",
    columns: &["events.stream_ordering | current_state_delta_stream.stream_id | ex_outlier_stream.event_stream_ordering"],
};

/// Reads the highest stream ordering in use in `events`,
/// `current_state_delta_stream` and `ex_outlier_stream` (NULL when all are
/// empty).
pub(crate) const HIGHEST_STREAM_ORDERING: Query = Query {
    name: "the highest stream ordering in use",
    sql: "SELECT GREATEST(
                    (SELECT MAX(stream_ordering) FROM events),
                    (SELECT MAX(stream_id) FROM current_state_delta_stream),
                    (SELECT MAX(event_stream_ordering) FROM ex_outlier_stream))",
    columns: &["GREATEST(MAX(events.stream_ordering), MAX(current_state_delta_stream.stream_id), MAX(ex_outlier_stream.event_stream_ordering))"],
};

/// Reads the highest position Synapse has allocated on the account-data
/// stream (`account_data_sequence`), then each of its writers' rows of
/// `stream_positions` (one row with NULLs when there is none), as
/// [`EVENTS_STREAM_WRITER_POSITIONS`] does for the events stream.
pub(crate) const ACCOUNT_DATA_WRITER_POSITIONS: Query = Query {
    name:
        "the account-data stream's allocated maximum (account_data_sequence) and writer positions",
    sql: "SELECT a.allocated, s.instance_name, s.stream_id
          FROM (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END AS allocated
                FROM account_data_sequence) a
          LEFT JOIN stream_positions s ON s.stream_name = 'account_data'",
    columns: &[
        "account_data_sequence.last_value",
        "stream_positions.instance_name",
        "stream_positions.stream_id",
    ],
};

/// Reads the highest id in use on the account-data stream (NULL when none).
pub(crate) const ACCOUNT_DATA_HIGHEST_ID: Query = Query {
    name: "the account-data stream's highest id",
    sql: "SELECT GREATEST(
              (SELECT MAX(stream_id) FROM account_data),
              (SELECT MAX(stream_id) FROM room_account_data),
              (SELECT MAX(stream_id) FROM room_tags_revisions))",
    columns: &[
        "MAX(account_data.stream_id, room_account_data.stream_id, room_tags_revisions.stream_id)",
    ],
};

/// Reads the lowest and the highest stream ID of the caches stream still
/// in `cache_invalidation_stream_by_instance` (NULLs when it is empty;
/// Synapse deletes rows older than a week), then the highest position
/// Synapse has allocated on it (`cache_invalidation_stream_seq`, read after
/// the rows, as [`EVENTS_STREAM_WRITER_POSITIONS`] does).
pub(crate) const CACHES_STREAM_EXTENT: Query = Query {
    name: "the caches stream's extent and allocated maximum (cache_invalidation_stream_seq)",
    sql: "SELECT (SELECT MIN(stream_id) FROM cache_invalidation_stream_by_instance),
                 (SELECT MAX(stream_id) FROM cache_invalidation_stream_by_instance),
                 (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END
                  FROM cache_invalidation_stream_seq)",
    columns: &[
        "MIN(cache_invalidation_stream_by_instance.stream_id)",
        "MAX(cache_invalidation_stream_by_instance.stream_id)",
        "cache_invalidation_stream_seq.last_value",
    ],
};

/// Reads the names of Synapse's processes: those with a row in
/// `stream_positions` (the writers of its streams) and those with a row in
/// `cache_invalidation_stream_by_instance` (every process that invalidates
/// caches), the latter one name at a time along its `(instance_name,
/// stream_id)` index (a few steps, however many rows).
pub(crate) const SYNAPSE_PROCESSES: Query = Query {
    name: "Synapse's processes (stream_positions, cache_invalidation_stream_by_instance)",
    sql: "WITH RECURSIVE names(name) AS (
              (SELECT instance_name FROM cache_invalidation_stream_by_instance
               ORDER BY instance_name LIMIT 1)
              UNION ALL
              SELECT (SELECT c.instance_name FROM cache_invalidation_stream_by_instance c
                      WHERE c.instance_name > n.name ORDER BY c.instance_name LIMIT 1)
              FROM names n WHERE n.name IS NOT NULL)
          SELECT name FROM names WHERE name IS NOT NULL
          UNION SELECT instance_name FROM stream_positions",
    columns: &["instance_name (stream_positions, cache_invalidation_stream_by_instance)"],
};
