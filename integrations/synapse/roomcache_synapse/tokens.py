# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""Synapse's stream positions in roomcache's token text form.

roomcache names an events-stream position `s<stream>` when no writer is
ahead of `stream`, else `m<stream>~<writer>.<position>~...` with the writers
ahead of it, sorted by name. Synapse's `RoomStreamToken` holds the same
information (`stream`, and `instance_map` for the writers ahead); this is
roomcache's format, not Synapse's own serialisation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attr

# A position is a non-negative 63-bit integer; a writer's name is 1 to 64 of
# [A-Za-z0-9_.-] (roomcache's rule for `writers`).
_MAX_POSITION = 2**63 - 1
_SIMPLE = re.compile(r"s(\d{1,19})")
_VECTOR = re.compile(r"m(\d{1,19})((?:~[A-Za-z0-9_.\-]{1,64}\.\d{1,19})+)")
_WRITER = re.compile(r"~([A-Za-z0-9_.\-]{1,64})\.(\d{1,19})")


def room_token(stream: int, instance_map: Mapping[str, int]) -> str:
    """The text form of an events-stream position: `stream` reached by every
    writer, and the writers of `instance_map` at their (higher) positions."""
    ahead = sorted((name, position) for name, position in instance_map.items() if position > stream)
    if not ahead:
        return f"s{stream}"
    return f"m{stream}~" + "~".join(f"{name}.{position}" for name, position in ahead)


def position_of(stream: int, instance_map: Mapping[str, int], instance: str) -> int:
    """The position of `instance` in a token (the minimum when not listed)."""
    return instance_map.get(instance, stream)


@attr.s(frozen=True, slots=True, auto_attribs=True)
class StreamPosition:
    """An events-stream position: every writer at `stream` or beyond, the
    writers of `ahead` at their (higher) positions."""

    stream: int
    ahead: Mapping[str, int] = attr.ib(factory=dict)

    @classmethod
    def parse(cls, text: Any) -> StreamPosition:
        """A token in roomcache's text form; ValueError when `text` is not
        one (a string, positions within 63 bits, writers ahead of the
        minimum, each named once)."""
        if not isinstance(text, str):
            raise ValueError(f"a token must be a string, not {type(text).__name__}")
        simple = _SIMPLE.fullmatch(text)
        if simple is not None:
            return cls(_bounded(simple.group(1)))
        vector = _VECTOR.fullmatch(text)
        if vector is None:
            raise ValueError(f"not a stream token: {text[:80]!r}")
        stream = _bounded(vector.group(1))
        ahead: dict[str, int] = {}
        for name, position in _WRITER.findall(vector.group(2)):
            value = _bounded(position)
            if name in ahead or value <= stream:
                raise ValueError(f"not a stream token: {text[:80]!r}")
            ahead[name] = value
        return cls(stream, ahead)

    @classmethod
    def of(cls, room_key: Any) -> StreamPosition:
        """A Synapse `RoomStreamToken` (live: no topological part)."""
        return cls(room_key.stream, dict(room_key.instance_map))

    def position(self, writer: str) -> int:
        return self.ahead.get(writer, self.stream)

    def highest(self) -> int:
        return max(self.ahead.values(), default=self.stream)

    def is_before_or_eq(self, other: StreamPosition) -> bool:
        """True when every writer's position here is at or before its
        position in `other`."""
        if self.stream > other.stream:
            return False
        return all(position <= other.position(writer) for writer, position in self.ahead.items())

    def text(self) -> str:
        return room_token(self.stream, self.ahead)


def _bounded(digits: str) -> int:
    value = int(digits)
    if value > _MAX_POSITION:
        raise ValueError(f"position {digits} is beyond 63 bits")
    return value


def token_stream(text: str) -> int:
    """The minimum position of a token in roomcache's text form (`s5`,
    `m5~p1.7`)."""
    return StreamPosition.parse(text).stream
