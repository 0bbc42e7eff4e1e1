# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""The whole lists each connection was last shown, so that roomcache need
send only the rooms that moved (`entries: changed_only`).

Element X, once its room list is loaded, asks for the full range of its
one list on every wake-up. Without this, each answer names every room of
the list (10,000 short entries are ~0.6 MB of JSON to write, read and walk
per request). With it, a connection whose previous answer showed the whole
of its lists keeps them here, in order, with the position each room sorts
by; the next request at that `pos` asks roomcache for the rooms whose
entry changed after it only, and puts those in place.

This is exact only when the list holds the same rooms as before, which
the caller checks before asking (`HeldLists.usable`): no membership of the
user changed after `pos` (Synapse's stream change cache), and the list is
asked the same way (same filters — none — and the same rooms left out,
forgotten rooms and ignored inviters). The count roomcache answers is
checked against the rebuilt list as well. A connection's lists are taken
out while a request uses them and put back with the new ones only when it
succeeds, so a failed or concurrent request finds nothing and asks for
the whole lists.

Owns: the held lists and putting moved rooms in place. May not touch:
Synapse, roomcache.
"""

from __future__ import annotations

import bisect
import json
import operator
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attr

SortKey = tuple[int, str]
"""Where a room sorts in a list: (minus its recency, its room ID)."""


class OrderMismatch(Exception):
    """The rebuilt list does not have the count roomcache answered."""


@attr.s(slots=True, auto_attribs=True)
class HeldList:
    """One list as a connection was last shown it: its rooms in order."""

    keys: list[SortKey]
    """Every room of the list, sorted (newest first, ties by room ID)."""
    key_of: dict[str, SortKey]
    """Each room's entry of `keys`."""

    @classmethod
    def of(cls, keys: Iterable[SortKey]) -> HeldList:
        ordered = sorted(keys)
        return cls(keys=ordered, key_of=dict(zip(map(_ROOM_ID, ordered), ordered, strict=True)))

    def room_ids(self) -> list[str]:
        return list(map(_ROOM_ID, self.keys))

    def move(self, recencies: Mapping[str, int], count: int) -> None:
        """Puts each room of `recencies` (room ID → the position it now
        sorts by) in its new place: a room already in the list moves, a new
        one is added. `OrderMismatch` when the list then does not hold
        `count` rooms."""
        keys, key_of = self.keys, self.key_of
        if len(recencies) > _REBUILD_BEYOND:
            for room_id, recency in recencies.items():
                key_of[room_id] = (-recency, room_id)
            keys[:] = sorted(key_of.values())
        else:
            for room_id, recency in recencies.items():
                new = (-recency, room_id)
                old = key_of.get(room_id)
                if old == new:
                    continue
                if old is not None:
                    del keys[bisect.bisect_left(keys, old)]
                bisect.insort(keys, new)
                key_of[room_id] = new
        if len(keys) != count:
            raise OrderMismatch(f"{len(keys)} rooms held for a list of {count}")

    @property
    def size(self) -> int:
        return len(self.keys)


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Held:
    """A connection's lists as of one token, and how they were asked."""

    token: str
    """The token (roomcache's text form) the lists are as of."""
    asked: tuple[object, ...]
    """How the lists were asked, but for their ranges (must be the same)."""
    lists: tuple[HeldList, ...]

    @property
    def size(self) -> int:
        return sum(held.size for held in self.lists)


class HeldLists:
    """The held lists of the connections seen last, at most `max_rooms`
    rooms in all (least recently used connections go first). A connection
    is named by the caller (Synapse's are per device)."""

    def __init__(self, max_rooms: int) -> None:
        self._max_rooms = max_rooms
        self._held: OrderedDict[tuple[str, str], Held] = OrderedDict()
        self._rooms = 0

    @property
    def rooms(self) -> int:
        return self._rooms

    def take(
        self, user_id: str, connection: str, token: str, asked: tuple[object, ...]
    ) -> Held | None:
        """The connection's held lists when they are as of `token` and were
        asked the same way; they are no longer held (a request puts its own
        back when it succeeds)."""
        held = self._held.pop((user_id, connection), None)
        if held is None:
            return None
        self._rooms -= held.size
        if held.token != token or held.asked != asked:
            return None
        return held

    def drop(self, user_id: str, connection: str) -> None:
        """Holds nothing more for the connection."""
        previous = self._held.pop((user_id, connection), None)
        if previous is not None:
            self._rooms -= previous.size

    def keep(self, user_id: str, connection: str, held: Held) -> None:
        """Holds a connection's lists (replacing any), within the bound."""
        self.drop(user_id, connection)
        if held.size > self._max_rooms:
            return
        self._held[(user_id, connection)] = held
        self._rooms += held.size
        while self._rooms > self._max_rooms:
            _, oldest = self._held.popitem(last=False)
            self._rooms -= oldest.size


def asked_alike(
    bodies: Sequence[Mapping[str, Any]], forgotten: frozenset[str], ignored: frozenset[str]
) -> tuple[object, ...]:
    """How a request asks roomcache for its lists, but for their ranges:
    held lists serve only a request that asks them the same way."""
    lists = tuple(
        json.dumps({key: value for key, value in body.items() if key != "ranges"}, sort_keys=True)
        for body in bodies
    )
    return (lists, forgotten, ignored)


def whole_list_keys(
    room_ids: Sequence[str], recency_of: Mapping[str, int], count: int
) -> list[SortKey] | None:
    """The sort keys of a list shown whole (its ranges reached all `count`
    rooms), or None when it was not, or a room's recency is unknown."""
    if len(room_ids) != count or len(set(room_ids)) != count:
        return None
    try:
        return [(-recency_of[room_id], room_id) for room_id in room_ids]
    except KeyError:
        return None


_ROOM_ID = operator.itemgetter(1)
# Beyond this many moved rooms, the list is sorted again in one go.
_REBUILD_BEYOND = 64
