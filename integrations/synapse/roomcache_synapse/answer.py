# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""roomcache's room-list answer, parsed into typed values.

Nothing roomcache sends reaches Synapse unchecked: `parse_answer` checks the
answer's shape against the request (one answer per list, per range, the
ranges asked for) and the type and range of every value the module uses —
counts are non-negative integers no smaller than the rooms shown, room IDs
are strings of the right form, the token parses. A room's entry (its
membership, sender, event, position, metadata) is checked when the module
uses it (`RoomListAnswer.entry`): for the rooms whose data Synapse computes
and the rooms it places itself, not for every room of a 10,000-room range
whose ID alone is shown. Anything else raises `BadAnswer`, and the request
is computed Synapse's way.

Owns: the answer's wire form and its checks. May not touch: Synapse (the
seam compares positions with Synapse's tokens), the connection.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterable, Sequence
from typing import Any

import attr

from .tokens import StreamPosition

JsonDict = dict[str, Any]

MEMBERSHIPS = frozenset({"join", "invite", "leave", "ban", "knock"})
"""Synapse's memberships (`synapse.api.constants.Membership`)."""

# Matrix identifiers are at most 255 bytes; roomcache's own limit for text
# values is 64 KiB (room names, types).
_MAX_ID_LENGTH = 255
_MAX_TEXT_LENGTH = 65536


class BadAnswer(Exception):
    """roomcache's answer is not a room-list answer for this request."""


@attr.s(frozen=True, slots=True, auto_attribs=True)
class RoomEntry:
    """The user's entry in one room, as roomcache answers it (docs/api.md
    "Answer")."""

    room_id: str
    membership: str
    sender: str
    membership_event_id: str
    event_stream_ordering: int
    event_instance_name: str
    bump_stamp: int
    room_type: str | None
    room_name: str | None
    is_encrypted: bool
    tombstone_successor_room_id: str | None
    has_known_state: bool
    recency: int

    @classmethod
    def parse(cls, raw: Any) -> RoomEntry:
        """A room entry, checked: in one pass when it is good (the usual
        case), field by field to name what is wrong otherwise."""
        try:
            values = _ENTRY_FIELDS(raw)
        except (TypeError, KeyError):
            return cls._parse_field_by_field(raw)
        (room_id, membership, sender, event_id, stream, instance, bump_stamp) = values[:7]
        (room_type, room_name, encrypted, tombstone, known_state, recency) = values[7:]
        if (
            type(raw) is dict
            and type(room_id) is str
            and room_id.startswith("!")
            and len(room_id) <= _MAX_ID_LENGTH
            and type(membership) is str
            and membership in MEMBERSHIPS
            and type(sender) is str
            and sender.startswith("@")
            and len(sender) <= _MAX_ID_LENGTH
            and type(event_id) is str
            and event_id.startswith("$")
            and len(event_id) <= _MAX_ID_LENGTH
            and type(stream) is int
            and 1 <= stream <= _MAX_INTEGER
            and type(instance) is str
            and 0 < len(instance) <= _MAX_TEXT_LENGTH
            and type(bump_stamp) is int
            and 0 <= bump_stamp <= _MAX_INTEGER
            and (
                room_type is None or (type(room_type) is str and len(room_type) <= _MAX_TEXT_LENGTH)
            )
            and (
                room_name is None or (type(room_name) is str and len(room_name) <= _MAX_TEXT_LENGTH)
            )
            and type(encrypted) is bool
            and (
                tombstone is None or (type(tombstone) is str and len(tombstone) <= _MAX_TEXT_LENGTH)
            )
            and type(known_state) is bool
            and type(recency) is int
            and 1 <= recency <= _MAX_INTEGER
        ):
            return cls(*values)
        return cls._parse_field_by_field(raw)

    @classmethod
    def _parse_field_by_field(cls, raw: Any) -> RoomEntry:
        if type(raw) is not dict:
            raise BadAnswer(f"a room entry is a {type(raw).__name__}, not an object")
        try:
            entry = cls(
                room_id=_room_id(raw["room_id"]),
                membership=_membership(raw["membership"]),
                sender=_identifier(raw["sender"], "@", "sender"),
                membership_event_id=_identifier(
                    raw["membership_event_id"], "$", "membership_event_id"
                ),
                event_stream_ordering=_integer(raw["event_stream_ordering"], 1, "stream ordering"),
                event_instance_name=_text(raw["event_instance_name"], "event_instance_name"),
                bump_stamp=_integer(raw["bump_stamp"], 0, "bump_stamp"),
                room_type=_optional_text(raw["room_type"], "room_type"),
                room_name=_optional_text(raw["room_name"], "room_name"),
                is_encrypted=_boolean(raw["is_encrypted"], "is_encrypted"),
                tombstone_successor_room_id=_optional_text(
                    raw["tombstone_successor_room_id"], "tombstone_successor_room_id"
                ),
                has_known_state=_boolean(raw["has_known_state"], "has_known_state"),
                recency=_integer(raw["recency"], 1, "recency"),
            )
        except KeyError as missing:
            raise BadAnswer(f"a room entry lacks {missing}") from None
        if not entry.event_instance_name:
            raise BadAnswer("an empty event_instance_name")
        return entry


