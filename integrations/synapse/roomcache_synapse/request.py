# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""A Sliding Sync request's lists as a roomcache room-list request.

Lists are named by their position in the request ("0", "1", ...), so any
list name Synapse accepts is fine; the answer is mapped back by position.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .tokens import room_token

JsonDict = dict[str, Any]

FILTERS = (
    "is_dm",
    "spaces",
    "is_encrypted",
    "is_invite",
    "room_types",
    "not_room_types",
    "room_name_like",
    "tags",
    "not_tags",
)
"""The list filters Synapse parses; roomcache answers all of them (Synapse
itself fails on `spaces` and `room_name_like`)."""

MAX_RANGES = 100
"""roomcache's limit on ranges per list."""


class UnsupportedRequest(Exception):
    """A request roomcache's API cannot express; computed Synapse's way."""


def list_body(list_config: Any, exclude_rooms: Iterable[str]) -> JsonDict:
    """One list: its ranges, its filters (those set) and the rooms it leaves out."""
    ranges = list_config.ranges or []
    if len(ranges) > MAX_RANGES:
        raise UnsupportedRequest(f"{len(ranges)} ranges in one list (roomcache takes {MAX_RANGES})")
    body: JsonDict = {"ranges": [[start, end] for start, end in ranges]}
    filters = list_config.filters
    if filters is not None:
        chosen = {name: getattr(filters, name, None) for name in FILTERS}
        body["filters"] = {name: value for name, value in chosen.items() if value is not None}
    excluded = sorted(exclude_rooms)
    if excluded:
        body["exclude_rooms"] = excluded
    return body


def stream_token_text(room_key: Any) -> str:
    """A Synapse `RoomStreamToken` (a live one: no topological part) in
    roomcache's text form."""
    return room_token(room_key.stream, dict(room_key.instance_map))


def room_list_body(
    *,
    lists: list[JsonDict],
    to_token: Any,
    from_token: Any | None,
    wait_timeout_ms: int,
    forgotten_rooms: Iterable[str],
    ignored_inviters: Iterable[str],
    other_rooms: str | None,
    room_ids: Iterable[str],
    wait_for_account_data: int,
    unaffected: JsonDict | None = None,
    wait_for: str | None = None,
    changed_only: bool = False,
) -> JsonDict:
    """The whole roomcache request: answer at Synapse's `to_token` (wait for
    it, or for `wait_for`, and report what lies after it), newly left after
    `from_token`."""
    at = stream_token_text(to_token.room_key)
    body: JsonDict = {
        "lists": {str(i): list_body_ for i, list_body_ in enumerate(lists)},
        "wait_for": wait_for or at,
        "at": at,
        "timeout_ms": wait_timeout_ms,
        "wait_for_account_data": wait_for_account_data,
        # Forgets have no stream position: the one reading of them is the
        # caller's, passed in `forgotten_rooms`.
        "only_forgotten_rooms": True,
    }
    if from_token is not None:
        body["from_token"] = stream_token_text(from_token.room_key)
        # Entries seen before (not changed since `from_token`) come short,
        # or not at all when the caller holds the whole lists: the answer
        # grows with what changed, not with the ranges.
        body["entries"] = "changed_only" if changed_only else "changed"
    optional = {
        "forgotten_rooms": sorted(forgotten_rooms),
        "ignored_inviters": sorted(ignored_inviters),
        "room_ids": sorted(set(room_ids)),
    }
    body.update({key: value for key, value in optional.items() if value})
    if other_rooms is not None:
        body["other_rooms"] = other_rooms
    if unaffected is not None:
        body["unaffected"] = unaffected
    return body
