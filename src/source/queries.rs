//! Every SQL string roomcache runs against Synapse's schema, in one place.
//!
//! Owns: each query's text, the name errors call it by and where each of its
//! columns comes from. May not touch: running them or reading their rows
//! (the modules beside it do), roomcache's own schema (the store's), and
//! Synapse's tables beyond reading (every query here is a `SELECT`; the
//! connection is read-only besides).

/// A query against Synapse's schema.
pub(crate) struct Query {
    /// What the query reads, in a few words (errors name it).
    pub(crate) name: &'static str,
    /// Its SQL (for a [`RoomsQuery`], the part before the room filter).
    pub(crate) sql: &'static str,
    /// Where each selected column comes from, in order (errors name it).
    pub(crate) columns: &'static [&'static str],
}

impl Query {
    /// Where column `index` comes from.
    pub(crate) fn column_name(&self, index: usize) -> &'static str {
        match self.columns.get(index) {
            Some(name) => name,
            None => "a column the query does not list",
        }
    }
}

/// A query that reads either all rooms or a set of rooms: `query.sql`, then
/// for a set of rooms ` AND {room_column} = ANY(${n})` with the rooms as the
/// last parameter `n`, then `rest`.
pub(crate) struct RoomsQuery {
    pub(crate) query: Query,
    room_column: &'static str,
    rest: &'static str,
}

impl RoomsQuery {
    /// The SQL text: of all rooms, or (`rooms_parameter`) of the rooms
    /// passed as that parameter.
    pub(crate) fn sql(&self, rooms_parameter: Option<usize>) -> String {
        let filter = match rooms_parameter {
            Some(parameter) => format!(" AND {} = ANY(${parameter})", self.room_column),
            None => String::new(),
        };
        format!("{}{filter}{}", self.query.sql, self.rest)
    }
}

/// The columns every event query selects, in this order (see
/// [`EVENT_COLUMN_NAMES`] and `read::stored_event::event_from_row`); the event's
/// JSON is read for state events and redactions only, its internal metadata
/// for membership events only.
macro_rules! event_columns {
    () => {
        "e.stream_ordering, e.event_id, e.room_id, e.type, e.state_key, \
     e.sender, e.outlier, COALESCE(e.instance_name, 'master'), \
     (e.rejection_reason IS NOT NULL OR EXISTS (SELECT 1 FROM rejections r WHERE r.event_id = e.event_id)), \
     CASE WHEN e.state_key IS NOT NULL OR e.type = 'm.room.redaction' \
          THEN (SELECT j.json FROM event_json j WHERE j.event_id = e.event_id) END, \
     CASE WHEN e.type = 'm.room.member' \
          THEN (SELECT j.internal_metadata FROM event_json j WHERE j.event_id = e.event_id) END"
    };
}

/// How many columns `event_columns!` selects.
pub(crate) const EVENT_COLUMN_COUNT: usize = 11;

/// Where each of `event_columns!` comes from.
const EVENT_COLUMN_NAMES: [&str; EVENT_COLUMN_COUNT] = [
    "events.stream_ordering",
    "events.event_id",
    "events.room_id",
    "events.type",
    "events.state_key",
    "events.sender",
    "events.outlier",
    "events.instance_name",
    "rejected (events.rejection_reason, rejections)",
    "event_json.json",
    "event_json.internal_metadata",
];

