# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""Everything the module reaches in Synapse beyond its public module API,
in one place.

Synapse has no module hook for Sliding Sync room lists, so the module uses
names Synapse does not promise to keep: the homeserver behind the
`ModuleApi` (`api._hs`), private methods of the sliding-sync handler, store
methods and their caches, and one detail of Twisted's transports. Each is
used here and listed in `names.py`, whose `missing_names` looks up every
one of them at install: when one is missing, the module logs an error and
leaves Synapse untouched.
The rest of the module talks to `SynapseAdapter` only (its tests use
`Mock(spec=SynapseAdapter)`), and imports Synapse's types from here.

Owns: the names above and their meaning. May not touch: roomcache (the
client), decisions (the seam).
"""

from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from typing import Any, Generic, TypeVar

from synapse.api.constants import Direction
from synapse.api.errors import SlidingSyncUnknownPosition
from synapse.api.room_versions import KNOWN_ROOM_VERSIONS
from synapse.handlers.sliding_sync.room_lists import (
    MINIMUM_NOT_USED_AGE_EXPIRY,
    NUM_ROOMS_THRESHOLD,
    SlidingSyncInterestedRooms,
)
from synapse.module_api import make_deferred_yieldable, run_in_background
from synapse.storage._base import db_to_json
from synapse.storage.database import make_in_list_sql_clause
from synapse.storage.invite_rule import AllowAllInviteRulesConfig
from synapse.storage.roommember import RoomsForUserSlidingSync
from synapse.types import PersistedEventPosition, RoomStreamToken
from synapse.types.handlers.sliding_sync import (
    HaveSentRoomFlag,
    OperationType,
    RoomSyncConfig,
    SlidingSyncResult,
)
from synapse.types.state import StateFilter
from synapse.util.async_helpers import ObservableDeferred

from ..to_send import PreviousConnection, TooManyUpdates
from .names import missing_names

__all__ = [
    "KNOWN_ROOM_VERSIONS",
    "OperationType",
    "PersistedEventPosition",
    "RoomStreamToken",
    "RoomSyncConfig",
    "RoomsForUserSlidingSync",
    "SlidingSyncInterestedRooms",
    "SlidingSyncResult",
    "SlidingSyncUnknownPosition",
    "StateFilter",
    "SynapseAdapter",
    "missing_names",
    "write_now",
]

Compute = Callable[..., Awaitable[SlidingSyncInterestedRooms]]
StateIdsAt = Callable[..., Awaitable[Mapping[tuple[str, str], str]]]
# Synapse's page of a room's events: (events, the token after them, limited).
Page = Callable[..., Awaitable[tuple[list[Any], Any, bool]]]
# Synapse's bundled aggregations of some (filtered) events for a user.
Aggregations = Callable[[Any, str], Awaitable[dict[str, Any]]]
# The per-room lookups of Synapse's store the module loads in one query a
# request (batched.py), by the module's name: the store's cached method.
CACHED_LOOKUPS = {
    "member_counts": "get_member_counts",
    "room_account_data": "get_account_data_for_room",
    "room_tags": "get_tags_for_room",
}
BumpStampOf = Callable[[str], Awaitable[int | None]]
_T = TypeVar("_T")


class SynapseAdapter:
    """One Synapse process, as the module sees it."""

    def __init__(self, hs: Any) -> None:
        self._hs = hs

    @functools.cached_property
    def _handler(self) -> Any:
        return self._hs.get_sliding_sync_handler()

    @functools.cached_property
    def _room_lists(self) -> Any:
        return self._handler.room_lists

    @functools.cached_property
    def _store(self) -> Any:
        return self._hs.get_datastores().main

    @functools.cached_property
    def original_compute_interested_rooms(self) -> Compute:
        """Synapse's own method (as it was before `replace_compute_interested_rooms`)."""
        return self._room_lists.compute_interested_rooms

    @functools.cached_property
    def original_current_state_ids_at(self) -> StateIdsAt:
        """Synapse's own `get_current_state_ids_at` (as it was before
        `replace_current_state_ids_at`)."""
        return self._handler.get_current_state_ids_at

    @functools.cached_property
    def original_latest_bump_stamp(self) -> BumpStampOf:
        """Synapse's own `get_latest_bump_stamp_for_room` (as it was before
        `replace_latest_bump_stamp`)."""
        return self._store.get_latest_bump_stamp_for_room

    @functools.cached_property
    def _relations(self) -> Any:
        return self._hs.get_relations_handler()

    @functools.cached_property
    def original_bundled_aggregations(self) -> Aggregations:
        """Synapse's own `RelationsHandler.get_bundled_aggregations` (as it
        was before `replace_bundled_aggregations`)."""
        return self._relations.get_bundled_aggregations

    @functools.cached_property
    def _original_lookups(self) -> dict[str, Callable[..., Awaitable[Any]]]:
        return {lookup: getattr(self._store, name) for lookup, name in CACHED_LOOKUPS.items()}

    def original_lookup(self, lookup: str) -> Callable[..., Awaitable[Any]]:
        """Synapse's own cached method of a lookup of `CACHED_LOOKUPS` (as
        it was before `replace_lookup`)."""
        return self._original_lookups[lookup]

    @functools.cached_property
    def original_topological_page(self) -> Page:
        """Synapse's own `paginate_room_events_by_topological_ordering` (as
        it was before `replace_topological_page`)."""
        return self._store.paginate_room_events_by_topological_ordering

    @classmethod
    def from_module_api(cls, api: Any) -> SynapseAdapter:
        # The homeserver behind the module API: there is no public accessor.
        return cls(api._hs)

    # --- the process ------------------------------------------------------------

    @property
    def reactor(self) -> Any:
        return self._hs.get_reactor()

    @property
    def instance_name(self) -> str:
        return self._hs.get_instance_name()

    def is_mine_id(self, user_id: str) -> bool:
        return self._hs.is_mine_id(user_id)

    @property
    def rooms_excluded_from_sync(self) -> frozenset[str]:
        return frozenset(self._hs.config.server.rooms_to_exclude_from_sync)

    def serves_client_api(self) -> bool:
        """True when one of this process's HTTP listeners serves `client`."""
        config = self._hs.config
        listeners = (
            config.worker.worker_listeners if config.worker.worker_app else config.server.listeners
        )
        for listener in listeners:
            http = getattr(listener, "http_options", None)
            for resource in getattr(http, "resources", None) or ():
                if "client" in resource.names:
                    return True
        return False

    def persists_events(self) -> bool:
        """True when this process writes the events stream."""
        return self.instance_name in self._hs.config.worker.writers.events

    def on_new_stream_data(self, callback: Callable[[], None]) -> None:
        """Calls `callback` (synchronously, no arguments) whenever this
        process has persisted something on one of its streams."""
        self._hs.get_replication_notifier().add_replication_callback(callback)

    # --- the seam: SlidingSyncRoomLists -----------------------------------------

    def replace_compute_interested_rooms(self, replacement: Compute) -> None:
        """Puts `replacement` in place of the handler's method (on the one
        instance the servlet uses)."""
        self._room_lists.compute_interested_rooms = replacement

    async def newly_joined_and_left(
        self, user_id: str, to_token: Any, from_token: Any | None
    ) -> tuple[Collection[str], Mapping[str, Any]]:
        """Synapse's rooms newly joined and left in (`from_token`, `to_token`]."""
        return await self._room_lists._get_newly_joined_and_left_rooms(
            user_id, to_token=to_token, from_token=from_token
        )

    async def dm_rooms(self, user_id: str) -> Collection[str]:
        """The user's DM rooms (`m.direct`), as Synapse reads them."""
        return await self._room_lists._get_dm_rooms_for_user(user_id)

    async def rooms_to_send(
        self,
        previous_connection_state: Any,
        from_token: Any | None,
        relevant_room_map: dict[str, RoomSyncConfig],
    ) -> dict[str, RoomSyncConfig]:
        """Synapse's own choice of the rooms to send on this connection."""
        return await self._room_lists._filter_relevant_rooms_to_send(
            previous_connection_state, from_token, relevant_room_map
        )

    def previous_connection(self, state: Any, from_token: Any | None) -> PreviousConnection | None:
        """What the connection sent before (None on a request without `pos`),
        read from Synapse's `PerConnectionState`."""
        if from_token is None:
            return None
        statuses: Mapping[str, Any] = state.rooms._statuses
        # The rooms sent PREVIOUSLY, in passes that run in C (10,000 rooms).
        flags = map(_STATUS, statuses.values())
        previously = itertools.compress(statuses.keys(), map(_PREVIOUSLY, flags))
        return PreviousConnection(
            never_sent=lambda rooms: set(rooms - statuses.keys()),
            previously=list(previously),
            room_configs=state.room_configs,
            last_used_ts=state.last_used_ts,
        )

    # Synapse's rule for connections unused for long with many updates.
    connection_expiry = TooManyUpdates(
        rooms=NUM_ROOMS_THRESHOLD, unused_ms=int(MINIMUM_NOT_USED_AGE_EXPIRY.as_millis())
    )

    def now_ms(self) -> int:
        return self._hs.get_clock().time_msec()

    # --- the per-room seam: SlidingSyncHandler.get_current_state_ids_at ---------

    def replace_current_state_ids_at(self, replacement: StateIdsAt) -> None:
        """Puts `replacement` in place of the handler's method (on the one
        instance the servlet uses; the handler's `get_current_state_at`
        calls it through the instance)."""
        _ = self.original_current_state_ids_at  # Synapse's own, kept before replacing
        self._handler.get_current_state_ids_at = replacement

    def replace_latest_bump_stamp(
        self, replacement: Callable[[str], Awaitable[int | None]]
    ) -> None:
        """Puts `replacement` in place of the store's method (a plain method:
        its one caller is the sliding-sync handler's bump stamp)."""
        _ = self.original_latest_bump_stamp  # Synapse's own, kept before replacing
        self._store.get_latest_bump_stamp_for_room = replacement

    def replace_topological_page(self, replacement: Page) -> None:
        """Puts `replacement` in place of the store's method (on the store's
        instance: the sliding-sync handler reads it from there on every
        call; so do its other callers, `/messages` among them, which the
        replacement must hand to Synapse's own)."""
        _ = self.original_topological_page  # Synapse's own, kept before replacing
        self._store.paginate_room_events_by_topological_ordering = replacement

    def replace_bundled_aggregations(self, replacement: Aggregations) -> None:
        """Puts `replacement` in place of the relations handler's method (on
        its one instance: the sliding-sync handler holds it, and so do
        `/sync`, `/messages` and the other callers, which the replacement
        must hand to Synapse's own)."""
        _ = self.original_bundled_aggregations  # Synapse's own, kept before replacing
        self._relations.get_bundled_aggregations = replacement

    def replace_lookup(self, lookup: str, replacement: Callable[..., Awaitable[Any]]) -> None:
        """Puts `replacement` in place of the store's cached method of a
        lookup. Synapse invalidates a method's cache through the attribute
        (`get_member_counts.invalidate`, …) and names it to other workers by
        the function's name: the function put there carries the original's
        name, cache and invalidation."""
        original = self.original_lookup(lookup)

        async def replaced(*arguments: Any) -> Any:
            return await replacement(*arguments)

        functools.update_wrapper(replaced, original)
        setattr(self._store, CACHED_LOOKUPS[lookup], replaced)

    def cached(self, lookup: str, user_id: str, room_id: str) -> Any | None:
        """A room's value of a lookup in Synapse's cache, without a lookup
        (None when absent). The member counts are keyed by room, the
        others by user and room (a one-argument cache's key is the
        argument itself)."""
        key: Any = room_id if lookup == "member_counts" else (user_id, room_id)
        return self.original_lookup(lookup).cache.get_immediate(key, None, update_metrics=False)

    async def load(self, lookup: str, user_id: str, room_ids: list[str]) -> dict[str, Any]:
        """The values of a lookup for these rooms (and the user), as Synapse's
        method reads each, in one query: member counts by membership in the
        room's current state (rejected members, with no membership, left
        out); the user's room account data by type; its tags by tag."""
        if lookup == "member_counts":
            return await self._member_counts(room_ids)
        table, column = ("room_tags", "tag")
        if lookup == "room_account_data":
            table, column = ("room_account_data", "account_data_type")
        rows = await self._store.db_pool.simple_select_many_batch(
            table=table,
            column="room_id",
            iterable=room_ids,
            keyvalues={"user_id": user_id},
            retcols=("room_id", column, "content"),
            desc=f"roomcache_{lookup}",
            batch_size=1000,
        )
        values: dict[str, dict[str, Any]] = {room_id: {} for room_id in room_ids}
        for room_id, key, content in rows:
            values[room_id][key] = db_to_json(content)
        return values

    async def _member_counts(self, room_ids: list[str]) -> dict[str, Any]:
        def count(txn: Any) -> dict[str, Any]:
            clause, arguments = make_in_list_sql_clause(txn.database_engine, "room_id", room_ids)
            txn.execute(
                "SELECT room_id, membership, count(*) FROM current_state_events"
                f" WHERE type = 'm.room.member' AND {clause} AND membership IS NOT NULL"
                " GROUP BY room_id, membership",
                arguments,
            )
            counts: dict[str, dict[str, int]] = {room_id: {} for room_id in room_ids}
            for room_id, membership, number in txn:
                counts[room_id][membership] = number
            return counts

        return await self._store.db_pool.runInteraction("roomcache_member_counts", count)

    @staticmethod
    def aggregation_candidates(filtered_events: Iterable[Any]) -> list[str]:
        """The IDs of the events Synapse bundles aggregations for (it skips
        state events)."""
        return [
            filtered.event.event_id for filtered in filtered_events if not filtered.event.is_state()
        ]

    async def events_with_relations(self, event_ids: Collection[str]) -> frozenset[str]:
        """Of these events, those another event relates to (a row of
        Synapse's `event_relations` names them): one query for all of them.
        Synapse's bundled aggregations (threads, references, edits) are all
        read from those rows."""
        rows = await self._store.db_pool.simple_select_many_batch(
            table="event_relations",
            column="relates_to_id",
            iterable=event_ids,
            retcols=("relates_to_id",),
            desc="roomcache_events_with_relations",
            batch_size=1000,
        )
        return frozenset(event_id for (event_id,) in rows)

    async def events_by_id(self, event_ids: list[str]) -> list[Any]:
        """The events, in that order, as Synapse's timeline query fetches
        them (its event cache; rejected and unknown events left out)."""
        return await self._store.get_events_as_list(event_ids, get_prev_content=True)

    # Synapse's direction a page of events is read in.
    BACKWARDS = Direction.BACKWARDS

    @staticmethod
    def room_stream_token(topological: int, stream: int) -> RoomStreamToken:
        return RoomStreamToken(topological=topological, stream=stream)

    @staticmethod
    def user_of(sync_config: Any) -> str:
        """The user a Sliding Sync request is for."""
        return sync_config.user.to_string()

    @staticmethod
    def never_sent(state: Any, room_ids: Iterable[str]) -> set[str]:
        """Of these rooms, those never sent on the connection (Synapse's
        `PerConnectionState`)."""
        rooms = state.rooms
        return {
            room_id
            for room_id in room_ids
            if rooms.have_sent_room(room_id).status is HaveSentRoomFlag.NEVER
        }

    @staticmethod
    def filter_types(state_filter: StateFilter) -> Mapping[str, Collection[str] | None] | None:
        """A state filter's types (state keys by type, None: every key), or
        None when it also asks for every other type."""
        if state_filter.include_others:
            return None
        return state_filter.types

    @staticmethod
    def state_filter(types: Mapping[str, Collection[str] | None]) -> StateFilter:
        """The state filter asking for exactly `types`."""
        return StateFilter.from_types(
            (event_type, state_key)
            for event_type, state_keys in types.items()
            for state_key in (state_keys if state_keys is not None else (None,))
        )

    # --- the store ---------------------------------------------------------------

    async def rooms_with_updates_since(self, room_ids: Collection[str], room_key: Any) -> set[str]:
        """Of these rooms, those Synapse knows an event of after `room_key`
        (its stream change cache, else its sliding-sync table)."""
        return set(
            await self._store.get_rooms_that_have_updates_since_sliding_sync_table(
                room_ids, room_key
            )
        )

    async def sliding_sync_tables_ready(self) -> bool:
        return await self._store.have_finished_sliding_sync_background_jobs()

    async def ignored_users(self, user_id: str) -> frozenset[str]:
        return frozenset(await self._store.ignored_users(user_id))

    async def accepts_all_invites(self, user_id: str) -> bool:
        """False when the user has invite rules (MSC4155/4380)."""
        config = await self._store.get_invite_config_for_user(user_id)
        return isinstance(config, AllowAllInviteRulesConfig)

    async def forgotten_rooms(self, user_id: str) -> frozenset[str]:
        return frozenset(await self._store.get_forgotten_rooms_for_user(user_id))

    async def partial_state_rooms(self) -> frozenset[str]:
        return frozenset(await self._store.get_partial_rooms())

    async def positions_at_token(self, room_ids: Collection[str], room_key: Any) -> dict[str, int]:
        """Each room's last event position at or before `room_key` (rooms
        Synapse knows no event of are absent)."""
        return await self._store.bulk_get_last_event_pos_in_room_before_stream_ordering(
            room_ids, room_key
        )

    async def room_versions(self, room_ids: Iterable[str]) -> dict[str, str]:
        """The room version of each room (absent: not in Synapse's `rooms`
        table): Synapse's cache first, then one query for the rest, which
        fills the cache."""
        cache = self._store.get_room_version_id.cache
        versions: dict[str, str] = {}
        missing: list[str] = []
        for room_id in room_ids:
            version = cache.get_immediate(room_id, None, update_metrics=False)
            if version is None:
                missing.append(room_id)
            else:
                versions[room_id] = version
        if missing:
            rows = await self._store.db_pool.simple_select_many_batch(
                table="rooms",
                column="room_id",
                iterable=missing,
                retcols=("room_id", "room_version"),
                desc="roomcache_room_versions",
                batch_size=1000,
            )
            for room_id, version in rows:
                if version is not None:
                    versions[room_id] = version
                    self._store.get_room_version_id.prefill((room_id,), version)
        return versions

    def membership_changed_since(self, user_id: str, stream: int) -> bool:
        """Whether a membership of the user may have changed after `stream`
        (Synapse's stream change cache, in memory)."""
        return self._store._membership_stream_cache.has_entity_changed(user_id, stream)

    def rooms_with_events_since(self, stream: int) -> set[str] | None:
        """The rooms with an event after `stream`, or None when Synapse's
        stream change cache does not reach back that far."""
        changed = self._store._events_stream_cache.get_all_entities_changed(stream)
        return set(changed.entities) if changed.hit else None

    def rooms_with_state_changes_since(self, room_ids: Collection[str], stream: int) -> set[str]:
        """Of these rooms, those whose current state may have changed after
        `stream` (Synapse's stream change cache of state deltas: all of them
        when it does not reach back that far)."""
        return set(
            self._store._curr_state_delta_stream_cache.get_entities_changed(room_ids, stream)
        )

    def events_position(self) -> int:
        """This process's own position on the events stream (what it has
        persisted)."""
        generator = self._store.get_events_stream_id_generator()
        return generator.get_current_token_for_writer(self.instance_name)

    def account_data_changed_since(self, user_id: str, position: int) -> bool:
        return self._store._account_data_stream_cache.has_entity_changed(user_id, position)

    def current_room_token(self) -> RoomStreamToken:
        """The events stream's position this process knows to be persisted."""
        return self._store.get_room_max_token()

    async def max_allocated_stream(self) -> int:
        """The highest events-stream position Synapse has handed out (one
        query): no event is at a position above it."""
        return await self._store.get_events_stream_id_generator().get_max_allocated_token()


