# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""The seam: Synapse's `SlidingSyncRoomLists.compute_interested_rooms`,
answered from roomcache.

Synapse computes a Sliding Sync request's room lists in that one method
(its only caller is the handler's `current_sync_for_user`): it loads every
membership of the user, rewinds them to the request's token, filters, sorts
and cuts each list. This wrapper asks roomcache for the lists instead, and
keeps Synapse's own code for everything roomcache does not hold: newly
joined and left rooms (`_get_newly_joined_and_left_rooms`), DM rooms
(`_get_dm_rooms_for_user`), which rooms need sending on this connection
(`_filter_relevant_rooms_to_send`), room versions, and the position as of
the token of rooms that had an event after it. Whenever roomcache cannot
give Synapse's exact answer at the token, the original method runs.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from synapse.api.errors import SlidingSyncUnknownPosition
from synapse.handlers.sliding_sync.room_lists import SlidingSyncInterestedRooms
from synapse.storage.invite_rule import AllowAllInviteRulesConfig
from synapse.storage.roommember import RoomsForUserSlidingSync
from synapse.types import PersistedEventPosition
from synapse.types.handlers.sliding_sync import OperationType, RoomSyncConfig, SlidingSyncResult

from . import verify
from .assemble import (
    Assembled,
    Facts,
    UnsettledRoomUnknown,
    range_entries,
    unsettled_joined_rooms,
)
from .client import RoomcacheClient, RoomcacheFailure
from .config import RoomcacheConfig
from .metrics import ROOM_LISTS, SEAM_SECONDS, UNAFFECTED, UNSETTLED_ROOMS, VERIFIED
from .position import RoomcachePosition
from .request import UnsupportedRequest, list_body, room_list_body

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
Compute = Callable[..., Awaitable[SlidingSyncInterestedRooms]]


class Fallback(Exception):
    """This request is computed Synapse's way; `reason` is counted."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason} {detail}".strip())
        self.reason = reason
        self.detail = detail


class RoomcacheRoomLists:
    """Replaces `compute_interested_rooms` on one `SlidingSyncRoomLists`."""

    def __init__(
        self, room_lists: Any, hs: Any, client: RoomcacheClient, config: RoomcacheConfig
    ) -> None:
        self._room_lists = room_lists
        self._original: Compute = room_lists.compute_interested_rooms
        self._store = hs.get_datastores().main
        self._is_mine_id = hs.is_mine_id
        self._excluded_globally: frozenset[str] = frozenset(
            hs.config.server.rooms_to_exclude_from_sync
        )
        self._client = client
        self._config = config
        self._last_unavailable_log = 0.0
        self._position = RoomcachePosition(self._store)

    def install(self) -> None:
        """Puts the wrapper in place of the handler's method."""
        self._room_lists.compute_interested_rooms = self.compute_interested_rooms

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
        try:
            result = await self._from_roomcache(**arguments)
            path, reason = "roomcache", ""
            if self._should_verify(sync_config):
                result = await self._verified(result, arguments)
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
        return result

    def _should_verify(self, sync_config: Any) -> bool:
        """Whether to check this answer: a share of them, never those Synapse
        cannot compute (lists on `spaces` or `room_name_like`)."""
        fraction = self._config.verify_fraction
        if not fraction or random.random() >= fraction:
            return False
        for list_config in (sync_config.lists or {}).values():
            filters = list_config.filters
            if filters is not None and (
                filters.spaces is not None or filters.room_name_like is not None
            ):
                return False
        return True

    async def _verified(
        self, ours: SlidingSyncInterestedRooms, arguments: dict[str, Any]
    ) -> SlidingSyncInterestedRooms:
        """Synapse's own answer at the same token, compared with ours: ours
        when they agree, Synapse's (and a warning) when they do not."""
        try:
            theirs = await self._original(**arguments)
        except SlidingSyncUnknownPosition:
            raise
        except Exception:
            logger.exception("roomcache: Synapse's own room lists failed; keeping roomcache's")
            VERIFIED.labels(outcome="synapse_failed").inc()
            return ours
        ahead = verify.synapse_ahead(theirs, arguments["to_token"])
        if ahead:
            VERIFIED.labels(outcome="synapse_ahead").inc()
            logger.info(
                "roomcache: Synapse's own room lists of %s show memberships after %s in %s; "
                "not compared",
                arguments["sync_config"].user.to_string(),
                arguments["to_token"].room_key,
                ahead[:5],
            )
            return ours
        found = verify.differences(ours, theirs)
        VERIFIED.labels(outcome="different" if found else "equal").inc()
        if not found:
            return ours
        logger.warning(
            "roomcache: room lists of %s differ from Synapse's at %s (Synapse's are used): %s",
            arguments["sync_config"].user.to_string(),
            arguments["to_token"].room_key,
            "; ".join(found[:10]),
        )
        return theirs

    def _log_fallback(self, sync_config: Any, fallback: Fallback) -> None:
        if fallback.reason in ("bypass", "no_lists"):
            return
        user = sync_config.user.to_string()
        if fallback.reason in ("unavailable", "timeout"):
            now = time.monotonic()
            if now - self._last_unavailable_log < 10:
                return
            self._last_unavailable_log = now
            logger.warning(
                "roomcache: %s (%s); computing room lists Synapse's way (logged at most "
                "every 10 s)",
                fallback.reason,
                fallback.detail,
            )
            return
        logger.info(
            "roomcache: room lists of %s computed Synapse's way: %s %s",
            user,
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
        if not await self._store.have_finished_sliding_sync_background_jobs():
            raise Fallback("synapse_tables_not_ready")
        user_id = sync_config.user.to_string()
        facts = await self._synapse_facts(user_id, to_token, from_token)
        configs = {name: RoomSyncConfig.from_room_config(config) for name, config in lists.items()}
        answer = await self._ask(sync_config, lists, configs, to_token, from_token, facts)
        assembled = await self._assemble(lists, configs, answer, to_token)
        await self._add_subscriptions(sync_config, answer, facts, assembled)
        return await self._result(
            user_id, previous_connection_state, from_token, answer, facts, assembled
        )

    async def _synapse_facts(self, user_id: str, to_token: Any, from_token: Any | None) -> Facts:
        """What Synapse holds cheaply (cached) and roomcache does not."""
        store = self._store
        ignored = await store.ignored_users(user_id)
        if ignored:
            invite_config = await store.get_invite_config_for_user(user_id)
            if not isinstance(invite_config, AllowAllInviteRulesConfig):
                raise Fallback("invite_rules", "ignored users and invite rules")
        forgotten = await store.get_forgotten_rooms_for_user(user_id)
        newly_joined, newly_left = await self._room_lists._get_newly_joined_and_left_rooms(
            user_id, to_token=to_token, from_token=from_token
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
            ignored=frozenset(ignored),
            forgotten=frozenset(forgotten),
            partial_state=frozenset(await store.get_partial_rooms()),
            newly_joined=frozenset(newly_joined),
            newly_left=frozenset(newly_left),
        )

    async def _ask(
        self,
        sync_config: Any,
        lists: Mapping[str, Any],
        configs: Mapping[str, RoomSyncConfig],
        to_token: Any,
        from_token: Any | None,
        facts: Facts,
    ) -> JsonDict:
        bodies = []
        for name, list_config in lists.items():
            exclude = set(self._excluded_globally)
            if configs[name].must_await_full_state(self._is_mine_id):
                exclude |= facts.partial_state
            try:
                bodies.append(list_body(list_config, exclude))
            except UnsupportedRequest as error:
                raise Fallback("unsupported", str(error)) from error
        if from_token is not None:
            other_rooms: str | None = "changed"
        elif _sticky_events_enabled(sync_config):
            other_rooms = "all"
        else:
            other_rooms = None
        subscriptions = list(sync_config.room_subscriptions or ())
        user_id = sync_config.user.to_string()
        body = room_list_body(
            lists=bodies,
            to_token=to_token,
            from_token=from_token,
            wait_timeout_ms=self._config.wait_timeout_ms,
            forgotten_rooms=facts.forgotten,
            ignored_inviters=facts.ignored,
            other_rooms=other_rooms,
            room_ids=subscriptions,
            wait_for_account_data=self._position.account_data_to_wait_for(user_id, to_token),
            unaffected=self._position.unaffected(user_id),
        )
        try:
            answer = await self._client.room_lists(user_id, body)
        except RoomcacheFailure as failure:
            raise Fallback(failure.reason, failure.detail) from failure
        self._position.note(answer)
        if answer.get("unaffected"):
            UNAFFECTED.inc()
        if answer.get("timed_out"):
            raise Fallback("not_caught_up", f"roomcache at {answer.get('token')}")
        if answer.get("fallback"):
            raise Fallback("recalculating", "roomcache is recomputing some of the user's rooms")
        after = answer.get("memberships_after_at")
        if after is None:
            raise Fallback("bad_answer", "no memberships_after_at")
        if after:
            raise Fallback("membership_after_token", f"{len(after)} rooms")
        return answer

    async def _assemble(
        self,
        lists: Mapping[str, Any],
        configs: Mapping[str, RoomSyncConfig],
        answer: JsonDict,
        to_token: Any,
    ) -> Assembled:
        """Each list's count and ops, and the rooms in its ranges, as
        Synapse's own method builds them."""
        answered = answer["lists"]
        unsettled: set[str] = set()
        for index in range(len(lists)):
            unsettled.update(unsettled_joined_rooms(answered[str(index)]))
        positions: Mapping[str, int] = {}
        if unsettled:
            UNSETTLED_ROOMS.inc(len(unsettled))
            positions = await self._store.bulk_get_last_event_pos_in_room_before_stream_ordering(
                unsettled, to_token.room_key
            )
        assembled = Assembled()
        for index, (name, list_config) in enumerate(lists.items()):
            list_answer = answered[str(index)]
            ranges = list(list_config.ranges or [])
            try:
                rooms_by_range = range_entries(list_answer, ranges, positions)
            except UnsettledRoomUnknown as error:
                raise Fallback("unsettled_room_unknown", str(error)) from error
            ops = []
            # Synapse carries the config a room ends up with on to the
            # list's next rooms; so does this.
            config = configs[name]
            for list_range, entries in zip(ranges, rooms_by_range, strict=True):
                for entry in entries:
                    config = assembled.add_room(entry, config)
                ops.append(
                    SlidingSyncResult.SlidingWindowList.Operation(
                        op=OperationType.SYNC,
                        range=list_range,
                        room_ids=[entry["room_id"] for entry in entries],
                    )
                )
            assembled.lists[name] = SlidingSyncResult.SlidingWindowList(
                count=list_answer["count"], ops=ops
            )
        assembled.all_rooms.update(answer.get("other_rooms") or ())
        return assembled

    async def _add_subscriptions(
        self, sync_config: Any, answer: JsonDict, facts: Facts, assembled: Assembled
    ) -> None:
        """Room subscriptions, as Synapse adds them after the lists."""
        subscriptions = sync_config.room_subscriptions or {}
        known: Mapping[str, JsonDict] = answer.get("rooms") or {}
        for room_id, subscription in subscriptions.items():
            entry = assembled.entries.get(room_id) or known.get(room_id)
            if entry is None:
                continue
            assembled.all_rooms.add(room_id)
            config = RoomSyncConfig.from_room_config(subscription)
            if config.must_await_full_state(self._is_mine_id) and room_id in facts.partial_state:
                continue
            assembled.add_room(entry, config)

    async def _result(
        self,
        user_id: str,
        previous_connection_state: Any,
        from_token: Any | None,
        answer: JsonDict,
        facts: Facts,
        assembled: Assembled,
    ) -> SlidingSyncInterestedRooms:
        memberships: dict[str, RoomsForUserSlidingSync] = {}
        for room_id, entry in assembled.entries.items():
            memberships[room_id] = await self._membership(entry)
        relevant_to_send = await self._room_lists._filter_relevant_rooms_to_send(
            previous_connection_state, from_token, assembled.relevant
        )
        return SlidingSyncInterestedRooms(
            lists=assembled.lists,
            relevant_room_map=assembled.relevant,
            relevant_rooms_to_send_map=relevant_to_send,
            all_rooms=assembled.all_rooms | assembled.relevant.keys(),
            room_membership_for_user_map=memberships,
            newly_joined_rooms=facts.newly_joined,
            newly_left_rooms=facts.newly_left,
            dm_room_ids=await self._room_lists._get_dm_rooms_for_user(user_id),
        )

    async def _membership(self, entry: JsonDict) -> RoomsForUserSlidingSync:
        room_id = entry["room_id"]
        try:
            room_version_id = await self._store.get_room_version_id(room_id)
        except Exception as error:  # an unknown room version: Synapse leaves the room out
            raise Fallback("room_version", f"{room_id}: {error}") from error
        return RoomsForUserSlidingSync(
            room_id=room_id,
            sender=entry["sender"],
            membership=entry["membership"],
            event_id=entry["membership_event_id"],
            event_pos=PersistedEventPosition(
                entry["event_instance_name"], entry["event_stream_ordering"]
            ),
            room_version_id=room_version_id,
            has_known_state=entry["has_known_state"],
            room_type=entry["room_type"],
            is_encrypted=entry["is_encrypted"],
        )


def _sticky_events_enabled(sync_config: Any) -> bool:
    extensions = getattr(sync_config, "extensions", None)
    sticky = getattr(extensions, "sticky_events", None)
    return bool(getattr(sticky, "enabled", False))
