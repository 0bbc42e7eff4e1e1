# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""A Synapse module that answers the room lists of Sliding Sync requests
from roomcache (https://... see docs/synapse.md of the roomcache repository).

homeserver.yaml:

    modules:
      - module: roomcache_synapse.RoomcacheModule
        config:
          socket_path: /run/roomcache/roomcache.sock

Loaded in every Synapse process; it answers room lists in those that serve
the client API (a `client` listener) and wakes roomcache in those that
persist events, only on the Synapse versions it supports
(`versions.SUPPORTED_SYNAPSE_VERSIONS`) and when every name it needs of
Synapse is there (`adapter.missing_names`): else it logs why and leaves
Synapse untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .config import RoomcacheConfig, parse_config
from .versions import SUPPORTED_SYNAPSE_VERSIONS, installed_synapse_version, is_supported

__all__ = ["RoomcacheConfig", "RoomcacheModule"]

logger = logging.getLogger(__name__)


class RoomcacheModule:
    """The module Synapse loads (`modules:` in homeserver.yaml)."""

    @staticmethod
    def parse_config(config: Mapping[str, Any] | None) -> RoomcacheConfig:
        return parse_config(config)

    def __init__(self, config: RoomcacheConfig, api: Any) -> None:
        self.config = config
        self.installed = False
        self.wakes = False
        version = installed_synapse_version()
        if not config.enabled:
            logger.info("roomcache: disabled in the module's config; Synapse is untouched")
            return
        if not is_supported(version):
            logger.error(
                "roomcache: Synapse %s is not a version this module supports (%s); Synapse "
                "computes Sliding Sync room lists itself",
                version,
                ", ".join(sorted(SUPPORTED_SYNAPSE_VERSIONS)),
            )
            return
        from .adapter import SynapseAdapter, missing_names

        if _lacks_names(missing_names(api, seam=False)):
            return
        synapse = SynapseAdapter.from_module_api(api)
        self._client: Any = None
        if config.wake_on_persist and synapse.persists_events():
            from .waker import RoomcacheWaker

            RoomcacheWaker(
                synapse, self._roomcache(synapse), api.run_as_background_process
            ).install()
            self.wakes = True
            logger.info("roomcache: events persisted by %s wake roomcache", synapse.instance_name)
        if not synapse.serves_client_api():
            logger.info("roomcache: this process has no client listener; no room lists to serve")
            return
        if _lacks_names(missing_names(api)):
            return
        from .breaker import CircuitBreaker
        from .per_room import RoomcacheRoomState
        from .seam import RoomcacheRoomLists

        breaker = CircuitBreaker.of_config(config)
        client = self._roomcache(synapse)
        room_state = None
        if config.room_state:
            room_state = RoomcacheRoomState(synapse, client, config, breaker)
            room_state.install()
        RoomcacheRoomLists(synapse, client, config, breaker, room_state).install()
        self.installed = True
        logger.info(
            "roomcache: Sliding Sync room lists of %s come from roomcache at %s",
            synapse.instance_name,
            config.socket_path,
        )

    def _roomcache(self, synapse: Any) -> Any:
        """The process's one client of roomcache."""
        if self._client is None:
            from .client import RoomcacheClient

            config = self.config
            self._client = RoomcacheClient(
                synapse.reactor,
                config.socket_path,
                timeout_seconds=config.request_timeout_ms / 1000,
                max_connections=config.max_connections,
                max_answer_bytes=config.max_answer_bytes,
            )
        return self._client


def _lacks_names(missing: list[str]) -> bool:
    if missing:
        logger.error(
            "roomcache: this Synapse lacks %s, which the module needs; Synapse is untouched",
            ", ".join(missing),
        )
    return bool(missing)