/// `before`, the event columns' names, then `after` (`N` is their total).
const fn around_event_columns<const N: usize>(
    before: &[&'static str],
    after: &[&'static str],
) -> [&'static str; N] {
    assert!(before.len() + EVENT_COLUMN_COUNT + after.len() == N);
    let mut names = [""; N];
    let mut index = 0;
    while index < before.len() {
        names[index] = before[index];
        index += 1;
    }
    let mut event_index = 0;
    while event_index < EVENT_COLUMN_COUNT {
        names[index] = EVENT_COLUMN_NAMES[event_index];
        index += 1;
        event_index += 1;
    }
    let mut after_index = 0;
    while after_index < after.len() {
        names[index] = after[after_index];
        index += 1;
        after_index += 1;
    }
    names
}

/// Reads the lowest position the events stream's writers recorded in
/// `stream_positions` (NULL when none did).
pub(crate) const EVENTS_STREAM_MINIMUM_POSITION: Query = Query {
    name: "the events stream's lowest writer position",
    sql: "SELECT MIN(stream_id) FROM stream_positions WHERE stream_name = 'events'",
    columns: &["MIN(stream_positions.stream_id)"],
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

/// Reads the events persisted in the stream range `($1, $2]`, in stream
/// order, as `event_columns!`.
pub(crate) const EVENTS_IN_RANGE: RoomsQuery = RoomsQuery {
    query: Query {
        name: "events in a stream range",
        sql: concat!(
            "SELECT ",
            event_columns!(),
            " FROM events e
             WHERE e.stream_ordering > $1 AND e.stream_ordering <= $2"
        ),
        columns: &EVENT_COLUMN_NAMES,
    },
    room_column: "e.room_id",
    rest: "
             ORDER BY e.stream_ordering",
};

/// Reads the events de-outliered in the stream range `($1, $2]`, in stream
/// order: the de-outliering's stream position and writer
/// (`ex_outlier_stream`), then `event_columns!`.
pub(crate) const EX_OUTLIERS_IN_RANGE: RoomsQuery = RoomsQuery {
    query: Query {
        name: "events de-outliered in a stream range",
        sql: concat!(
            "SELECT x.event_stream_ordering, COALESCE(x.instance_name, 'master'), ",
            event_columns!(),
            "
             FROM ex_outlier_stream x JOIN events e ON e.event_id = x.event_id
             WHERE x.event_stream_ordering > $1 AND x.event_stream_ordering <= $2"
        ),
        columns: &around_event_columns::<{ EVENT_COLUMN_COUNT + 2 }>(
            &[
                "ex_outlier_stream.event_stream_ordering",
                "ex_outlier_stream.instance_name",
            ],
            &[],
        ),
    },
    room_column: "e.room_id",
    rest: "
             ORDER BY x.event_stream_ordering",
};

/// Reads the current-state deltas in the stream range `($1, $2]` from
/// `current_state_delta_stream`: stream ID, room, type, state key, event ID
/// (NULL for a deleted key) and writer, in stream order.
pub(crate) const DELTAS_IN_RANGE: RoomsQuery = RoomsQuery {
    query: Query {
        name: "current-state deltas in a stream range",
        sql:
            "SELECT stream_id, room_id, type, state_key, event_id, COALESCE(instance_name, 'master')
             FROM current_state_delta_stream
             WHERE stream_id > $1 AND stream_id <= $2",
        columns: &[
            "current_state_delta_stream.stream_id",
            "current_state_delta_stream.room_id",
            "current_state_delta_stream.type",
            "current_state_delta_stream.state_key",
            "current_state_delta_stream.event_id",
            "current_state_delta_stream.instance_name",
        ],
    },
    room_column: "room_id",
    rest: "
             ORDER BY stream_id, room_id, type, state_key",
};

/// Reads the events whose IDs are in `$1`, as `event_columns!` followed by
/// whether a redaction (in `redactions`, not rejected) at or before stream
/// position `$2` redacts it.
pub(crate) const EVENTS_BY_ID: Query = Query {
    name: "events by ID",
    sql: concat!(
        "SELECT ",
        event_columns!(),
        ", EXISTS (
                 SELECT 1 FROM redactions rd JOIN events re ON re.event_id = rd.event_id
                 WHERE rd.redacts = e.event_id AND re.stream_ordering <= $2
                   AND re.rejection_reason IS NULL)
             FROM events e
             WHERE e.event_id = ANY($1)"
    ),
    columns: &around_event_columns::<{ EVENT_COLUMN_COUNT + 1 }>(&[], &["redacted (redactions)"]),
};

/// Reads the room `$1`'s last current-state delta at or before stream
/// position `$2`: its stream ID, whether every key of it is deleted, and
/// whether it includes the create event's key.
pub(crate) const LAST_DELTA_AT_OR_BEFORE: Query = Query {
    name: "a room's last current-state delta at or before a position",
    sql: "SELECT stream_id, bool_and(event_id IS NULL),
                        bool_or(type = 'm.room.create' AND state_key = '')
                 FROM current_state_delta_stream
                 WHERE room_id = $1 AND stream_id = (
                     SELECT MAX(stream_id) FROM current_state_delta_stream
                     WHERE room_id = $1 AND stream_id <= $2)
                 GROUP BY stream_id",
    columns: &[
        "current_state_delta_stream.stream_id",
        "every key deleted (current_state_delta_stream.event_id)",
        "includes the create event (current_state_delta_stream.type, state_key)",
    ],
};

/// Reads the local users' current memberships (`local_current_membership`)
/// that are forgotten (`room_memberships.forgotten`), with their event's
/// stream ordering at or below `$1`: room, user and membership event ID.
pub(crate) const FORGOTTEN_MEMBERSHIPS: RoomsQuery = RoomsQuery {
    query: Query {
        name: "forgotten current memberships",
        sql: "SELECT m.room_id, m.user_id, m.event_id
             FROM local_current_membership c
             JOIN room_memberships m ON m.event_id = c.event_id
             WHERE m.forgotten = 1 AND c.event_stream_ordering <= $1",
        columns: &[
            "room_memberships.room_id",
            "room_memberships.user_id",
            "room_memberships.event_id",
        ],
    },
    // The membership's room, filtered on `local_current_membership` (its
    // room index; on `room_memberships` the plan joined every current
    // membership first: 190-275 ms a batch at x500, now 2-10 ms).
    room_column: "c.room_id",
    rest: "",
};

/// Reads up to `$2` room IDs after `$1`, in order, of the rooms in `rooms`
/// or `local_current_membership` (the rooms the import covers).
pub(crate) const NEXT_ROOMS: Query = Query {
    name: "the next rooms to import",
    // Each side reads only its first `$2` rooms through its index (a union
    // of both whole sides, sorted, cost O(rooms) per batch: 180 ms a batch
    // at 35,500 rooms).
    sql: "SELECT room_id FROM (
                 (SELECT room_id FROM rooms WHERE room_id > $1 ORDER BY room_id LIMIT $2)
                 UNION (SELECT DISTINCT room_id FROM local_current_membership
                        WHERE room_id > $1 ORDER BY room_id LIMIT $2)
             ) t ORDER BY room_id LIMIT $2",
    columns: &["room_id (rooms, local_current_membership)"],
};

/// Reads how many rooms the import covers (the rooms in `rooms` or
/// `local_current_membership`).
pub(crate) const ROOM_COUNT: Query = Query {
    name: "the number of rooms to import",
    sql: "SELECT COUNT(*) FROM (SELECT room_id FROM rooms
                 UNION SELECT room_id FROM local_current_membership) t",
    columns: &["COUNT(room_id) (rooms, local_current_membership)"],
};

