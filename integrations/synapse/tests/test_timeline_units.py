"""The per-room seam's initial timelines (per_room.py `topological_page`)
and the parsing of roomcache's timelines (room_timeline.py), without a
Synapse: Synapse is a `Mock(spec=SynapseAdapter)`, roomcache a
`Mock(spec=RoomcacheClient)` (test_per_room_units' `Deployment`). Each test
checks which calls of Synapse's timeline query roomcache answers, with
exactly the page the query would return (events fetched by ID, the token
after them, `limited`), and why the others are Synapse's (counted)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any
from unittest.mock import Mock

import pytest
from synapse.api.constants import Direction
from synapse.types import RoomStreamToken
from synapse.types.state import StateFilter

from roomcache_synapse.answer import BadAnswer
from roomcache_synapse.client import RoomcacheFailure
from roomcache_synapse.room_timeline import (
    RoomTimeline,
    TimelineRow,
    asked_limit,
    next_position,
    parse_timeline,
)

from .test_per_room_units import Deployment, _counts, interested, rooms_data

Call = Callable[[Any], dict[str, Any]]


def initial(room_id: str, limit: int = 1, **changes: Any) -> Call:
    """Synapse's initial-timeline call for the room at the request's token
    (as `get_room_sync_data` makes it), with `changes`."""

    def arguments(to_token: Any) -> dict[str, Any]:
        call = {
            "room_id": room_id,
            "from_key": to_token.room_key,
            "to_key": None,
            "direction": Direction.BACKWARDS,
            "limit": limit,
        }
        call.update(changes)
        return call

    return arguments


def filtered(event_id: str) -> Any:
    """Synapse's `FilteredEvent` of an event (`state:` first: a state event)."""
    is_state = event_id.startswith("state:")
    event = Mock(event_id=event_id.removeprefix("state:"))
    event.is_state.return_value = is_state
    return Mock(event=event)


def _who(name: str, before: Mapping[tuple[str, str], float]) -> str:
    after = _counts(name)
    changed = [key for key in after if after[key] != before.get(key, 0)]
    return "uncounted" if not changed else changed[0][1] or changed[0][0]


def pages(
    deployment: Deployment,
    rooms: Any,
    calls: list[Call],
    *,
    prepared: bool = True,
    from_token: Any = None,
    sent: frozenset[str] = frozenset(),
    conn_id: str = "room-list",
    aggregations: list[list[str]] | None = None,
) -> list[tuple[Any, str]]:
    """One Sliding Sync request (its room lists' result `rooms`, unless not
    `prepared`: a call from elsewhere), then each call of the timeline
    query: its page and who chose the events (`roomcache`, Synapse's
    reason, or `uncounted`); then each call of the bundled aggregations
    (of `filtered` events): its answer and who answered."""
    to_token = Mock(room_key=RoomStreamToken(stream=20))

    async def run() -> list[tuple[Any, str]]:
        if prepared:
            await deployment.prepare(
                rooms, to_token, from_token=from_token, sent=sent, conn_id=conn_id
            )
        answers: list[tuple[Any, str]] = []
        for call in calls:
            arguments = call(to_token)
            before = _counts("roomcache_synapse_room_timelines")
            page = await deployment.seam.topological_page(**arguments)
            who = _who("roomcache_synapse_room_timelines", before)
            if page[1] is arguments["from_key"]:
                page = (page[0], "the starting token", page[2])
            answers.append((page, who))
        for event_ids in aggregations or ():
            before = _counts("roomcache_synapse_aggregations")
            events = (filtered(event_id) for event_id in event_ids)
            bundled = await deployment.seam.bundled_aggregations(events, "@u:hs")
            answers.append((bundled, _who("roomcache_synapse_aggregations", before)))
        return answers

    return asyncio.run(run())


SYNAPSE_PAGE = (["synapse's event"], "synapse's token", False)


def test_the_initial_timeline_comes_from_the_one_fetch() -> None:
    deployment = Deployment()
    rooms = interested({"!a:hs": "join", "!b:hs": "join"})
    answers = pages(deployment, rooms, [initial("!a:hs"), initial("!b:hs")])
    # Synapse's page: the events fetched by ID, the token just before the
    # last row (backwards), `limited` as roomcache says.
    assert answers == [
        ((["event $event0!a:hs"], RoomStreamToken(topological=30, stream=39), True), "roomcache"),
        ((["event $event0!b:hs"], RoomStreamToken(topological=30, stream=39), True), "roomcache"),
    ]
    (call,) = deployment.client.rooms_data.call_args_list
    assert call.args[0]["timeline"] == {"limit": 1}
    deployment.synapse.original_topological_page.assert_not_awaited()


