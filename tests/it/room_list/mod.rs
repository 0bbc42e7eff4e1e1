//! Room lists over the socket (`POST /v1/users/{user_id}/room_list`): a
//! crafted dataset covering every filter, their combinations, range edge
//! cases, forgotten / self-left / kicked / banned / newly-left rooms and
//! unknown-state exclusions, with exact answers, before and after a restart.

mod dataset;

use crate::support::server::TestServer;
use serde_json::{json, Value};

use dataset::{dataset, event, expected_entries, room, Feed};

const ALICE: &str = "@alice:example.org";
const BOB: &str = "@bob:example.org";
const CAROL: &str = "@carol:remote";

/// The rooms alice's list holds without filters, in order.
const ALL_LISTED: [&str; 8] = [
    "plain", "dm", "banned", "kicked", "unknown", "invited", "space", "secret",
];

async fn room_list(server: &TestServer, user: &str, body: Value) -> Value {
    let answer = server
        .post(&format!("/v1/users/{user}/room_list"), &body)
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    answer.body
}

/// One list with one range covering everything: (count, room names in order).
async fn names(
    server: &TestServer,
    filters: Value,
    from_token: Option<&str>,
) -> (u64, Vec<String>) {
    let mut body = json!({"lists": {"l": {"ranges": [[0, 99]], "filters": filters}}});
    if let Some(token) = from_token {
        body["from_token"] = json!(token);
    }
    let answer = room_list(server, ALICE, body).await;
    let list = &answer["lists"]["l"];
    let rooms = list["ranges"][0]["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let id = e["room_id"].as_str().unwrap();
            id.trim_start_matches('!')
                .trim_end_matches(":example.org")
                .trim_end_matches(":remote")
                .to_owned()
        })
        .collect();
    (list["count"].as_u64().unwrap(), rooms)
}

fn list(names: &[&str]) -> (u64, Vec<String>) {
    (
        names.len() as u64,
        names.iter().map(|s| s.to_string()).collect(),
    )
}

/// Filters and the rooms each lists, in order (a range covering everything).
fn filter_cases() -> Vec<(Value, Vec<&'static str>)> {
    vec![
        (json!({"is_encrypted": true}), vec!["invited", "secret"]),
        (
            json!({"is_encrypted": false}),
            vec!["plain", "dm", "banned", "kicked", "space"],
        ),
        (json!({"is_invite": true}), vec!["unknown", "invited"]),
        (
            json!({"is_invite": false}),
            vec!["plain", "dm", "banned", "kicked", "space", "secret"],
        ),
        (
            json!({"room_types": [null]}),
            vec!["plain", "dm", "banned", "kicked", "invited", "secret"],
        ),
        (json!({"room_types": ["m.space"]}), vec!["space"]),
        (json!({"room_types": []}), vec![]),
        (json!({"room_types": ["never.seen"]}), vec![]),
        (
            json!({"not_room_types": ["m.space"]}),
            vec!["plain", "dm", "banned", "kicked", "invited", "secret"],
        ),
        (
            json!({"not_room_types": []}),
            vec![
                "plain", "dm", "banned", "kicked", "invited", "space", "secret",
            ],
        ),
        (
            json!({"room_types": [null, "m.space"], "not_room_types": ["m.space"]}),
            vec!["plain", "dm", "banned", "kicked", "invited", "secret"],
        ),
        (json!({"room_name_like": "TEA"}), vec!["plain", "space"]),
        (json!({"room_name_like": "remote"}), vec!["invited"]),
        (json!({"room_name_like": "zzz"}), vec![]),
        (json!({"spaces": [room("space")]}), vec!["plain", "invited"]),
        (json!({"spaces": [room("plain")]}), vec![]),
        (json!({"spaces": []}), vec![]),
        (json!({"is_dm": true}), vec!["dm"]),
        (
            json!({"is_dm": false}),
            vec![
                "plain", "banned", "kicked", "unknown", "invited", "space", "secret",
            ],
        ),
        (json!({"tags": ["u.work"]}), vec!["kicked", "space"]),
        (json!({"tags": []}), vec![]),
        (
            json!({"not_tags": ["m.lowpriority"]}),
            vec![
                "plain", "dm", "banned", "unknown", "invited", "space", "secret",
            ],
        ),
        (
            json!({"tags": ["u.work", "m.favourite"], "not_tags": ["m.lowpriority"]}),
            vec!["plain", "space"],
        ),
        (
            json!({"is_encrypted": false, "is_invite": false, "not_room_types": ["m.space"], "is_dm": false}),
            vec!["plain", "banned", "kicked"],
        ),
        (
            json!({"spaces": [room("space")], "room_name_like": "tea"}),
            vec!["plain"],
        ),
        (
            json!({"spaces": [room("space")], "is_invite": true, "is_encrypted": true}),
            vec!["invited"],
        ),
        (
            json!({"tags": ["u.work"], "room_types": ["m.space"]}),
            vec!["space"],
        ),
        (json!({"is_dm": null, "spaces": null}), ALL_LISTED.to_vec()),
    ]
}

