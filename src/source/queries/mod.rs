//! Every SQL string roomcache runs against Synapse's schema, in one place.
//!
//! Owns: each query's text, the name errors call it by and where each of its
//! columns comes from. May not touch: running them or reading their rows
//! (the modules beside it do), roomcache's own schema (the store's), and
//! Synapse's tables beyond reading (every query here is a `SELECT`; the
//! connection is read-only besides).

mod forgets;
mod positions;
mod tables;

pub(crate) use backfill::*;
pub(crate) use forgets::*;
pub(crate) use positions::*;
pub(crate) use tables::{SYNAPSE_SEQUENCES, SYNAPSE_TABLES, TABLE_ACCESS};

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
/// for a set of rooms ` AND {room_column} = ANY(${n})` with the rooms as
/// parameter `n`, then `rest`.
pub(crate) struct RoomsQuery {
    pub(crate) query: Query,
    room_column: &'static str,
    rest: &'static str,
}

impl RoomsQuery {
    /// The SQL text: of all rooms, or (`rooms_parameter`) of the rooms
    /// passed as that parameter.
    pub(crate) fn sql(&self, rooms_parameter: Option<usize>) -> String {
        format!(
            "{}{}{}",
            self.query.sql,
            rooms_filter(self.room_column, rooms_parameter),
            self.rest
        )
    }
}

fn rooms_filter(room_column: &str, rooms_parameter: Option<usize>) -> String {
    match rooms_parameter {
        Some(parameter) => format!(" AND {room_column} = ANY(${parameter})"),
        None => String::new(),
    }
}

/// A query of the rows of a stream range (`super::range::StreamRange`):
/// its SQL reads positions in `($1, $2]` (the range's lowest and highest),
/// then come the room filter of a [`RoomsQuery`] and, for vector tokens,
/// [`writer_bounds_filter`] on `id_column` and `writer_column`.
pub(crate) struct RangeQuery {
    pub(crate) rooms: RoomsQuery,
    id_column: &'static str,
    writer_column: &'static str,
}

impl RangeQuery {
    /// The SQL text, with the rooms as parameter `rooms_parameter` and the
    /// writer bounds from parameter `writer_bounds` on (both optional).
    pub(crate) fn sql(
        &self,
        rooms_parameter: Option<usize>,
        writer_bounds: Option<usize>,
    ) -> String {
        format!(
            "{}{}{}{}",
            self.rooms.query.sql,
            rooms_filter(self.rooms.room_column, rooms_parameter),
            writer_bounds
                .map(|first| writer_bounds_filter(self.id_column, self.writer_column, first))
                .unwrap_or_default(),
            self.rooms.rest
        )
    }

    pub(crate) fn query(&self) -> &Query {
        &self.rooms.query
    }
}

/// Keeps a row of writer `writer` at `id` when it lies between the two
/// tokens for that writer: parameters `first` to `first + 5` are the
/// `from` token's writers (`text[]`), their positions (`bigint[]`) and its
/// `stream`, then the same of the `to` token (a writer absent from a
/// token's map is at its `stream`).
pub(crate) fn writer_bounds_filter(id: &str, writer: &str, first: usize) -> String {
    let bound = |names: usize, positions: usize, stream: usize| {
        format!(
            "COALESCE((SELECT b.position FROM UNNEST(${names}::text[], ${positions}::bigint[]) \
             AS b(writer, position) WHERE b.writer = {writer}), ${stream})"
        )
    };
    format!(
        " AND {id} > {} AND {id} <= {}",
        bound(first, first + 1, first + 2),
        bound(first + 3, first + 4, first + 5)
    )
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
          THEN (SELECT j.internal_metadata FROM event_json j WHERE j.event_id = e.event_id) END, \
     e.topological_ordering"
    };
}

// After `event_columns!`, which it uses.
mod backfill;

/// How many columns `event_columns!` selects.
pub(crate) const EVENT_COLUMN_COUNT: usize = 12;

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
    "events.topological_ordering",
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

/// The writer of an `events` row (NULL, from before multi-writer support:
/// `master`).
const EVENT_WRITER: &str = "COALESCE(e.instance_name, 'master')";

