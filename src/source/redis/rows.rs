//! The rows of an `RDATA` line, checked as Synapse checks them before it
//! believes the line (pure, never panics on any input).
//!
//! A Synapse process that receives an `RDATA` line parses its row into the
//! stream's row type and drops the line, position and all, when that fails.
//! roomcache uses no value of the row (its database is the source of
//! values), but it believes the line's position only when the row parses as
//! the stream's typed tuple — by type, too, where Synapse's annotations say
//! so (roomcache is stricter than Python there: nothing Synapse sends fails).
//!
//! * `events`: `["ev", [event_id, room_id, type, state_key?, redacts?,
//!   relates_to?, membership?, rejected, outlier]]`, `["state", [room_id,
//!   type, state_key, event_id?]]` or `["state-all", [room_id]]`;
//! * `caches`: `[cache_func, keys?, invalidation_ts]` (keys a list or null);
//! * `account_data`: `[user_id, room_id?, data_type]`;
//! * `backfill`: `[event_id, room_id, type, state_key?, redacts?,
//!   relates_to?]`.
//!
//! Owns: those row shapes. May not touch: anything else.

use serde::Deserialize;
use serde_json::Value;

use super::{ACCOUNT_DATA, BACKFILL, CACHES, EVENTS};
use crate::source::rejected::truncated;

/// An `ev` row's data (values unused: only their types are checked).
type EventRow = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    bool,
    bool,
);
/// A `state` row's data.
type StateRow = (String, String, String, Option<String>);
/// A `state-all` row's data.
type AllStateRow = (String,);
/// A caches row.
type CachesRow = (String, Option<Vec<Value>>, i64);
/// An account-data row.
type AccountDataRow = (String, Option<String>, String);
/// A backfill row (values unused).
type BackfillRow = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// Why a row is not one of its stream's rows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RowError {
    #[error("the row is not valid JSON of the stream's row type")]
    Shape,
    #[error("the events stream has no row type {0:?}")]
    UnknownEventsRowType(String),
}

/// Checks `row` (an RDATA line's JSON) as a row of `stream`. Streams
/// roomcache does not follow are not checked (their lines move nothing).
pub(crate) fn check(stream: &str, row: &str) -> Result<(), RowError> {
    match stream {
        EVENTS => events_row(row),
        CACHES => parses::<CachesRow>(row),
        ACCOUNT_DATA => parses::<AccountDataRow>(row),
        BACKFILL => parses::<BackfillRow>(row),
        _ => Ok(()),
    }
}

fn parses<'row, T: Deserialize<'row>>(row: &'row str) -> Result<(), RowError> {
    serde_json::from_str::<T>(row)
        .map(drop)
        .map_err(|_| RowError::Shape)
}

/// `[type, data]`, the data typed by the row type.
fn events_row(row: &str) -> Result<(), RowError> {
    let (row_type, data): (String, Value) =
        serde_json::from_str(row).map_err(|_| RowError::Shape)?;
    let typed = match row_type.as_str() {
        "ev" => serde_json::from_value::<EventRow>(data).map(drop),
        "state" => serde_json::from_value::<StateRow>(data).map(drop),
        "state-all" => serde_json::from_value::<AllStateRow>(data).map(drop),
        _ => return Err(RowError::UnknownEventsRowType(truncated(&row_type))),
    };
    typed.map_err(|_| RowError::Shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synapse_s_own_rows_parse() {
        for (stream, row) in [
            (
                EVENTS,
                r#"["ev",["$a","!r:hs","m.room.create","",null,null,null,false,false]]"#,
            ),
            (
                EVENTS,
                r#"["ev",["$m","!r:hs","m.room.member","@u:hs",null,"$t","join",false,true]]"#,
            ),
            (EVENTS, r#"["state",["!r:hs","m.room.create","","$a"]]"#),
            (EVENTS, r#"["state",["!r:hs","m.room.name","",null]]"#),
            (EVENTS, r#"["state-all",["!r:hs"]]"#),
            (
                CACHES,
                r#"["did_forget", ["@bob:hs", "!r:hs"], 1795791238583]"#,
            ),
            (CACHES, r#"["get_rooms_for_user", null, 17]"#),
            (ACCOUNT_DATA, r#"["@u:hs", null, "m.direct"]"#),
            (ACCOUNT_DATA, r#"["@u:hs", "!r:hs", "m.tag"]"#),
            (
                BACKFILL,
                r#"["$e","!r:hs","m.room.message",null,null,null]"#,
            ),
            ("typing", "anything at all"),
        ] {
            assert_eq!(check(stream, row), Ok(()), "{stream} {row}");
        }
    }

    #[test]
    fn rows_synapse_would_drop_are_refused() {
        // The issue's line: its row type is no events-stream row type.
        assert_eq!(
            check(EVENTS, r#"["not", "a row"]"#),
            Err(RowError::UnknownEventsRowType("not".into()))
        );
        assert_eq!(check(EVENTS, r#"["ev", "a row"]"#), Err(RowError::Shape));
        for row in [
            "",
            "[]",
            "{}",
            "null",
            r#"["ev"]"#,
            r#"["ev",["$a","!r:hs","m.room.create","",null,null,null,false]]"#,
            r#"["ev",["$a","!r:hs","m.room.create","",null,null,null,false,false,1]]"#,
            r#"["ev",["$a","!r:hs","m.room.create","",null,null,null,"no",false]]"#,
            r#"["ev",[1,"!r:hs","m.room.create","",null,null,null,false,false]]"#,
            r#"["state",["!r:hs","m.room.create",null,"$a"]]"#,
            r#"["state-all",[]]"#,
            r#"["state",["!r:hs","m.room.create","","$a"]] trailing"#,
        ] {
            assert!(check(EVENTS, row).is_err(), "{row}");
        }
        for row in [
            r#"["did_forget", "@bob:hs", 17]"#,
            r#"["f", null, "17"]"#,
            "[1]",
        ] {
            assert_eq!(check(CACHES, row), Err(RowError::Shape), "{row}");
        }
        assert_eq!(
            check(ACCOUNT_DATA, r#"["@u:hs", 5, "m.direct"]"#),
            Err(RowError::Shape)
        );
        assert_eq!(
            check(BACKFILL, r#"["$e","!r:hs",null,null,null,null]"#),
            Err(RowError::Shape)
        );
        let long = format!(r#"["{}", []]"#, "\u{e9}".repeat(100));
        match check(EVENTS, &long) {
            Err(RowError::UnknownEventsRowType(shown)) => assert!(shown.len() <= 64),
            other => panic!("{other:?}"),
        }
    }
}
