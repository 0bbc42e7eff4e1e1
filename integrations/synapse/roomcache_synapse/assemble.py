# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""roomcache's answer for one list as the rooms of each of its ranges.

A list answer either has its `ranges` cut by roomcache, or (when some of
its rooms had an event after the request's token, so that roomcache cannot
order them as of the token) a `settled` prefix in order and the
`unsettled` rooms: those are placed by their position as of the token,
which the caller gets from Synapse, and the ranges are cut here. `Facts`
holds what the request takes from Synapse, `Assembled` the lists and rooms
as they are built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from synapse.types.handlers.sliding_sync import RoomSyncConfig, SlidingSyncResult

JsonDict = dict[str, Any]


class UnsettledRoomUnknown(Exception):
    """A room roomcache set apart has no known position as of the token."""


def unsettled_joined_rooms(list_answer: JsonDict) -> list[str]:
    """The joined rooms whose position as of the token the caller must find."""
    return [
        entry["room_id"]
        for entry in list_answer.get("unsettled") or ()
        if entry["membership"] == "join"
    ]


def range_entries(
    list_answer: JsonDict,
    ranges: Sequence[tuple[int, int]],
    positions_at_token: Mapping[str, int],
) -> list[list[JsonDict]]:
    """The entries of each range, in range order.

    `positions_at_token`: for each unsettled joined room, the stream
    position of its last event at or before the token (others sort by their
    membership's position, which is at or before the token)."""
    unsettled = list_answer.get("unsettled")
    if unsettled is None:
        answered = list_answer["ranges"]
        if len(answered) != len(ranges):
            raise ValueError(f"{len(answered)} ranges answered for {len(ranges)} asked")
        return [answer["rooms"] for answer in answered]
    placed: list[tuple[int, str, JsonDict]] = [
        (entry["recency"], entry["room_id"], entry) for entry in list_answer["settled"]
    ]
    for entry in unsettled:
        if entry["membership"] == "join":
            position = positions_at_token.get(entry["room_id"])
            if position is None:
                raise UnsettledRoomUnknown(entry["room_id"])
        else:
            position = entry["event_stream_ordering"]
        placed.append((position, entry["room_id"], entry))
    placed.sort(key=lambda item: (-item[0], item[1]))
    count = list_answer["count"]
    return [[item[2] for item in placed[start : min(end + 1, count)]] for start, end in ranges]


class Facts:
    """What the request needs from Synapse besides roomcache's answer."""

    def __init__(
        self,
        *,
        ignored: frozenset[str],
        forgotten: frozenset[str],
        partial_state: frozenset[str],
        newly_joined: frozenset[str],
        newly_left: frozenset[str],
    ) -> None:
        self.ignored = ignored
        self.forgotten = forgotten
        self.partial_state = partial_state
        self.newly_joined = newly_joined
        self.newly_left = newly_left


class Assembled:
    """The lists and the rooms they show, as they are built."""

    def __init__(self) -> None:
        self.lists: dict[str, SlidingSyncResult.SlidingWindowList] = {}
        self.relevant: dict[str, RoomSyncConfig] = {}
        self.entries: dict[str, JsonDict] = {}
        self.all_rooms: set[str] = set()

    def add_room(self, entry: JsonDict, config: RoomSyncConfig) -> RoomSyncConfig:
        """A room shown with `config`: its config becomes the union of every
        config it is shown with, which is returned."""
        room_id = entry["room_id"]
        existing = self.relevant.get(room_id)
        if existing is not None:
            config = existing.combine_room_sync_config(config)
        self.relevant[room_id] = config
        self.entries.setdefault(room_id, entry)
        return config
