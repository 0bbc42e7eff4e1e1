"""A homeserver with the module and the roomcache it asks, as the tests use them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .harness import Homeserver
from .peer import MisbehavingPeer
from .roomcache import Roomcache

# Requests on connections whose conn_id starts with this are computed
# Synapse's way (the module's `bypass_conn_id_prefix`): the tests compare
# them with the same requests answered from roomcache.
BYPASS_PREFIX = "synapse-only"

# The circuit breaker's longest interval in the tests' module config: a
# test that stops roomcache waits this long for the module to ask again.
CIRCUIT_MAX_OPEN_MS = 2000


@dataclass
class ModuleDeployment:
    """A homeserver with the module, and the roomcache it asks."""

    homeserver: Homeserver
    roomcache: Roomcache
    peer: MisbehavingPeer | None = None
    """Between the module and roomcache, when the module asks a peer."""

    def room_list_counts(self) -> dict[tuple[str, str], float]:
        """The module's counters: room-list computations by (path, reason),
        verified answers by ("verified", outcome), ("unsettled", ""),
        ("unaffected", "") and requests with a pos by ("held_lists", used)."""
        counts: dict[tuple[str, str], float] = {}
        for (name, labels), value in self.homeserver.metrics().items():
            label = dict(labels)
            if name == "roomcache_synapse_room_lists_total":
                counts[(label["path"], label["reason"])] = value
            elif name == "roomcache_synapse_verified_total":
                counts[("verified", label["outcome"])] = value
            elif name == "roomcache_synapse_unsettled_rooms_total":
                counts[("unsettled", "")] = value
            elif name == "roomcache_synapse_unaffected_total":
                counts[("unaffected", "")] = value
            elif name == "roomcache_synapse_held_lists_total":
                counts[("held_lists", label["used"])] = value
        return counts

    def room_state_counts(self) -> dict[tuple[str, str], float]:
        """The per-room seam's counters: state lookups by (path, reason),
        fetches by ("fetch", outcome), bump stamps by ("bump_stamp_" + path,
        reason), initial timelines by ("timeline_" + path, reason), bundled
        aggregations by ("aggregations_" + path, reason), batched lookups by
        (lookup + "_" + path, reason)."""
        counts: dict[tuple[str, str], float] = {}
        for (name, labels), value in self.homeserver.metrics().items():
            label = dict(labels)
            if name == "roomcache_synapse_room_state_total":
                counts[(label["path"], label["reason"])] = value
            elif name == "roomcache_synapse_room_state_fetches_total":
                counts[("fetch", label["outcome"])] = value
            elif name == "roomcache_synapse_bump_stamps_total":
                counts[("bump_stamp_" + label["path"], label["reason"])] = value
            elif name == "roomcache_synapse_room_timelines_total":
                counts[("timeline_" + label["path"], label["reason"])] = value
            elif name == "roomcache_synapse_aggregations_total":
                counts[("aggregations_" + label["path"], label["reason"])] = value
            elif name == "roomcache_synapse_batched_lookups_total":
                counts[(f"{label['lookup']}_{label['path']}", label["reason"])] = value
        return counts


def module_config(directory: Path, socket_path: Path, **settings: Any) -> Path:
    """homeserver.yaml's `modules:` for the module, written into `directory`;
    `settings` replace the tests' defaults."""
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "socket_path": socket_path,
        "wait_timeout_ms": 5000,
        "request_timeout_ms": 10000,
        "bypass_conn_id_prefix": BYPASS_PREFIX,
        # Every answer from roomcache is also computed Synapse's way at the
        # same token and compared (the tests check the counter).
        "verify_fraction": 1.0,
        "circuit_open_ms": 500,
        "circuit_max_open_ms": CIRCUIT_MAX_OPEN_MS,
        **settings,
    }
    path = directory / "modules.yaml"
    lines = ["modules:", "  - module: roomcache_synapse.RoomcacheModule", "    config:"]
    lines += [f"      {key}: {value}" for key, value in config.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def counts_since(
    before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]
) -> dict[tuple[str, str], int]:
    """What the counter counted between two readings (zeros left out)."""
    counts = {key: int(value - before.get(key, 0)) for key, value in after.items()}
    return {key: value for key, value in counts.items() if value}