@attr.s(frozen=True, slots=True, auto_attribs=True)
class ListAnswer:
    """One list: its count, and either the room IDs of each range (cut by
    roomcache), or the rooms roomcache could order (`settled`: (recency,
    room ID), in order) and those it could not (`unsettled`)."""

    count: int
    ranges: tuple[tuple[str, ...], ...] | None
    settled: tuple[tuple[int, str], ...] | None = None
    unsettled: tuple[RoomEntry, ...] | None = None


@attr.s(frozen=True, slots=True, auto_attribs=True)
class RoomListAnswer:
    """The whole answer."""

    lists: tuple[ListAnswer, ...]
    token: StreamPosition
    timed_out: bool
    fallback: bool
    unaffected: bool
    memberships_after_at: tuple[str, ...]
    other_rooms: frozenset[str]
    subscribed: frozenset[str]
    """The rooms of `room_ids` (subscriptions) the user has an entry in."""
    account_data_position: int | None
    waited_us: int | None
    """How long roomcache waited before answering (as it reports it)."""
    _at: StreamPosition
    _raw_entries: dict[str, JsonDict]
    _parsed: dict[str, RoomEntry] = attr.ib(factory=dict)

    def lacking_entries(self, room_ids: Iterable[str]) -> list[str]:
        """Those of the rooms the answer shows short (`entries: changed`:
        unchanged since `from_token`) or not at all."""
        raw = self._raw_entries
        return [room_id for room_id in room_ids if "membership" not in raw.get(room_id, ())]

    def recencies(self, room_ids: list[str]) -> dict[str, int]:
        """The position each of these rooms sorts by (its entry's
        `recency`, whole or short), checked."""
        raw = self._raw_entries
        try:
            values = [raw[room_id]["recency"] for room_id in room_ids]
        except (KeyError, TypeError):
            raise BadAnswer("a room shown without its recency") from None
        if values and (not set(map(type, values)) <= {int} or min(values) < 1):
            raise BadAnswer("a room's recency is not a positive integer")
        return dict(zip(room_ids, values, strict=True))

    def add_entries(self, other: RoomListAnswer, room_ids: Iterable[str]) -> None:
        """Takes the entries of `room_ids` from another answer (asked for them
        in its `rooms`); `BadAnswer` when it lacks one."""
        for room_id in room_ids:
            if room_id not in other.subscribed:
                raise BadAnswer(f"no entry for {room_id} in the answer that was asked for it")
            self._raw_entries[room_id] = other._raw_entries[room_id]
            self._parsed.pop(room_id, None)

    def entry(self, room_id: str) -> RoomEntry:
        """The user's entry in a room the answer shows, checked (its
        membership is at or before the request's token: asked only of an
        answer that says no membership of the user is after it)."""
        parsed = self._parsed.get(room_id)
        if parsed is None:
            raw = self._raw_entries.get(room_id)
            if raw is None:
                raise BadAnswer(f"no entry for {room_id}")
            parsed = _entry_at(raw, self._at)
            if parsed.room_id != room_id:
                raise BadAnswer(f"the entry for {room_id} names {parsed.room_id}")
            self._parsed[room_id] = parsed
        return parsed


def _entry_at(raw: Any, at: StreamPosition) -> RoomEntry:
    entry = RoomEntry.parse(raw)
    _check_at(entry, at)
    return entry


def _check_at(entry: RoomEntry, at: StreamPosition) -> None:
    if entry.event_stream_ordering > at.position(entry.event_instance_name):
        raise BadAnswer(
            f"the membership in {entry.room_id} at {entry.event_instance_name}/"
            f"{entry.event_stream_ordering} is after the token {at.text()}"
        )


