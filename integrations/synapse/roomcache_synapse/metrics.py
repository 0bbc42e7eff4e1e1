# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""The module's Prometheus metrics, in the registry Synapse exports
(`/_synapse/metrics` on a `metrics` listener), one set per process."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ROOM_LISTS = Counter(
    "roomcache_synapse_room_lists",
    "Sliding Sync room-list computations by who answered them (path: roomcache or "
    "synapse) and, for synapse, why (reason).",
    ["path", "reason"],
)

SEAM_SECONDS = Histogram(
    "roomcache_synapse_room_lists_seconds",
    "Time in the room-list part of a Sliding Sync request (the seam), by path.",
    ["path"],
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0),
)

REQUEST_SECONDS = Histogram(
    "roomcache_synapse_request_seconds",
    "Time of one room-list request to roomcache over its socket, until its answer is decoded.",
    buckets=(0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.0),
)

UNSETTLED_ROOMS = Counter(
    "roomcache_synapse_unsettled_rooms",
    "Rooms roomcache could not order at the request's token (an event after it), "
    "placed by the module from Synapse's position of their last event at the token.",
)

VERIFIED = Counter(
    "roomcache_synapse_verified",
    "Answers from roomcache also computed Synapse's way (verify_fraction), by outcome "
    "(equal; different: Synapse's answer was used; synapse_ahead: Synapse's own answer "
    "showed memberships from after the token, ours was kept; synapse_failed).",
    ["outcome"],
)

UNAFFECTED = Counter(
    "roomcache_synapse_unaffected",
    "Answers roomcache gave before reaching the request's token, nothing that concerns "
    "the user having happened after its previous token (Synapse's stream change caches).",
)

CIRCUIT_OPEN = Gauge(
    "roomcache_synapse_circuit_open",
    "1 while the circuit breaker is open (roomcache timed out or was unavailable: requests "
    "are computed Synapse's way without asking it), else 0.",
)

CIRCUIT_OPENINGS = Counter(
    "roomcache_synapse_circuit_openings",
    "Times the circuit breaker opened (after a run of timeouts or unavailability, or a "
    "failed probe).",
)

ROOMCACHE_WAIT_SECONDS = Histogram(
    "roomcache_synapse_roomcache_wait_seconds",
    "How long roomcache's room-list answer waited (to follow account data and reach the "
    "request's token), as roomcache reports it.",
    buckets=(0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0),
)

WAKES = Counter(
    "roomcache_synapse_wakes",
    "Wake-ups of roomcache's follower sent after this process persisted events, by outcome "
    "(sent, or the reason it failed).",
    ["outcome"],
)

ENTRIES_FETCHED = Counter(
    "roomcache_synapse_entries_fetched",
    "Rooms to send whose entries roomcache's answer gave short (unchanged since the "
    "connection's previous position) and the module asked for again.",
)

ROOM_STATE = Counter(
    "roomcache_synapse_room_state",
    "Lookups of a room's current state event IDs in Sliding Sync's per-room data "
    "(required_state, the name, the avatar and heroes' memberships) by who answered the keys "
    "roomcache holds (path: roomcache or synapse) and, for synapse, why (reason).",
    ["path", "reason"],
)

ROOM_STATE_FETCHES = Counter(
    "roomcache_synapse_room_state_fetches",
    "Requests for the rooms' held current state sent to roomcache (one per Sliding Sync "
    "request that sends rooms in full), by outcome (answered, or why not).",
    ["outcome"],
)

ROOM_TIMELINES = Counter(
    "roomcache_synapse_room_timelines",
    "Initial timelines of rooms in Sliding Sync's per-room data (Synapse's "
    "paginate_room_events_by_topological_ordering) by who chose the events "
    "(path: roomcache or synapse) and, for synapse, why (reason).",
    ["path", "reason"],
)

AGGREGATIONS = Counter(
    "roomcache_synapse_aggregations",
    "Bundled aggregations of initial timelines in Sliding Sync's per-room data by who "
    "answered (path: roomcache, nothing to bundle for events no event relates to, or "
    "synapse) and, for synapse, why (reason).",
    ["path", "reason"],
)

BATCHED_LOOKUPS = Counter(
    "roomcache_synapse_batched_lookups",
    "Per-room lookups of Sliding Sync's per-room data and account-data extension (lookup: "
    "member_counts, room_account_data, room_tags) by who answered (path: batched, the "
    "request's one query, or synapse: its cached method) and, for synapse, why (reason).",
    ["lookup", "path", "reason"],
)

BUMP_STAMPS = Counter(
    "roomcache_synapse_bump_stamps",
    "Lookups of a room's latest bump stamp in Sliding Sync's per-room data by who answered "
    "(path: roomcache, from the room-list answer's entry, or synapse) and, for synapse, why.",
    ["path", "reason"],
)

HELD_LISTS = Counter(
    "roomcache_synapse_held_lists",
    "Requests with a pos: whether the connection's whole lists were held, so that roomcache "
    "sent only the rooms that moved (used=true), or not (used=false).",
    ["used"],
)