/// Reads which of the room IDs in `$1` still exist in `rooms` or
/// `local_current_membership` (the others were purged).
pub(crate) const ROOMS_PRESENT: Query = Query {
    name: "which cached rooms still exist",
    sql: "SELECT room_id FROM rooms WHERE room_id = ANY($1)
                     UNION SELECT room_id FROM local_current_membership WHERE room_id = ANY($1)",
    columns: &["room_id (rooms, local_current_membership)"],
};

/// Reads the rooms with an event, a current-state delta or a de-outliered
/// event in the stream range `($1, $2]`, in order.
pub(crate) const CHANGED_ROOMS: Query = Query {
    name: "rooms changed in a stream range",
    sql: "SELECT room_id FROM events WHERE stream_ordering > $1 AND stream_ordering <= $2
                     UNION SELECT room_id FROM current_state_delta_stream WHERE stream_id > $1 AND stream_id <= $2
                     UNION SELECT e.room_id FROM ex_outlier_stream x JOIN events e ON e.event_id = x.event_id
                           WHERE x.event_stream_ordering > $1 AND x.event_stream_ordering <= $2
                     ORDER BY 1",
    columns: &["room_id (events, current_state_delta_stream)"],
};

/// Reads which of the rooms `$2` the local user `$1` has a current
/// membership in (`local_current_membership`).
pub(crate) const ROOMS_OF_USER: Query = Query {
    name: "a local user's rooms among a set",
    sql: "SELECT room_id FROM local_current_membership
                     WHERE user_id = $1 AND room_id = ANY($2)",
    columns: &["local_current_membership.room_id"],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_filter_goes_before_the_rest_with_the_given_parameter() {
        let of_rooms = DELTAS_IN_RANGE.sql(Some(3));
        let all = DELTAS_IN_RANGE.sql(None);
        assert!(of_rooms.ends_with(
            "WHERE stream_id > $1 AND stream_id <= $2 AND room_id = ANY($3)
             ORDER BY stream_id, room_id, type, state_key"
        ));
        assert_eq!(of_rooms.replace(" AND room_id = ANY($3)", ""), all);
        assert!(FORGOTTEN_MEMBERSHIPS
            .sql(Some(2))
            .ends_with("c.event_stream_ordering <= $1 AND c.room_id = ANY($2)"));
    }

    #[test]
    fn column_names_follow_the_event_columns_where_they_sit() {
        assert_eq!(EX_OUTLIERS_IN_RANGE.query.columns.len(), 13);
        assert_eq!(
            EX_OUTLIERS_IN_RANGE.query.column_name(1),
            "ex_outlier_stream.instance_name"
        );
        assert_eq!(
            EX_OUTLIERS_IN_RANGE.query.column_name(2),
            "events.stream_ordering"
        );
        assert_eq!(EVENTS_BY_ID.columns.len(), 12);
        assert_eq!(
            EVENTS_BY_ID.column_name(EVENT_COLUMN_COUNT),
            "redacted (redactions)"
        );
        assert_eq!(
            EVENTS_IN_RANGE.query.column_name(EVENT_COLUMN_COUNT),
            "a column the query does not list"
        );
    }
}
