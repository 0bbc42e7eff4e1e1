# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""The circuit breaker: a roomcache that hangs or is gone costs sync
requests one timeout in total, not one each.

Closed (the normal state), every request asks roomcache. After
`failures` timeouts or unavailable answers in a row, the breaker opens: for
`open_seconds` no request asks roomcache (each is computed Synapse's way at
once, counted as `circuit_open`). Then one request at a time is let
through as a probe: an answer of any kind closes the breaker; another
timeout or unavailability opens it again for twice as long, up to
`max_open_seconds`. Requests that were already waiting on roomcache when
the breaker opened do not count again.

Owns: the state and its clock. May not touch: roomcache, Synapse.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator

import attr

from .client import RoomcacheFailure
from .config import RoomcacheConfig
from .metrics import CIRCUIT_OPEN, CIRCUIT_OPENINGS

logger = logging.getLogger(__name__)

# Failures of roomcache itself: they count towards opening the breaker.
BREAKER_REASONS = frozenset({"unavailable", "timeout"})


class CircuitOpen(Exception):
    """The breaker is open: roomcache is not asked."""


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Ticket:
    """Leave to ask roomcache once. `probe`: the one request let through
    while the breaker is open."""

    generation: int
    probe: bool


class CircuitBreaker:
    """See the module documentation."""

    def __init__(
        self,
        *,
        failures: int,
        open_seconds: float,
        max_open_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = failures
        self._first_interval = open_seconds
        self._max_interval = max(open_seconds, max_open_seconds)
        self._clock = clock
        self._failures = 0
        self._interval = open_seconds
        self._open_until: float | None = None
        self._probing = False
        # Bumped on every opening and closing: a ticket of an earlier
        # generation reports into a state it was not issued in.
        self._generation = 0

    @classmethod
    def of_config(cls, config: RoomcacheConfig) -> CircuitBreaker:
        """The breaker the module's settings describe."""
        return cls(
            failures=config.circuit_failures,
            open_seconds=config.circuit_open_ms / 1000,
            max_open_seconds=config.circuit_max_open_ms / 1000,
        )

    @property
    def is_open(self) -> bool:
        return self._open_until is not None

    def ticket(self) -> Ticket | None:
        """Leave to ask roomcache now, or None (compute Synapse's way)."""
        if self._open_until is None:
            return Ticket(self._generation, probe=False)
        if self._probing or self._clock() < self._open_until:
            return None
        self._probing = True
        return Ticket(self._generation, probe=True)

    def succeeded(self, ticket: Ticket) -> None:
        """roomcache answered (whatever the answer)."""
        if ticket.generation != self._generation:
            return
        if ticket.probe:
            logger.warning("roomcache: answering again; room lists come from roomcache")
            self._close()
        self._failures = 0

    def failed(self, ticket: Ticket, reason: str) -> None:
        """roomcache timed out or could not be reached."""
        if ticket.generation != self._generation:
            return
        if ticket.probe:
            self._interval = min(self._interval * 2, self._max_interval)
            self._open(reason)
            return
        self._failures += 1
        if self._failures >= self._threshold:
            self._interval = self._first_interval
            self._open(reason)

    def released(self, ticket: Ticket) -> None:
        """The request ended without an answer or a failure of roomcache's
        (cancelled, or the module failed first): a probe's place is free
        again."""
        if ticket.probe and ticket.generation == self._generation:
            self._probing = False

    def _open(self, reason: str) -> None:
        self._open_until = self._clock() + self._interval
        self._probing = False
        self._generation += 1
        CIRCUIT_OPEN.set(1)
        CIRCUIT_OPENINGS.inc()
        logger.warning(
            "roomcache: %s; not asking roomcache for %.1f s (circuit open), computing room "
            "lists Synapse's way",
            reason,
            self._interval,
        )

    def _close(self) -> None:
        self._open_until = None
        self._probing = False
        self._failures = 0
        self._interval = self._first_interval
        self._generation += 1
        CIRCUIT_OPEN.set(0)


@contextlib.contextmanager
def asking(breaker: CircuitBreaker) -> Iterator[None]:
    """Around one call to roomcache: `CircuitOpen` when the breaker is open;
    then the breaker hears how it went (a `RoomcacheFailure` of a reason in
    `BREAKER_REASONS` counts towards opening it, any other answer shows
    roomcache answers, anything else, such as a cancelled call, frees a
    probe's place). Exceptions pass on."""
    ticket = breaker.ticket()
    if ticket is None:
        raise CircuitOpen()
    try:
        yield
    except RoomcacheFailure as failure:
        if failure.reason in BREAKER_REASONS:
            breaker.failed(ticket, f"{failure.reason} ({failure.detail})")
        else:
            breaker.succeeded(ticket)
        raise
    except BaseException:
        breaker.released(ticket)
        raise
    breaker.succeeded(ticket)
