//! Unit tests of the rules: column values, stripped state, refusals, and the
//! bounds and persistence of a room's memory; the held state in `held_state`.

mod held_state;

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::feed::FeedRow;
use crate::model::{EventId, Membership, RoomId, RowChange, UserId};

use super::metadata::{encrypted, metadata_from_stripped_state, text_column};
use super::state::{MAX_PENDING_REDACTIONS, MAX_REMEMBERED_RELEVANT_EVENTS};
use super::{apply_rows, HeldStateTypes, RoomOutcome, RoomState, RuleError, RulesContext};

#[test]
fn text_columns_follow_section_2_1() {
    assert_eq!(text_column(None), Some(None));
    assert_eq!(text_column(Some(&Value::Null)), Some(None));
    assert_eq!(text_column(Some(&json!("x"))), Some(Some("x".into())));
    assert_eq!(text_column(Some(&json!(""))), Some(Some("".into())));
    assert_eq!(text_column(Some(&json!("a\u{0}b"))), None);
    assert_eq!(text_column(Some(&json!(3))), None);
    assert_eq!(text_column(Some(&json!({"a": 1}))), None);
}

#[test]
fn any_non_null_algorithm_means_encrypted() {
    assert!(encrypted(Some(&json!(0))));
    assert!(encrypted(Some(&json!(false))));
    assert!(encrypted(Some(&json!({}))));
    assert!(!encrypted(Some(&Value::Null)));
    assert!(!encrypted(None));
}

#[test]
fn stripped_state_without_create_is_unknown_and_keeps_tombstone() {
    let update = metadata_from_stripped_state(Some(&json!([
        {"type": "m.room.name", "state_key": "", "sender": "@a:x", "content": {"name": "n"}}
    ])));
    assert_eq!(update.has_known_state, Some(false));
    assert_eq!(update.room_name, Some(None));
    assert_eq!(update.tombstone, None);
}

#[test]
fn stripped_state_ignores_malformed_entries_and_bad_values() {
    let update = metadata_from_stripped_state(Some(&json!([
        {"type": "m.room.create", "state_key": "", "sender": "@a:x", "content": {"type": 5}},
        {"type": "m.room.name", "state_key": "", "sender": "@a:x", "content": {"name": "a\u{0}"}},
        {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "x"}},
        "garbage"
    ])));
    assert_eq!(update.has_known_state, Some(true));
    assert_eq!(update.room_type, None);
    assert_eq!(update.room_name, None);
    assert_eq!(update.is_encrypted, Some(false));
    assert_eq!(update.tombstone, Some(None));
}

fn context() -> RulesContext {
    RulesContext {
        server_name: "hs".into(),
        writer: "master".into(),
        held_state: std::sync::Arc::new(HeldStateTypes::new(
            ["m.room.create".into(), "m.room.name".into()],
            ["m.space.child".into()],
            3,
        )),
    }
}

fn rows(value: Value) -> Vec<FeedRow> {
    serde_json::from_value(value).unwrap()
}

fn room() -> RoomId {
    RoomId::parse("!r:hs").unwrap()
}

fn event_row(
    stream_id: i64,
    id: &str,
    event_type: &str,
    state_key: Option<&str>,
    content: Value,
) -> Value {
    let mut event = json!({"event_id": id, "room_id": "!r:hs", "type": event_type,
        "sender": "@a:hs", "content": content});
    if let Some(key) = state_key {
        event["state_key"] = json!(key);
    }
    json!({"kind": "event", "stream_id": stream_id, "event": event})
}

fn state_row(stream_id: i64, event_type: &str, state_key: &str, id: Option<&str>) -> Value {
    json!({"kind": "state", "stream_id": stream_id, "room_id": "!r:hs",
           "type": event_type, "state_key": state_key, "event_id": id})
}

#[test]
fn a_state_row_whose_event_has_another_key_is_refused() {
    let result = apply_rows(
        &RoomState::default(),
        &room(),
        &rows(json!([
            event_row(1, "$c", "m.room.create", Some(""), json!({})),
            state_row(1, "m.room.name", "", Some("$c")),
        ])),
        &context(),
    );
    assert!(matches!(
        result,
        Err(RuleError::EventMismatch { stream_id: 1, .. })
    ));
}

#[test]
fn an_unknown_event_is_refused_not_guessed() {
    let result = apply_rows(
        &RoomState::default(),
        &room(),
        &rows(json!([state_row(
            4,
            "m.room.member",
            "@a:hs",
            Some("$nope")
        )])),
        &context(),
    );
    assert!(matches!(
        result,
        Err(RuleError::UnknownEvent { stream_id: 4, .. })
    ));
}