def test_a_room_without_rows_gets_the_starting_token_back() -> None:
    deployment = Deployment()
    deployment.client.rooms_data.side_effect = lambda body: rooms_data(
        body["rooms"],
        rooms={"!a:hs": {"state": [], "timeline": {"events": [], "limited": True}}},
    )
    answers = pages(deployment, interested({"!a:hs": "join"}), [initial("!a:hs")])
    assert answers == [(([], "the starting token", True), "roomcache")]


def test_the_limit_most_rooms_use_is_asked() -> None:
    deployment = Deployment()
    rooms = interested(
        {"!a:hs": "join", "!b:hs": "join", "!s:hs": "join"}, timeline_limits={"!s:hs": 20}
    )
    answers = pages(deployment, rooms, [initial("!a:hs"), initial("!s:hs", limit=20)])
    assert [who for _, who in answers] == ["roomcache", "timeline_limit"]
    assert answers[1][0] == SYNAPSE_PAGE
    assert deployment.client.rooms_data.call_args.args[0]["timeline"] == {"limit": 1}
    assert asked_limit([1, 1, 20]) == 1
    assert asked_limit([3, 20, 20]) == 20
    assert asked_limit([20, 5]) == 5
    assert asked_limit([0, 0]) is None
    assert asked_limit([]) is None


def test_calls_outside_a_sliding_sync_request_are_synapses_uncounted() -> None:
    deployment = Deployment()
    answers = pages(deployment, None, [initial("!a:hs")], prepared=False)
    assert answers == [(SYNAPSE_PAGE, "uncounted")]
    deployment.synapse.original_topological_page.assert_awaited_once()


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("bypass", "bypass"),
        ("sent_before", "not_fetched"),
        ("partial_state", "partial_state"),
        ("to_key", "not_initial"),
        ("event_filter", "not_initial"),
        ("forwards", "not_initial"),
        ("other_token", "not_initial"),
        ("other_argument", "not_initial"),
        ("not_held", "not_held"),
        ("behind_token", "behind_token"),
        ("strange_reason", "room_unknown"),
        ("unavailable", "unavailable"),
        ("timed_out", "not_caught_up"),
    ],
)
def test_what_synapse_answers_and_why(case: str, reason: str) -> None:
    deployment = Deployment()
    call, options = initial("!a:hs"), {}
    changes: dict[str, Any] = {
        "to_key": {"to_key": RoomStreamToken(stream=3)},
        "event_filter": {"event_filter": Mock(name="filter")},
        "forwards": {"direction": Direction.FORWARDS},
        "other_token": {"from_key": RoomStreamToken(stream=20)},
        "other_argument": {"new_in_synapse": True},
    }
    unknown = {"not_held": "not_held", "behind_token": "behind_token", "strange_reason": "x"}
    if case in changes:
        call = initial("!a:hs", **changes[case])
    elif case == "bypass":
        options["conn_id"] = "bypass-2"
    elif case == "sent_before":
        options = {"from_token": Mock(name="from token"), "sent": frozenset({"!a:hs"})}
    elif case == "partial_state":
        deployment.synapse.partial_state_rooms.return_value = frozenset({"!a:hs"})
    elif case in unknown:
        entry = {"state": [], "timeline": {"unknown": unknown[case]}}
        deployment.client.rooms_data.side_effect = lambda body: rooms_data(
            body["rooms"], rooms={"!a:hs": entry}
        )
    elif case == "unavailable":
        deployment.client.rooms_data.side_effect = RoomcacheFailure("unavailable", "gone")
    elif case == "timed_out":
        deployment.client.rooms_data.side_effect = lambda body: rooms_data(
            body["rooms"], body.get("timeline"), token="s10", timed_out=True
        )
    answers = pages(deployment, interested({"!a:hs": "join"}), [call], **options)
    assert answers == [(SYNAPSE_PAGE, reason)]
    # Synapse's own query, with the very arguments of the call.
    (synapse_call,) = deployment.synapse.original_topological_page.await_args_list
    assert synapse_call.kwargs.keys() == call(Mock(room_key=None)).keys()


def test_without_room_timeline_nothing_is_asked_or_replaced() -> None:
    deployment = Deployment(room_timeline=False)
    deployment.seam.install()
    deployment.synapse.replace_topological_page.assert_not_called()
    answers = pages(deployment, interested({"!a:hs": "join"}), [initial("!a:hs")])
    assert answers == [(SYNAPSE_PAGE, "not_fetched")]
    # The timeline lookup alone sends nothing; the state lookup's fetch
    # asks for no timeline.
    deployment.client.rooms_data.assert_not_called()
    name = StateFilter.from_types([("m.room.name", "")])
    deployment.request(interested({"!a:hs": "join"}), [("!a:hs", "join", name)])
    assert "timeline" not in deployment.client.rooms_data.call_args.args[0]