def parse_answer(
    raw: Any, asked_ranges: Sequence[Sequence[tuple[int, int]]], at: StreamPosition
) -> RoomListAnswer:
    """The answer to a request at `at` whose lists (named "0", "1", ... by
    position) asked for `asked_ranges`; `BadAnswer` when it is not one."""
    if type(raw) is not dict:
        raise BadAnswer("the answer is not a JSON object")
    entries: dict[str, JsonDict] = {}
    lists_raw = raw.get("lists")
    if type(lists_raw) is not dict or len(lists_raw) != len(asked_ranges):
        raise BadAnswer(f"{_size(lists_raw)} lists answered for {len(asked_ranges)} asked")
    lists = []
    for index, ranges in enumerate(asked_ranges):
        list_raw = lists_raw.get(str(index))
        if type(list_raw) is not dict:
            raise BadAnswer(f"no answer for list {index}")
        lists.append(_list(list_raw, ranges, entries, at))
    token = raw.get("token")
    try:
        position = StreamPosition.parse(token)
    except ValueError as error:
        raise BadAnswer(str(error)) from None
    subscribed = _subscribed(raw.get("rooms"), entries)
    after = raw.get("memberships_after_at")
    if after is None:
        raise BadAnswer("no memberships_after_at")
    memberships_after_at = tuple(_room_ids(after, "memberships_after_at"))
    if not memberships_after_at:
        # No membership of the user is after the token: none shown may be.
        for list_answer in lists:
            for entry in list_answer.unsettled or ():
                _check_at(entry, at)
    return RoomListAnswer(
        lists=tuple(lists),
        token=position,
        timed_out=_flag(raw, "timed_out"),
        fallback=_flag(raw, "fallback"),
        unaffected=_flag(raw, "unaffected"),
        memberships_after_at=memberships_after_at,
        other_rooms=frozenset(_room_ids(raw.get("other_rooms", []), "other_rooms")),
        subscribed=subscribed,
        account_data_position=_optional_position(raw.get("account_data_position")),
        waited_us=_optional_position(raw.get("waited_us"), "waited_us"),
        at=at,
        raw_entries=entries,
    )


def _list(
    raw: JsonDict,
    asked: Sequence[tuple[int, int]],
    entries: dict[str, JsonDict],
    at: StreamPosition,
) -> ListAnswer:
    count = _integer(raw.get("count"), 0, "count")
    ranges_raw = raw.get("ranges")
    if type(ranges_raw) is not list:
        raise BadAnswer("a list answer without ranges")
    settled_raw, unsettled_raw = raw.get("settled"), raw.get("unsettled")
    if settled_raw is None and unsettled_raw is None:
        if len(ranges_raw) != len(asked):
            raise BadAnswer(f"{len(ranges_raw)} ranges answered for {len(asked)} asked")
        ranges = tuple(
            _range(range_raw, wanted, count, entries)
            for range_raw, wanted in zip(ranges_raw, asked, strict=True)
        )
        return ListAnswer(count=count, ranges=ranges)
    if ranges_raw or type(settled_raw) is not list or type(unsettled_raw) is not list:
        raise BadAnswer("settled and unsettled rooms must come together, without ranges")
    if len(settled_raw) + len(unsettled_raw) > count:
        raise BadAnswer(f"{len(settled_raw) + len(unsettled_raw)} rooms in a list of {count}")
    # Settled rooms sort by a position at or before the token; unsettled
    # ones are placed by the caller, whatever roomcache says they sort by
    # (docs/api.md "Answering at the caller's token").
    settled_ids = _room_ids_of(settled_raw, entries)
    recencies = _field(settled_raw, "recency")
    if recencies and (
        not set(map(type, recencies)) <= {int} or min(recencies) < 1 or max(recencies) > at.stream
    ):
        raise BadAnswer(f"a settled room's recency is not an integer from 1 to {at.stream}")
    settled = tuple(zip(recencies, settled_ids, strict=True))
    unsettled = []
    for raw_entry in unsettled_raw:
        entry = RoomEntry.parse(raw_entry)
        entries.setdefault(entry.room_id, raw_entry)
        unsettled.append(entry)
    return ListAnswer(count=count, ranges=None, settled=settled, unsettled=tuple(unsettled))


