"""The adapter's check at install (every private Synapse name the module
uses, against `Mock(spec=…)` objects of Synapse's own classes) and its
reads of Synapse's caches."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any
from unittest.mock import AsyncMock, Mock

from synapse.handlers.sliding_sync import SlidingSyncHandler
from synapse.handlers.sliding_sync.room_lists import SlidingSyncRoomLists
from synapse.server import HomeServer
from synapse.storage.databases.main import DataStore
from synapse.util.caches.descriptors import cached

from roomcache_synapse import RoomcacheModule
from roomcache_synapse.adapter import SynapseAdapter, missing_names
from roomcache_synapse.config import parse_config

# --- the adapter's check at install -------------------------------------------------


def synapse_objects() -> tuple[Mock, Mock, Mock, Mock]:
    """A module API, homeserver, sliding-sync room lists and store, as
    `Mock(spec=…)` of Synapse's classes with the instance attributes the
    module uses."""
    room_lists = Mock(spec=SlidingSyncRoomLists)
    # Synapse's cached methods cannot be read from the class: the names are.
    store = Mock(spec=dir(DataStore))
    for cache in (
        "_membership_stream_cache",
        "_events_stream_cache",
        "_account_data_stream_cache",
        "_curr_state_delta_stream_cache",
    ):
        setattr(store, cache, Mock())
    store.db_pool = Mock()
    hs = Mock(spec=HomeServer)
    handler = Mock(spec=SlidingSyncHandler)
    handler.room_lists = room_lists
    hs.get_sliding_sync_handler.return_value = handler
    hs.get_datastores.return_value = Mock(main=store)
    hs.config = Mock()
    hs.get_instance_name.return_value = "main"
    hs.config.worker.writers.events = ["p1"]  # not this process: no wake-ups
    hs.config.worker.worker_app = None
    client_listener = Mock()
    client_listener.http_options.resources = [Mock(names=["client", "federation"])]
    hs.config.server.listeners = [client_listener]
    hs.config.server.rooms_to_exclude_from_sync = []
    api = Mock(spec=["_hs"])
    api._hs = hs
    return api, hs, room_lists, store


def test_every_name_is_found_on_synapse_s_classes() -> None:
    api, *_ = synapse_objects()
    assert missing_names(api) == []


def test_a_missing_name_is_reported_and_synapse_is_untouched() -> None:
    api, _, room_lists, store = synapse_objects()
    original = room_lists.compute_interested_rooms
    del room_lists._filter_relevant_rooms_to_send
    del store._events_stream_cache
    assert missing_names(api) == [
        "room_lists._filter_relevant_rooms_to_send",
        "store._events_stream_cache.get_all_entities_changed",
    ]
    module = RoomcacheModule(parse_config({"socket_path": "/rc.sock"}), api)
    assert not module.installed
    assert room_lists.compute_interested_rooms is original
    assert "api._hs" in missing_names(Mock(spec=[]))


def test_the_per_room_seam_is_installed_and_checked() -> None:
    api, hs, room_lists, _ = synapse_objects()
    handler = hs.get_sliding_sync_handler.return_value
    original = handler.get_current_state_ids_at
    module = RoomcacheModule(parse_config({"socket_path": "/rc.sock"}), api)
    assert module.installed
    assert handler.get_current_state_ids_at.__self__.__class__.__name__ == "RoomcacheRoomState"
    # Off in the settings: Synapse's own method stays.
    api, hs, room_lists, _ = synapse_objects()
    handler = hs.get_sliding_sync_handler.return_value
    original = handler.get_current_state_ids_at
    config = parse_config({"socket_path": "/rc.sock", "room_state": False})
    assert RoomcacheModule(config, api).installed
    assert handler.get_current_state_ids_at is original
    # Missing: reported, nothing installed.
    api, hs, room_lists, _ = synapse_objects()
    handler = hs.get_sliding_sync_handler.return_value
    del handler.get_current_state_ids_at
    assert missing_names(api) == ["handler.get_current_state_ids_at"]
    original = room_lists.compute_interested_rooms
    assert not RoomcacheModule(parse_config({"socket_path": "/rc.sock"}), api).installed
    assert room_lists.compute_interested_rooms is original


def test_room_versions_come_from_the_cache_then_one_query() -> None:
    _, hs, _, store = synapse_objects()
    cached = {"!a:hs": "10"}
    store.get_room_version_id = Mock()
    store.get_room_version_id.cache.get_immediate.side_effect = (
        lambda room_id, default, update_metrics: cached.get(room_id, default)
    )
    store.db_pool.simple_select_many_batch = AsyncMock(
        return_value=[("!b:hs", "9"), ("!c:hs", None)]
    )
    adapter = SynapseAdapter(hs)
    versions = asyncio.run(adapter.room_versions(["!a:hs", "!b:hs", "!c:hs"]))
    assert versions == {"!a:hs": "10", "!b:hs": "9"}
    store.db_pool.simple_select_many_batch.assert_awaited_once()
    assert store.db_pool.simple_select_many_batch.call_args.kwargs["iterable"] == [
        "!b:hs",
        "!c:hs",
    ]
    store.get_room_version_id.prefill.assert_called_once_with(("!b:hs",), "9")


class _Store:
    """A store with one of Synapse's own cached methods."""

    server_name = "hs"
    clock = object()  # Synapse's cache only checks that the store has one

    def __init__(self) -> None:
        self.counted = 0

    @cached()
    async def get_member_counts(self, room_id: str) -> dict[str, int]:
        self.counted += 1
        return {"join": self.counted}

    async def get_account_data_for_room(self, user_id: str, room_id: str) -> dict[str, Any]:
        return {}

    get_tags_for_room = Mock()
    get_tags_for_room.cache.get_immediate.side_effect = lambda key, default, update_metrics: (
        "tags of {} in {}".format(*key)
    )


def _counts_of(store: _Store, room_id: str) -> Any:
    async def lookup() -> Any:
        return await store.get_member_counts(room_id)

    return asyncio.run(lookup())


def test_replaced_lookups_keep_synapse_s_cache_and_invalidation() -> None:
    _, hs, _, _ = synapse_objects()
    store = _Store()
    hs.get_datastores.return_value = Mock(main=store)
    adapter = SynapseAdapter(hs)
    assert _counts_of(store, "!a:hs") == {"join": 1}
    assert adapter.cached("member_counts", "@u:hs", "!a:hs") == {"join": 1}
    asked: list[str] = []

    async def replacement(room_id: str) -> Mapping[str, int]:
        asked.append(room_id)
        return await adapter.original_lookup("member_counts")(room_id)

    adapter.replace_lookup("member_counts", replacement)
    # Synapse names the cache to other workers by the function's name.
    assert store.get_member_counts.__name__ == "get_member_counts"
    assert _counts_of(store, "!a:hs") == {"join": 1}
    assert asked == ["!a:hs"]
    # Synapse invalidates through the attribute, as after a state change:
    # the original's cache is cleared, the next lookup counts again.
    store.get_member_counts.invalidate(("!a:hs",))
    assert adapter.cached("member_counts", "@u:hs", "!a:hs") is None
    assert _counts_of(store, "!a:hs") == {"join": 2}
    # A user's lookups are keyed by user and room.
    assert adapter.cached("room_tags", "@u:hs", "!a:hs") == "tags of @u:hs in !a:hs"
