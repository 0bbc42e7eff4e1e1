//! The held window against Synapse's query run on every event of a room.

use std::collections::BTreeMap;

use proptest::prelude::*;
use roomcache_core::{StreamToken, WriterName};

use super::*;

fn event(n: i64, topological_ordering: i64, instance: &str, rejected: bool) -> TimelineEvent {
    TimelineEvent {
        event_id: EventId::parse(&format!("$e{n}")).expect("event id"),
        topological_ordering,
        stream_ordering: n,
        instance_name: instance.into(),
        rejected,
    }
}

/// Synapse's query on all of a room's events (none an outlier).
fn synapse(all: &[TimelineEvent], limit: usize, token: &StreamToken) -> InitialTimeline {
    let mut selected: Vec<&TimelineEvent> = all
        .iter()
        .filter(|e| e.stream_ordering <= token.max_position())
        .collect();
    selected.sort_by_key(|e| std::cmp::Reverse((e.topological_ordering, e.stream_ordering)));
    selected.truncate(limit * 2);
    let fetched = selected.len();
    let kept: Vec<&TimelineEvent> = selected
        .into_iter()
        .filter(|e| e.stream_ordering <= token.position(&e.instance_name))
        .collect();
    InitialTimeline {
        limited: fetched >= limit * 2 || kept.len() > limit,
        events: kept.into_iter().take(limit).cloned().collect(),
    }
}

fn token(stream: i64, ahead: Option<i64>) -> StreamToken {
    let mut positions = BTreeMap::new();
    positions.insert(WriterName::parse("w1").unwrap(), stream);
    positions.insert(
        WriterName::parse("w2").unwrap(),
        ahead.unwrap_or(stream).max(stream),
    );
    StreamToken::of_writers(&positions)
}

#[test]
fn a_small_room_is_answered_whole_and_a_large_one_from_its_top() {
    let mut held = LatestEvents::default();
    for n in 1..=3 {
        held.insert(event(n, n, "w1", n == 2), 4);
    }
    let at = StreamToken::linear(3);
    let answer = held.initial_timeline(2, &at, true).unwrap();
    let ids: Vec<&str> = answer.events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, ["$e3", "$e2"]);
    assert!(answer.limited, "three events, two asked");
    assert_eq!(held.initial_timeline(3, &at, true).unwrap().events.len(), 3);
    assert!(!held.initial_timeline(3, &at, true).unwrap().limited);
    // Without knowing every event was seen, a room short of the answer is not held.
    assert_eq!(
        held.initial_timeline(3, &at, false),
        Err(TimelineUnknown::NotHeld)
    );
    assert!(held.initial_timeline(2, &at, false).unwrap().limited);
    for n in 4..=9 {
        held.insert(event(n, n, "w1", false), 4);
    }
    assert!(!held.is_complete());
    assert_eq!(held.events().len(), 4);
    // A backfilled event far below: not held.
    held.insert(event(-1, 0, "w1", false), 4);
    assert_eq!(held.events().len(), 4);
    let at = StreamToken::linear(9);
    assert!(held.initial_timeline(2, &at, true).unwrap().limited);
    assert_eq!(
        held.initial_timeline(4, &at, true),
        Err(TimelineUnknown::NotHeld)
    );
    // At an earlier token the newest held ones drop out.
    let answer = held
        .initial_timeline(1, &StreamToken::linear(7), true)
        .unwrap();
    assert_eq!(answer.events[0].event_id.as_str(), "$e7");
    let stored = serde_json::to_value(&held).unwrap();
    assert_eq!(stored["incomplete"], true);
    assert_eq!(
        stored["events"][0],
        serde_json::json!(["$e9", 9, 9, "w1", false])
    );
    assert_eq!(
        serde_json::from_value::<LatestEvents>(stored).unwrap(),
        held
    );
    held.lose_order();
    assert_eq!(
        held.initial_timeline(1, &at, true),
        Err(TimelineUnknown::Unordered)
    );
    assert!(
        serde_json::from_value::<LatestEvents>(serde_json::to_value(&held).unwrap())
            .unwrap()
            .is_unordered()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the arrival order, orderings, writers, rejections and
    /// token, the window answers exactly Synapse's query or says it cannot;
    /// with every event seen and fewer than the window holds, it answers.
    #[test]
    fn the_window_answers_exactly_or_not_at_all(
        events in proptest::collection::vec((0i64..12, any::<bool>(), any::<bool>(), any::<bool>()), 0..24),
        capacity in 1usize..7,
        limit in 1usize..5,
        stream in 0i64..30,
        ahead in proptest::option::of(0i64..30),
    ) {
        let all: Vec<TimelineEvent> = events
            .iter()
            .enumerate()
            .map(|(n, (topological, second_writer, rejected, backfilled))| {
                let n = n as i64 + 1;
                let stream_ordering = if *backfilled { -n } else { n };
                let writer = if *second_writer { "w2" } else { "w1" };
                TimelineEvent { stream_ordering, ..event(n, *topological, writer, *rejected) }
            })
            .collect();
        let mut held = LatestEvents::default();
        for e in &all {
            held.insert(e.clone(), capacity);
        }
        let at = token(stream, ahead);
        let expected = synapse(&all, limit, &at);
        for complete_known in [true, false] {
            match held.initial_timeline(limit, &at, complete_known) {
                Ok(answer) => prop_assert_eq!(&answer, &expected),
                Err(reason) => {
                    prop_assert_eq!(reason, TimelineUnknown::NotHeld);
                    prop_assert!(!(complete_known && all.len() <= capacity));
                }
            }
        }
        let stored = serde_json::to_value(&held).unwrap();
        prop_assert_eq!(serde_json::from_value::<LatestEvents>(stored).unwrap(), held);
    }
}