def _range(
    raw: Any, wanted: tuple[int, int], count: int, entries: dict[str, JsonDict]
) -> tuple[str, ...]:
    if type(raw) is not dict or raw.get("range") != [wanted[0], wanted[1]]:
        raise BadAnswer(f"a range answer that is not for {list(wanted)}")
    rooms = raw.get("rooms")
    if type(rooms) is not list:
        raise BadAnswer("a range answer without rooms")
    start, end = wanted
    most = max(0, min(end + 1, count) - start) if start <= end else 0
    if len(rooms) > most:
        raise BadAnswer(f"{len(rooms)} rooms in range {list(wanted)} of a list of {count}")
    return _room_ids_of(rooms, entries)


_ENTRY_FIELDS = operator.itemgetter(*(field.name for field in attr.fields(RoomEntry)))
_MAX_INTEGER = 2**63 - 1


def _room_ids_of(raw_entries: list[Any], entries: dict[str, JsonDict]) -> tuple[str, ...]:
    """The room IDs of raw entries (objects with a `room_id` each, checked),
    the entries kept for `RoomListAnswer.entry`. In passes that run in C:
    a 10,000-room range costs no Python per room."""
    room_ids = tuple(_field(raw_entries, "room_id"))
    if room_ids and (
        not set(map(type, room_ids)) <= {str}
        or not all(map(str.startswith, room_ids, itertools.repeat("!")))
        or max(map(len, room_ids)) > _MAX_ID_LENGTH
    ):
        raise BadAnswer("a room ID is not a !identifier")
    entries.update(zip(room_ids, raw_entries, strict=True))
    return room_ids


def _field(raw_entries: list[Any], key: str) -> list[Any]:
    """Each raw entry's `key`; `BadAnswer` when one is not an object with it."""
    try:
        return list(map(operator.itemgetter(key), raw_entries))
    except (TypeError, KeyError, IndexError):
        raise BadAnswer(f"a room entry is not an object with `{key}`") from None


def _subscribed(raw: Any, entries: dict[str, JsonDict]) -> frozenset[str]:
    """The rooms of `rooms` (asked for by ID): always whole entries."""
    if raw is None:
        return frozenset()
    if type(raw) is not dict:
        raise BadAnswer("`rooms` is not an object")
    for room_id, entry in raw.items():
        if type(entry) is not dict or _room_id(entry.get("room_id")) != room_id:
            raise BadAnswer(f"`rooms` names {room_id} for another room's entry")
        if "membership" in entry or room_id not in entries:
            entries[room_id] = entry
    return frozenset(raw)


def _room_ids(raw: Any, field: str) -> list[str]:
    if type(raw) is not list:
        raise BadAnswer(f"`{field}` is not a list")
    return [_room_id(room_id) for room_id in raw]


def _room_id(value: Any) -> str:
    return _identifier(value, "!", "room ID")


def _identifier(value: Any, sigil: str, what: str) -> str:
    if type(value) is not str or not value.startswith(sigil) or len(value) > _MAX_ID_LENGTH:
        raise BadAnswer(f"{what} {_shown(value)} is not a {sigil}identifier")
    return value


def _membership(value: Any) -> str:
    if type(value) is not str or value not in MEMBERSHIPS:
        raise BadAnswer(f"membership {_shown(value)} is not one of Synapse's")
    return value


def _integer(value: Any, minimum: int, what: str) -> int:
    if type(value) is not int or value < minimum or value > _MAX_INTEGER:
        raise BadAnswer(f"{what} {_shown(value)} is not an integer of at least {minimum}")
    return value


def _optional_position(value: Any, what: str = "account_data_position") -> int | None:
    return None if value is None else _integer(value, 0, what)


def _boolean(value: Any, what: str) -> bool:
    if type(value) is not bool:
        raise BadAnswer(f"{what} {_shown(value)} is not true or false")
    return value


def _text(value: Any, what: str) -> str:
    if type(value) is not str or len(value) > _MAX_TEXT_LENGTH:
        raise BadAnswer(f"{what} {_shown(value)} is not a string")
    return value


def _optional_text(value: Any, what: str) -> str | None:
    return None if value is None else _text(value, what)


def _flag(raw: JsonDict, key: str) -> bool:
    value = raw.get(key, False)
    return _boolean(value, key)


def _size(value: Any) -> int:
    return len(value) if isinstance(value, dict | list) else 0


def _shown(value: Any) -> str:
    return repr(value)[:80]
