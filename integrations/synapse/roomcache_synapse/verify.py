# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""Checking an answer from roomcache against Synapse's own at the same token.

With `verify_fraction` set, that share of the requests answered from
roomcache is also computed Synapse's way, and the two are compared: the
lists (counts, ops; the rooms of a range Synapse does not sort as a set),
the rooms shown, and the memberships of the rooms the module sends (the
only ones Synapse's caller reads). The rooms' configs are not compared:
Synapse carries a room's config on to the next rooms of a list, so in a
list it does not sort they depend on an order it leaves unspecified.
`all_rooms` is not compared either: the
module names only the rooms out of range that Synapse then looks at. Nor
are the rooms to send: Synapse picks them from the rooms with an event
after the previous request's token up to now, not up to the token, so two
computations one after the other may differ there (both send every room
with an update up to the token).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from .adapter import SlidingSyncUnknownPosition
from .metrics import VERIFIED

logger = logging.getLogger(__name__)


def should_verify(fraction: float, sync_config: Any) -> bool:
    """Whether to check this answer: a share of them, never those Synapse
    cannot compute (lists on `spaces` or `room_name_like`)."""
    if not fraction or random.random() >= fraction:
        return False
    for list_config in (sync_config.lists or {}).values():
        filters = list_config.filters
        if filters is not None and (
            filters.spaces is not None or filters.room_name_like is not None
        ):
            return False
    return True


async def verified(
    ours: Any, original: Callable[..., Awaitable[Any]], arguments: dict[str, Any]
) -> Any:
    """Synapse's own answer at the same token, compared with ours: ours
    when they agree, Synapse's (and a warning) when they do not."""
    try:
        theirs = await original(**arguments)
    except SlidingSyncUnknownPosition:
        raise
    except Exception:
        logger.exception("roomcache: Synapse's own room lists failed; keeping roomcache's")
        VERIFIED.labels(outcome="synapse_failed").inc()
        return ours
    ahead = synapse_ahead(theirs, arguments["to_token"])
    if ahead:
        VERIFIED.labels(outcome="synapse_ahead").inc()
        logger.info(
            "roomcache: Synapse's own room lists of %s show memberships after %s in %s; "
            "not compared",
            arguments["sync_config"].user.to_string(),
            arguments["to_token"].room_key,
            ahead[:5],
        )
        return ours
    found = differences(ours, theirs)
    VERIFIED.labels(outcome="different" if found else "equal").inc()
    if not found:
        return ours
    logger.warning(
        "roomcache: room lists of %s differ from Synapse's at %s (Synapse's are used): %s",
        arguments["sync_config"].user.to_string(),
        arguments["to_token"].room_key,
        "; ".join(found[:10]),
    )
    return theirs


def _unsorted(synapse_list: Any) -> bool:
    ops = synapse_list.ops
    return len(ops) == 1 and ops[0].range[0] == 0 and ops[0].range[1] >= synapse_list.count - 1


def _rooms_of(window: Any) -> set[str]:
    return {room_id for op in window.ops for room_id in op.room_ids}


def _list_differences(name: str, ours: Any, theirs: Any) -> list[str]:
    if ours.count != theirs.count:
        only_ours = sorted(_rooms_of(ours) - _rooms_of(theirs))
        only_theirs = sorted(_rooms_of(theirs) - _rooms_of(ours))
        return [
            f"list {name!r}: count {ours.count} != {theirs.count} "
            f"(only ours {only_ours}, only theirs {only_theirs})"
        ]
    if len(ours.ops) != len(theirs.ops):
        return [f"list {name!r}: {len(ours.ops)} ops != {len(theirs.ops)}"]
    unsorted = _unsorted(theirs)
    differences = []
    for mine, expected in zip(ours.ops, theirs.ops, strict=True):
        mine_rooms, expected_rooms = list(mine.room_ids), list(expected.room_ids)
        if unsorted:
            mine_rooms, expected_rooms = sorted(mine_rooms), sorted(expected_rooms)
        if tuple(mine.range) != tuple(expected.range) or mine_rooms != expected_rooms:
            differences.append(
                f"list {name!r} range {tuple(expected.range)}: {mine_rooms} != {expected_rooms}"
            )
    return differences


def _membership(entry: Any) -> tuple[Any, ...]:
    return (
        entry.membership,
        entry.event_id,
        entry.sender,
        entry.event_pos.instance_name,
        entry.event_pos.stream,
        entry.room_version_id,
        bool(entry.has_known_state),
        entry.room_type,
        bool(entry.is_encrypted),
    )


def synapse_ahead(theirs: Any, to_token: Any) -> list[str]:
    """The rooms where Synapse's own answer shows a membership from after the
    token (seen with event persisters: the main process can read a
    membership before it has learnt its writer's new position, and then
    misses it when rewinding). Such an answer is not Synapse's answer at
    the token, so it cannot judge ours (which roomcache checks against the
    token exactly)."""
    return sorted(
        room_id
        for room_id, entry in theirs.room_membership_for_user_map.items()
        if entry.event_pos.persisted_after(to_token.room_key)
    )


def differences(ours: Any, theirs: Any) -> list[str]:
    """How two `SlidingSyncInterestedRooms` differ where it matters (empty
    when they agree)."""
    found: list[str] = []
    if set(ours.lists) != set(theirs.lists):
        found.append(f"lists {sorted(ours.lists)} != {sorted(theirs.lists)}")
    for name in sorted(set(ours.lists) & set(theirs.lists)):
        found += _list_differences(name, ours.lists[name], theirs.lists[name])
    if set(ours.relevant_room_map) != set(theirs.relevant_room_map):
        found.append(
            f"rooms shown {sorted(ours.relevant_room_map)} != {sorted(theirs.relevant_room_map)}"
        )
    # The module builds the memberships of the rooms it sends (the only
    # ones Synapse's caller reads); each is compared with Synapse's.
    without = set(ours.relevant_rooms_to_send_map) - set(ours.room_membership_for_user_map)
    if without:
        found.append(f"rooms to send without a membership: {sorted(without)}")
    shown = set(ours.room_membership_for_user_map) & set(theirs.relevant_room_map)
    for room_id in sorted(shown):
        mine = ours.room_membership_for_user_map.get(room_id)
        expected = theirs.room_membership_for_user_map.get(room_id)
        if mine is None or expected is None or _membership(mine) != _membership(expected):
            shown = [None if e is None else _membership(e) for e in (mine, expected)]
            found.append(f"membership in {room_id}: {shown[0]} != {shown[1]}")
    for field in ("newly_joined_rooms", "newly_left_rooms", "dm_room_ids"):
        if set(getattr(ours, field)) != set(getattr(theirs, field)):
            found.append(f"{field} differ")
    return found
