//! Every SQL string roomcache runs against Synapse's schema, in one place.
//!
//! Owns: the text of each query (constants, or small functions for the few
//! that take an optional room filter), each with a line saying what it reads.
//! May not touch: anything that runs them or reads their rows (the modules
//! beside it do), roomcache's own schema (the store's), and Synapse's tables
//! beyond reading (every query here is a `SELECT`; the connection is
//! read-only besides).

/// The columns every event query selects, in this order (see
/// `read::event::event_from_row`): stream ordering, event ID, room, type,
/// state key, sender, outlier flag, writer, rejected flag, the event's JSON
/// (state events and redactions only) and its internal metadata (membership
/// events only).
const EVENT_COLUMNS: &str = "e.stream_ordering, e.event_id, e.room_id, e.type, e.state_key, \
     e.sender, e.outlier, COALESCE(e.instance_name, 'master'), \
     (e.rejection_reason IS NOT NULL OR EXISTS (SELECT 1 FROM rejections r WHERE r.event_id = e.event_id)), \
     CASE WHEN e.state_key IS NOT NULL OR e.type = 'm.room.redaction' \
          THEN (SELECT j.json FROM event_json j WHERE j.event_id = e.event_id) END, \
     CASE WHEN e.type = 'm.room.member' \
          THEN (SELECT j.internal_metadata FROM event_json j WHERE j.event_id = e.event_id) END";

/// ` AND {column} = ANY(${parameter})` when the query is limited to a set of
/// rooms (passed as parameter `parameter`), else nothing.
fn room_filter(of_rooms: bool, column: &str, parameter: usize) -> String {
    if of_rooms {
        format!(" AND {column} = ANY(${parameter})")
    } else {
        String::new()
    }
}

/// Reads the lowest position the events stream's writers recorded in
/// `stream_positions` (NULL when none did).
pub(crate) const EVENTS_STREAM_MINIMUM_POSITION: &str =
    "SELECT MIN(stream_id) FROM stream_positions WHERE stream_name = 'events'";

/// Reads the highest stream ordering in use in `events`,
/// `current_state_delta_stream` and `ex_outlier_stream` (NULL when all are
/// empty).
pub(crate) const HIGHEST_STREAM_ORDERING: &str = "SELECT GREATEST(
                    (SELECT MAX(stream_ordering) FROM events),
                    (SELECT MAX(stream_id) FROM current_state_delta_stream),
                    (SELECT MAX(event_stream_ordering) FROM ex_outlier_stream))";

/// Reads the events persisted in the stream range `($1, $2]` (of the rooms
/// `$3` when `of_rooms`), in stream order, as [`EVENT_COLUMNS`].
pub(crate) fn events_in_range(of_rooms: bool) -> String {
    let filter = room_filter(of_rooms, "e.room_id", 3);
    format!(
        "SELECT {EVENT_COLUMNS} FROM events e
             WHERE e.stream_ordering > $1 AND e.stream_ordering <= $2{filter}
             ORDER BY e.stream_ordering"
    )
}

/// Reads the events de-outliered in the stream range `($1, $2]` (of the
/// rooms `$3` when `of_rooms`), in stream order: the de-outliering's stream
/// position and writer (`ex_outlier_stream`), then [`EVENT_COLUMNS`].
pub(crate) fn ex_outliers_in_range(of_rooms: bool) -> String {
    let filter = room_filter(of_rooms, "e.room_id", 3);
    format!(
        "SELECT x.event_stream_ordering, COALESCE(x.instance_name, 'master'), {EVENT_COLUMNS}
             FROM ex_outlier_stream x JOIN events e ON e.event_id = x.event_id
             WHERE x.event_stream_ordering > $1 AND x.event_stream_ordering <= $2{filter}
             ORDER BY x.event_stream_ordering"
    )
}

/// Reads the current-state deltas in the stream range `($1, $2]` (of the
/// rooms `$3` when `of_rooms`) from `current_state_delta_stream`: stream ID,
/// room, type, state key, event ID (NULL for a deleted key) and writer, in
/// stream order.
pub(crate) fn deltas_in_range(of_rooms: bool) -> String {
    let filter = room_filter(of_rooms, "room_id", 3);
    format!(
        "SELECT stream_id, room_id, type, state_key, event_id, COALESCE(instance_name, 'master')
             FROM current_state_delta_stream
             WHERE stream_id > $1 AND stream_id <= $2{filter}
             ORDER BY stream_id, room_id, type, state_key"
    )
}

