# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""A benchmark-only Synapse module: where the time of a Sliding Sync request goes.

    modules:
      - module: roomcache_synapse.RoomcacheModule      # first, if loaded
        config: {...}
      - module: roomcache_synapse_bench.phases.PhaseTimer
        config: {}

It wraps methods on the instances Synapse 1.163.2's sliding-sync handler
uses (the handler, its room lists, connection store and extensions, the
main datastore, the roomcache module's seam) with timers, and records one
entry per request (`current_sync_for_user`): the wall time of each phase.
A call is counted only when made directly by the function named for it
(the caller's frame), so nested calls are never counted twice. The wrapped
objects forward every other attribute to the original (Synapse invalidates
its caches through attributes of cached methods).

Phases:
* top level, in the order the handler runs them: `connection_state_read`,
  `room_lists` (the seam), `room_data` (from the first room's start to the
  last room's end: the rooms are handled 20 at a time), `extensions`,
  `rooms_out_of_range` (incremental requests: which rooms outside the ranges
  changed), `connection_state_write`; `total` is the handler's whole call;
* per room, summed over the rooms of the request (`room.*`; the rooms run
  concurrently, so these sums overlap and can exceed `room_data`):
  `timeline_fetch`, `timeline_visibility` (filtering the events for the
  client), `timeline_aggregations` (bundled aggregations), `room_name`,
  `heroes`, `counts`, `required_state`, `state_deltas`, `bump_stamp`,
  `other_events`;
* inside the seam (`seam.*`): Synapse's own way (`snapshots`, `rewind`,
  `filter`, `sort`, `to_send`, `dm_rooms`) or the module's (`synapse_facts`,
  `ask_roomcache`, of which `roomcache_call`, `assemble`, `result`, of which
  `to_send` and `dm_rooms`; the rest of `result` is the loop over the rooms
  in range, not wrapped: a timer per call would cost more than the call);
  the requests the module sent roomcache are kept (`roomcache_requests`);
* database transactions (`db.<description>`), all of those the request ran
  (they run 5 or 10 at a time on the database pool's threads, so they overlap).

Records are kept in memory (at most 10,000) and served, then dropped, by
`GET /_roomcache_bench/phases` (JSON list). Meant for one request at a time:
a request started while another runs is not recorded.

`POST /_roomcache_bench/phases` with `{"sequential_rooms": true}` makes the
handler fetch the rooms' data one room at a time instead of 20 at once (its
`concurrently_execute` limit): the per-room phases then add up to the
room-data time, which attributes it exactly (a benchmark-only mode).

Every timed call costs a few microseconds more than it would (a frame
lookup and a coroutine): methods called once per room in range are timed
only where they run on both sides alike.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request

logger = logging.getLogger(__name__)

PATH = "/_roomcache_bench/phases"
_MAX_RECORDS = 10_000


class Record:
    """The phases of one request."""

    def __init__(self, conn_id: str, incremental: bool) -> None:
        self.conn_id = conn_id
        self.incremental = incremental
        self.phases: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.rooms = 0
        self.roomcache_requests: list[dict[str, Any]] = []
        self.first_room_start: float | None = None
        self.last_room_end = 0.0

    def add(self, phase: str, seconds: float) -> None:
        self.phases[phase] = self.phases.get(phase, 0.0) + seconds
        self.calls[phase] = self.calls.get(phase, 0) + 1

    def as_json(self) -> dict[str, Any]:
        phases = dict(self.phases)
        if self.first_room_start is not None:
            phases["room_data"] = self.last_room_end - self.first_room_start
        return {
            "conn_id": self.conn_id,
            "incremental": self.incremental,
            "rooms": self.rooms,
            "phases": phases,
            "calls": self.calls,
            "roomcache_requests": self.roomcache_requests,
        }


class Recorder:
    """The request being timed, and the records of those done."""

    def __init__(self) -> None:
        self.current: Record | None = None
        self.records: list[dict[str, Any]] = []
        self.sequential_rooms = False

    def take(self) -> list[dict[str, Any]]:
        records, self.records = self.records, []
        return records


Classify = Callable[[tuple[Any, ...], Mapping[str, Any]], str]


class TimedMethod:
    """Stands in for a method (or function) and times the calls its caller
    (by function name) makes; other calls go straight through. Any other
    attribute is the original's."""

    def __init__(
        self,
        original: Callable[..., Awaitable[Any]],
        recorder: Recorder,
        phase: str | Classify,
        callers: frozenset[str] | None,
    ) -> None:
        self._original = original
        self._recorder = recorder
        self._phase = phase
        self._callers = callers

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        record = self._recorder.current
        if record is None:
            return self._original(*args, **kwargs)
        if self._callers is not None and sys._getframe(1).f_code.co_name not in self._callers:
            return self._original(*args, **kwargs)
        phase = self._phase if isinstance(self._phase, str) else self._phase(args, kwargs)
        return _timed(record, phase, self._original(*args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


async def _timed(record: Record, phase: str, call: Awaitable[Any]) -> Any:
    started = time.perf_counter()
    try:
        return await call
    finally:
        record.add(phase, time.perf_counter() - started)


def _wrap(
    owner: Any,
    name: str,
    recorder: Recorder,
    phase: str | Classify,
    callers: frozenset[str] | None = None,
) -> None:
    original = getattr(owner, name, None)
    if original is None:
        raise AttributeError(f"{type(owner).__name__} has no {name}: not Synapse 1.163.2?")
    setattr(owner, name, TimedMethod(original, recorder, phase, callers))


def _state_phase(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    """`get_current_state_at` serves three purposes in the per-room code;
    its filter tells which: the room's name alone (whether heroes are
    needed), members alone (heroes' memberships), or the room's state
    (required state, with the avatar and heroes' memberships)."""
    state_filter = kwargs.get("state_filter")
    types = getattr(state_filter, "types", None)
    if state_filter is None or types is None or getattr(state_filter, "include_others", True):
        return "room.required_state"
    if dict(types) == {"m.room.name": frozenset({""})}:
        return "room.room_name"
    if set(types) == {"m.room.member"}:
        return "room.heroes"
    return "room.required_state"


_TOP = frozenset({"current_sync_for_user"})
_ROOM = frozenset({"get_room_sync_data"})
_SYNAPSE_SEAM = frozenset({"_compute_interested_rooms_new_tables"})
_MODULE_RESULT = frozenset({"_result"})


def instrument(hs: Any, recorder: Recorder) -> None:
    """Puts the timers in place on the handler the servlet uses."""
    handler = hs.get_sliding_sync_handler()
    store = hs.get_datastores().main
    room_lists = handler.room_lists
    # The seam first (it may be the roomcache module's wrapper).
    seam = getattr(room_lists.compute_interested_rooms, "__self__", None)
    if seam is not None and seam is not room_lists:
        _instrument_module_seam(seam, recorder)
    _wrap(
        handler.connection_store,
        "get_and_clear_connection_positions",
        recorder,
        "connection_state_read",
        _TOP,
    )
    _wrap(handler.connection_store, "record_new_state", recorder, "connection_state_write", _TOP)
    _wrap(room_lists, "compute_interested_rooms", recorder, "room_lists", _TOP)
    _wrap(handler.extensions, "get_extensions_response", recorder, "extensions", _TOP)
    for name in (
        "have_finished_sliding_sync_background_jobs",
        "get_rooms_that_have_updates_since_sliding_sync_table",
    ):
        _wrap(store, name, recorder, "rooms_out_of_range", _TOP)
    _instrument_database(store, recorder)
    _instrument_rooms(hs, handler, store, recorder)
    _instrument_synapse_seam(room_lists, store, recorder)
    _wrap_current_sync(handler, recorder)


def _instrument_database(store: Any, recorder: Recorder) -> None:
    """Every database transaction of the main database during the request
    (`db.<its description>`: waiting for a connection, the queries, and the
    function run on the connection's thread)."""
    pool = store.db_pool
    original = pool.runInteraction

    async def run_interaction(desc: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        record = recorder.current
        if record is None:
            return await original(desc, func, *args, **kwargs)
        started = time.perf_counter()
        try:
            return await original(desc, func, *args, **kwargs)
        finally:
            record.add(f"db.{desc}", time.perf_counter() - started)

    pool.runInteraction = run_interaction


def _instrument_rooms(hs: Any, handler: Any, store: Any, recorder: Recorder) -> None:
    original = handler.get_room_sync_data

    async def get_room_sync_data(*args: Any, **kwargs: Any) -> Any:
        record = recorder.current
        if record is None:
            return await original(*args, **kwargs)
        started = time.perf_counter()
        if record.first_room_start is None:
            record.first_room_start = started
        try:
            return await original(*args, **kwargs)
        finally:
            ended = time.perf_counter()
            record.rooms += 1
            record.add("room.total", ended - started)
            record.last_room_end = max(record.last_room_end, ended)

    handler.get_room_sync_data = get_room_sync_data
    module = sys.modules[type(handler).__module__]
    concurrently_execute = module.concurrently_execute

    def rooms_concurrently(function: Any, arguments: Any, limit: int, *rest: Any) -> Any:
        if recorder.sequential_rooms and recorder.current is not None:
            limit = 1
        return concurrently_execute(function, arguments, limit, *rest)

    module.concurrently_execute = rooms_concurrently
    for name in (
        "paginate_room_events_by_topological_ordering",
        "paginate_room_events_by_stream_ordering",
    ):
        _wrap(store, name, recorder, "room.timeline_fetch", _ROOM)
    _wrap(
        handler.relations_handler,
        "get_bundled_aggregations",
        recorder,
        "room.timeline_aggregations",
        _ROOM,
    )
    _wrap(
        module,
        "filter_and_transform_events_for_client",
        recorder,
        "room.timeline_visibility",
        _ROOM,
    )
    _wrap(handler, "get_current_state_at", recorder, _state_phase, _ROOM)
    _wrap(handler, "get_current_state_ids_at", recorder, "room.required_state", _ROOM)
    _wrap(store, "get_events", recorder, "room.required_state", _ROOM)
    _wrap(store, "get_sliding_sync_connection_lazy_members", recorder, "room.required_state", _ROOM)
    _wrap(store, "get_room_summary", recorder, "room.heroes", _ROOM)
    _wrap(store, "get_member_counts", recorder, "room.counts", _ROOM)
    _wrap(handler, "get_current_state_deltas_for_room", recorder, "room.state_deltas", _ROOM)
    _wrap(handler, "_get_bump_stamp", recorder, "room.bump_stamp", _ROOM)
    _wrap(store, "get_event", recorder, "room.other_events", _ROOM)


def _instrument_synapse_seam(room_lists: Any, store: Any, recorder: Recorder) -> None:
    """Synapse's own room lists (`_compute_interested_rooms_new_tables`)."""
    steps = {
        "get_sliding_sync_rooms_for_user_from_membership_snapshots": (store, "seam.snapshots"),
        "get_sliding_sync_self_leave_rooms_after_to_token": (store, "seam.rewind"),
        "_get_newly_joined_and_left_rooms": (room_lists, "seam.rewind"),
        "_get_rewind_changes_to_current_membership_to_token": (room_lists, "seam.rewind"),
        "get_sliding_sync_room_for_user": (store, "seam.rewind"),
        "filter_rooms_using_tables": (room_lists, "seam.filter"),
        "get_partial_rooms": (store, "seam.filter"),
        "sort_rooms": (room_lists, "seam.sort"),
        "_filter_relevant_rooms_to_send": (room_lists, "seam.to_send"),
        "_get_dm_rooms_for_user": (room_lists, "seam.dm_rooms"),
    }
    # The roomcache module calls these two from its own result step.
    shared = frozenset({"_filter_relevant_rooms_to_send", "_get_dm_rooms_for_user"})
    for name, (owner, phase) in steps.items():
        callers = _SYNAPSE_SEAM | _MODULE_RESULT if name in shared else _SYNAPSE_SEAM
        _wrap(owner, name, recorder, phase, callers)


def _instrument_module_seam(seam: Any, recorder: Recorder) -> None:
    """The roomcache module's seam (`roomcache_synapse.seam.RoomcacheRoomLists`)."""
    _wrap(seam, "_synapse_facts", recorder, "seam.synapse_facts", frozenset({"_from_roomcache"}))
    _wrap(seam, "_ask", recorder, "seam.ask_roomcache", frozenset({"_from_roomcache"}))
    _wrap(seam, "_assemble", recorder, "seam.assemble", frozenset({"_from_roomcache"}))
    _wrap(seam, "_result", recorder, "seam.result", frozenset({"_from_roomcache"}))
    client = getattr(seam, "_client", None)
    if client is None:
        return
    original = client.room_lists

    async def room_lists(user_id: str, body: Mapping[str, Any]) -> Any:
        """Keeps what was asked, for the driver to ask it again from outside."""
        record = recorder.current
        if record is not None:
            record.roomcache_requests.append({"user_id": user_id, "body": dict(body)})
        return await original(user_id, body)

    client.room_lists = room_lists
    _wrap(client, "room_lists", recorder, "seam.roomcache_call", frozenset({"_ask"}))


def _wrap_current_sync(handler: Any, recorder: Recorder) -> None:
    original = handler.current_sync_for_user

    async def current_sync_for_user(*args: Any, **kwargs: Any) -> Any:
        if recorder.current is not None:  # another request is being timed
            return await original(*args, **kwargs)
        sync_config = kwargs.get("sync_config", args[0] if args else None)
        record = Record(
            conn_id=getattr(sync_config, "conn_id", None) or "",
            incremental=kwargs.get("from_token") is not None,
        )
        recorder.current = record
        started = time.perf_counter()
        try:
            return await original(*args, **kwargs)
        finally:
            record.phases["total"] = time.perf_counter() - started
            recorder.current = None
            if len(recorder.records) < _MAX_RECORDS:
                recorder.records.append(record.as_json())

    handler.current_sync_for_user = current_sync_for_user


class PhasesResource(Resource):
    """`GET`: the records so far (JSON list), which are then dropped.
    `POST {"sequential_rooms": bool}`: rooms one at a time, or 20 at once."""

    isLeaf = True

    def __init__(self, recorder: Recorder) -> None:
        super().__init__()
        self._recorder = recorder

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(self._recorder.take()).encode()

    def render_POST(self, request: Request) -> bytes:
        body = json.loads((request.content.read() if request.content else b"") or b"{}")
        self._recorder.sequential_rooms = bool(body.get("sequential_rooms"))
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps({"sequential_rooms": self._recorder.sequential_rooms}).encode()


class PhaseTimer:
    """The module Synapse loads."""

    @staticmethod
    def parse_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
        return dict(config or {})

    def __init__(self, config: Mapping[str, Any], api: Any) -> None:
        hs = api._hs
        self.recorder = Recorder()
        instrument(hs, self.recorder)
        api.register_web_resource(PATH, PhasesResource(self.recorder))
        logger.info("roomcache bench: timing Sliding Sync phases, served at %s", PATH)