async fn assert_filters(server: &TestServer, f: &Feed) {
    assert_eq!(names(server, json!({}), None).await, list(&ALL_LISTED));
    // Newly left: a self-leave after from_token is listed; at or before it, not.
    let before_leave = format!("s{}", f.pos("left.leave") - 1);
    let at_leave = format!("s{}", f.pos("left.leave"));
    assert_eq!(
        names(server, json!({}), Some(&before_leave)).await,
        list(&["plain", "dm", "left", "banned", "kicked", "unknown", "invited", "space", "secret"])
    );
    assert_eq!(
        names(server, json!({}), Some(&at_leave)).await,
        list(&ALL_LISTED)
    );
    // A multi-writer token: master's own position counts.
    let vector = format!("m1~master.{}", f.pos("left.leave"));
    assert_eq!(
        names(server, json!({}), Some(&vector)).await,
        list(&ALL_LISTED)
    );
    // Forgotten rooms stay out even when newly left.
    assert_eq!(names(server, json!({}), Some("s0")).await.0, 9);

    for (filters, expected) in filter_cases() {
        assert_eq!(
            names(server, filters.clone(), None).await,
            list(&expected),
            "filters {filters}"
        );
    }
}

async fn assert_ranges_and_entries(server: &TestServer, f: &Feed) {
    let entries = expected_entries(f);
    let answer = room_list(
        server,
        ALICE,
        json!({"lists": {
            "all": {"ranges": [[0, 2], [5, 100], [8, 9], [3, 1], [1, 1], [0, 1]]},
            "count_only": {"filters": {"is_invite": true}},
            "combined": {"ranges": [[0, 0], [1, 5], [2, 1], [10, 12], [0, 1]],
                         "filters": {"is_encrypted": false, "is_invite": false,
                                     "not_room_types": ["m.space"], "is_dm": false}}
        }}),
    )
    .await;
    let pick = |names: &[&str]| Value::Array(names.iter().map(|n| entries[n].clone()).collect());
    assert_eq!(
        answer["lists"]["all"],
        json!({"count": 8, "ranges": [
            {"range": [0, 2], "rooms": pick(&["plain", "dm", "banned"])},
            {"range": [5, 100], "rooms": pick(&["invited", "space", "secret"])},
            {"range": [8, 9], "rooms": []},
            {"range": [3, 1], "rooms": []},
            {"range": [1, 1], "rooms": pick(&["dm"])},
            {"range": [0, 1], "rooms": pick(&["plain", "dm"])},
        ]})
    );
    assert_eq!(
        answer["lists"]["count_only"],
        json!({"count": 2, "ranges": []})
    );
    assert_eq!(
        answer["lists"]["combined"],
        json!({"count": 3, "ranges": [
            {"range": [0, 0], "rooms": pick(&["plain"])},
            {"range": [1, 5], "rooms": pick(&["banned", "kicked"])},
            {"range": [2, 1], "rooms": []},
            {"range": [10, 12], "rooms": []},
            {"range": [0, 1], "rooms": pick(&["plain", "banned"])},
        ]})
    );
    assert_eq!(answer["token"], json!(format!("s{}", f.next - 1)));
    assert_eq!(answer["timed_out"], json!(false));
    // The newly-left entry, complete.
    let left = room_list(
        server,
        ALICE,
        json!({"from_token": "s0",
        "lists": {"l": {"ranges": [[2, 2]], "filters": {"room_name_like": "behind"}}}}),
    )
    .await;
    assert_eq!(
        left["lists"]["l"],
        json!({"count": 1, "ranges": [{"range": [2, 2], "rooms": []}]})
    );
    let left = room_list(
        server,
        ALICE,
        json!({"from_token": "s0",
        "lists": {"l": {"ranges": [[0, 0]], "filters": {"room_name_like": "behind"}}}}),
    )
    .await;
    assert_eq!(left["lists"]["l"]["ranges"][0]["rooms"], pick(&["left"]));
}