#[test]
fn remembered_relevant_events_are_bounded_and_keep_the_current_ones() {
    let mut feed = vec![
        event_row(1, "$c", "m.room.create", Some(""), json!({})),
        state_row(1, "m.room.create", "", Some("$c")),
        event_row(
            2,
            "$j",
            "m.room.member",
            Some("@a:hs"),
            json!({"membership": "join"}),
        ),
        state_row(2, "m.room.member", "@a:hs", Some("$j")),
    ];
    for n in 0..40 {
        let id = format!("$n{n}");
        feed.push(event_row(
            10 + n,
            &id,
            "m.room.name",
            Some(""),
            json!({"name": n}),
        ));
        feed.push(state_row(10 + n, "m.room.name", "", Some(&id)));
    }
    let outcome = apply_rows(
        &RoomState::default(),
        &room(),
        &rows(json!(feed)),
        &context(),
    )
    .unwrap();
    let memory = &outcome.state.memory;
    let known: BTreeSet<&str> = memory
        .known_relevant_events
        .keys()
        .map(EventId::as_str)
        .collect();
    assert!(known.contains("$c") && known.contains("$n39"), "{known:?}");
    assert!(
        !known.contains("$n22") && known.contains("$n23"),
        "{known:?}"
    );
    assert_eq!(known.len(), MAX_REMEMBERED_RELEVANT_EVENTS + 2);
}

#[test]
fn pending_redactions_are_bounded_and_apply_to_a_later_target() {
    let mut feed = vec![event_row(
        1,
        "$x",
        "m.room.redaction",
        None,
        json!({"redacts": "$late"}),
    )];
    for n in 0..30 {
        feed.push(event_row(
            2 + n,
            &format!("$r{n}"),
            "m.room.redaction",
            None,
            json!({"redacts": format!("$m{n}")}),
        ));
    }
    let outcome = apply_rows(
        &RoomState::default(),
        &room(),
        &rows(json!(feed)),
        &context(),
    )
    .unwrap();
    assert_eq!(
        outcome.state.memory.pending_redactions.len(),
        MAX_PENDING_REDACTIONS
    );
    assert_eq!(
        outcome.state.memory.pending_redactions[MAX_PENDING_REDACTIONS - 1].as_str(),
        "$m29"
    );

    let early = vec![
        event_row(
            1,
            "$x",
            "m.room.redaction",
            None,
            json!({"redacts": "$late"}),
        ),
        event_row(
            2,
            "$late",
            "m.room.name",
            Some(""),
            json!({"name": "secret"}),
        ),
    ];
    let outcome = apply_rows(
        &RoomState::default(),
        &room(),
        &rows(json!(early)),
        &context(),
    )
    .unwrap();
    let (_, remembered) =
        &outcome.state.memory.known_relevant_events[&EventId::parse("$late").unwrap()];
    assert_eq!(remembered.value, None);
    assert!(outcome.state.memory.pending_redactions.is_empty());
}

#[test]
fn messages_do_not_rewrite_the_stored_memory_and_loading_restores_it() {
    let created = apply_rows(
        &RoomState::default(),
        &room(),
        &rows(json!([
            event_row(1, "$c", "m.room.create", Some(""), json!({})),
            state_row(1, "m.room.create", "", Some("$c")),
            event_row(
                2,
                "$j",
                "m.room.member",
                Some("@a:hs"),
                json!({"membership": "join"})
            ),
            state_row(2, "m.room.member", "@a:hs", Some("$j")),
        ])),
        &context(),
    )
    .unwrap();
    assert!(created.memory_changed);
    assert!(created.state.memory.counters_follow_joined_row);
    let stored = serde_json::to_value(&created.state.memory).unwrap();

    let message = apply_rows(
        &created.state,
        &room(),
        &rows(json!([event_row(
            3,
            "$m",
            "m.room.message",
            None,
            json!({"body": "x"})
        )])),
        &context(),
    )
    .unwrap();
    assert!(!message.memory_changed, "a message moves only the counters");
    assert_eq!(message.state.memory.max_stream_ordering, Some(3));
    assert_eq!(message.state.memory.latest_bump_stamp, Some(3));

    // A restart loads the memory stored before the message, and the row after it.
    let mut reloaded = RoomState {
        joined: message.state.joined.clone(),
        snapshots: message.state.snapshots.clone(),
        memory: serde_json::from_value(stored).unwrap(),
        current_state: message.state.current_state.clone(),
        latest_events: message.state.latest_events.clone(),
    };
    assert_eq!(reloaded.memory.max_stream_ordering, Some(2));
    reloaded.restore_counters();
    assert_eq!(reloaded, message.state);

    // An outlier bump moves the joined row but not the latest non-outlier
    // bump: the counters no longer follow, so the memory is written.
    let outlier = apply_rows(
        &message.state,
        &room(),
        &rows(
            json!([{"kind": "event", "stream_id": 4, "outlier": true, "event": {
            "event_id": "$o", "room_id": "!r:hs", "type": "m.room.message",
            "sender": "@a:hs", "content": {}}}]),
        ),
        &context(),
    )
    .unwrap();
    assert!(outlier.memory_changed);
    assert!(!outlier.state.memory.counters_follow_joined_row);
    assert_eq!(outlier.state.memory.latest_bump_stamp, Some(3));
    assert_eq!(outlier.state.joined.as_ref().unwrap().bump_stamp, Some(4));
}

