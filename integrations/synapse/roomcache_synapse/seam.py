# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""The seam: Synapse's `SlidingSyncRoomLists.compute_interested_rooms`,
answered from roomcache.

Synapse computes a Sliding Sync request's room lists in that one method
(its only caller is the handler's `current_sync_for_user`): it loads every
membership of the user, rewinds them to the request's token, filters, sorts
and cuts each list. This wrapper asks roomcache for the lists instead, and
keeps Synapse's own code for everything roomcache does not hold: newly
joined and left rooms, DM rooms, which rooms need sending on this
connection, room versions, and the position as of the token of rooms that
had an event after it. Whenever roomcache cannot give Synapse's exact
answer at the token, the original method runs.

Owns: the decisions (when to ask roomcache, when to fall back, how the
answer becomes Synapse's result). May not touch: Synapse's private names
(they are the adapter's), the wire (the client's).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Collection, Iterator, Mapping
from typing import Any

from . import verify
from .adapter import (
    KNOWN_ROOM_VERSIONS,
    OperationType,
    PersistedEventPosition,
    RoomsForUserSlidingSync,
    RoomSyncConfig,
    SlidingSyncInterestedRooms,
    SlidingSyncResult,
    SlidingSyncUnknownPosition,
    SynapseAdapter,
)
from .answer import BadAnswer, RoomListAnswer, parse_answer
from .assemble import (
    Assembled,
    Facts,
    UnsettledRoomUnknown,
    cut_ranges,
    range_room_ids,
    shown_recencies,
    shown_whole,
    unsettled_joined_rooms,
)
from .breaker import CircuitBreaker, CircuitOpen, asking
from .client import RoomcacheClient, RoomcacheFailure
from .config import RoomcacheConfig
from .held_order import Held, HeldLists, OrderMismatch, asked_alike
from .metrics import (
    ENTRIES_FETCHED,
    HELD_LISTS,
    ROOM_LISTS,
    ROOMCACHE_WAIT_SECONDS,
    SEAM_SECONDS,
    UNAFFECTED,
    UNSETTLED_ROOMS,
)
from .per_room import RoomcacheRoomState
from .position import RoomcachePosition
from .request import UnsupportedRequest, list_body, room_list_body, stream_token_text
from .to_send import ConnectionExpired, rooms_to_send
from .tokens import StreamPosition

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

# Fallbacks logged at most every 10 s (as warnings): they come in runs.
_QUIET_REASONS = frozenset({"unavailable", "timeout", "circuit_open", "answer_too_large"})


class Fallback(Exception):
    """This request is computed Synapse's way; `reason` is counted."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason} {detail}".strip())
        self.reason = reason
        self.detail = detail


class RoomcacheRoomLists:
    """Replaces `compute_interested_rooms` on one `SlidingSyncRoomLists`."""

    def __init__(
        self,
        synapse: SynapseAdapter,
        client: RoomcacheClient,
        config: RoomcacheConfig,
        breaker: CircuitBreaker | None = None,
        room_state: RoomcacheRoomState | None = None,
    ) -> None:
        self._synapse = synapse
        self._room_state = room_state
        self._original = synapse.original_compute_interested_rooms
        self._excluded_globally = synapse.rooms_excluded_from_sync
        self._client = client
        self._config = config
        self._breaker = breaker or CircuitBreaker.of_config(config)
        self._last_quiet_log = 0.0
        self._position = RoomcachePosition(synapse)
        # The whole lists each connection was last shown (see held_order.py).
        self._held = HeldLists(config.held_order_rooms)
        # The highest events-stream position Synapse has handed out, as last
        # read (an answer's token may not be beyond it).
        self._allocated = 0

    def install(self) -> None:
        """Puts the wrapper in place of the handler's method."""
        self._synapse.replace_compute_interested_rooms(self.compute_interested_rooms)

    async def compute_interested_rooms(
        self,
        sync_config: Any,
        previous_connection_state: Any,
        to_token: Any,
        from_token: Any | None,
    ) -> SlidingSyncInterestedRooms:
        started = time.perf_counter()
        arguments = {
            "sync_config": sync_config,
            "previous_connection_state": previous_connection_state,
            "to_token": to_token,
            "from_token": from_token,
        }
        ours = None
        try:
            result = ours = await self._from_roomcache(**arguments)
            path, reason = "roomcache", ""
            if verify.should_verify(self._config.verify_fraction, sync_config):
                checked = await verify.verified(result, self._original, arguments)
                if checked is not result:
                    # Not what Synapse computes: hold nothing of it.
                    self._held.drop(sync_config.user.to_string(), _connection(sync_config))
                result = checked
        except Fallback as fallback:
            path, reason = "synapse", fallback.reason
            self._log_fallback(sync_config, fallback)
            result = await self._original(**arguments)
        except SlidingSyncUnknownPosition:
            raise  # Synapse's own answer to this connection, either way.
        except Exception:
            logger.exception("roomcache: room lists failed; computing them Synapse's way")
            path, reason = "synapse", "module_error"
            result = await self._original(**arguments)
        ROOM_LISTS.labels(path=path, reason=reason).inc()
        SEAM_SECONDS.labels(path=path).observe(time.perf_counter() - started)
        if self._room_state is not None:
            await self._prepare_room_state(arguments, result, result is ours)
        return result

    async def _prepare_room_state(
        self, arguments: Mapping[str, Any], result: SlidingSyncInterestedRooms, ours: bool
    ) -> None:
        """The per-room seam's one fetch for the rooms this request sends."""
        assert self._room_state is not None
        try:
            await self._room_state.prepare(
                **arguments, interested=result, lists_from_roomcache=ours
            )
        except Exception:
            logger.exception("roomcache: preparing the rooms' state failed; Synapse's way")

    def _log_fallback(self, sync_config: Any, fallback: Fallback) -> None:
        if fallback.reason in ("bypass", "no_lists"):
            return
        if fallback.reason in _QUIET_REASONS:
            now = time.monotonic()
            if now - self._last_quiet_log < 10:
                return
            self._last_quiet_log = now
            logger.warning(
                "roomcache: %s (%s); computing room lists Synapse's way (logged at most "
                "every 10 s)",
                fallback.reason,
                fallback.detail,
            )
            return
        logger.info(
            "roomcache: room lists of %s computed Synapse's way: %s %s",
            sync_config.user.to_string(),
            fallback.reason,
            fallback.detail,
        )

    async def _from_roomcache(
        self,
        sync_config: Any,
        previous_connection_state: Any,
        to_token: Any,
        from_token: Any | None,
    ) -> SlidingSyncInterestedRooms:
        conn_id = sync_config.conn_id or ""
        prefix = self._config.bypass_conn_id_prefix
        if prefix is not None and conn_id.startswith(prefix):
            raise Fallback("bypass")
        lists: Mapping[str, Any] = sync_config.lists or {}
        if not lists:
            raise Fallback("no_lists")
        if not await self._synapse.sliding_sync_tables_ready():
            raise Fallback("synapse_tables_not_ready")
        user_id = sync_config.user.to_string()
        facts = await self._synapse_facts(user_id, to_token, from_token)
        configs = {name: RoomSyncConfig.from_room_config(config) for name, config in lists.items()}
        bodies = self._list_bodies(lists, configs, facts)
        asked = asked_alike(bodies, facts.forgotten, facts.ignored)
        connection = _connection(sync_config)
        held = self._held_lists(user_id, connection, bodies, asked, from_token)
        answer = await self._ask(sync_config, lists, bodies, held, to_token, from_token, facts)
        assembled = await self._assemble(lists, configs, answer, held, to_token)
        self._add_subscriptions(sync_config, answer, facts, assembled)
        result = await self._result(
            user_id, previous_connection_state, from_token, to_token, answer, facts, assembled
        )
        # Rooms left after `pos` are listed this once, not at the next pos:
        # a list showing them is not the next request's.
        if assembled.whole_lists is not None and not facts.newly_left:
            token = stream_token_text(to_token.room_key)
            lists = tuple(assembled.whole_lists)
            self._held.keep(user_id, connection, Held(token, asked, lists))
        return result

    def _list_bodies(
        self, lists: Mapping[str, Any], configs: Mapping[str, RoomSyncConfig], facts: Facts
    ) -> list[JsonDict]:
        """Each list as roomcache is asked it."""
        bodies = []
        for name, list_config in lists.items():
            exclude = set(self._excluded_globally)
            if configs[name].must_await_full_state(self._synapse.is_mine_id):
                exclude |= facts.partial_state
            try:
                bodies.append(list_body(list_config, exclude))
            except UnsupportedRequest as error:
                raise Fallback("unsupported", str(error)) from error
        return bodies

    def _held_lists(
        self,
        user_id: str,
        connection: str,
        bodies: list[JsonDict],
        asked: tuple[object, ...],
        from_token: Any | None,
    ) -> Held | None:
        """The connection's whole lists as of `from_token`, when the lists
        hold the same rooms now but for their order: no membership of the
        user changed after it, and no list has a filter (a room's state can
        take it into or out of a filtered list)."""
        if from_token is None:
            return None
        since = stream_token_text(from_token.room_key)
        held = self._held.take(user_id, connection, since, asked)
        if held is None or any(body.get("filters") for body in bodies):
            return None
        if self._synapse.membership_changed_since(user_id, from_token.room_key.stream):
            return None
        return held

    async def _synapse_facts(self, user_id: str, to_token: Any, from_token: Any | None) -> Facts:
        """What Synapse holds cheaply (cached) and roomcache does not."""
        synapse = self._synapse
        ignored = await synapse.ignored_users(user_id)
        if ignored and not await synapse.accepts_all_invites(user_id):
            raise Fallback("invite_rules", "ignored users and invite rules")
        forgotten = await synapse.forgotten_rooms(user_id)
        newly_joined, newly_left = await synapse.newly_joined_and_left(
            user_id, to_token, from_token
        )
        forgotten_left = [room_id for room_id in newly_left if room_id in forgotten]
        if forgotten_left:
            raise Fallback("forgotten_newly_left", f"{len(forgotten_left)} rooms")
        # Left with no membership event (a state reset, or the server left
        # the room): Synapse's own way of listing these is not roomcache's.
        without_event = [room_id for room_id, entry in newly_left.items() if entry.event_id is None]
        if without_event:
            raise Fallback("left_without_event", f"{len(without_event)} rooms")
        return Facts(
            ignored=ignored,
            forgotten=forgotten,
            partial_state=await synapse.partial_state_rooms(),
            newly_joined=frozenset(newly_joined),
            newly_left=frozenset(newly_left),
        )

    async def _ask(
        self,
        sync_config: Any,
        lists: Mapping[str, Any],
        bodies: list[JsonDict],
        held: Held | None,
        to_token: Any,
        from_token: Any | None,
        facts: Facts,
    ) -> RoomListAnswer:
        """roomcache's answer at the request's token, checked; `Fallback`
        when there is none to use. With the connection's `held` lists, only
        the rooms that changed, over the whole lists."""
        if held is not None:
            bodies = [
                {**body, "ranges": [[0, max(held_list.size - 1, 0)]]}
                for body, held_list in zip(bodies, held.lists, strict=True)
            ]
        if from_token is not None:
            other_rooms: str | None = "changed"
        elif _sticky_events_enabled(sync_config):
            other_rooms = "all"
        else:
            other_rooms = None
        user_id = sync_config.user.to_string()
        body = room_list_body(
            lists=bodies,
            to_token=to_token,
            from_token=from_token,
            wait_timeout_ms=self._config.wait_timeout_ms,
            forgotten_rooms=facts.forgotten,
            ignored_inviters=facts.ignored,
            other_rooms=other_rooms,
            room_ids=list(sync_config.room_subscriptions or ()),
            wait_for_account_data=self._position.account_data_to_wait_for(user_id, to_token),
            unaffected=self._position.unaffected(user_id),
            changed_only=held is not None,
        )
        if from_token is not None:
            HELD_LISTS.labels(used=str(held is not None).lower()).inc()
        with self._through_breaker():
            raw = await self._client.room_lists(user_id, body)
        at = StreamPosition.of(to_token.room_key)
        asked = [[(start, end) for start, end in list_body_["ranges"]] for list_body_ in bodies]
        try:
            answer = parse_answer(raw, asked, at)
        except BadAnswer as error:
            raise Fallback("bad_answer", str(error)) from error
        await self._check_token(answer.token)
        self._position.note(answer, to_token)
        if answer.waited_us is not None:
            ROOMCACHE_WAIT_SECONDS.observe(answer.waited_us / 1e6)
        if answer.unaffected:
            UNAFFECTED.inc()
        if answer.timed_out:
            raise Fallback("not_caught_up", f"roomcache at {answer.token.text()}")
        if answer.fallback:
            raise Fallback("recalculating", "roomcache is recomputing some of the user's rooms")
        if answer.memberships_after_at:
            raise Fallback("membership_after_token", f"{len(answer.memberships_after_at)} rooms")
        return answer

    @contextlib.contextmanager
    def _through_breaker(self) -> Iterator[None]:
        """Around one call to roomcache (`breaker.asking`): `Fallback` when
        the circuit breaker is open or the call fails."""
        try:
            with asking(self._breaker):
                yield
        except CircuitOpen:
            raise Fallback(
                "circuit_open", "roomcache timed out or was unavailable recently"
            ) from None
        except RoomcacheFailure as failure:
            raise Fallback(failure.reason, failure.detail) from failure

    async def _check_token(self, token: StreamPosition) -> None:
        """An answer's token is never beyond what Synapse has handed out. The
        process's own position first (it may lag roomcache by a moment), then
        Synapse's allocation (one query, and only then)."""
        highest = token.highest()
        if highest <= self._allocated:
            return
        known = StreamPosition.of(self._synapse.current_room_token()).highest()
        if highest > known:
            known = max(known, await self._synapse.max_allocated_stream())
        self._allocated = max(self._allocated, known)
        if highest > known:
            raise Fallback(
                "bad_answer",
                f"token {token.text()} is ahead of Synapse's highest position {known}",
            )

    async def _assemble(
        self,
        lists: Mapping[str, Any],
        configs: Mapping[str, RoomSyncConfig],
        answer: RoomListAnswer,
        held: Held | None,
        to_token: Any,
    ) -> Assembled:
        """Each list's count and ops, and the rooms in its ranges, as
        Synapse's own method builds them; with the connection's `held`
        lists, those with the rooms that moved put in place."""
        unsettled: set[str] = set()
        for list_answer in answer.lists:
            unsettled.update(unsettled_joined_rooms(list_answer))
        positions: Mapping[str, int] = {}
        if unsettled:
            UNSETTLED_ROOMS.inc(len(unsettled))
            positions = await self._synapse.positions_at_token(unsettled, to_token.room_key)
        assembled = Assembled()
        for index, ((name, list_config), list_answer) in enumerate(
            zip(lists.items(), answer.lists, strict=True)
        ):
            ranges = list(list_config.ranges or [])
            try:
                if held is not None:
                    whole = held.lists[index]
                    whole.move(
                        shown_recencies(list_answer, positions, answer.recencies),
                        list_answer.count,
                    )
                    rooms_by_range = cut_ranges(whole.room_ids(), ranges, list_answer.count)
                else:
                    rooms_by_range = range_room_ids(list_answer, ranges, positions)
                    whole = shown_whole(answer, list_answer, rooms_by_range, positions)
            except UnsettledRoomUnknown as error:
                raise Fallback("unsettled_room_unknown", str(error)) from error
            except OrderMismatch as error:
                raise Fallback("held_order_mismatch", str(error)) from error
            if whole is None or assembled.whole_lists is None:
                assembled.whole_lists = None
            else:
                assembled.whole_lists.append(whole)
            ops = []
            # Synapse carries the config a room ends up with on to the
            # list's next rooms; so does this.
            config = configs[name]
            for list_range, room_ids in zip(ranges, rooms_by_range, strict=True):
                config = assembled.add_rooms(room_ids, config)
                ops.append(
                    SlidingSyncResult.SlidingWindowList.Operation(
                        op=OperationType.SYNC, range=list_range, room_ids=list(room_ids)
                    )
                )
            assembled.lists[name] = SlidingSyncResult.SlidingWindowList(
                count=list_answer.count, ops=ops
            )
        assembled.all_rooms.update(answer.other_rooms)
        return assembled

    def _add_subscriptions(
        self, sync_config: Any, answer: RoomListAnswer, facts: Facts, assembled: Assembled
    ) -> None:
        """Room subscriptions, as Synapse adds them after the lists."""
        subscriptions = sync_config.room_subscriptions or {}
        for room_id, subscription in subscriptions.items():
            if room_id not in assembled.relevant and room_id not in answer.subscribed:
                continue
            assembled.all_rooms.add(room_id)
            if room_id not in assembled.relevant:
                assembled.subscribed_outside_ranges.add(room_id)
            config = RoomSyncConfig.from_room_config(subscription)
            if (
                config.must_await_full_state(self._synapse.is_mine_id)
                and room_id in facts.partial_state
            ):
                continue
            assembled.add_room(room_id, config)

    async def _result(
        self,
        user_id: str,
        previous_connection_state: Any,
        from_token: Any | None,
        to_token: Any,
        answer: RoomListAnswer,
        facts: Facts,
        assembled: Assembled,
    ) -> SlidingSyncInterestedRooms:
        relevant = assembled.relevant
        previous = self._synapse.previous_connection(previous_connection_state, from_token)
        updated: set[str] = set()
        if previous is not None:
            # roomcache names the lists' rooms with an event (or the user's
            # membership) after `pos`; rooms shown only as subscriptions are
            # Synapse's to judge (at most a few).
            updated = set(answer.other_rooms)
            subscribed_only = assembled.subscribed_outside_ranges - updated
            if subscribed_only:
                updated |= await self._synapse.rooms_with_updates_since(
                    subscribed_only, from_token.room_key
                )
        try:
            relevant_to_send = rooms_to_send(
                relevant,
                previous,
                updated,
                now_ms=self._synapse.now_ms(),
                expiry=self._synapse.connection_expiry,
            )
        except ConnectionExpired:
            raise SlidingSyncUnknownPosition() from None
        lacking = answer.lacking_entries(relevant_to_send)
        if lacking:
            await self._fetch_entries(user_id, answer, lacking, to_token, facts)
        memberships = await self._memberships(answer, relevant_to_send)
        if self._room_state is not None:
            self._room_state.note_bump_stamps(
                {
                    room_id: answer.entry(room_id).bump_stamp
                    for room_id, membership in memberships.items()
                    if membership.membership == "join"
                }
            )
        return SlidingSyncInterestedRooms(
            lists=assembled.lists,
            relevant_room_map=relevant,
            relevant_rooms_to_send_map=relevant_to_send,
            all_rooms=assembled.all_rooms | relevant.keys(),
            # Synapse's caller reads the memberships of the rooms it sends
            # only.
            room_membership_for_user_map=memberships,
            newly_joined_rooms=facts.newly_joined,
            newly_left_rooms=facts.newly_left,
            dm_room_ids=await self._synapse.dm_rooms(user_id),
        )

    async def _fetch_entries(
        self,
        user_id: str,
        answer: RoomListAnswer,
        room_ids: list[str],
        to_token: Any,
        facts: Facts,
    ) -> None:
        """The whole entries of rooms to send that the answer showed short
        (seen before on the connection, but not sent: rooms new in a range
        that grew, a config that widened): one more request, at a token
        roomcache has reached, checked for memberships after the request's
        token like the first."""
        body = room_list_body(
            lists=[{}],
            to_token=to_token,
            from_token=None,
            wait_timeout_ms=self._config.wait_timeout_ms,
            forgotten_rooms=facts.forgotten,
            ignored_inviters=facts.ignored,
            other_rooms=None,
            room_ids=room_ids,
            wait_for_account_data=0,
            wait_for=answer.token.text(),
        )
        with self._through_breaker():
            raw = await self._client.room_lists(user_id, body)
        try:
            more = parse_answer(raw, [[]], StreamPosition.of(to_token.room_key))
            if more.timed_out or more.fallback:
                raise BadAnswer(f"entries asked at {answer.token.text()} came late or recomputed")
            if more.memberships_after_at:
                raise Fallback("membership_after_token", f"{len(more.memberships_after_at)} rooms")
            answer.add_entries(more, room_ids)
        except BadAnswer as error:
            raise Fallback("bad_answer", str(error)) from error
        ENTRIES_FETCHED.inc(len(room_ids))

    async def _memberships(
        self, answer: RoomListAnswer, room_ids: Collection[str]
    ) -> dict[str, RoomsForUserSlidingSync]:
        """The user's membership in each room, as of the token, with the
        room's version (one lookup for all of them)."""
        try:
            entries = [answer.entry(room_id) for room_id in room_ids]
        except BadAnswer as error:
            raise Fallback("bad_answer", str(error)) from error
        versions = await self._synapse.room_versions(room_ids)
        memberships = {}
        for entry in entries:
            version = versions.get(entry.room_id)
            if version not in KNOWN_ROOM_VERSIONS:
                # Synapse leaves rooms of unknown versions out of its lists.
                raise Fallback("room_version", f"{entry.room_id}: {version!r}")
            memberships[entry.room_id] = RoomsForUserSlidingSync(
                room_id=entry.room_id,
                sender=entry.sender,
                membership=entry.membership,
                event_id=entry.membership_event_id,
                event_pos=PersistedEventPosition(
                    entry.event_instance_name, entry.event_stream_ordering
                ),
                room_version_id=version,
                has_known_state=entry.has_known_state,
                room_type=entry.room_type,
                is_encrypted=entry.is_encrypted,
            )
        return memberships


def _connection(sync_config: Any) -> str:
    """A Sliding Sync connection of the user: Synapse's are per device."""
    requester = getattr(sync_config, "requester", None)
    return f"{getattr(requester, 'device_id', None)} {sync_config.conn_id or ''}"


def _sticky_events_enabled(sync_config: Any) -> bool:
    extensions = getattr(sync_config, "extensions", None)
    sticky = getattr(extensions, "sticky_events", None)
    return bool(getattr(sticky, "enabled", False))
