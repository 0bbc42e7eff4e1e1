# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""Synapse's stream positions in roomcache's token text form.

roomcache names an events-stream position `s<stream>` when no writer is
ahead of `stream`, else `m<stream>~<writer>.<position>~...` with the writers
ahead of it, sorted by name. Synapse's `RoomStreamToken` holds the same
information (`stream`, and `instance_map` for the writers ahead); this is
roomcache's format, not Synapse's own serialisation.
"""

from __future__ import annotations

from collections.abc import Mapping


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


def token_stream(text: str) -> int:
    """The minimum position of a token in roomcache's text form (`s5`,
    `m5~p1.7`)."""
    if len(text) < 2 or text[0] not in "sm":
        raise ValueError(f"not a stream token: {text!r}")
    return int(text[1:].split("~", 1)[0])
