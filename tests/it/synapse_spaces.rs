//! The `spaces` filter against a real Synapse database (the `small`
//! fixture: 18 children with a non-empty `via` in 7 spaces, whose local
//! users are joined to, invited to, knocking on or have left them): however
//! roomcache's rows came to be — the import, following from position 0, a
//! restart after a space's children changed while it was down (the start-up
//! invalidation, the reads' fallback while the space is queued, the
//! recalculation), a restart from stored rows — every user's `spaces` lists
//! are exactly MSC4186's rule computed from Synapse's current state: the
//! children (`m.space.child` with a non-empty `via`) of the listed spaces
//! the user is joined to, among the user's rooms.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::support::server::TestServer;
use crate::support::synapse::{
    persist_event, source_event, source_options, spawn_holding_recalculation, wait_for_position,
    SynapseDatabase, FIXTURE_POSITION,
};

/// What Synapse's current state says about spaces.
struct SourceSpaces {
    /// Every room with an `m.space.child` state event (whatever its `via`).
    spaces: BTreeSet<String>,
    /// Each space's children: state keys of `m.space.child` events whose
    /// `content.via` is a non-empty array (and which are not redacted).
    children: BTreeMap<String, BTreeSet<String>>,
    /// The rooms each local user is joined to.
    joined: BTreeMap<String, BTreeSet<String>>,
    users: Vec<String>,
}

