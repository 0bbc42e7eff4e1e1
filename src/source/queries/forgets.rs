//! The queries of forgets and room deletions: the forgotten current
//! memberships (all, among events, among members), Synapse's caches stream
//! (`cache_invalidation_stream_by_instance`) and whether a room still
//! exists. Part of [`super`]: every SQL string against Synapse's schema.

use super::{Query, RoomsQuery};

/// Reads the local users' current memberships (`local_current_membership`)
/// that are forgotten (`room_memberships.forgotten`), with their event's
/// stream ordering at or below `$1`: room, user, membership event ID, its
/// stream ordering and its writer.
pub(crate) const FORGOTTEN_MEMBERSHIPS: RoomsQuery = RoomsQuery {
    query: Query {
        name: "forgotten current memberships",
        sql: "SELECT m.room_id, m.user_id, m.event_id, c.event_stream_ordering,
                    COALESCE(e.instance_name, 'master')
             FROM local_current_membership c
             JOIN room_memberships m ON m.event_id = c.event_id
             JOIN events e ON e.event_id = c.event_id
             WHERE m.forgotten = 1 AND c.event_stream_ordering <= $1",
        columns: &[
            "room_memberships.room_id",
            "room_memberships.user_id",
            "room_memberships.event_id",
            "local_current_membership.event_stream_ordering",
            "events.instance_name",
        ],
    },
    // The membership's room, filtered on `local_current_membership` (its
    // room index; on `room_memberships` the plan joined every current
    // membership first: 190-275 ms a batch at x500, now 2-10 ms).
    room_column: "c.room_id",
    rest: "",
};

/// Reads which of the membership events `$1` are a local user's current
/// membership and forgotten, as [`FORGOTTEN_MEMBERSHIPS`] does.
pub(crate) const FORGOTTEN_AMONG_EVENTS: Query = Query {
    name: "forgotten current memberships among events",
    sql: "SELECT m.room_id, m.user_id, m.event_id, c.event_stream_ordering,
                COALESCE(e.instance_name, 'master')
         FROM room_memberships m
         JOIN local_current_membership c ON c.event_id = m.event_id
         JOIN events e ON e.event_id = m.event_id
         WHERE m.event_id = ANY($1) AND m.forgotten = 1",
    columns: FORGOTTEN_MEMBERSHIPS.query.columns,
};

/// Reads which of the (room `$1[i]`, user `$2[i]`) pairs have a forgotten
/// current membership, as [`FORGOTTEN_MEMBERSHIPS`] does.
pub(crate) const FORGOTTEN_AMONG_MEMBERS: Query = Query {
    name: "forgotten current memberships of users in rooms",
    sql: "SELECT m.room_id, m.user_id, m.event_id, c.event_stream_ordering,
                COALESCE(e.instance_name, 'master')
         FROM UNNEST($1::text[], $2::text[]) AS p(room_id, user_id)
         JOIN local_current_membership c ON c.room_id = p.room_id AND c.user_id = p.user_id
         JOIN room_memberships m ON m.event_id = c.event_id
         JOIN events e ON e.event_id = c.event_id
         WHERE m.forgotten = 1",
    columns: FORGOTTEN_MEMBERSHIPS.query.columns,
};

/// Reads the cache invalidations of the functions `$4`
/// (`cache_invalidation_stream_by_instance`, which Synapse writes in the
/// same transaction as the change it announces): of each process `$1[i]`
/// after `$2[i]` and up to `$3[i]`, of any other process after `$5` and up
/// to `$6`; stream ID, process, function and keys (NULL: every key), in
/// stream order, at most `$7`. Each process's rows are one range of the
/// `(instance_name, stream_id)` index.
pub(crate) const CACHE_INVALIDATIONS: Query = Query {
    name: "cache invalidations",
    sql: "SELECT x.stream_id, x.instance_name, x.cache_func, x.keys FROM (
             SELECT c.stream_id, c.instance_name, c.cache_func, c.keys
             FROM UNNEST($1::text[], $2::bigint[], $3::bigint[]) AS b(instance, after, up_to)
             CROSS JOIN LATERAL (
                 SELECT stream_id, instance_name, cache_func, keys
                 FROM cache_invalidation_stream_by_instance
                 WHERE instance_name = b.instance AND stream_id > b.after
                   AND stream_id <= b.up_to AND cache_func = ANY($4)
                 ORDER BY stream_id LIMIT $7) c
             UNION ALL
             SELECT stream_id, instance_name, cache_func, keys
             FROM cache_invalidation_stream_by_instance
             WHERE stream_id > $5 AND stream_id <= $6 AND cache_func = ANY($4)
               AND NOT (instance_name = ANY($1))
         ) x ORDER BY x.stream_id LIMIT $7",
    columns: &[
        "cache_invalidation_stream_by_instance.stream_id",
        "cache_invalidation_stream_by_instance.instance_name",
        "cache_invalidation_stream_by_instance.cache_func",
        "cache_invalidation_stream_by_instance.keys",
    ],
};

/// Reads whether the room `$1` still exists in `rooms` or
/// `local_current_membership` (a deleted room exists in neither).
pub(crate) const ROOM_EXISTS: Query = Query {
    name: "whether a room still exists",
    sql: "SELECT EXISTS (SELECT 1 FROM rooms WHERE room_id = $1)
              OR EXISTS (SELECT 1 FROM local_current_membership WHERE room_id = $1)",
    columns: &["room_id (rooms, local_current_membership)"],
};
