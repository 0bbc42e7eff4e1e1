"""roomcache's answers parsed into typed values: what is accepted, and every
kind of wrong value that is refused (the request is then computed Synapse's
way). No server needed."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from roomcache_synapse.answer import BadAnswer, RoomEntry, parse_answer
from roomcache_synapse.tokens import StreamPosition

AT = StreamPosition.parse("s20")


def entry(room_id: str = "!a:hs", **changes: Any) -> dict[str, Any]:
    raw = {
        "room_id": room_id,
        "membership": "join",
        "sender": "@u:hs",
        "membership_event_id": "$join",
        "event_stream_ordering": 10,
        "event_instance_name": "master",
        "bump_stamp": 12,
        "room_type": None,
        "room_name": "A",
        "is_encrypted": False,
        "tombstone_successor_room_id": None,
        "has_known_state": True,
        "recency": 12,
    }
    raw.update(changes)
    return raw


def answer(**changes: Any) -> dict[str, Any]:
    raw = {
        "lists": {
            "0": {
                "count": 3,
                "ranges": [
                    {"range": [0, 1], "rooms": [entry("!a:hs"), entry("!b:hs", recency=11)]}
                ],
            }
        },
        "token": "s20",
        "timed_out": False,
        "memberships_after_at": [],
        "other_rooms": ["!c:hs"],
        "rooms": {"!s:hs": entry("!s:hs")},
        "account_data_position": 7,
    }
    raw.update(changes)
    return raw


def parse(raw: Any) -> Any:
    return parse_answer(raw, [[(0, 1)]], AT)


def test_a_good_answer_is_typed() -> None:
    parsed = parse(answer())
    (only,) = parsed.lists
    assert (only.count, only.ranges) == (3, (("!a:hs", "!b:hs"),))
    assert parsed.token == StreamPosition(20)
    assert (parsed.timed_out, parsed.fallback, parsed.unaffected) == (False, False, False)
    assert parsed.other_rooms == frozenset({"!c:hs"})
    assert parsed.subscribed == frozenset({"!s:hs"})
    assert parsed.account_data_position == 7
    assert parsed.entry("!b:hs") == RoomEntry.parse(entry("!b:hs", recency=11))
    assert parsed.entry("!s:hs").room_id == "!s:hs"
    with pytest.raises(BadAnswer):
        parsed.entry("!unknown:hs")


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(raw: dict[str, Any]) -> None:
        target: Any = raw
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


FIRST = ("lists", "0", "ranges", 0, "rooms", 0)

# Each is refused when the answer is read.
REFUSED_AT_ONCE = {
    "not an object": lambda raw: raw.clear() or raw.update({"lists": []}),
    "a list missing": _set(("lists",), {}),
    "an extra list": _set(("lists", "1"), {"count": 0, "ranges": []}),
    "count a string": _set(("lists", "0", "count"), "many"),
    "count negative": _set(("lists", "0", "count"), -1),
    "count a bool": _set(("lists", "0", "count"), True),
    "count a float": _set(("lists", "0", "count"), 3.0),
    "count below the rooms shown": _set(("lists", "0", "count"), 1),
    "a range not asked": _set(("lists", "0", "ranges", 0, "range"), [0, 5]),
    "a range missing": _set(("lists", "0", "ranges"), []),
    "a room ID a number": _set((*FIRST, "room_id"), 5),
    "a room ID without sigil": _set((*FIRST, "room_id"), "a:hs"),
    "a room ID too long": _set((*FIRST, "room_id"), "!" + "a" * 300),
    "token missing": lambda raw: raw.pop("token"),
    "token not a token": _set(("token",), "yesterday"),
    "token a number": _set(("token",), 20),
    "timed_out a string": _set(("timed_out",), "no"),
    "memberships_after_at missing": lambda raw: raw.pop("memberships_after_at"),
    "memberships_after_at a string": _set(("memberships_after_at",), "!a:hs"),
    "other_rooms of numbers": _set(("other_rooms",), [1]),
    "rooms under another ID": _set(("rooms",), {"!x:hs": entry("!s:hs")}),
    "account data position negative": _set(("account_data_position",), -3),
    "account data position a string": _set(("account_data_position",), "7"),
    "settled without unsettled": _set(("lists", "0", "settled"), []),
}

# Each is refused when the room's entry is used.
REFUSED_IN_USE = {
    "membership bogus": {"membership": "bogus"},
    "membership a list": {"membership": ["join"]},
    "stream ordering a string": {"event_stream_ordering": "10"},
    "stream ordering zero": {"event_stream_ordering": 0},
    "stream ordering after the token": {"event_stream_ordering": 21},
    "stream ordering beyond 63 bits": {"event_stream_ordering": 2**63},
    "sender not a user": {"sender": "u:hs"},
    "event ID not an event": {"membership_event_id": "join"},
    "instance empty": {"event_instance_name": ""},
    "bump stamp negative": {"bump_stamp": -1},
    "is_encrypted a number": {"is_encrypted": 0},
    "has_known_state missing": {"has_known_state": None},
    "room name a number": {"room_name": 5},
    "room type a dict": {"room_type": {}},
    "recency a float": {"recency": 1.5},
    "recency true": {"recency": True},
    "tombstone a number": {"tombstone_successor_room_id": 3},
    "instance too long": {"event_instance_name": "p" * 65537},
    "sender too long": {"sender": "@" + "u" * 255},
}


@pytest.mark.parametrize("name", sorted(REFUSED_AT_ONCE))
def test_wrong_answers_are_refused(name: str) -> None:
    raw = answer()
    REFUSED_AT_ONCE[name](raw)
    with pytest.raises(BadAnswer):
        parse(raw)


@pytest.mark.parametrize("name", sorted(REFUSED_IN_USE))
def test_wrong_entries_are_refused_when_used(name: str) -> None:
    raw = answer()
    raw["lists"]["0"]["ranges"][0]["rooms"][0].update(REFUSED_IN_USE[name])
    parsed = parse(raw)
    assert parsed.entry("!b:hs").room_id == "!b:hs"
    with pytest.raises(BadAnswer):
        parsed.entry("!a:hs")


def test_entries_after_the_token_are_judged_writer_by_writer() -> None:
    at = StreamPosition.parse("m20~p2.30")
    raw = answer()
    raw["lists"]["0"]["ranges"][0]["rooms"][0].update(
        event_instance_name="p2", event_stream_ordering=25
    )
    raw["lists"]["0"]["ranges"][0]["rooms"][1].update(
        event_instance_name="p1", event_stream_ordering=25
    )
    parsed = parse_answer(raw, [[(0, 1)]], at)
    assert parsed.entry("!a:hs").event_stream_ordering == 25
    with pytest.raises(BadAnswer):
        parsed.entry("!b:hs")


def unsettled_answer() -> dict[str, Any]:
    raw = answer()
    raw["lists"]["0"] = {
        "count": 3,
        "ranges": [],
        "settled": [entry("!a:hs", recency=12), entry("!b:hs", recency=11)],
        "unsettled": [entry("!late:hs", recency=25)],
    }
    return raw


def test_a_membership_after_the_token_is_reported_not_refused() -> None:
    raw = unsettled_answer()
    raw["lists"]["0"]["unsettled"][0].update(event_stream_ordering=21)
    raw["memberships_after_at"] = ["!late:hs"]
    assert parse(raw).memberships_after_at == ("!late:hs",)


def test_settled_and_unsettled_rooms() -> None:
    parsed = parse(unsettled_answer())
    (only,) = parsed.lists
    assert only.ranges is None
    assert only.settled == ((12, "!a:hs"), (11, "!b:hs"))
    assert [e.room_id for e in only.unsettled or ()] == ["!late:hs"]
    for change in (
        lambda raw: raw["lists"]["0"]["settled"][0].update(recency=21),  # after the token
        lambda raw: raw["lists"]["0"]["unsettled"][0].update(membership="bogus"),
        # No membership is said to be after the token, yet one is.
        lambda raw: raw["lists"]["0"]["unsettled"][0].update(event_stream_ordering=21),
        lambda raw: raw["lists"]["0"].update(count=2),  # fewer than the rooms given
        lambda raw: raw["lists"]["0"].update(ranges=[{"range": [0, 1], "rooms": []}]),
    ):
        raw = copy.deepcopy(unsettled_answer())
        change(raw)
        with pytest.raises(BadAnswer):
            parse(raw)