def test_install_replaces_the_store_and_relations_methods() -> None:
    deployment = Deployment()
    deployment.seam.install()
    deployment.synapse.replace_topological_page.assert_called_once_with(
        deployment.seam.topological_page
    )
    deployment.synapse.replace_bundled_aggregations.assert_called_once_with(
        deployment.seam.bundled_aggregations
    )


SYNAPSE_AGGREGATIONS = {"$e": "Synapse's"}


def test_events_no_event_relates_to_have_nothing_to_bundle() -> None:
    deployment = Deployment()
    deployment.synapse.events_with_relations.return_value = frozenset({"$event0!b:hs"})
    rooms = interested({"!a:hs": "join", "!b:hs": "join"})
    answers = pages(
        deployment,
        rooms,
        [initial("!a:hs"), initial("!b:hs")],
        aggregations=[
            ["$event0!a:hs"],
            ["$event0!a:hs", "state:$anything"],
            ["$event0!b:hs"],
            ["$event0!a:hs", "$elsewhere"],
        ],
    )
    assert answers[2:] == [
        ({}, "roomcache"),
        # Synapse bundles nothing for state events.
        ({}, "roomcache"),
        (SYNAPSE_AGGREGATIONS, "related"),
        (SYNAPSE_AGGREGATIONS, "not_fetched"),
    ]
    # One query for every event of the timelines from roomcache.
    (call,) = deployment.synapse.events_with_relations.await_args_list
    assert call.args[0] == frozenset({"$event0!a:hs", "$event0!b:hs"})
    # Synapse's own is given every event (a generator was read once).
    assert [
        [f.event.event_id for f in call.args[0]]
        for call in deployment.synapse.original_bundled_aggregations.await_args_list
    ] == [["$event0!b:hs"], ["$event0!a:hs", "$elsewhere"]]


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("outside", "uncounted"),
        ("bypass", "bypass"),
        ("no_timelines", "not_fetched"),
        ("lookup_fails", "module_error"),
        ("roomcache_fails", "unavailable"),
    ],
)
def test_whose_aggregations_and_why(case: str, reason: str) -> None:
    deployment = Deployment(room_timeline=case != "no_timelines")
    options: dict[str, Any] = {}
    if case == "outside":
        options["prepared"] = False
    elif case == "bypass":
        options["conn_id"] = "bypass-3"
    elif case == "lookup_fails":
        deployment.synapse.events_with_relations.side_effect = RuntimeError("database gone")
    elif case == "roomcache_fails":
        deployment.client.rooms_data.side_effect = RoomcacheFailure("unavailable", "gone")
    rooms = interested({"!a:hs": "join"})
    answers = pages(deployment, rooms, [], aggregations=[["$event0!a:hs"]], **options)
    assert answers == [(SYNAPSE_AGGREGATIONS, reason)]


def event(event_id: str, topological: int, stream: int) -> list[Any]:
    return [event_id, topological, stream, "w1", False]


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ([], "not an object"),
        ({"events": {}, "limited": False}, "not a list"),
        ({"events": [event("$a", 2, 2), event("$b", 1, 1)], "limited": False}, "asked 1"),
        ({"events": [event("$a", 2, 2)]}, "limited"),
        ({"events": [["$a", 2, 2, "w1"]], "limited": False}, "is not \\[event ID"),
        ({"events": [event("a", 2, 2)], "limited": False}, "identifier"),
        ({"events": [event("$a", "2", 2)], "limited": False}, "topological"),
        ({"events": [["$a", 2, 2, "w1", 0]], "limited": False}, "rejected"),
        ({"unknown": 5}, "unknown"),
    ],
)
def test_bad_timelines_are_refused(raw: Any, problem: str) -> None:
    with pytest.raises(BadAnswer, match=problem):
        parse_timeline(raw, "!a:hs", 1)


def test_rows_must_come_newest_first() -> None:
    same = {"events": [event("$a", 2, 5), event("$b", 2, 5)], "limited": False}
    older_first = {"events": [event("$a", 1, 9), event("$b", 2, 1)], "limited": False}
    for raw in (same, older_first):
        with pytest.raises(BadAnswer, match="newest first"):
            parse_timeline(raw, "!a:hs", 2)


def test_good_timelines_are_typed() -> None:
    raw: Mapping[str, Any] = {
        "events": [event("$new", 3, 10), event("$rejected", 3, 7), event("$back", 1, -4)],
        "limited": True,
    }
    timeline = parse_timeline(raw, "!a:hs", 3)
    assert timeline == RoomTimeline(
        (TimelineRow("$new", 3, 10), TimelineRow("$rejected", 3, 7), TimelineRow("$back", 1, -4)),
        limited=True,
    )
    assert isinstance(timeline, RoomTimeline)
    # Backwards, the token points just before the last row.
    assert next_position(timeline) == (1, -5)
    assert next_position(RoomTimeline((), limited=True)) is None
    assert parse_timeline({"unknown": "not_held"}, "!a:hs", 3) == "not_held"
