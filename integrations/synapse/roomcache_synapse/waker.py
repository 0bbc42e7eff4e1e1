# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""Tells roomcache at once when this process has persisted events.

roomcache follows Synapse's database: it reads new events when Redis
announces them, when a read waits for them, or at its next poll. A Sliding
Sync request made right after a message would wait for that read. In the
process that persists events (a monolith's main process, or an event
persister), this wakes roomcache's follower as soon as the events are
committed (`POST /v1/source/wake`), so it is usually there before the next
request asks. The wake carries nothing: roomcache reads what Synapse has
committed, as on every poll.

At most one wake is in flight; events persisted meanwhile make one more
follow it. Failures are counted and logged at most once a minute: a wake
is only a head start.

Owns: when to wake. May not touch: what roomcache reads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from .adapter import SynapseAdapter
from .client import RoomcacheClient, RoomcacheFailure
from .metrics import WAKES

logger = logging.getLogger(__name__)

_LOG_INTERVAL_SECONDS = 60.0


class RoomcacheWaker:
    """See the module documentation."""

    def __init__(
        self,
        synapse: SynapseAdapter,
        client: RoomcacheClient,
        run_in_background: Callable[..., Any],
    ) -> None:
        self._synapse = synapse
        self._client = client
        self._run_in_background = run_in_background
        self._position = synapse.events_position()
        self._in_flight = False
        self._again = False
        self._last_log = 0.0

    def install(self) -> None:
        self._synapse.on_new_stream_data(self.on_new_stream_data)

    def on_new_stream_data(self) -> None:
        """Synapse's replication notifier: something was persisted here (on
        any stream; only a new events position wakes roomcache)."""
        position = self._synapse.events_position()
        if position <= self._position:
            return
        self._position = position
        if self._in_flight:
            self._again = True
            return
        self._in_flight = True
        self._run_in_background("roomcache_wake", self._wake)

    async def _wake(self) -> None:
        try:
            while True:
                self._again = False
                await self._send()
                if not self._again:
                    return
        finally:
            self._in_flight = False

    async def _send(self) -> None:
        try:
            await self._client.wake()
        except RoomcacheFailure as failure:
            WAKES.labels(outcome=failure.reason).inc()
            now = time.monotonic()
            if now - self._last_log >= _LOG_INTERVAL_SECONDS:
                self._last_log = now
                logger.warning(
                    "roomcache: could not wake roomcache's follower after persisting events "
                    "(%s: %s); it follows at its next poll (logged at most once a minute)",
                    failure.reason,
                    failure.detail,
                )
            return
        WAKES.labels(outcome="sent").inc()