impl SourceSpaces {
    async fn read(synapse: &SynapseDatabase) -> SourceSpaces {
        let client = synapse.client().await;
        let spaces = pairs(
            &client,
            "SELECT room_id, state_key FROM current_state_events WHERE type = 'm.space.child'",
        )
        .await;
        let children = pairs(
            &client,
            "SELECT c.room_id, c.state_key FROM current_state_events c
             JOIN event_json j USING (event_id)
             WHERE c.type = 'm.space.child'
               AND jsonb_typeof(j.json::jsonb -> 'content' -> 'via') = 'array'
               AND jsonb_array_length(j.json::jsonb -> 'content' -> 'via') > 0
               AND NOT EXISTS (SELECT 1 FROM redactions r WHERE r.redacts = c.event_id)",
        )
        .await;
        let joined = pairs(
            &client,
            "SELECT user_id, room_id FROM local_current_membership WHERE membership = 'join'",
        )
        .await;
        let users = client
            .query("SELECT name FROM users ORDER BY name", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let group = |pairs: Vec<(String, String)>| {
            let mut grouped: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for (key, value) in pairs {
                grouped.entry(key).or_default().insert(value);
            }
            grouped
        };
        SourceSpaces {
            spaces: spaces.into_iter().map(|(space, _)| space).collect(),
            children: group(children),
            joined: group(joined),
            users,
        }
    }

    /// MSC4186: the children of those of `spaces` that `user` is joined to.
    fn expected_children(&self, user: &str, spaces: &[&String]) -> BTreeSet<String> {
        let joined = self.joined.get(user);
        spaces
            .iter()
            .filter(|space| joined.is_some_and(|j| j.contains(**space)))
            .flat_map(|space| self.children.get(*space).into_iter().flatten())
            .cloned()
            .collect()
    }
}

/// The rows of a query of two text columns.
async fn pairs(client: &tokio_postgres::Client, sql: &str) -> Vec<(String, String)> {
    let rows = client.query(sql, &[]).await.unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// The room IDs of a list of a room-list answer (its one range).
fn listed(answer: &Value, list: &str) -> BTreeSet<String> {
    answer["lists"][list]["ranges"][0]["rooms"]
        .as_array()
        .map(|rooms| {
            rooms
                .iter()
                .filter_map(|r| r["room_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// What one check saw: lists that did not follow the rule, lists that were
/// not empty, and answers that came from the reads' fallback.
#[derive(Debug, Default)]
struct Checked {
    wrong: Vec<String>,
    non_empty: usize,
    fallback_users: BTreeSet<String>,
}

/// Asks every user's lists filtering on each space alone and on all of them
/// at once (OR), beside the unfiltered list, and compares each with the
/// unfiltered list's rooms among the MSC's children.
async fn check_every_user(server: &TestServer, source: &SourceSpaces) -> Checked {
    let spaces: Vec<&String> = source.spaces.iter().collect();
    let list = |filters: Value| json!({"ranges": [[0, 999]], "filters": filters});
    let mut lists = serde_json::Map::new();
    lists.insert("all".into(), json!({"ranges": [[0, 999]]}));
    lists.insert("every".into(), list(json!({"spaces": spaces})));
    for (i, space) in spaces.iter().enumerate() {
        lists.insert(format!("space{i}"), list(json!({"spaces": [space]})));
    }
    let request = json!({ "lists": lists });
    let mut checked = Checked::default();
    for user in &source.users {
        let answer = server
            .post(&format!("/v1/users/{user}/room_list"), &request)
            .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        if answer.body["fallback"] == json!(true) {
            checked.fallback_users.insert(user.clone());
        }
        let all = listed(&answer.body, "all");
        let mut compare = |name: &str, asked: &[&String]| {
            let expected: BTreeSet<String> = source
                .expected_children(user, asked)
                .intersection(&all)
                .cloned()
                .collect();
            let ours = listed(&answer.body, name);
            let count = answer.body["lists"][name]["count"].as_u64();
            if ours != expected || count != Some(expected.len() as u64) {
                checked.wrong.push(format!(
                    "{user} spaces {asked:?}: ours {ours:?} (count {count:?}), expected {expected:?}"
                ));
            }
            checked.non_empty += usize::from(!expected.is_empty());
        };
        compare("every", &spaces);
        for (i, space) in spaces.iter().enumerate() {
            compare(&format!("space{i}"), &[space]);
        }
    }
    checked
}

/// Every user's lists follow the rule; `what` names the path.
async fn assert_every_user(server: &TestServer, source: &SourceSpaces, what: &str) -> Checked {
    let checked = check_every_user(server, source).await;
    assert!(
        checked.wrong.is_empty(),
        "{what}: {} lists differ from MSC4186's rule over Synapse's current state:\n{}",
        checked.wrong.len(),
        checked.wrong.join("\n")
    );
    checked
}

/// The fixture's lists that the rule makes non-empty (so an empty answer
/// cannot pass): every user, each space alone and all at once.
const FIXTURE_NON_EMPTY_LISTS: usize = 7;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_answers_spaces_lists_by_the_msc_rule_also_after_restarts() {
    let synapse = SynapseDatabase::load("small.sql.gz").await;
    let source = SourceSpaces::read(&synapse).await;
    assert_eq!(
        (
            source.spaces.len(),
            source.children.values().map(BTreeSet::len).sum::<usize>()
        ),
        (7, 18)
    );
    let mut server =
        TestServer::start_with(source_options(&synapse).import_on_start(true).build()).await;
    wait_for_position(&server, FIXTURE_POSITION).await;
    let checked = assert_every_user(&server, &source, "after the import").await;
    assert_eq!(checked.non_empty, FIXTURE_NON_EMPTY_LISTS);

    // Restarted from its stored rows: the same answers.
    server.restart().await;
    wait_for_position(&server, FIXTURE_POSITION).await;
    assert_every_user(&server, &source, "restarted after the import").await;

    // A schema imported before the import wrote space children (the table
    // empty, the rules' memory holding them) is repaired by its migration
    // (and the later ones run again: each may).
    server.stop().await;
    let client = server.store().await.client().await.unwrap();
    client
        .batch_execute(
            "DELETE FROM space_children;
             DELETE FROM roomcache_migrations WHERE version >= 4;",
        )
        .await
        .unwrap();
    drop(client);
    server.spawn().await;
    wait_for_position(&server, FIXTURE_POSITION).await;
    assert_every_user(&server, &source, "after the repair").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_from_zero_answers_spaces_lists_by_the_msc_rule() {
    let synapse = SynapseDatabase::load("small.sql.gz").await;
    let source = SourceSpaces::read(&synapse).await;
    let mut server = TestServer::start_with(source_options(&synapse).build()).await;
    wait_for_position(&server, FIXTURE_POSITION).await;
    let checked = assert_every_user(&server, &source, "following from 0").await;
    assert_eq!(checked.non_empty, FIXTURE_NON_EMPTY_LISTS);
    server.stop().await;
}

/// A (space, room, user) of the fixture: the user is joined to both.
async fn joined_space_and_room(
    synapse: &SynapseDatabase,
    room_is_child: bool,
) -> (String, String, String) {
    let client = synapse.client().await;
    let child = if room_is_child { "" } else { "NOT" };
    let row = client
        .query_one(
            &format!(
                "SELECT s.room_id, m.room_id, s.user_id FROM local_current_membership s
                 JOIN local_current_membership m
                   ON m.user_id = s.user_id AND m.membership = 'join' AND m.room_id <> s.room_id
                 WHERE s.membership = 'join'
                   AND s.room_id IN (SELECT room_id FROM current_state_events
                                     WHERE type = 'm.space.child')
                   AND {child} EXISTS (SELECT 1 FROM current_state_events c
                                       WHERE c.room_id = s.room_id AND c.type = 'm.space.child'
                                         AND c.state_key = m.room_id)
                 ORDER BY 1, 2, 3 LIMIT 1"
            ),
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_changed_while_down_are_answered_by_the_rule_after_a_restart() {
    let synapse = SynapseDatabase::load("small.sql.gz").await;
    let mut server =
        TestServer::start_with(source_options(&synapse).import_on_start(true).build()).await;
    wait_for_position(&server, FIXTURE_POSITION).await;
    server.stop().await;

    // While roomcache is down: in a space, a child a joined member is in
    // is removed (its `via` emptied); in another, a room a joined member is
    // in becomes a child, and another is named with an empty `via`.
    let (space, removed, member) = joined_space_and_room(&synapse, true).await;
    let (other_space, added, other_member) = joined_space_and_room(&synapse, false).await;
    let before = SourceSpaces::read(&synapse).await;
    let client = synapse.client().await;
    let remove = source_event(&space, &member, "m.space.child")
        .state_key(&removed)
        .content(json!({"via": []}));
    persist_event(&client, 3030, remove).await;
    let add = source_event(&other_space, &other_member, "m.space.child")
        .state_key(&added)
        .content(json!({"via": ["oracle.test"]}));
    persist_event(&client, 3031, add).await;
    let no_via = source_event(&other_space, &other_member, "m.space.child")
        .state_key(&removed)
        .content(json!({"via": []}));
    persist_event(&client, 3032, no_via).await;
    let source = SourceSpaces::read(&synapse).await;
    let is_child = |spaces: &SourceSpaces, space: &String, room: &String| {
        spaces.children.get(space).is_some_and(|c| c.contains(room))
    };
    assert!(is_child(&before, &space, &removed) && !is_child(&source, &space, &removed));
    assert!(!is_child(&before, &other_space, &added) && is_child(&source, &other_space, &added));
    assert!(!is_child(&source, &other_space, &removed));

    // Restarted with the recalculation held back: the changed spaces are
    // queued and their members' lists come from the reads' fallback.
    let status = spawn_holding_recalculation(&mut server).await;
    let changed = BTreeSet::from([&space, &other_space]).len();
    assert_eq!(
        status["source"]["invalidated_at_start"], changed,
        "{status}"
    );
    let checked = assert_every_user(&server, &source, "while queued (fallback)").await;
    assert!(
        checked.fallback_users.contains(&member) && checked.fallback_users.contains(&other_member),
        "{checked:?}"
    );

    // Then recalculated: the same answers from the cache.
    server.restart().await;
    wait_for_position(&server, 3032).await;
    let checked = assert_every_user(&server, &source, "after the recalculation").await;
    assert!(checked.fallback_users.is_empty(), "{checked:?}");
    server.restart().await;
    wait_for_position(&server, 3032).await;
    assert_every_user(&server, &source, "restarted after the recalculation").await;
    server.stop().await;
}
