# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""The adapter's check at install: every name the module reaches in
Synapse beyond its public module API (see the package's doc), looked up on
a live homeserver by `missing_names`.

Owns: the list of names and the check. May not touch: their use (the
package's `SynapseAdapter`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attr
from synapse.events import EventBase
from synapse.events.utils import FilteredEvent
from synapse.types.handlers.sliding_sync import (
    PerConnectionState,
    RoomStatusMap,
    RoomSyncConfig,
)
from synapse.types.state import StateFilter

# (object, dotted path, must be callable): every name the adapter uses,
# looked up at install. The objects: the module API, then what `_DERIVED`
# reaches from it. First what every process needs, then the seam's.
_PROCESS_NAMES: tuple[tuple[str, str, bool], ...] = (
    ("api", "_hs", False),
    ("hs", "get_reactor", True),
    ("hs", "get_clock", True),
    ("hs", "get_instance_name", True),
    ("hs", "is_mine_id", True),
    ("hs", "get_replication_notifier", True),
    ("hs", "config.server.rooms_to_exclude_from_sync", False),
    ("hs", "config.server.listeners", False),
    ("hs", "config.worker.worker_app", False),
    ("hs", "config.worker.worker_listeners", False),
    ("hs", "config.worker.writers.events", False),
    ("hs", "get_datastores", True),
    ("store", "get_events_stream_id_generator", True),
    ("events_ids", "get_current_token_for_writer", True),
)
_SEAM_NAMES: tuple[tuple[str, str, bool], ...] = (
    ("hs", "get_sliding_sync_handler", True),
    ("handler", "room_lists", False),
    ("handler", "get_current_state_ids_at", True),
    ("room_lists", "compute_interested_rooms", True),
    ("room_lists", "_get_newly_joined_and_left_rooms", True),
    ("room_lists", "_get_dm_rooms_for_user", True),
    ("room_lists", "_filter_relevant_rooms_to_send", True),
    ("store", "have_finished_sliding_sync_background_jobs", True),
    ("store", "get_latest_bump_stamp_for_room", True),
    ("store", "paginate_room_events_by_topological_ordering", True),
    ("store", "get_events_as_list", True),
    ("store", "get_member_counts.invalidate", True),
    ("store", "get_member_counts.cache.get_immediate", True),
    ("store", "get_account_data_for_room.invalidate", True),
    ("store", "get_account_data_for_room.cache.get_immediate", True),
    ("store", "get_tags_for_room.invalidate", True),
    ("store", "get_tags_for_room.cache.get_immediate", True),
    ("store", "db_pool.runInteraction", True),
    ("hs", "get_relations_handler", True),
    ("relations", "get_bundled_aggregations", True),
    ("store", "ignored_users", True),
    ("store", "get_invite_config_for_user", True),
    ("store", "get_forgotten_rooms_for_user", True),
    ("store", "get_partial_rooms", True),
    ("store", "bulk_get_last_event_pos_in_room_before_stream_ordering", True),
    ("store", "get_room_version_id.cache.get_immediate", True),
    ("store", "get_room_version_id.prefill", True),
    ("store", "db_pool.simple_select_many_batch", True),
    ("store", "get_room_max_token", True),
    ("store", "get_rooms_that_have_updates_since_sliding_sync_table", True),
    ("events_ids", "get_max_allocated_token", True),
    ("store", "_membership_stream_cache.has_entity_changed", True),
    ("store", "_events_stream_cache.get_all_entities_changed", True),
    ("store", "_account_data_stream_cache.has_entity_changed", True),
    ("store", "_curr_state_delta_stream_cache.get_entities_changed", True),
)


# The objects reached from a name once it is found: (object, path) → (the
# new object's name, how to get it from the name's value).
_DERIVED: dict[tuple[str, str], tuple[str, Callable[[Any], Any]]] = {
    ("api", "_hs"): ("hs", lambda hs: hs),
    ("hs", "get_sliding_sync_handler"): ("handler", lambda get: get()),
    ("handler", "room_lists"): ("room_lists", lambda room_lists: room_lists),
    ("hs", "get_relations_handler"): ("relations", lambda get: get()),
    ("hs", "get_datastores"): ("store", lambda get: getattr(get(), "main", None)),
    ("store", "get_events_stream_id_generator"): ("events_ids", lambda get: get()),
}


def _lookup(root: Any, path: str) -> Any:
    """`root.a.b.c` for path "a.b.c"; AttributeError when a step is missing."""
    value = root
    for name in path.split("."):
        value = getattr(value, name)
    return value


# The fields of Synapse's connection state the adapter reads (on objects
# that exist only during a request: looked up on their classes).
_FIELDS: tuple[tuple[type, str], ...] = (
    (PerConnectionState, "rooms"),
    (PerConnectionState, "room_configs"),
    (PerConnectionState, "last_used_ts"),
    (RoomStatusMap, "_statuses"),
    (RoomSyncConfig, "timeline_limit"),
    (RoomSyncConfig, "required_state_map"),
    (StateFilter, "types"),
    (StateFilter, "include_others"),
    (FilteredEvent, "event"),
)
# Methods of those classes the adapter calls.
_METHODS: tuple[tuple[type, str], ...] = (
    (EventBase, "is_state"),
    (RoomStatusMap, "have_sent_room"),
    (StateFilter, "from_types"),
)


def missing_names(api: Any, *, seam: bool = True) -> list[str]:
    """The names the module needs that this Synapse lacks (empty when all
    are there), as `object.path`: those every process needs, and with
    `seam` those of the sliding-sync seam (looking them up builds the
    sliding-sync handler: only in processes that serve it)."""
    roots: dict[str, Any] = {"api": api}
    missing: list[str] = []
    for root_name, path, must_call in _PROCESS_NAMES + (_SEAM_NAMES if seam else ()):
        root = roots.get(root_name)
        if root is None:
            missing.append(f"{root_name}.{path}")
            continue
        try:
            value = _lookup(root, path)
        except AttributeError:
            missing.append(f"{root_name}.{path}")
            continue
        if must_call and not callable(value):
            missing.append(f"{root_name}.{path}")
            continue
        derived = _DERIVED.get((root_name, path))
        if derived is not None:
            roots[derived[0]] = derived[1](value)
    if seam:
        missing += [
            f"{owner.__name__}.{field}"
            for owner, field in _FIELDS
            if field not in attr.fields_dict(owner)
        ]
        missing += [
            f"{owner.__name__}.{name}"
            for owner, name in _METHODS
            if not callable(getattr(owner, name, None))
        ]
    return missing
