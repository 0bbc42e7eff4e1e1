"""The connections' held lists (roomcache_synapse/held_order.py): moved
rooms put in place exactly as a sort of the whole list would, the count
checked, the bound kept, and held lists served only to the request they
were made for. Pure: no Synapse, no roomcache."""

from __future__ import annotations

import json
import random
import tracemalloc

import pytest

from roomcache_synapse.held_order import (
    Held,
    HeldList,
    HeldLists,
    OrderMismatch,
    asked_alike,
    whole_list_keys,
)


def _list(recencies: dict[str, int]) -> HeldList:
    return HeldList.of((-recency, room_id) for room_id, recency in recencies.items())


def _sorted_ids(recencies: dict[str, int]) -> list[str]:
    return [room_id for room_id, _ in sorted(recencies.items(), key=lambda kv: (-kv[1], kv[0]))]


@pytest.mark.parametrize("moved_count", [0, 1, 3, 64, 65, 300])
def test_moved_rooms_land_where_a_whole_sort_puts_them(moved_count: int) -> None:
    chooser = random.Random(moved_count)
    recencies = {f"!room{number:04}:example.org": number * 3 for number in range(1, 1001)}
    held = _list(recencies)
    moved = {
        room_id: chooser.randrange(1, 5000)
        for room_id in chooser.sample(sorted(recencies), moved_count)
    }
    held.move(moved, count=len(recencies))
    recencies.update(moved)
    assert held.room_ids() == _sorted_ids(recencies)
    assert held.key_of == {room_id: (-recency, room_id) for room_id, recency in recencies.items()}


def test_ties_sort_by_room_id_and_an_unmoved_room_stays() -> None:
    held = _list({"!b:x": 5, "!a:x": 3, "!c:x": 1})
    held.move({"!c:x": 5, "!b:x": 5}, count=3)
    assert held.room_ids() == ["!b:x", "!c:x", "!a:x"]


def test_a_list_that_does_not_come_to_the_answered_count_is_refused() -> None:
    held = _list({"!a:x": 2, "!b:x": 1})
    with pytest.raises(OrderMismatch):
        held.move({"!new:x": 3}, count=2)  # a room the list did not hold
    held = _list({"!a:x": 2, "!b:x": 1})
    with pytest.raises(OrderMismatch):
        held.move({}, count=3)  # roomcache counts a room more


def test_whole_list_keys_need_every_room_once_with_its_recency() -> None:
    recencies = {"!a:x": 9, "!b:x": 4}
    assert whole_list_keys(["!a:x", "!b:x"], recencies, 2) == [(-9, "!a:x"), (-4, "!b:x")]
    assert whole_list_keys(["!a:x"], recencies, 2) is None  # ranges short of the list
    assert whole_list_keys(["!a:x", "!a:x"], recencies, 2) is None  # overlapping ranges
    assert whole_list_keys(["!a:x", "!c:x"], recencies, 2) is None  # a recency unknown


def _held(token: str, rooms: int, asked: tuple[object, ...] = ("a",)) -> Held:
    return Held(token, asked, (_list({f"!{n}:x": n + 1 for n in range(rooms)}),))


def test_held_lists_serve_only_their_token_and_way_of_asking_and_once() -> None:
    lists = HeldLists(max_rooms=100)
    lists.keep("@u:x", "room-list", _held("s10", 5))
    assert lists.take("@u:x", "room-list", "s9", ("a",)) is None  # another pos
    assert lists.rooms == 0  # taken all the same: the request holds its own later
    lists.keep("@u:x", "room-list", _held("s10", 5))
    assert lists.take("@u:x", "room-list", "s10", ("b",)) is None  # asked otherwise
    lists.keep("@u:x", "room-list", _held("s10", 5))
    taken = lists.take("@u:x", "room-list", "s10", ("a",))
    assert taken is not None and taken.size == 5
    assert lists.take("@u:x", "room-list", "s10", ("a",)) is None  # a concurrent request
    assert lists.rooms == 0


def test_held_lists_keep_to_their_bound_least_recently_kept_first() -> None:
    lists = HeldLists(max_rooms=10)
    lists.keep("@a:x", "c", _held("s1", 4))
    lists.keep("@b:x", "c", _held("s1", 4))
    lists.keep("@c:x", "c", _held("s1", 4))  # 12 rooms: @a's go
    assert lists.rooms == 8
    assert lists.take("@a:x", "c", "s1", ("a",)) is None
    assert lists.take("@b:x", "c", "s1", ("a",)) is not None
    lists.keep("@d:x", "c", _held("s1", 11))  # alone over the bound: not held
    assert lists.take("@d:x", "c", "s1", ("a",)) is None
    assert lists.rooms == 4
    lists.drop("@c:x", "c")
    assert lists.rooms == 0
    off = HeldLists(max_rooms=0)
    off.keep("@a:x", "c", _held("s1", 1))
    assert off.rooms == 0


def test_lists_asked_alike_but_for_their_ranges() -> None:
    first = asked_alike([{"ranges": [[0, 9]], "exclude_rooms": ["!x:x"]}], frozenset(), frozenset())
    wider = asked_alike(
        [{"exclude_rooms": ["!x:x"], "ranges": [[0, 99]]}], frozenset(), frozenset()
    )
    assert first == wider
    assert first != asked_alike([{"ranges": [[0, 9]]}], frozenset(), frozenset())
    assert first != asked_alike(
        [{"ranges": [[0, 9]], "exclude_rooms": ["!x:x"]}], frozenset({"!f:x"}), frozenset()
    )


def test_a_held_room_costs_about_220_bytes() -> None:
    """The figure docs/synapse.md and the `held_order_rooms` setting give:
    a held list of 10,000 rooms, with its room IDs (decoded from JSON like
    roomcache's answers: the held list keeps them alive) and recencies."""
    rooms = 10_000
    raw = json.dumps([f"!{number:043}:example.org" for number in range(rooms)])
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        room_ids = json.loads(raw)
        held = HeldList.of((-(10**9 + number), room_id) for number, room_id in enumerate(room_ids))
        del room_ids
        per_room = (tracemalloc.get_traced_memory()[0] - before) / rooms
    finally:
        tracemalloc.stop()
    print(f"held lists: {per_room:.0f} bytes a room")
    assert held.size == rooms
    assert 150 <= per_room <= 300, per_room
