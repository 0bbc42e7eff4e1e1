//! Well-formed batches with hostile contents, through the real parser,
//! rules and store (issue 12, item 9): relevant state values, stripped
//! state, message contents and account data that are NUL-laden, huge,
//! oddly typed or deeply nested. Every batch is answered 200 or a
//! documented 4xx (never 5xx), a refused batch changes nothing, Postgres
//! and the served rows agree after every batch, and a restart loads what
//! was stored.

use proptest::prelude::*;
use serde_json::{json, Value};

use crate::support::server::TestServer;

/// A hostile JSON value for a content field.
fn hostile_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[\\x00-\\x7f]{0,12}".prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
        (60_000usize..70_000).prop_map(|n| Value::from("n".repeat(n))),
        Just(Value::from("a\u{0}b")),
        Just(Value::from("\u{0}")),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[\\x00-\\x7f]{0,4}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One step of a stream: what kind of batch, on which of three rooms.
#[derive(Debug, Clone)]
enum Step {
    Create(Value),
    Join,
    Relevant(&'static str, &'static str, Value),
    Topic(Value),
    Message(Value),
    RemoteInvite(Value, Value),
    AccountData(&'static str, Value),
}

fn step() -> impl Strategy<Value = (usize, Step)> {
    let relevant = prop_oneof![
        Just(("m.room.name", "name")),
        Just(("m.room.tombstone", "replacement_room")),
        Just(("m.room.encryption", "algorithm")),
    ];
    let step = prop_oneof![
        hostile_value().prop_map(Step::Create),
        Just(Step::Join),
        (relevant, hostile_value()).prop_map(|((t, f), v)| Step::Relevant(t, f, v)),
        hostile_value().prop_map(Step::Topic),
        hostile_value().prop_map(Step::Message),
        (hostile_value(), hostile_value()).prop_map(|(a, b)| Step::RemoteInvite(a, b)),
        (
            prop_oneof![Just("m.direct"), Just("m.tag")],
            hostile_value()
        )
            .prop_map(|(t, v)| Step::AccountData(t, v)),
    ];
    (0usize..3, step)
}

/// The rows of a step at stream id `at`.
fn rows_of(room: usize, step: &Step, at: i64) -> Vec<Value> {
    let room = format!("!h{room}:example.org");
    let alice = "@alice:example.org";
    let event = |event_type: &str, state_key: Option<&str>, content: Value| {
        let mut event = json!({"event_id": format!("$e{at}"), "room_id": room,
            "type": event_type, "sender": alice, "content": content});
        if let Some(key) = state_key {
            event["state_key"] = json!(key);
        }
        event
    };
    let state = |event_type: &str, key: &str| {
        json!({"kind": "state", "stream_id": at, "room_id": room, "type": event_type,
            "state_key": key, "event_id": format!("$e{at}")})
    };
    let with_state = |event_type: &str, key: &str, content: Value| {
        vec![
            json!({"kind": "event", "stream_id": at, "event": event(event_type, Some(key), content)}),
            state(event_type, key),
        ]
    };
    match step {
        Step::Create(v) => with_state("m.room.create", "", json!({"type": v})),
        Step::Join => with_state("m.room.member", alice, json!({"membership": "join"})),
        Step::Relevant(t, f, v) => with_state(t, "", json!({ *f: v })),
        Step::Topic(v) => with_state("m.room.topic", "", json!({"topic": v})),
        Step::Message(v) => vec![json!({"kind": "event", "stream_id": at,
            "event": event("m.room.message", None, json!({"body": v, "x": v}))})],
        Step::RemoteInvite(name, room_type) => {
            let stripped = json!([
                {"type": "m.room.create", "state_key": "", "sender": "@x:remote", "content": {"type": room_type}},
                {"type": "m.room.name", "state_key": "", "sender": "@x:remote", "content": {"name": name}}
            ]);
            let mut invite = event(
                "m.room.member",
                Some("@bob:example.org"),
                json!({"membership": "invite"}),
            );
            invite["sender"] = json!("@x:remote");
            invite["unsigned"] = json!({"invite_room_state": stripped});
            vec![json!({"kind": "event", "stream_id": at, "event": invite,
                "outlier": true, "out_of_band_membership": true})]
        }
        Step::AccountData(data_type, v) => {
            let content = if *data_type == "m.direct" {
                json!({alice: [room, v]})
            } else {
                json!({"tags": {"u.x": v}})
            };
            let mut row = json!({"kind": "account_data", "stream_id": at, "user_id": alice,
                "type": data_type, "content": content});
            if *data_type == "m.tag" {
                row["room_id"] = json!(room);
            }
            vec![row]
        }
    }
}

/// Errcodes a hostile but well-formed batch may get.
const DOCUMENTED_REFUSALS: &[&str] = &[
    "M_INVALID_PARAM",
    "M_BAD_JSON",
    "M_TOO_LARGE",
    "ROOMCACHE_UNKNOWN_EVENT",
    "ROOMCACHE_REJECTED_CONTENT",
];

async fn hostile_case(steps: Vec<(usize, Step)>) {
    let mut server = TestServer::start().await;
    let mut position = 0i64;
    for (index, (room, step)) in steps.iter().enumerate() {
        let at = 2 + index as i64;
        let batch = json!({"writer": "master", "rows": rows_of(*room, step, at)});
        let answer = server.post("/v1/feed", &batch).await;
        let status = answer.status.as_u16();
        assert!(
            status == 200 || (400..500).contains(&status),
            "step {index} {step:?}: {status} {}\n{}",
            answer.text,
            server.log()
        );
        if status == 200 {
            position = at;
            assert_eq!(answer.body["position"], at, "{}", answer.text);
        } else {
            let errcode = answer.body["errcode"].as_str().unwrap_or_default();
            assert!(
                DOCUMENTED_REFUSALS.contains(&errcode),
                "step {index}: undocumented refusal {}",
                answer.text
            );
        }
        let positions = server.get("/v1/positions").await;
        assert_eq!(positions.body["positions"]["master"], position);
    }
    server.assert_postgres_matches_served().await;
    server.restart().await;
    server.assert_postgres_matches_served().await;
    server.stop().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn hostile_contents_are_answered_as_documented(steps in prop::collection::vec(step(), 1..14)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(hostile_case(steps));
    }
}