/// Reads the events whose IDs are in `$1`, as [`EVENT_COLUMNS`] followed by
/// whether a redaction (in `redactions`, not rejected) at or before stream
/// position `$2` redacts it.
pub(crate) fn events_by_id() -> String {
    format!(
        "SELECT {EVENT_COLUMNS}, EXISTS (
                 SELECT 1 FROM redactions rd JOIN events re ON re.event_id = rd.event_id
                 WHERE rd.redacts = e.event_id AND re.stream_ordering <= $2
                   AND re.rejection_reason IS NULL)
             FROM events e
             WHERE e.event_id = ANY($1)"
    )
}

/// Reads the room `$1`'s last current-state delta at or before stream
/// position `$2`: its stream ID, whether every key of it is deleted, and
/// whether it includes the create event's key.
pub(crate) const LAST_DELTA_AT_OR_BEFORE: &str = "SELECT stream_id, bool_and(event_id IS NULL),
                        bool_or(type = 'm.room.create' AND state_key = '')
                 FROM current_state_delta_stream
                 WHERE room_id = $1 AND stream_id = (
                     SELECT MAX(stream_id) FROM current_state_delta_stream
                     WHERE room_id = $1 AND stream_id <= $2)
                 GROUP BY stream_id";

/// Reads the local users' current memberships (`local_current_membership`)
/// that are forgotten (`room_memberships.forgotten`), with their event's
/// stream ordering at or below `$1` (of the rooms `$2` when `of_rooms`):
/// room, user and membership event ID.
pub(crate) fn forgotten_memberships(of_rooms: bool) -> String {
    let filter = room_filter(of_rooms, "m.room_id", 2);
    format!(
        "SELECT m.room_id, m.user_id, m.event_id
             FROM local_current_membership c
             JOIN room_memberships m ON m.event_id = c.event_id
             WHERE m.forgotten = 1 AND c.event_stream_ordering <= $1{filter}"
    )
}

/// Reads up to `$2` room IDs after `$1`, in order, of the rooms in `rooms`
/// or `local_current_membership` (the rooms the import covers).
pub(crate) const NEXT_ROOMS: &str = "SELECT room_id FROM (
                 SELECT room_id FROM rooms WHERE room_id > $1
                 UNION SELECT room_id FROM local_current_membership WHERE room_id > $1
             ) t ORDER BY room_id LIMIT $2";

/// Reads how many rooms the import covers (the rooms in `rooms` or
/// `local_current_membership`).
pub(crate) const ROOM_COUNT: &str = "SELECT COUNT(*) FROM (SELECT room_id FROM rooms
                 UNION SELECT room_id FROM local_current_membership) t";

/// Reads which of the room IDs in `$1` still exist in `rooms` or
/// `local_current_membership` (the others were purged).
pub(crate) const ROOMS_PRESENT: &str = "SELECT room_id FROM rooms WHERE room_id = ANY($1)
                     UNION SELECT room_id FROM local_current_membership WHERE room_id = ANY($1)";

/// Reads the rooms with an event, a current-state delta or a de-outliered
/// event in the stream range `($1, $2]`, in order.
pub(crate) const CHANGED_ROOMS: &str =
    "SELECT room_id FROM events WHERE stream_ordering > $1 AND stream_ordering <= $2
                     UNION SELECT room_id FROM current_state_delta_stream WHERE stream_id > $1 AND stream_id <= $2
                     UNION SELECT e.room_id FROM ex_outlier_stream x JOIN events e ON e.event_id = x.event_id
                           WHERE x.event_stream_ordering > $1 AND x.event_stream_ordering <= $2
                     ORDER BY 1";

/// Reads which of the rooms `$2` the local user `$1` has a current
/// membership in (`local_current_membership`).
pub(crate) const ROOMS_OF_USER: &str = "SELECT room_id FROM local_current_membership
                     WHERE user_id = $1 AND room_id = ANY($2)";