class Shared(Generic[_T]):
    """A coroutine run once in the background (Synapse's `run_in_background`,
    outside the caller's log context), started by the first caller that
    awaits its result (none: never run), its result awaited by any number
    of callers. `function` must not raise; its results are reasons (str)
    or values, and a None result reads as the reason `module_error`."""

    def __init__(self, function: Callable[..., Awaitable[_T]], *args: Any) -> None:
        self._function = function
        self._args = args
        self._observable: ObservableDeferred[_T] | None = None

    async def result(self) -> _T | str:
        if self._observable is None:
            self._observable = ObservableDeferred(
                run_in_background(self._function, *self._args), consumeErrors=True
            )
        result = await make_deferred_yieldable(self._observable.observe())
        return "module_error" if result is None else result


_STATUS = operator.attrgetter("status")
_PREVIOUSLY = functools.partial(operator.is_, HaveSentRoomFlag.PREVIOUSLY)


def write_now(transport: Any, data: bytes) -> None:
    """Writes `data` on a Twisted transport, sending what the socket takes at
    once rather than at the reactor's next turn (in a busy Synapse a turn
    takes a few tenths of a millisecond). Reads Twisted's private write
    buffers (`dataBuffer`, `_tempDataBuffer`) to do so only when nothing
    else is waiting; when they are absent or busy, or the socket does not
    take everything, the transport writes (the rest) as usual."""
    sock = getattr(transport, "socket", None)
    buffered = getattr(transport, "dataBuffer", None)
    pending = getattr(transport, "_tempDataBuffer", None)
    if sock is not None and buffered == b"" and pending == []:
        try:
            sent = sock.send(data)
        except OSError:
            sent = 0  # would block, interrupted, or an error the transport reports itself
        data = data[sent:]
    if data:
        transport.write(data)
