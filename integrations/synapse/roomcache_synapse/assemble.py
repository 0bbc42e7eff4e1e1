# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""roomcache's answer for one list as the rooms of each of its ranges.

A list answer either has its `ranges` cut by roomcache, or (when some of
its rooms had an event after the request's token, so that roomcache cannot
order them as of the token) a `settled` prefix in order and the
`unsettled` rooms: those are placed by their position as of the token,
which the caller gets from Synapse, and the ranges are cut here. `Facts`
holds what the request takes from Synapse, `Assembled` the lists and rooms
as they are built.

Owns: placing and cutting. May not touch: Synapse, roomcache.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attr

from .answer import ListAnswer, RoomEntry, RoomListAnswer
from .held_order import HeldList, whole_list_keys


class UnsettledRoomUnknown(Exception):
    """A room roomcache set apart has no known position as of the token."""


def unsettled_joined_rooms(list_answer: ListAnswer) -> list[str]:
    """The joined rooms whose position as of the token the caller must find."""
    return [entry.room_id for entry in list_answer.unsettled or () if entry.membership == "join"]


def range_room_ids(
    list_answer: ListAnswer,
    ranges: Sequence[tuple[int, int]],
    positions_at_token: Mapping[str, int],
) -> list[tuple[str, ...]]:
    """The room IDs of each range, in range order.

    `positions_at_token`: for each unsettled joined room, the stream
    position of its last event at or before the token (others sort by their
    membership's position, which is at or before the token)."""
    if list_answer.ranges is not None:
        return list(list_answer.ranges)
    # The settled rooms come in order; the few unsettled ones are put in
    # their places (order: newest first, ties by room ID).
    placed: list[tuple[int, str]] = list(list_answer.settled or ())
    for entry in list_answer.unsettled or ():
        position = _unsettled_position(entry, positions_at_token)
        bisect.insort(placed, (position, entry.room_id), key=_order)
    return cut_ranges(list(map(_ROOM_ID, placed)), ranges, list_answer.count)


def cut_ranges(
    ordered: Sequence[str], ranges: Sequence[tuple[int, int]], count: int
) -> list[tuple[str, ...]]:
    """The room IDs of each range of a list whose first rooms are `ordered`."""
    return [tuple(ordered[start : min(end + 1, count)]) for start, end in ranges]


def shown_recencies(
    list_answer: ListAnswer,
    positions_at_token: Mapping[str, int],
    recencies_of: Callable[[list[str]], dict[str, int]],
) -> dict[str, int]:
    """The position each room the list answer shows sorts by (as of the
    token): `recencies_of` gives those of the rooms in ranges."""
    if list_answer.ranges is not None:
        return recencies_of([room_id for rooms in list_answer.ranges for room_id in rooms])
    recencies = {room_id: recency for recency, room_id in list_answer.settled or ()}
    for entry in list_answer.unsettled or ():
        recencies[entry.room_id] = _unsettled_position(entry, positions_at_token)
    return recencies


def shown_whole(
    answer: RoomListAnswer,
    list_answer: ListAnswer,
    rooms_by_range: list[tuple[str, ...]],
    positions_at_token: Mapping[str, int],
) -> HeldList | None:
    """The list, whole and in order, when its ranges showed every room of it."""
    count = list_answer.count
    if sum(map(len, rooms_by_range)) != count:
        return None
    room_ids = [room_id for room_ids in rooms_by_range for room_id in room_ids]
    recencies = shown_recencies(list_answer, positions_at_token, answer.recencies)
    keys = whole_list_keys(room_ids, recencies, count)
    return None if keys is None else HeldList.of(keys)


def _unsettled_position(entry: RoomEntry, positions_at_token: Mapping[str, int]) -> int:
    if entry.membership != "join":
        return entry.event_stream_ordering
    position = positions_at_token.get(entry.room_id)
    if position is None:
        raise UnsettledRoomUnknown(entry.room_id)
    return position


def _order(item: tuple[int, str]) -> tuple[int, str]:
    return (-item[0], item[1])


_ROOM_ID = operator.itemgetter(1)


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Facts:
    """What the request needs from Synapse besides roomcache's answer."""

    ignored: frozenset[str]
    forgotten: frozenset[str]
    partial_state: frozenset[str]
    newly_joined: frozenset[str]
    newly_left: frozenset[str]


class Assembled:
    """The lists and the rooms they show, as they are built."""

    def __init__(self) -> None:
        self.lists: dict[str, Any] = {}
        self.relevant: dict[str, Any] = {}
        self.all_rooms: set[str] = set()
        # Every list, whole and in order, when every list was shown whole
        # (for the connection's next request); else None.
        self.whole_lists: list[HeldList] | None = []
        # Subscribed rooms shown by no list's ranges.
        self.subscribed_outside_ranges: set[str] = set()

    def add_rooms(self, room_ids: Sequence[str], config: Any) -> Any:
        """The rooms of one range, shown with `config` as `add_room` does
        it, room after room; when none is shown yet, in one pass (the
        config stays the same for all of them)."""
        if self.relevant.keys().isdisjoint(room_ids):
            self.relevant.update(dict.fromkeys(room_ids, config))
            return config
        for room_id in room_ids:
            config = self.add_room(room_id, config)
        return config

    def add_room(self, room_id: str, config: Any) -> Any:
        """A room shown with `config` (a `RoomSyncConfig`): its config
        becomes the union of every config it is shown with, which is
        returned."""
        existing = self.relevant.get(room_id)
        if existing is not None and existing is not config:
            config = existing.combine_room_sync_config(config)
        self.relevant[room_id] = config
        return config
