//! Unit tests of a room's held current state (the rooms' data) as the
//! rules keep it: state rows, resets, the bound, the server leaving, and the
//! rows of a room computed from nothing.

use serde_json::json;

use super::{context, event_row, room, rows, state_row};
use crate::model::RowChange;
use crate::rules::{apply_rows, RoomOutcome, RoomState};

/// The held keys of an outcome, as (type, state key, event ID).
fn held(outcome: &RoomOutcome) -> Option<Vec<(String, String, String)>> {
    outcome.state.current_state.keys().map(|keys| {
        keys.iter()
            .map(|((t, k), e)| (t.clone(), k.clone(), e.as_str().to_owned()))
            .collect()
    })
}

fn held_row_changes(outcome: &RoomOutcome) -> usize {
    outcome
        .changes
        .iter()
        .filter(|c| matches!(c, RowChange::CurrentState { .. }))
        .count()
}

#[test]
fn held_state_follows_state_rows_resets_and_the_server_leaving() {
    let member = |stream, id, membership| {
        event_row(
            stream,
            id,
            "m.room.member",
            Some("@a:hs"),
            json!({"membership": membership}),
        )
    };
    let created = apply_rows(
        &RoomState::default(),
        &room(),
        &rows(json!([
            event_row(1, "$c", "m.room.create", Some(""), json!({})),
            state_row(1, "m.room.create", "", Some("$c")),
            member(2, "$j", "join"),
            state_row(2, "m.room.member", "@a:hs", Some("$j")),
            event_row(3, "$n1", "m.room.name", Some(""), json!({"name": "one"})),
            state_row(3, "m.room.name", "", Some("$n1")),
            event_row(4, "$n2", "m.room.name", Some(""), json!({"name": "two"})),
            state_row(4, "m.room.name", "", Some("$n2")),
            event_row(
                5,
                "$t",
                "m.room.topic",
                Some(""),
                json!({"topic": "not held"})
            ),
            state_row(5, "m.room.topic", "", Some("$t")),
        ])),
        &context(),
    )
    .unwrap();
    let pairs = |list: &[(&str, &str, &str)]| -> Option<Vec<(String, String, String)>> {
        Some(
            list.iter()
                .map(|(t, k, e)| ((*t).into(), (*k).into(), (*e).into()))
                .collect(),
        )
    };
    assert_eq!(
        held(&created),
        pairs(&[("m.room.create", "", "$c"), ("m.room.name", "", "$n2")])
    );
    assert_eq!(
        held_row_changes(&created),
        1,
        "one row per batch: the last value"
    );
    // A message changes nothing held: no row.
    let message = apply_rows(
        &created.state,
        &room(),
        &rows(json!([event_row(
            6,
            "$m",
            "m.room.message",
            None,
            json!({})
        )])),
        &context(),
    )
    .unwrap();
    assert_eq!(held_row_changes(&message), 0);
    // A state reset back to the first name, a space child added.
    let reset = apply_rows(
        &message.state,
        &room(),
        &rows(json!([
            state_row(7, "m.room.name", "", Some("$n1")),
            event_row(
                8,
                "$sc",
                "m.space.child",
                Some("!c:hs"),
                json!({"via": ["hs"]})
            ),
            state_row(8, "m.space.child", "!c:hs", Some("$sc")),
        ])),
        &context(),
    )
    .unwrap();
    assert_eq!(
        held(&reset),
        pairs(&[
            ("m.room.create", "", "$c"),
            ("m.room.name", "", "$n1"),
            ("m.space.child", "!c:hs", "$sc")
        ])
    );
    // A fourth key goes over the bound (3): unknown, stored as such.
    let over = apply_rows(
        &reset.state,
        &room(),
        &rows(json!([
            event_row(
                9,
                "$sd",
                "m.space.child",
                Some("!d:hs"),
                json!({"via": ["hs"]})
            ),
            state_row(9, "m.space.child", "!d:hs", Some("$sd")),
        ])),
        &context(),
    )
    .unwrap();
    assert_eq!(held(&over), None);
    assert_eq!(held_row_changes(&over), 1);
    // The only local member leaves: the server left, the state is empty (known again).
    let left = apply_rows(
        &over.state,
        &room(),
        &rows(json!([
            member(10, "$l", "leave"),
            state_row(10, "m.room.member", "@a:hs", Some("$l"))
        ])),
        &context(),
    )
    .unwrap();
    assert_eq!(held(&left), Some(Vec::new()));
    assert_eq!(held_row_changes(&left), 1);
    // Computed from nothing, the room's rows include its held state.
    let (changes, _) = reset.state.clone().rows_from_nothing(&room());
    assert_eq!(
        changes
            .iter()
            .filter(|c| matches!(c, RowChange::CurrentState { .. }))
            .count(),
        1
    );
    let (changes, _) = left.state.clone().rows_from_nothing(&room());
    assert!(!changes
        .iter()
        .any(|c| matches!(c, RowChange::CurrentState { .. })));
}
