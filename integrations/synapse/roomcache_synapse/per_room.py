# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""The per-room seam: the current-state event IDs of the rooms a Sliding
Sync request sends in full, answered from roomcache's held state.

For each room it sends, Synapse's handler looks up current-state event IDs
through one method, `get_current_state_ids_at` (the room's name; its
`required_state` with the avatar and the heroes' memberships; state newly
asked for on a connection): for a joined room, a query on
`current_state_events`, uncached when the filter has a wildcard state key
(Element X's request has four). This seam replaces that method on the
handler's instance:

* After the room lists (`prepare`, called by the room-list seam, whichever
  way they were computed), it prepares ONE request to roomcache
  (`POST /v1/rooms/data`, waiting for the request's token) for every room
  the request sends in full (initial: no `pos`, newly joined, or never
  sent on the connection) whose membership at the token is `join`, and
  keeps it for the request (a context variable: Twisted copies it into
  the per-room coroutines). The first room's lookup sends it: its cost
  is the per-room data's.
* Each lookup of such a room takes the keys roomcache holds from that
  answer and asks Synapse (its per-key cache) for the rest; any other
  lookup is Synapse's own, counted by reason.

Synapse reads a joined room's current state as it is when it looks, not
rewound to the token; roomcache's answer is at its token, at or after the
request's, which is as current.

With `room_timeline`, the same fetch asks for those rooms' initial
timelines (the limit most of them use), and the store's
`paginate_room_events_by_topological_ordering` is replaced: a call that is
exactly such a room's initial timeline at the request's token (backwards,
no lower bound, no filter, that limit) takes its rows from the answer and
fetches the events with Synapse's `get_events_as_list`, as Synapse's query
does; every other call is Synapse's own. Once roomcache has answered, ONE
query on Synapse's `event_relations` finds which of those timelines'
events another event relates to; the relations handler's
`get_bundled_aggregations` is replaced, and for events of those timelines
that none relates to it answers at once what Synapse's queries would:
nothing to bundle.

The same rooms' member counts, room account data and tags are loaded in
one query each (batched.py), at their first lookup.

Owns: which lookups roomcache answers, and how. May not touch: Synapse's
private names (the adapter's), the wire (the client's).
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import attr

from .adapter import Shared, SlidingSyncInterestedRooms, SynapseAdapter
from .answer import BadAnswer
from .batched import BatchedLookups
from .breaker import CircuitBreaker, CircuitOpen, asking
from .client import RoomcacheClient, RoomcacheFailure
from .config import RoomcacheConfig
from .metrics import (
    AGGREGATIONS,
    BUMP_STAMPS,
    ROOM_STATE,
    ROOM_STATE_FETCHES,
    ROOM_TIMELINES,
)
from .request import stream_token_text
from .room_state import FilterTypes, RoomDataAnswer, StateKey, parse_room_data
from .room_timeline import RoomTimeline, TimelineRelations, asked_limit, next_position
from .tokens import StreamPosition

logger = logging.getLogger(__name__)

_CREATE = ("m.room.create", "")


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Batch:
    """The rooms' held state one request asked roomcache for."""

    to_token: Any
    """The request's token (Synapse's `StreamToken`, the very object)."""
    asked: frozenset[str]
    skipped: Mapping[str, str]
    """Rooms sent in full but not asked for, with why (`partial_state`)."""
    fetched: Shared[RoomDataAnswer | str] | None
    """roomcache's answer, or why there is none."""
    declined: str | None = None
    """Why no lookup of this request is roomcache's (`bypass`)."""
    bump_stamps: Mapping[str, int] = attr.ib(factory=dict)
    """The joined rooms' bump stamps of the room-list answer, when the
    request's room lists are roomcache's."""
    timeline_limit: int | None = None
    """The limit of the initial timelines asked with the state (None: not
    asked)."""
    relations: Shared[TimelineRelations | str] | None = None
    """Which events of the timelines from roomcache another event relates
    to, or why that is not known."""


_BATCH: contextvars.ContextVar[Batch | None] = contextvars.ContextVar(
    "roomcache_room_state", default=None
)
# The bump stamps the room-list seam noted for the request being computed.
_NOTED: contextvars.ContextVar[Mapping[str, int] | None] = contextvars.ContextVar(
    "roomcache_bump_stamps", default=None
)


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Decline:
    """This lookup is Synapse's own; `reason` is counted."""

    reason: str


def rooms_sent_in_full(
    joined_to_send: Iterable[str],
    from_token: Any | None,
    newly_joined: Collection[str],
    never_sent: Collection[str],
) -> list[str]:
    """Of the joined rooms to send, those Synapse sends in full (its
    `initial`): all of them on a request without `pos`, else the newly
    joined ones and those never sent on the connection."""
    if from_token is None:
        return list(joined_to_send)
    return [room for room in joined_to_send if room in newly_joined or room in never_sent]


def answer_from(
    answer: RoomDataAnswer, room_id: str, types: FilterTypes
) -> tuple[dict[StateKey, str], FilterTypes] | Decline:
    """The event IDs of the keys of `types` roomcache holds for the room,
    and the types left for Synapse; `Decline` when roomcache does not know
    the room or holds none of the keys."""
    held, rest = answer.held.split(types)
    if not held:
        return Decline("not_held")
    if room_id in answer.unknown:
        return Decline("room_unknown")
    state = answer.states[room_id]
    # Every room's current state has its create event: an answer without
    # it is not one Synapse would give.
    if answer.held.holds(*_CREATE) and _CREATE not in state.ids:
        return Decline("room_unknown")
    return state.pick(held), rest


class RoomcacheRoomState:
    """Replaces, for the rooms a request sends in full, the handler's
    `get_current_state_ids_at`, the store's `get_latest_bump_stamp_for_room`
    and `paginate_room_events_by_topological_ordering`, the relations
    handler's `get_bundled_aggregations`, and (batched.py) the store's
    member counts, room account data and tags."""

    def __init__(
        self,
        synapse: SynapseAdapter,
        client: RoomcacheClient,
        config: RoomcacheConfig,
        breaker: CircuitBreaker,
    ) -> None:
        self._synapse = synapse
        self._lookups = BatchedLookups(synapse)
        self._original = synapse.original_current_state_ids_at
        self._original_bump_stamp = synapse.original_latest_bump_stamp
        self._original_page = synapse.original_topological_page
        self._original_aggregations = synapse.original_bundled_aggregations
        self._client = client
        self._config = config
        self._breaker = breaker

    def install(self) -> None:
        self._synapse.replace_current_state_ids_at(self.current_state_ids_at)
        self._synapse.replace_latest_bump_stamp(self.latest_bump_stamp)
        self._lookups.install()
        if self._config.room_timeline:
            self._synapse.replace_topological_page(self.topological_page)
            self._synapse.replace_bundled_aggregations(self.bundled_aggregations)

    @staticmethod
    def note_bump_stamps(bump_stamps: Mapping[str, int]) -> None:
        """The room-list seam's answer: each joined room's bump stamp (its
        joined row's `bump_stamp`, else the membership's position)."""
        _NOTED.set(bump_stamps)

    async def prepare(
        self,
        sync_config: Any,
        previous_connection_state: Any,
        to_token: Any,
        from_token: Any | None,
        interested: SlidingSyncInterestedRooms,
        lists_from_roomcache: bool,
    ) -> None:
        """Prepares the one fetch of this request's rooms sent in full (the
        rooms' lookups send it and await it); keeps the bump stamps noted
        when `interested` is the room-list seam's own answer."""
        _BATCH.set(None)
        noted = _NOTED.get()
        _NOTED.set(None)
        bump_stamps = noted if lists_from_roomcache and noted is not None else {}
        prefix = self._config.bypass_conn_id_prefix
        if prefix is not None and (sync_config.conn_id or "").startswith(prefix):
            _BATCH.set(Batch(to_token, frozenset(), {}, None, declined="bypass"))
            self._lookups.start(self._synapse.user_of(sync_config), (), declined="bypass")
            return
        memberships = interested.room_membership_for_user_map
        joined = [
            room_id
            for room_id in interested.relevant_rooms_to_send_map
            if memberships[room_id].membership == "join"
        ]
        never_sent: Collection[str] = ()
        if from_token is not None:
            candidates = [room for room in joined if room not in interested.newly_joined_rooms]
            never_sent = self._synapse.never_sent(previous_connection_state, candidates)
        rooms = rooms_sent_in_full(joined, from_token, interested.newly_joined_rooms, never_sent)
        partial = await self._synapse.partial_state_rooms() if rooms else frozenset()
        asked = [room for room in rooms if room not in partial]
        limit = None
        if self._config.room_timeline and asked:
            configs = interested.relevant_rooms_to_send_map
            limit = asked_limit(configs[room].timeline_limit for room in asked)
        fetched = Shared(self._fetch, asked, to_token, limit) if asked else None
        relations = None
        if fetched is not None and limit is not None:
            relations = Shared(self._relations_of, fetched)
        self._lookups.start(self._synapse.user_of(sync_config), asked)
        skipped = {room: "partial_state" for room in rooms if room in partial}
        _BATCH.set(
            Batch(
                to_token,
                frozenset(asked),
                skipped,
                fetched,
                bump_stamps=bump_stamps,
                timeline_limit=limit,
                relations=relations,
            )
        )

    async def _fetch(
        self, rooms: list[str], to_token: Any, timeline_limit: int | None
    ) -> RoomDataAnswer | str:
        """roomcache's answer for `rooms` at the token (with their timelines
        of `timeline_limit` events), or why there is none (counted). Never
        raises."""
        body: dict[str, Any] = {
            "rooms": rooms,
            "wait_for": stream_token_text(to_token.room_key),
            "timeout_ms": self._config.wait_timeout_ms,
        }
        if timeline_limit is not None:
            body["timeline"] = {"limit": timeline_limit}
        answer: RoomDataAnswer | str
        try:
            with asking(self._breaker):
                raw = await self._client.rooms_data(body)
            at = StreamPosition.of(to_token.room_key)
            answer = parse_room_data(raw, rooms, at, timeline_limit)
            if answer.timed_out:
                answer = "not_caught_up"
        except CircuitOpen:
            answer = "circuit_open"
        except RoomcacheFailure as failure:
            answer = failure.reason
        except BadAnswer as error:
            logger.warning("roomcache: a bad rooms' data answer: %s", error)
            answer = "bad_answer"
        except Exception:
            logger.exception("roomcache: asking for the rooms' data failed")
            answer = "module_error"
        ROOM_STATE_FETCHES.labels(outcome=answer if isinstance(answer, str) else "answered").inc()
        return answer

    async def _relations_of(self, fetched: Shared[RoomDataAnswer | str]) -> TimelineRelations | str:
        """Once roomcache has answered: which events of its timelines another
        event relates to (one query on Synapse's database), or why that is
        not known. Never raises."""
        answer = await fetched.result()
        if isinstance(answer, str):
            return answer
        looked_up = frozenset(
            row.event_id
            for timeline in answer.timelines.values()
            if isinstance(timeline, RoomTimeline)
            for row in timeline.rows
        )
        try:
            related = await self._synapse.events_with_relations(looked_up) if looked_up else ()
        except Exception:
            logger.exception("roomcache: reading which timeline events have relations failed")
            return "module_error"
        return TimelineRelations(looked_up, frozenset(related))

    async def current_state_ids_at(
        self,
        room_id: str,
        room_membership_for_user_at_to_token: Any,
        state_filter: Any,
        to_token: Any,
    ) -> Mapping[StateKey, str]:
        """Synapse's method, with the keys roomcache holds from its answer."""
        membership = room_membership_for_user_at_to_token
        try:
            found = await self._from_roomcache(room_id, membership, state_filter, to_token)
        except Exception:
            logger.exception("roomcache: the held state of %s failed; Synapse's way", room_id)
            found = Decline("module_error")
        if isinstance(found, Decline):
            ROOM_STATE.labels(path="synapse", reason=found.reason).inc()
            return await self._original(
                room_id=room_id,
                room_membership_for_user_at_to_token=membership,
                state_filter=state_filter,
                to_token=to_token,
            )
        ids, rest = found
        if rest:
            ids.update(
                await self._original(
                    room_id=room_id,
                    room_membership_for_user_at_to_token=membership,
                    state_filter=self._synapse.state_filter(rest),
                    to_token=to_token,
                )
            )
        ROOM_STATE.labels(path="roomcache", reason="").inc()
        return ids

    async def latest_bump_stamp(self, room_id: str) -> int | None:
        """Synapse's `get_latest_bump_stamp_for_room`, from the room-list
        answer's entry when the request has one for the room. Synapse reads
        the joined row's `bump_stamp` (None when it has none) and then, when
        it is None, or not before the token, settles on the membership's
        position or the last bump event before the token; the entry holds
        the same `bump_stamp`, or the membership's position when there is
        none, which Synapse's checks take to the same bump stamp
        (docs/synapse.md A.7)."""
        batch = _BATCH.get()
        stamp = None if batch is None else batch.bump_stamps.get(room_id)
        if stamp is None:
            reason = (batch.declined if batch is not None else None) or "not_noted"
            BUMP_STAMPS.labels(path="synapse", reason=reason).inc()
            return await self._original_bump_stamp(room_id)
        BUMP_STAMPS.labels(path="roomcache", reason="").inc()
        return stamp

    async def _from_roomcache(
        self, room_id: str, membership: Any, state_filter: Any, to_token: Any
    ) -> tuple[dict[StateKey, str], FilterTypes] | Decline:
        if membership.membership != "join":
            # Left or banned: the state at the leave (invites and knocks
            # have no state lookups).
            return Decline("membership")
        batch = _BATCH.get()
        if batch is None or batch.to_token is not to_token:
            return Decline("not_fetched")
        if batch.declined is not None:
            return Decline(batch.declined)
        skipped = batch.skipped.get(room_id)
        if skipped is not None:
            return Decline(skipped)
        if room_id not in batch.asked or batch.fetched is None:
            return Decline("not_fetched")
        types = self._synapse.filter_types(state_filter)
        if types is None:
            return Decline("state_filter")
        answer = await batch.fetched.result()
        if isinstance(answer, str):
            return Decline(answer)
        return answer_from(answer, room_id, types)

    async def topological_page(self, **arguments: Any) -> tuple[list[Any], Any, bool]:
        """Synapse's `paginate_room_events_by_topological_ordering` (its
        arguments are keyword-only), from roomcache's answer when the call
        is the initial timeline of a room this request fetched."""
        try:
            found = await self._timeline_from_roomcache(arguments)
        except Exception:
            logger.exception("roomcache: the initial timeline failed; Synapse's way")
            found = Decline("module_error")
        if isinstance(found, Decline):
            if found.reason != _OTHER_CALLER:
                ROOM_TIMELINES.labels(path="synapse", reason=found.reason).inc()
            return await self._original_page(**arguments)
        events = await self._synapse.events_by_id(found.event_ids)
        position = next_position(found)
        if position is None:
            token = arguments["from_key"]
        else:
            token = self._synapse.room_stream_token(*position)
        ROOM_TIMELINES.labels(path="roomcache", reason="").inc()
        return events, token, found.limited

    async def _timeline_from_roomcache(
        self, arguments: Mapping[str, Any]
    ) -> RoomTimeline | Decline:
        batch = _BATCH.get()
        if batch is None:
            # Not a Sliding Sync request's per-room data (`/messages`, …).
            return Decline(_OTHER_CALLER)
        if batch.declined is not None:
            return Decline(batch.declined)
        room_id = arguments.get("room_id")
        skipped = batch.skipped.get(room_id) if isinstance(room_id, str) else None
        if skipped is not None:
            return Decline(skipped)
        if room_id not in batch.asked or batch.fetched is None or batch.timeline_limit is None:
            return Decline("not_fetched")
        if not (
            set(arguments) <= _PAGE_ARGUMENTS
            and arguments.get("from_key") is batch.to_token.room_key
            and arguments.get("to_key") is None
            and arguments.get("direction", self._synapse.BACKWARDS) == self._synapse.BACKWARDS
            and arguments.get("event_filter") is None
        ):
            return Decline("not_initial")
        if arguments.get("limit", 0) != batch.timeline_limit:
            return Decline("timeline_limit")
        answer = await batch.fetched.result()
        if isinstance(answer, str):
            return Decline(answer)
        timeline = answer.timelines.get(room_id)
        if isinstance(timeline, RoomTimeline):
            return timeline
        return Decline(timeline if timeline in _TIMELINE_UNKNOWN else "room_unknown")

    async def bundled_aggregations(self, filtered_events: Any, user_id: str) -> dict[str, Any]:
        """Synapse's `get_bundled_aggregations`: nothing to bundle, at once,
        for events of this request's timelines from roomcache that no event
        relates to; Synapse's own otherwise."""
        reason: str | None = _OTHER_CALLER
        batch = _BATCH.get()
        if batch is not None:
            # Read twice (here and maybe by Synapse's own): a list.
            filtered_events = list(filtered_events)
            try:
                reason = await self._aggregations_decline(batch, filtered_events)
            except Exception:
                logger.exception("roomcache: bundled aggregations failed; Synapse's way")
                reason = "module_error"
        if reason is None:
            AGGREGATIONS.labels(path="roomcache", reason="").inc()
            return {}
        if reason != _OTHER_CALLER:
            AGGREGATIONS.labels(path="synapse", reason=reason).inc()
        return await self._original_aggregations(filtered_events, user_id)

    async def _aggregations_decline(self, batch: Batch, filtered_events: list[Any]) -> str | None:
        if batch.declined is not None:
            return batch.declined
        if batch.relations is None:
            return "not_fetched"
        relations = await batch.relations.result()
        if isinstance(relations, str):
            return relations
        return relations.none_related(self._synapse.aggregation_candidates(filtered_events))


# A call of a replaced method outside a Sliding Sync request (not counted).
_OTHER_CALLER = "other_caller"
# The keyword arguments of Synapse 1.163's method; a call with others is
# Synapse's own.
_PAGE_ARGUMENTS = frozenset({"room_id", "from_key", "to_key", "direction", "limit", "event_filter"})
# Why roomcache does not know a room's timeline (docs/api.md), counted as such.
_TIMELINE_UNKNOWN = frozenset({"not_held", "behind_token", "recalculating", "unordered"})
