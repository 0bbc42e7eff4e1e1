# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""Which rooms shown on a connection Synapse computes data for: the
decision of Synapse's `_filter_relevant_rooms_to_send`, made without its
walk over every room in range.

On a request with a `pos`, Synapse sends a room shown when it was never
sent on the connection, was sent but has updates not sent yet
(`PREVIOUSLY`), is shown with a config wider than the one it was last sent
with, or had an event after `pos` (Synapse asks its stream change cache or
its sliding-sync table, once per room). Here the rooms with an event after
`pos` come with roomcache's answer (the rooms of the lists whose latest
event or membership is after `pos`), the never-sent rooms are a set
difference, and a config is compared once per distinct pair of configs,
not once per room: at 10,000 rooms in range with little changed, this is
a few set operations and one light pass.

Owns: the decision. May not touch: Synapse's objects' private parts (the
adapter hands over the connection's state as plain mappings).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Collection, Mapping
from typing import Any

import attr


@attr.s(frozen=True, slots=True, auto_attribs=True)
class PreviousConnection:
    """What the connection sent before, as the adapter reads it."""

    never_sent: Callable[[Collection[str]], set[str]]
    """The rooms of a collection never sent on the connection."""
    previously: Collection[str]
    """Rooms sent before with updates not sent yet (`PREVIOUSLY`)."""
    room_configs: Mapping[str, Any]
    """The config each room was last sent with."""
    last_used_ts: int | None
    """When the connection was last used (ms), as Synapse records it."""


@attr.s(frozen=True, slots=True, auto_attribs=True)
class TooManyUpdates:
    """Synapse's rule: this many rooms with updates, on a connection unused
    for this long, and the connection is reset (the client starts again
    with a small range)."""

    rooms: int
    unused_ms: int


class ConnectionExpired(Exception):
    """Synapse's rule resets this connection (`SlidingSyncUnknownPosition`)."""


def rooms_to_send(
    relevant: dict[str, Any],
    previous: PreviousConnection | None,
    updated: Collection[str],
    *,
    now_ms: int,
    expiry: TooManyUpdates,
) -> dict[str, Any]:
    """The rooms of `relevant` (room ID → its config now) to send, with
    their configs; `previous` is None on a request without `pos` (all of
    them). `updated`: rooms (of `relevant` and others) with an event after
    `pos`."""
    if previous is None or not relevant:
        return relevant
    shown = relevant.keys()
    send = previous.never_sent(shown)
    send.update(shown & set(previous.previously))
    send.update(_widened(relevant, previous.room_configs))
    with_updates = shown & set(updated)
    last_used = previous.last_used_ts
    if (
        len(with_updates) > expiry.rooms
        and last_used is not None
        and now_ms - last_used > expiry.unused_ms
    ):
        raise ConnectionExpired()
    send.update(with_updates)
    if len(send) == len(relevant):
        return relevant
    # In `relevant`'s order, chosen in C (10,000 rooms, a few sent).
    chosen = itertools.compress(relevant, map(send.__contains__, relevant))
    return {room_id: relevant[room_id] for room_id in chosen}


def _widened(relevant: dict[str, Any], previous_configs: Mapping[str, Any]) -> list[str]:
    """The rooms shown with a config wider than the one they were last sent
    with. Synapse's union of two configs takes the higher timeline limit
    and the union of the required state, each on its own; Synapse shares
    one required-state map between the configs loaded with the same
    required state. So when no config shown now has a timeline limit above
    the lowest loaded nor widens any required-state map loaded — the steady
    state: one list config, sent before — no room is (found with a few
    passes that run in C, no tuple per room); else each room is judged,
    each distinct combination combined once."""
    loaded = list(previous_configs.values())
    if not loaded:
        return []
    shown = _distinct(list(relevant.values()), list(relevant.values()))
    lowest_limit = min(map(_TIMELINE_LIMIT, loaded))
    # A loaded config carrying each distinct required-state map.
    loaded_maps = _distinct(list(map(_REQUIRED_STATE, loaded)), loaded)
    if len(shown) * len(loaded_maps) <= _MAX_COMBINATIONS and not any(
        config.timeline_limit > lowest_limit or _wider_state(before, config)
        for config in shown
        for before in loaded_maps
    ):
        return []
    widened: list[str] = []
    known: dict[tuple[int, int, int], bool] = {}
    get_previous = previous_configs.get
    for room_id, config in relevant.items():
        before = get_previous(room_id)
        if before is None:
            continue
        key = (id(config), before.timeline_limit, id(before.required_state_map))
        wider = known.get(key)
        if wider is None:
            wider = known[key] = _wider(before, config)
        if wider:
            widened.append(room_id)
    return widened


def _distinct(keys: list[Any], values: list[Any]) -> list[Any]:
    """One of `values` for each distinct object of `keys` (by identity):
    one C pass comparing identities when every key is one object (the
    usual case), else a map by `id`."""
    if not keys:
        return []
    if all(map(operator.is_, keys, itertools.repeat(keys[0]))):
        return [values[0]]
    return list(dict(zip(map(id, keys), values, strict=True)).values())


def _wider(before: Any, config: Any) -> bool:
    """Whether showing a room with `config` widens `before` (Synapse's
    rule: their union is not `before`)."""
    return before.combine_room_sync_config(config) != before


def _wider_state(before: Any, config: Any) -> bool:
    """Whether `config`'s required state widens `before`'s (the required
    state of their union is not `before`'s), timeline limits aside."""
    union = before.combine_room_sync_config(config)
    return union.required_state_map != before.required_state_map


_TIMELINE_LIMIT = operator.attrgetter("timeline_limit")
_REQUIRED_STATE = operator.attrgetter("required_state_map")
# Beyond this many (config now, config loaded) combinations, rooms are
# judged one by one.
_MAX_COMBINATIONS = 64
