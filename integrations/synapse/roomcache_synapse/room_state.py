# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""roomcache's rooms' data (`POST /v1/rooms/data`: the held state, and
when asked the timelines of room_timeline.py), parsed into typed values,
and the pure decisions on a state filter: which of its keys roomcache's
held state answers exactly, and which Synapse must.

roomcache holds each room's current-state event IDs for the types it is
configured with: key `""` of its `types`, every key of its
`wildcard_types`. For a key (type, state key) it holds, a room's held state
has the event ID when the key is in the room's current state and nothing
when it is not; for any other key it knows nothing.

Owns: the answer's wire form and its checks, `HeldTypes.split`. May not
touch: Synapse, the connection.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import attr

from .answer import BadAnswer, _flag, _identifier, _room_id, _text
from .room_timeline import RoomTimeline, parse_timeline
from .tokens import StreamPosition

StateKey = tuple[str, str]
# A state filter's types as Synapse keeps them (`StateFilter.types`): the
# state keys of each type, None for all of them.
FilterTypes = Mapping[str, Collection[str] | None]


@attr.s(frozen=True, slots=True, auto_attribs=True)
class HeldTypes:
    """The state roomcache holds of every room: key `""` of `types`, every
    key of `wildcard_types`."""

    types: frozenset[str]
    wildcard_types: frozenset[str]

    def holds(self, event_type: str, state_key: str | None) -> bool:
        """Whether roomcache holds (`state_key` None: every key of) this."""
        if event_type in self.wildcard_types:
            return True
        return state_key == "" and event_type in self.types

    def split(self, types: FilterTypes) -> tuple[dict[str, frozenset[str] | None], FilterTypes]:
        """A filter's types as (those roomcache holds, the rest): a type's
        keys may go either way one by one; a wildcard goes to roomcache
        only for a wildcard type."""
        held: dict[str, frozenset[str] | None] = {}
        rest: dict[str, Collection[str] | None] = {}
        for event_type, state_keys in types.items():
            if state_keys is None:
                if event_type in self.wildcard_types:
                    held[event_type] = None
                else:
                    rest[event_type] = None
                continue
            mine = frozenset(key for key in state_keys if self.holds(event_type, key))
            if mine:
                held[event_type] = mine
            others = frozenset(state_keys) - mine
            if others:
                rest[event_type] = others
        return held, rest


@attr.s(frozen=True, slots=True, auto_attribs=True)
class RoomState:
    """One room's held current state: (type, state key) → event ID."""

    ids: Mapping[StateKey, str]

    def pick(self, wanted: Mapping[str, frozenset[str] | None]) -> dict[StateKey, str]:
        """The event IDs of the keys `wanted` (None: every key of the type)."""
        picked: dict[StateKey, str] = {}
        for (event_type, state_key), event_id in self.ids.items():
            if event_type not in wanted:
                continue
            state_keys = wanted[event_type]
            if state_keys is None or state_key in state_keys:
                picked[(event_type, state_key)] = event_id
        return picked


@attr.s(frozen=True, slots=True, auto_attribs=True)
class RoomDataAnswer:
    """roomcache's answer for some rooms at `token`: each room's state, or
    why roomcache does not know it (`unknown`); when timelines were asked,
    each room's initial timeline, or why roomcache does not know it."""

    token: StreamPosition
    timed_out: bool
    held: HeldTypes
    states: Mapping[str, RoomState]
    unknown: Mapping[str, str]
    timelines: Mapping[str, RoomTimeline | str] = attr.ib(factory=dict)


def parse_room_data(
    raw: Any, asked: Collection[str], at: StreamPosition, timeline_limit: int | None = None
) -> RoomDataAnswer:
    """The answer to a request for the rooms `asked` waiting for `at` (and
    with `timeline_limit`, their timelines of that many events);
    `BadAnswer` when it is not one (a room missing or added, a key of a
    type not held, a token before `at` without `timed_out`, a timeline
    missing or bad)."""
    if type(raw) is not dict:
        raise BadAnswer("the answer is not a JSON object")
    held_raw = raw.get("held")
    if type(held_raw) is not dict:
        raise BadAnswer("no `held` types")
    held = HeldTypes(
        types=_names(held_raw.get("types"), "held types"),
        wildcard_types=_names(held_raw.get("wildcard_types"), "held wildcard types"),
    )
    try:
        token = StreamPosition.parse(raw.get("token"))
    except ValueError as error:
        raise BadAnswer(str(error)) from None
    timed_out = _flag(raw, "timed_out")
    if not timed_out and not at.is_before_or_eq(token):
        raise BadAnswer(f"the answer's token {token.text()} is before {at.text()}")
    rooms = raw.get("rooms")
    if type(rooms) is not dict or set(rooms) != set(asked):
        raise BadAnswer("the answer's rooms are not the rooms asked")
    states: dict[str, RoomState] = {}
    unknown: dict[str, str] = {}
    timelines: dict[str, RoomTimeline | str] = {}
    for room_id, entry in rooms.items():
        _room_id(room_id)
        if type(entry) is not dict:
            raise BadAnswer(f"{room_id}: not an object")
        if timeline_limit is not None:
            timelines[room_id] = parse_timeline(entry.get("timeline"), room_id, timeline_limit)
        if "unknown" in entry:
            unknown[room_id] = _text(entry["unknown"], "unknown")
            continue
        states[room_id] = RoomState(_state(entry.get("state"), held, room_id))
    return RoomDataAnswer(token, timed_out, held, states, unknown, timelines)


def _names(raw: Any, what: str) -> frozenset[str]:
    if type(raw) is not list:
        raise BadAnswer(f"{what}: not a list")
    return frozenset(_text(name, what) for name in raw)


def _state(raw: Any, held: HeldTypes, room_id: str) -> dict[StateKey, str]:
    if type(raw) is not list:
        raise BadAnswer(f"{room_id}: `state` is not a list")
    ids: dict[StateKey, str] = {}
    for key in raw:
        if type(key) is not list or len(key) != 3:
            raise BadAnswer(f"{room_id}: a state key is not [type, state key, event ID]")
        event_type = _text(key[0], "type")
        state_key = _text(key[1], "state key")
        if not held.holds(event_type, state_key):
            raise BadAnswer(f"{room_id}: ({event_type}, {state_key}) is not a held key")
        if (event_type, state_key) in ids:
            raise BadAnswer(f"{room_id}: ({event_type}, {state_key}) twice")
        ids[(event_type, state_key)] = _identifier(key[2], "$", "event ID")
    return ids