#[test]
fn the_last_local_leave_deletes_the_joined_row_and_empties_state() {
    let created = apply_rows(
        &RoomState::default(),
        &room(),
        &rows(json!([
            event_row(1, "$c", "m.room.create", Some(""), json!({})),
            state_row(1, "m.room.create", "", Some("$c")),
            event_row(
                2,
                "$j",
                "m.room.member",
                Some("@a:hs"),
                json!({"membership": "join"})
            ),
            state_row(2, "m.room.member", "@a:hs", Some("$j")),
            event_row(
                3,
                "$rj",
                "m.room.member",
                Some("@b:remote"),
                json!({"membership": "join"})
            ),
            state_row(3, "m.room.member", "@b:remote", Some("$rj")),
        ])),
        &context(),
    )
    .unwrap();
    assert!(created.state.joined.is_some());
    let left = apply_rows(
        &created.state,
        &room(),
        &rows(json!([
            event_row(
                4,
                "$l",
                "m.room.member",
                Some("@a:hs"),
                json!({"membership": "leave"})
            ),
            state_row(4, "m.room.member", "@a:hs", Some("$l")),
        ])),
        &context(),
    )
    .unwrap();
    assert_eq!(left.state.joined, None);
    assert!(left.state.memory.relevant_state.is_empty());
    assert_eq!(left.changes[0], RowChange::DeleteJoinedRoom(room()));
    let snapshot = &left.state.snapshots[&UserId::parse("@a:hs").unwrap()];
    assert_eq!(
        (snapshot.membership, snapshot.has_known_state),
        (Membership::Leave, true)
    );
}

#[test]
fn space_children_follow_via_redaction_and_removal() {
    let children = |outcome: &RoomOutcome| -> Option<Vec<String>> {
        outcome.changes.iter().find_map(|c| match c {
            RowChange::SpaceChildren { children, .. } => {
                Some(children.iter().map(|r| r.to_string()).collect())
            }
            _ => None,
        })
    };
    let first = apply_rows(
        &RoomState::default(),
        &room(),
        &rows(json!([
            event_row(
                1,
                "$a",
                "m.space.child",
                Some("!a:hs"),
                json!({"via": ["hs"]})
            ),
            state_row(1, "m.space.child", "!a:hs", Some("$a")),
            event_row(2, "$b", "m.space.child", Some("!b:hs"), json!({"via": []})),
            state_row(2, "m.space.child", "!b:hs", Some("$b")),
            event_row(
                3,
                "$c",
                "m.space.child",
                Some("!c:hs"),
                json!({"via": ["x"]})
            ),
            state_row(3, "m.space.child", "!c:hs", Some("$c")),
            event_row(
                4,
                "$d",
                "m.space.child",
                Some("not a room"),
                json!({"via": ["x"]})
            ),
            state_row(4, "m.space.child", "not a room", Some("$d")),
        ])),
        &context(),
    )
    .unwrap();
    assert_eq!(children(&first), Some(vec!["!a:hs".into(), "!c:hs".into()]));
    // A room computed from its whole history (import, recalculation) has
    // the same children row as the live path gave.
    let space_rows = |changes: &[RowChange]| -> Vec<RowChange> {
        changes
            .iter()
            .filter(|c| matches!(c, RowChange::SpaceChildren { .. }))
            .cloned()
            .collect()
    };
    let (from_nothing, memory) = first.state.clone().rows_from_nothing(&room());
    assert_eq!(space_rows(&from_nothing), space_rows(&first.changes));
    assert_eq!(memory.as_ref(), Some(&first.state.memory));
    // A redaction of a child event removes it; a removed key too.
    let second = apply_rows(
        &first.state,
        &room(),
        &rows(json!([
            event_row(5, "$r", "m.room.redaction", None, json!({"redacts": "$a"})),
            state_row(6, "m.space.child", "!c:hs", None),
        ])),
        &context(),
    )
    .unwrap();
    assert_eq!(children(&second), Some(vec![]));
    // Without children, a room computed from nothing has no children row.
    let (from_nothing, _) = second.state.clone().rows_from_nothing(&room());
    assert_eq!(space_rows(&from_nothing), vec![]);
    // Unchanged children emit nothing.
    let third = apply_rows(
        &second.state,
        &room(),
        &rows(json!([event_row(
            7,
            "$m",
            "m.room.message",
            None,
            json!({})
        )])),
        &context(),
    )
    .unwrap();
    assert_eq!(children(&third), None);
}
