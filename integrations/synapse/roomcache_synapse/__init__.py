# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""A Synapse module that answers the room lists of Sliding Sync requests
from roomcache (https://... see docs/synapse.md of the roomcache repository).

homeserver.yaml:

    modules:
      - module: roomcache_synapse.RoomcacheModule
        config:
          socket_path: /run/roomcache/roomcache.sock

Loaded in every Synapse process; it acts only in those that serve the
client API (a `client` listener), and only on the Synapse versions it
supports (`versions.SUPPORTED_SYNAPSE_VERSIONS`): elsewhere it logs why and
leaves Synapse untouched.
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
        # The sliding-sync handler is reached through the homeserver object
        # (no public accessor); it is the instance the servlet uses.
        hs = api._hs
        if not _serves_client_api(hs):
            logger.info("roomcache: this process has no client listener; nothing to do")
            return
        room_lists = getattr(hs.get_sliding_sync_handler(), "room_lists", None)
        missing = _missing_seam(room_lists)
        if missing:
            logger.error(
                "roomcache: Synapse's sliding-sync handler lacks %s; Synapse is untouched",
                ", ".join(missing),
            )
            return
        from .client import RoomcacheClient
        from .seam import RoomcacheRoomLists

        client = RoomcacheClient(
            hs.get_reactor(),
            config.socket_path,
            timeout_seconds=config.request_timeout_ms / 1000,
            max_connections=config.max_connections,
        )
        RoomcacheRoomLists(room_lists, hs, client, config).install()
        self.installed = True
        logger.info(
            "roomcache: Sliding Sync room lists of %s come from roomcache at %s",
            hs.get_instance_name(),
            config.socket_path,
        )


_SEAM = (
    "compute_interested_rooms",
    "_get_newly_joined_and_left_rooms",
    "_get_dm_rooms_for_user",
    "_filter_relevant_rooms_to_send",
)


def _missing_seam(room_lists: Any) -> list[str]:
    if room_lists is None:
        return ["room_lists"]
    return [name for name in _SEAM if not callable(getattr(room_lists, name, None))]


def _serves_client_api(hs: Any) -> bool:
    """True when one of this process's HTTP listeners serves `client`."""
    config = hs.config
    listeners = (
        config.worker.worker_listeners if config.worker.worker_app else config.server.listeners
    )
    for listener in listeners:
        http = getattr(listener, "http_options", None)
        for resource in getattr(http, "resources", None) or ():
            if "client" in resource.names:
                return True
    return False