#[tokio::test]
async fn room_lists_filter_sort_and_range_exactly() {
    let mut server = TestServer::start().await;
    let (f, batches) = dataset();
    for batch in &batches {
        server.feed(batch).await;
    }
    assert_filters(&server, &f).await;
    assert_ranges_and_entries(&server, &f).await;
    // A user with no rooms has empty lists; bob sees his own rooms.
    let nobody = room_list(
        &server,
        "@nobody:example.org",
        json!({"lists": {"l": {"ranges": [[0, 5]]}}}),
    )
    .await;
    assert_eq!(
        nobody["lists"]["l"],
        json!({"count": 0, "ranges": [{"range": [0, 5], "rooms": []}]})
    );
    let bob = room_list(&server, BOB, json!({"lists": {"l": {"ranges": [[0, 9]]}}})).await;
    let bob_rooms: Vec<&str> = bob["lists"]["l"]["ranges"][0]["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["room_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        bob_rooms,
        [
            room("dm"),
            room("kickforgot"),
            room("banned"),
            room("kicked")
        ]
    );

    // Everything is durable: identical answers after a restart.
    server.restart().await;
    assert_filters(&server, &f).await;
    assert_ranges_and_entries(&server, &f).await;

    // A later message moves its room to the top; encryption of a joined
    // room shows at once (the joined row wins over the snapshot).
    let mut g = f.continuing();
    let encryption = event(
        "m.room.encryption",
        json!({"algorithm": "m.megolm.v1.aes-sha2"}),
    );
    g.state("plain.encryption", "plain", ALICE, encryption);
    g.message("space.message", "space", ALICE);
    server.feed(&g.batch()).await;
    assert_eq!(
        names(&server, json!({"is_encrypted": true}), None).await,
        list(&["plain", "invited", "secret"])
    );
    assert_eq!(
        names(&server, json!({}), None).await,
        list(&["space", "plain", "dm", "banned", "kicked", "unknown", "invited", "secret"])
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_room_list_requests_are_refused_with_4xx() {
    let server = TestServer::start().await;
    let path = format!("/v1/users/{ALICE}/room_list");
    let cases = [
        (
            json!({"lists": {"l": {"filters": {"is_favourite": true}}}}),
            "M_BAD_JSON",
        ),
        (
            json!({"lists": {"l": {"filters": {"is_dm": "yes"}}}}),
            "M_BAD_JSON",
        ),
        (json!({"lists": {"l": {"ranges": [[0, -1]]}}}), "M_BAD_JSON"),
        (json!({"lists": {"l": {"ranges": [[0]]}}}), "M_BAD_JSON"),
        (json!({"lists": {"l": {"timeline_limit": 5}}}), "M_BAD_JSON"),
        (
            json!({"lists": {"l": {"filters": {"spaces": ["not a room"]}}}}),
            "M_BAD_JSON",
        ),
        (json!({"lists": {}}), "M_INVALID_PARAM"),
        (
            json!({"lists": {"l": {}}, "from_token": "x1"}),
            "M_BAD_JSON",
        ),
        (json!({"lists": {"l": {}}, "unknown": 1}), "M_BAD_JSON"),
    ];
    for (body, errcode) in cases {
        server.post(&path, &body).await.assert_error(400, errcode);
    }
    server
        .post("/v1/users/alice/room_list", &json!({"lists": {"l": {}}}))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    server
        .post_raw(&path, "{not json")
        .await
        .assert_error(400, "M_NOT_JSON");
    // wait_for a position not reached yet: answers at the timeout, saying so.
    let answer = server
        .post(
            &path,
            &json!({"lists": {"l": {}}, "wait_for": "s5", "timeout_ms": 50}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["timed_out"], json!(true));
    assert_eq!(answer.body["lists"]["l"], json!({"count": 0, "ranges": []}));
}

/// `unaffected` with `reorder_only`: the caller vouches that the rooms
/// changed after `since` had no change of state; the cache answers at once
/// (before `wait_for`), setting alice's joined rooms among them apart as
/// unsettled and naming them in `other_rooms`. Without the vouch, or when
/// one of them is a room alice is not joined to, it waits.
#[tokio::test]
async fn an_early_answer_sets_rooms_that_only_moved_apart() {
    let server = TestServer::start().await;
    let (f, batches) = dataset();
    for batch in &batches {
        server.feed(batch).await;
    }
    let entries = expected_entries(&f);
    let pick = |names: &[&str]| Value::Array(names.iter().map(|n| entries[n].clone()).collect());
    let token = format!("s{}", f.next - 1);
    let ahead = format!("s{}", f.next + 100);
    let body = |rooms: &[&str], reorder_only: bool| {
        json!({
            "lists": {"l": {"ranges": [[0, 2]]}},
            "wait_for": ahead, "at": ahead, "timeout_ms": 300,
            "from_token": token, "other_rooms": "changed",
            "unaffected": {"since": token, "rooms": rooms.iter().map(|n| room(n)).collect::<Vec<_>>(),
                           "reorder_only": reorder_only},
        })
    };
    let early = room_list(&server, ALICE, body(&["plain", "elsewhere"], true)).await;
    assert_eq!(early["unaffected"], json!(true));
    assert_eq!(early["timed_out"], json!(false));
    assert_eq!(
        early["lists"]["l"],
        json!({"count": 8, "ranges": [],
               "settled": pick(&["dm", "banned", "kicked"]), "unsettled": pick(&["plain"])})
    );
    assert_eq!(early["other_rooms"], json!([room("plain")]));
    // No vouch, or a room alice is invited to: it waits for `wait_for`.
    for (rooms, reorder_only) in [
        (&["plain"][..], false),
        (&["plain", "invited:remote"][..], true),
    ] {
        let waited = room_list(&server, ALICE, body(rooms, reorder_only)).await;
        assert_eq!(waited["timed_out"], json!(true), "{rooms:?} {reorder_only}");
        assert_eq!(waited.get("unaffected"), None);
        assert_eq!(
            waited["lists"]["l"],
            json!({"count": 8, "ranges": [{"range": [0, 2], "rooms": pick(&["plain", "dm", "banned"])}]})
        );
    }
}

/// `entries: changed`: the rooms of the ranges and settled rooms whose
/// entry did not change after `from_token` come as `{"room_id", "recency"}`;
/// the others, and every unsettled room, whole. `changed_only` leaves those
/// out instead (the counts stay the whole list's). Both need a `from_token`.
#[tokio::test]
async fn entries_unchanged_since_from_token_come_short_or_not_at_all() {
    let server = TestServer::start().await;
    let (f, batches) = dataset();
    for batch in &batches {
        server.feed(batch).await;
    }
    let last = f.next - 1;
    // The whole answer's lists with each unchanged entry written short, or
    // left out.
    let unchanged_as = |lists: &Value, since: i64, left_out: bool| -> Value {
        let mut lists = lists.clone();
        let shorten = |entries: &mut Value| {
            let entries = entries.as_array_mut().unwrap();
            let mut kept = Vec::new();
            for entry in entries.drain(..) {
                let recency = entry["recency"].as_i64().unwrap();
                let position = entry["event_stream_ordering"].as_i64().unwrap();
                if recency > since || position > since {
                    kept.push(entry);
                } else if !left_out {
                    kept.push(json!({"room_id": entry["room_id"], "recency": recency}));
                }
            }
            *entries = kept;
        };
        for list in lists.as_object_mut().unwrap().values_mut() {
            for range in list["ranges"].as_array_mut().unwrap() {
                shorten(&mut range["rooms"]);
            }
            if let Some(settled) = list.get_mut("settled") {
                shorten(settled);
            }
        }
        lists
    };
    let mut left_out_rooms = 0;
    for since in [0, last / 2, last] {
        for at in [None, Some(last / 2 + 1)] {
            let mut body = json!({
                "lists": {"all": {"ranges": [[0, 99]]}, "top": {"ranges": [[0, 1], [4, 5]]}},
                "from_token": format!("s{since}"),
            });
            if let Some(at) = at {
                body["at"] = json!(format!("s{at}"));
            }
            let whole = room_list(&server, ALICE, body.clone()).await;
            body["entries"] = json!("changed");
            let answer = room_list(&server, ALICE, body.clone()).await;
            let short = unchanged_as(&whole["lists"], since, false);
            assert_eq!(answer["lists"], short, "since {since}, at {at:?}");
            if at.is_none() {
                let whole_entries = answer.to_string().contains("\"membership\"");
                assert_eq!(whole_entries, since < last, "since {since}");
            }
            body["entries"] = json!("changed_only");
            let answer = room_list(&server, ALICE, body).await;
            let only = unchanged_as(&whole["lists"], since, true);
            assert_eq!(
                answer["lists"], only,
                "changed_only since {since}, at {at:?}"
            );
            left_out_rooms += short.to_string().matches("\"room_id\"").count()
                - only.to_string().matches("\"room_id\"").count();
        }
    }
    assert!(left_out_rooms > 0, "some rooms were left out");
    for entries in ["changed", "changed_only"] {
        let refused = server
            .post(
                &format!("/v1/users/{ALICE}/room_list"),
                &json!({"lists": {"l": {"ranges": [[0, 9]]}}, "entries": entries}),
            )
            .await;
        assert_eq!(refused.status.as_u16(), 400, "{entries}");
        assert_eq!(refused.body["errcode"], "M_INVALID_PARAM");
    }
}
