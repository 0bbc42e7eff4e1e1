# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""Comparing the two sides' answers in the benchmark.

While the list loads nothing is written, and both sides' answers of a step
must be equal: the equivalence tests' comparison (each list's count and
ops, the rooms sent and their data, `required_state` and timelines
included, and `prev_batch`'s position in the room) plus the extensions.
In the steady state each request comes right after a write of its own
(that is what is measured), so the room the benchmark writes to shows
different messages on the two sides: each
side's timeline of that room is checked exactly against the messages
written since that connection's previous request (the newest `limit` of
them), and the fields that depend on which messages those are (timeline,
`limited`, `num_live`, `bump_stamp`) are left out of the comparison of the
two sides, with every room's `prev_batch` (the two sides' tokens differ);
everything else in that room, and every other room, is compared.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from tests.equivalence import answer_differences

JsonDict = dict[str, Any]

WRITE_DEPENDENT = ("timeline", "limited", "num_live", "bump_stamp")


class WriteLog:
    """The benchmark's messages, in the order they were written."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []  # (room ID, event ID)

    def add(self, room_id: str, event_id: str) -> None:
        self.events.append((room_id, event_id))

    def since(self, mark: int, room_id: str) -> list[str]:
        """The event IDs written to `room_id` after the first `mark` writes."""
        return [event_id for room, event_id in self.events[mark:] if room == room_id]


def differences(
    module: JsonDict, synapse: JsonDict, written_rooms: Collection[str] = ()
) -> list[str]:
    """Every difference between the two sides' answers (lists, rooms,
    extensions), leaving out what depends on which write came last in
    `written_rooms`."""
    found = answer_differences(
        _without_writes(module, written_rooms),
        _without_writes(synapse, written_rooms),
        prev_batch=not written_rooms,
    )
    ours, theirs = module.get("extensions") or {}, synapse.get("extensions") or {}
    for name in sorted(set(ours) | set(theirs)):
        if ours.get(name) != theirs.get(name):
            found.append(f"extension {name}: {ours.get(name)} != {theirs.get(name)}")
    return found


def _without_writes(answer: JsonDict, written_rooms: Collection[str]) -> JsonDict:
    rooms = dict(answer.get("rooms") or {})
    for room_id in written_rooms:
        if room_id in rooms:
            rooms[room_id] = {
                key: value for key, value in rooms[room_id].items() if key not in WRITE_DEPENDENT
            }
    return {**answer, "rooms": rooms}


def timeline_problem(answer: JsonDict, room_id: str, written: list[str], limit: int) -> str | None:
    """Why `answer` does not show exactly the newest `limit` of `written`
    (the messages written to `room_id` since the connection's previous
    request) as that room's timeline (as its end, when the timeline was
    expanded); None when it does."""
    room = (answer.get("rooms") or {}).get(room_id)
    if room is None:
        return f"the written room {room_id} was not sent"
    timeline = [event.get("event_id") for event in room.get("timeline") or ()]
    expected = written[-limit:]
    if room.get("unstable_expanded_timeline"):
        # The room's timeline limit grew (a subscription): older events too.
        timeline = timeline[-len(expected) :]
    if timeline != expected:
        return f"timeline of the written room {room_id}: {timeline} != the writes {expected}"
    return None
