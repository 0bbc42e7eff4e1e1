"""Comparing Sliding Sync answers computed from roomcache with Synapse's own.

An `Observer` is a user with two Sliding Sync connections: one answered
through the module (roomcache), one whose `conn_id` starts with the
module's bypass prefix (Synapse's own code). Each request goes to both, one
after the other, with nothing written in between, and the answers must be
equal: every list's count and ops (rooms in order; as a set where Synapse
leaves the order unspecified: a single range from 0 covering the whole
list), and the rooms sent with their data.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from .client import Client, JsonDict
from .deployment import BYPASS_PREFIX

_connection_numbers = itertools.count(1)


def _list(ranges: list[list[int]] | None, timeline_limit: int = 1, **filters: Any) -> JsonDict:
    body: JsonDict = {
        "timeline_limit": timeline_limit,
        "required_state": [["m.room.name", ""], ["m.room.encryption", ""]],
    }
    if ranges is not None:
        body["ranges"] = ranges
    if filters:
        body["filters"] = filters
    return body


# Every filter Synapse answers, alone and combined, with several range shapes
# (whole list, top of list, windows, beyond the end, none). Synapse gives
# each room shown the union of the configs (timeline limit, required state)
# of the lists showing it, and carries that union on to the rooms after it
# in the same list: in a list it does not sort (a single range from 0
# covering it), the rooms' configs then depend on an order Synapse leaves
# unspecified. So every list that can come out unsorted has the same config
# and comes first; lists with other configs come after and never start at 0.
LISTS: dict[str, JsonDict] = {
    "all": _list([[0, 99]]),
    "top": _list([[0, 2]]),
    "beyond": _list([[40, 60]]),
    "count_only": _list(None),
    "dm": _list([[0, 4]], is_dm=True),
    "not_dm": _list([[0, 5]], is_dm=False),
    "encrypted": _list([[0, 9]], is_encrypted=True),
    "unencrypted": _list([[0, 3]], is_encrypted=False),
    "invites": _list([[0, 9]], is_invite=True),
    "not_invites": _list([[0, 4]], is_invite=False),
    "spaces_only": _list([[0, 9]], room_types=["m.space"]),
    "untyped": _list([[0, 4]], room_types=[None]),
    "not_spaces": _list([[0, 4]], not_room_types=["m.space"]),
    "favourites": _list([[0, 9]], tags=["m.favourite", "u.work"]),
    "not_low": _list([[0, 4]], not_tags=["m.lowpriority"]),
    "tags_both": _list([[0, 9]], tags=["u.work"], not_tags=["m.favourite"]),
    "combined": _list([[0, 9]], is_dm=False, is_encrypted=False, not_room_types=["m.space"]),
    "invite_dm": _list([[0, 9]], is_invite=True, is_dm=True),
    "windows": _list([[1, 3], [5, 6], [2, 2]], timeline_limit=3),
    "second": _list([[1, 2]], timeline_limit=2, is_invite=False),
    "wildcard_state": {
        "ranges": [[1, 1]],
        "timeline_limit": 1,
        "required_state": [["*", "*"]],
    },
}


def _unsorted(op: JsonDict, count: int, ranges: int) -> bool:
    """Synapse does not sort a list asked for with a single range from 0
    that covers it entirely."""
    start, end = op["range"]
    return ranges == 1 and start == 0 and end >= count - 1


def list_differences(name: str, module: JsonDict, synapse: JsonDict) -> list[str]:
    """How one list of the two answers differs (empty when equal)."""
    if module.get("count") != synapse.get("count"):
        return [f"{name}: count {module.get('count')} != {synapse.get('count')}"]
    module_ops, synapse_ops = module.get("ops", []), synapse.get("ops", [])
    if len(module_ops) != len(synapse_ops):
        return [f"{name}: {len(module_ops)} ops != {len(synapse_ops)}"]
    differences = []
    for ours, theirs in zip(module_ops, synapse_ops, strict=True):
        if ours["range"] != theirs["range"] or ours["op"] != theirs["op"]:
            differences.append(f"{name}: op {ours['op']} {ours['range']} != {theirs}")
            continue
        mine, expected = ours.get("room_ids", []), theirs.get("room_ids", [])
        if _unsorted(theirs, synapse["count"], len(synapse_ops)):
            mine, expected = sorted(mine), sorted(expected)
        if mine != expected:
            differences.append(f"{name} {ours['range']}: rooms {mine} != {expected}")
    return differences


# What differs between two answers made one after the other: events' ages
# (in `unsigned`), rooms' `prev_batch` (compared on its own).
_DIFFERING = ("age", "prev_batch")
# Lists of state events whose order Synapse leaves unspecified.
_STATE_LISTS = ("required_state", "invite_state", "knock_state", "stripped_state")


def _normalised(value: Any) -> Any:
    """A room's data without what differs between two requests made one
    after the other (events' ages, pagination tokens), its state events
    in one order."""
    if isinstance(value, Mapping):
        normalised = {
            key: _normalised(item)
            for key, item in value.items()
            if key not in ("age", "prev_batch")
        }
        for key in _STATE_LISTS:
            if isinstance(normalised.get(key), list):
                normalised[key] = sorted(
                    normalised[key], key=lambda e: (e.get("type"), e.get("state_key"), repr(e))
                )
        return normalised
    if isinstance(value, list):
        return [_normalised(item) for item in value]
    return value


def _room_position(prev_batch: Any) -> Any:
    """A timeline's `prev_batch` token's position in the room (its first
    part: `t<topological>-<stream>` after events, else the request's room
    position); the other streams' parts move between two requests."""
    return prev_batch.split("_")[0] if isinstance(prev_batch, str) else prev_batch


def answer_differences(module: JsonDict, synapse: JsonDict, prev_batch: bool = True) -> list[str]:
    """Every difference between two Sliding Sync answers' lists and rooms
    (with `prev_batch`, the rooms' `prev_batch` positions in the room too:
    equal when nothing was written between the two answers)."""
    differences: list[str] = []
    module_lists, synapse_lists = module.get("lists", {}), synapse.get("lists", {})
    if set(module_lists) != set(synapse_lists):
        differences.append(f"lists {sorted(module_lists)} != {sorted(synapse_lists)}")
    for name in sorted(set(module_lists) & set(synapse_lists)):
        differences += list_differences(name, module_lists[name], synapse_lists[name])
    module_rooms, synapse_rooms = module.get("rooms", {}), synapse.get("rooms", {})
    if set(module_rooms) != set(synapse_rooms):
        differences.append(f"rooms sent {sorted(module_rooms)} != {sorted(synapse_rooms)}")
    for room_id in sorted(set(module_rooms) & set(synapse_rooms)):
        ours, theirs = _normalised(module_rooms[room_id]), _normalised(synapse_rooms[room_id])
        for key in sorted(set(ours) | set(theirs)):
            if ours.get(key) != theirs.get(key):
                differences.append(f"room {room_id} {key}: {ours.get(key)} != {theirs.get(key)}")
        positions = [
            _room_position(room.get("prev_batch"))
            for room in (module_rooms[room_id], synapse_rooms[room_id])
        ]
        if prev_batch and positions[0] != positions[1]:
            differences.append(f"room {room_id} prev_batch: {positions[0]} != {positions[1]}")
    return differences


class Observer:
    """A user syncing on two connections, one through the module and one
    computed by Synapse alone; `compare` sends one request to both."""

    def __init__(self, client: Client) -> None:
        self.client = client
        number = next(_connection_numbers)
        self._connections = {
            "module": f"roomcache-{number}",
            "synapse": f"{BYPASS_PREFIX}-{number}",
        }
        self._positions: dict[str, str | None] = {"module": None, "synapse": None}
        self.requests = 0

    def restart(self) -> None:
        """Starts new connections (the next requests are initial syncs)."""
        number = next(_connection_numbers)
        self._connections = {
            "module": f"roomcache-{number}",
            "synapse": f"{BYPASS_PREFIX}-{number}",
        }
        self._positions = {"module": None, "synapse": None}

    def _sync(self, side: str, lists: Mapping[str, JsonDict]) -> JsonDict:
        body = {"conn_id": self._connections[side], "lists": dict(lists)}
        answer = self.client.sliding_sync(body, pos=self._positions[side])
        self._positions[side] = answer["pos"]
        return answer

    def module_sync(self, lists: Mapping[str, JsonDict] = LISTS) -> JsonDict:
        """One request on the module's connection only."""
        self.requests += 1
        return self._sync("module", lists)

    def compare(self, lists: Mapping[str, JsonDict] = LISTS) -> list[str]:
        """One request on both connections; the differences, each prefixed
        with the user."""
        module = self._sync("module", lists)
        synapse = self._sync("synapse", lists)
        self.requests += 1
        return [f"{self.client.user_id}: {d}" for d in answer_differences(module, synapse)]


# Requests the module may leave to Synapse in the equivalence workloads, and
# why: a room left and forgotten within the request's range; a room the
# server left (its last local member left) within it; the user's own
# membership changed after the request's token (roomcache follows fast
# enough that it can be ahead of it).
ALLOWED_FALLBACKS = {"forgotten_newly_left", "left_without_event", "membership_after_token"}


def assert_answered_from_roomcache(counts: dict[tuple[str, str], int], requests: int) -> None:
    """The module's counters over `requests` compared requests (each sent
    once through the module and once bypassing it): at least 90 % answered
    by roomcache, the rest computed Synapse's way for an allowed reason,
    and every answer from roomcache also computed Synapse's way and equal
    (`verify_fraction: 1.0`)."""
    counts = dict(counts)
    assert counts.pop(("synapse", "bypass")) == requests
    assert counts.pop(("verified", "different"), 0) == 0
    verified = counts.pop(("verified", "equal"), 0)
    counts.pop(("unsettled", ""), None)
    counts.pop(("unaffected", ""), None)
    counts.pop(("held_lists", "true"), None)
    counts.pop(("held_lists", "false"), None)
    from_roomcache = counts.pop(("roomcache", ""), 0)
    fallbacks = {reason: n for (_, reason), n in counts.items()}
    assert from_roomcache + sum(fallbacks.values()) == requests
    assert set(fallbacks) <= ALLOWED_FALLBACKS, fallbacks
    assert from_roomcache >= 0.9 * requests
    assert verified == from_roomcache


# State lookups the per-room seam leaves to Synapse in the equivalence
# workloads, and why: the connections bypassing the module; rooms sent
# incrementally (their state changes come from Synapse's deltas; a lookup
# there is for state newly asked for, a new name or heroes); rooms left or
# banned (the state at the leave); all state asked for (`["*", "*"]`); only
# keys roomcache does not hold (heroes' memberships).
ALLOWED_ROOM_STATE_FALLBACKS = {"bypass", "not_fetched", "membership", "state_filter", "not_held"}


def assert_room_state_from_roomcache(counts: dict[tuple[str, str], int], at_least: int) -> None:
    """The per-room seam's counters over a workload: at least `at_least`
    state lookups answered from roomcache, every fetch answered, the other
    lookups Synapse's for an allowed reason."""
    counts = dict(counts)
    from_roomcache = counts.pop(("roomcache", ""), 0)
    fetches = {outcome: n for (kind, outcome), n in counts.items() if kind == "fetch"}
    assert set(fetches) == {"answered"}, fetches
    fallbacks = {reason: n for (path, reason), n in counts.items() if path == "synapse"}
    assert set(fallbacks) <= ALLOWED_ROOM_STATE_FALLBACKS, fallbacks
    assert from_roomcache >= at_least, (from_roomcache, at_least)


# Initial timelines the per-room seam leaves to Synapse in the equivalence
# workloads, and why: the connections bypassing the module; rooms it did not
# fetch (sent incrementally with a grown timeline limit, left or banned);
# rooms whose latest events roomcache holds cannot decide the answer (in
# source mode, rooms with fewer than `2 * limit` events); rooms whose limit
# is not the one most rooms of the request use (room subscriptions).
ALLOWED_TIMELINE_FALLBACKS = {"bypass", "not_fetched", "not_held", "timeline_limit"}


def assert_timelines_from_roomcache(counts: dict[tuple[str, str], int], at_least: int) -> None:
    """The per-room seam's initial timelines over a workload: at least
    `at_least` from roomcache, the others Synapse's for an allowed reason."""
    from_roomcache = counts.get(("timeline_roomcache", ""), 0)
    fallbacks = {reason: n for (path, reason), n in counts.items() if path == "timeline_synapse"}
    assert set(fallbacks) <= ALLOWED_TIMELINE_FALLBACKS, fallbacks
    assert from_roomcache >= at_least, (from_roomcache, at_least)