/// Reads the events persisted in a stream range, in stream order, as
/// `event_columns!`.
pub(crate) const EVENTS_IN_RANGE: RangeQuery = RangeQuery {
    rooms: RoomsQuery {
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
    },
    id_column: "e.stream_ordering",
    writer_column: EVENT_WRITER,
};

/// Reads the events de-outliered in a stream range, in stream order: the
/// de-outliering's stream position and writer (`ex_outlier_stream`), then
/// `event_columns!`.
pub(crate) const EX_OUTLIERS_IN_RANGE: RangeQuery = RangeQuery {
    rooms: RoomsQuery {
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
    },
    id_column: "x.event_stream_ordering",
    writer_column: "COALESCE(x.instance_name, 'master')",
};

/// Reads the current-state deltas in a stream range from
/// `current_state_delta_stream`: stream ID, room, type, state key, event ID
/// (NULL for a deleted key) and writer, in stream order.
pub(crate) const DELTAS_IN_RANGE: RangeQuery = RangeQuery {
    rooms: RoomsQuery {
        query: Query {
            name: "current-state deltas in a stream range",
            sql: "SELECT stream_id, room_id, type, state_key, event_id, COALESCE(instance_name, 'master')
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
    },
    id_column: "stream_id",
    writer_column: "COALESCE(instance_name, 'master')",
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

/// The parts of [`changed_rooms_sql`]: the rooms of the events, the
/// current-state deltas and the de-outliered events of a stream range.
const CHANGED_ROOMS_PARTS: [RangeQuery; 3] = [
    RangeQuery {
        rooms: RoomsQuery {
            query: Query {
                name: "rooms changed in a stream range",
                sql: "SELECT e.room_id FROM events e
                      WHERE e.stream_ordering > $1 AND e.stream_ordering <= $2",
                columns: &["room_id (events, current_state_delta_stream, ex_outlier_stream)"],
            },
            room_column: "e.room_id",
            rest: "",
        },
        id_column: "e.stream_ordering",
        writer_column: EVENT_WRITER,
    },
    RangeQuery {
        rooms: RoomsQuery {
            query: Query {
                name: "rooms changed in a stream range",
                sql: "SELECT room_id FROM current_state_delta_stream
                      WHERE stream_id > $1 AND stream_id <= $2",
                columns: &[],
            },
            room_column: "room_id",
            rest: "",
        },
        id_column: "stream_id",
        writer_column: "COALESCE(instance_name, 'master')",
    },
    RangeQuery {
        rooms: RoomsQuery {
            query: Query {
                name: "rooms changed in a stream range",
                sql: "SELECT e.room_id FROM ex_outlier_stream x JOIN events e ON e.event_id = x.event_id
                      WHERE x.event_stream_ordering > $1 AND x.event_stream_ordering <= $2",
                columns: &[],
            },
            room_column: "e.room_id",
            rest: "",
        },
        id_column: "x.event_stream_ordering",
        writer_column: "COALESCE(x.instance_name, 'master')",
    },
];

/// Reads the rooms with an event, a current-state delta or a de-outliered
/// event in a stream range, in order (the [`CHANGED_ROOMS`] query's SQL,
/// with the writer bounds from parameter `writer_bounds` on).
pub(crate) fn changed_rooms_sql(writer_bounds: Option<usize>) -> String {
    let parts: Vec<String> = CHANGED_ROOMS_PARTS
        .iter()
        .map(|part| part.sql(None, writer_bounds))
        .collect();
    format!("{} ORDER BY 1", parts.join(" UNION "))
}

/// What [`changed_rooms_sql`] reads (its name and columns, for errors).
pub(crate) const CHANGED_ROOMS: &Query = &CHANGED_ROOMS_PARTS[0].rooms.query;

/// Reads which of the rooms `$2` the local user `$1` has a current
/// membership in (`local_current_membership`).
pub(crate) const ROOMS_OF_USER: Query = Query {
    name: "a local user's rooms among a set",
    sql: "SELECT room_id FROM local_current_membership
                     WHERE user_id = $1 AND room_id = ANY($2)",
    columns: &["local_current_membership.room_id"],
};

/// Reads every user's global account data of type `$1` (`m.direct`).
pub(crate) const GLOBAL_ACCOUNT_DATA: Query = Query {
    name: "users' global account data of a type",
    sql: "SELECT user_id, content FROM account_data WHERE account_data_type = $1",
    columns: &["account_data.user_id", "account_data.content"],
};

/// Reads users' global account data of type `$1` changed in `($2, $3]`.
pub(crate) const GLOBAL_ACCOUNT_DATA_CHANGED: Query = Query {
    name: "users' global account data of a type changed in a range",
    sql: "SELECT user_id, content FROM account_data
          WHERE account_data_type = $1 AND stream_id > $2 AND stream_id <= $3",
    columns: &["account_data.user_id", "account_data.content"],
};

/// Reads every room tag.
pub(crate) const ROOM_TAGS: Query = Query {
    name: "every room tag",
    sql: "SELECT user_id, room_id, tag, content FROM room_tags",
    columns: &[
        "room_tags.user_id",
        "room_tags.room_id",
        "room_tags.tag",
        "room_tags.content",
    ],
};

/// Reads the (user, room) pairs whose tags changed in `($1, $2]`.
pub(crate) const ROOM_TAGS_REVISED: Query = Query {
    name: "room tags revised in a range",
    sql: "SELECT user_id, room_id FROM room_tags_revisions
          WHERE stream_id > $1 AND stream_id <= $2",
    columns: &["room_tags_revisions.user_id", "room_tags_revisions.room_id"],
};

/// Reads the tags of the (user, room) pairs `$1`/`$2` (parallel arrays).
pub(crate) const ROOM_TAGS_OF_PAIRS: Query = Query {
    name: "the tags of some users' rooms",
    sql: "SELECT t.user_id, t.room_id, t.tag, t.content
          FROM room_tags t
          JOIN UNNEST($1::text[], $2::text[]) AS r(user_id, room_id)
            ON t.user_id = r.user_id AND t.room_id = r.room_id",
    columns: &[
        "room_tags.user_id",
        "room_tags.room_id",
        "room_tags.tag",
        "room_tags.content",
    ],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_filter_goes_before_the_rest_with_the_given_parameter() {
        let of_rooms = DELTAS_IN_RANGE.sql(Some(3), None);
        let all = DELTAS_IN_RANGE.sql(None, None);
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
    fn writer_bounds_follow_the_room_filter_and_number_six_parameters() {
        let sql = EVENTS_IN_RANGE.sql(Some(3), Some(4));
        let rooms = sql.find("AND e.room_id = ANY($3)").unwrap();
        let lower = sql
            .find("AND e.stream_ordering > COALESCE((SELECT b.position FROM UNNEST($4::text[], $5::bigint[])")
            .unwrap();
        let upper = sql
            .find("AND e.stream_ordering <= COALESCE((SELECT b.position FROM UNNEST($7::text[], $8::bigint[])")
            .unwrap();
        assert!(rooms < lower && lower < upper, "{sql}");
        assert!(sql.contains("WHERE b.writer = COALESCE(e.instance_name, 'master')), $6)"));
        assert!(
            sql.ends_with("), $9)\n             ORDER BY e.stream_ordering"),
            "{sql}"
        );
        let changed = changed_rooms_sql(Some(3));
        assert_eq!(changed.matches(" UNION ").count(), 2);
        assert_eq!(changed.matches("$8").count(), 3);
        assert!(changed.ends_with(" ORDER BY 1"));
        assert!(!changed_rooms_sql(None).contains("UNNEST"));
    }

    #[test]
    fn column_names_follow_the_event_columns_where_they_sit() {
        assert_eq!(EX_OUTLIERS_IN_RANGE.query().columns.len(), 14);
        assert_eq!(
            EX_OUTLIERS_IN_RANGE.query().column_name(1),
            "ex_outlier_stream.instance_name"
        );
        assert_eq!(
            EX_OUTLIERS_IN_RANGE.query().column_name(2),
            "events.stream_ordering"
        );
        assert_eq!(EVENTS_BY_ID.columns.len(), 13);
        assert_eq!(
            EVENTS_BY_ID.column_name(EVENT_COLUMN_COUNT),
            "redacted (redactions)"
        );
        assert_eq!(
            EVENTS_IN_RANGE.query().column_name(EVENT_COLUMN_COUNT),
            "a column the query does not list"
        );
    }
}
