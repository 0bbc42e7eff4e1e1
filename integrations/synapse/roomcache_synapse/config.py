# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""The module's settings, from its `config:` block in homeserver.yaml.

modules:
  - module: roomcache_synapse.RoomcacheModule
    config:
      socket_path: /run/roomcache/roomcache.sock
      wait_timeout_ms: 500
      request_timeout_ms: 2000
      max_answer_bytes: 16777216
      circuit_failures: 1
      circuit_open_ms: 1000
      circuit_max_open_ms: 30000
      room_state: true
      room_timeline: true
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attr


class ConfigError(Exception):
    """The module's `config:` block is invalid."""


@attr.s(frozen=True, slots=True, auto_attribs=True)
class RoomcacheConfig:
    """Where roomcache listens and how long a sync request may wait for it."""

    socket_path: str
    """roomcache's Unix socket (its `socket_path`)."""
    wait_timeout_ms: int = 500
    """How long roomcache may wait to reach the request's token (its
    `timeout_ms`); when it does not get there in time, the request is
    computed Synapse's way."""
    request_timeout_ms: int = 2000
    """How long the module waits for roomcache's answer in all (connecting,
    waiting, answering) before computing the request Synapse's way."""
    max_connections: int = 16
    """Kept-alive connections to roomcache per Synapse process."""
    max_answer_bytes: int = 16 * 1024 * 1024
    """The largest answer read from roomcache: a longer one is refused as
    soon as its head announces it (nothing past the limit is read), and the
    request is computed Synapse's way (`answer_too_large`). An answer for
    10,000 rooms in range is about 4.5 MB."""
    circuit_failures: int = 1
    """Timeouts or unavailable answers in a row after which the module stops
    asking roomcache for a while (the circuit breaker opens)."""
    circuit_open_ms: int = 1000
    """How long the breaker stays open at first; then one request probes,
    and each failed probe doubles the interval."""
    circuit_max_open_ms: int = 30000
    """The longest the breaker stays open before the next probe."""
    bypass_conn_id_prefix: str | None = None
    """Requests whose `conn_id` starts with this are computed Synapse's way
    (for side-by-side comparisons and benchmarks; off by default)."""
    verify_fraction: float = 0.0
    """This share of the requests answered from roomcache is also computed
    Synapse's way and compared; on a difference Synapse's answer is used,
    and the difference counted and logged."""
    wake_on_persist: bool = True
    """In a process that persists events (a monolith, an event persister):
    wake roomcache's follower as soon as events are committed, so that it
    has them before the next sync request asks."""
    room_state: bool = True
    """Answer the per-room current-state lookups of the rooms a request
    sends in full (`required_state`, the name, ...) from roomcache's held
    state (docs/synapse.md A.7); false: Synapse's own lookups."""
    room_timeline: bool = True
    """With `room_state`: the initial timelines of those rooms (the events
    Synapse's query would pick) from roomcache's latest events too; false:
    Synapse's own query."""
    held_order_rooms: int = 200_000
    """Rooms of the connections' whole lists held in memory (about 200
    bytes a room), so that a connection asking its whole list again gets
    from roomcache only the rooms that moved; least recently used
    connections are dropped first. 0 turns it off."""
    enabled: bool = True
    """False: the module loads but leaves Synapse untouched."""


def _integer(config: Mapping[str, Any], key: str, default: int, minimum: int) -> int:
    value = config.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"roomcache: `{key}` must be an integer of at least {minimum}")
    return value


def parse_config(config: Mapping[str, Any] | None) -> RoomcacheConfig:
    """Checks and reads the module's `config:` block."""
    config = config or {}
    known = {field.name for field in attr.fields(RoomcacheConfig)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ConfigError(f"roomcache: unknown settings {unknown} (known: {sorted(known)})")
    socket_path = config.get("socket_path")
    if not isinstance(socket_path, str) or not socket_path:
        raise ConfigError("roomcache: `socket_path` (roomcache's Unix socket) is required")
    prefix = config.get("bypass_conn_id_prefix")
    if prefix is not None and (not isinstance(prefix, str) or not prefix):
        raise ConfigError("roomcache: `bypass_conn_id_prefix` must be a non-empty string")
    enabled = config.get("enabled", True)
    wake_on_persist = config.get("wake_on_persist", True)
    room_state = config.get("room_state", True)
    room_timeline = config.get("room_timeline", True)
    for key, value in (
        ("enabled", enabled),
        ("wake_on_persist", wake_on_persist),
        ("room_state", room_state),
        ("room_timeline", room_timeline),
    ):
        if not isinstance(value, bool):
            raise ConfigError(f"roomcache: `{key}` must be true or false")
    verify_fraction = config.get("verify_fraction", 0.0)
    if (
        not isinstance(verify_fraction, int | float)
        or isinstance(verify_fraction, bool)
        or not 0 <= verify_fraction <= 1
    ):
        raise ConfigError("roomcache: `verify_fraction` must be a number from 0 to 1")
    circuit_open_ms = _integer(config, "circuit_open_ms", 1000, 1)
    circuit_max_open_ms = _integer(config, "circuit_max_open_ms", 30000, 1)
    if circuit_max_open_ms < circuit_open_ms:
        raise ConfigError("roomcache: `circuit_max_open_ms` must be at least `circuit_open_ms`")
    return RoomcacheConfig(
        socket_path=socket_path,
        wait_timeout_ms=_integer(config, "wait_timeout_ms", 500, 0),
        request_timeout_ms=_integer(config, "request_timeout_ms", 2000, 1),
        max_connections=_integer(config, "max_connections", 16, 1),
        max_answer_bytes=_integer(config, "max_answer_bytes", 16 * 1024 * 1024, 1024),
        circuit_failures=_integer(config, "circuit_failures", 1, 1),
        circuit_open_ms=circuit_open_ms,
        circuit_max_open_ms=circuit_max_open_ms,
        bypass_conn_id_prefix=prefix,
        verify_fraction=float(verify_fraction),
        wake_on_persist=wake_on_persist,
        room_state=room_state,
        room_timeline=room_timeline,
        held_order_rooms=_integer(config, "held_order_rooms", 200_000, 0),
        enabled=enabled,
    )
