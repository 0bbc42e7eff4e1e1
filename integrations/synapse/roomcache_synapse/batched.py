# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""Per-room lookups Synapse makes with one query a room, answered for the
rooms a request sends in full from ONE query each.

For each room it sends in full, Synapse looks up the room's member counts
(`get_member_counts`), and its account-data extension the user's account
data and tags in the room (`get_account_data_for_room`,
`get_tags_for_room`): each a query, cached per room in caches a user in
1,000 rooms overruns. The request's rooms are known first (`start`, from
the per-room seam's `prepare`); at a lookup's first call in the request
the module loads it for those rooms not in Synapse's cache in one query
(the same rows Synapse reads), in the background. The store's methods are
replaced (the functions put there keep the originals' caches and
invalidation) and answer those rooms from it. Any other call is Synapse's
cached method, counted by reason. Like Synapse's own queries, the loads
read the rows as they are when they run.

Owns: which lookups the request's loads answer. May not touch: Synapse's
private names (the adapter's), roomcache.
"""

from __future__ import annotations

import contextvars
import functools
import logging
from collections.abc import Collection
from typing import Any

import attr

from .adapter import CACHED_LOOKUPS, Shared, SynapseAdapter
from .metrics import BATCHED_LOOKUPS

logger = logging.getLogger(__name__)


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Loaded:
    """One lookup's values for the rooms it was loaded for."""

    rooms: frozenset[str]
    """The rooms loaded (those asked whose values were not cached)."""
    values: Shared[dict[str, Any] | str]
    """Their values, or why there are none."""


@attr.s(frozen=True, slots=True, auto_attribs=True)
class RequestLookups:
    """What one request loaded."""

    user_id: str
    rooms: tuple[str, ...]
    """The rooms sent in full, in the request's order."""
    asked: frozenset[str]
    loaded: dict[str, Loaded | None]
    """Each lookup's load, once made (None: nothing to load)."""
    declined: str | None = None
    """Why no lookup of this request is answered from a load (`bypass`)."""


_REQUEST: contextvars.ContextVar[RequestLookups | None] = contextvars.ContextVar(
    "roomcache_batched_lookups", default=None
)


class BatchedLookups:
    """Replaces the store's methods of `CACHED_LOOKUPS`."""

    def __init__(self, synapse: SynapseAdapter) -> None:
        self._synapse = synapse

    def install(self) -> None:
        for lookup in CACHED_LOOKUPS:
            self._synapse.replace_lookup(lookup, functools.partial(self.answer, lookup))

    def start(self, user_id: str, rooms: Collection[str], declined: str | None = None) -> None:
        """The request's rooms sent in full are known. Each lookup's load
        (of those rooms whose values are not in Synapse's cache then) is
        made at the lookup's first call in the request."""
        _REQUEST.set(RequestLookups(user_id, tuple(rooms), frozenset(rooms), {}, declined))

    def _loaded(self, request: RequestLookups, lookup: str) -> Loaded | None:
        """The request's load of `lookup`, made at its first call (None:
        every room's value was cached)."""
        if lookup not in request.loaded:
            user_id = request.user_id
            cached = self._synapse.cached
            missing = [room for room in request.rooms if cached(lookup, user_id, room) is None]
            values = Shared(self._load, lookup, user_id, missing) if missing else None
            request.loaded[lookup] = (
                Loaded(frozenset(missing), values) if values is not None else None
            )
        return request.loaded[lookup]

    async def _from_load(
        self, request: RequestLookups, lookup: str, arguments: tuple[Any, ...]
    ) -> tuple[Any] | str:
        """The room's value from the request's load (in a 1-tuple), or why not."""
        if request.declined is not None:
            return request.declined
        room_id = arguments[-1]
        if len(arguments) == 2 and arguments[0] != request.user_id:
            return "other_user"
        if room_id not in request.asked:
            return "not_fetched"
        loaded = self._loaded(request, lookup)
        if loaded is None or room_id not in loaded.rooms:
            # Rooms asked but not loaded had their values in Synapse's cache.
            return "cached"
        values = await loaded.values.result()
        if isinstance(values, str):
            return values
        return (values[room_id],) if room_id in values else "module_error"

    async def _load(self, lookup: str, user_id: str, rooms: list[str]) -> dict[str, Any] | str:
        """The values, or why there are none. Never raises."""
        try:
            return await self._synapse.load(lookup, user_id, rooms)
        except Exception:
            logger.exception("roomcache: loading %s for %d rooms failed", lookup, len(rooms))
            return "module_error"

    async def answer(self, lookup: str, *arguments: Any) -> Any:
        """The store's method of `lookup` (arguments: the room, or the user
        and the room), from the request's load when it has the room."""
        request = _REQUEST.get()
        if request is not None:
            try:
                found = await self._from_load(request, lookup, arguments)
            except Exception:
                logger.exception("roomcache: the loaded %s failed; Synapse's way", lookup)
                found = "module_error"
            if not isinstance(found, str):
                BATCHED_LOOKUPS.labels(lookup=lookup, path="batched", reason="").inc()
                return found[0]
            BATCHED_LOOKUPS.labels(lookup=lookup, path="synapse", reason=found).inc()
        # Else not a Sliding Sync request's per-room data (not counted).
        return await self._synapse.original_lookup(lookup)(*arguments)
