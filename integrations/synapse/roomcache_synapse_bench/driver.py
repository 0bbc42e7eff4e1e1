# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""The requests of the benchmark, both sides in one Synapse process.

Each request goes once through the module (roomcache answers its room
lists) and once on a connection whose `conn_id` starts with the module's
bypass prefix (Synapse computes them itself), for every user, interleaved
request by request (the order of users and sides rotates), so both sides
and every size share the machine's load alike. The write a case needs
(a state change elsewhere, a message) is made before every request.
"""

from __future__ import annotations

import http.client
import itertools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from tests.client import SLIDING_SYNC_PATH
from tests.harness import Homeserver
from tests.roomcache import UnixConnection

from .dataset import Dataset
from .phases import PATH as PHASES_PATH

BYPASS_PREFIX = "synapse-only-"
# Synapse's cache of each user's membership snapshots (the room-list part's
# main read) counts its size in rooms, 10,000 x the cache factor (0.5 by
# default) for all users together: a user in 10,000 rooms would never stay
# in it, and would push the others out. The benchmark gives it room for
# every user unless told not to, so that "warm" is warm for Synapse too.
SNAPSHOT_CACHE = "get_sliding_sync_rooms_for_user_from_membership_snapshots"
SIDES = ("synapse", "module")

# The request the issue names: one list, the top 20 rooms, the last event
# of each and its name.
LISTS = {"all": {"ranges": [[0, 19]], "timeline_limit": 1, "required_state": [["m.room.name", ""]]}}


class KeepAlive:
    """HTTP/1.1 on one kept-alive connection, to Synapse (a URL) or to
    roomcache (its socket): timed requests should not pay for connecting."""

    def __init__(self, base_url: str | None = None, socket_path: Path | None = None) -> None:
        parts = urlsplit(base_url or "http://127.0.0.1")
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._socket_path = socket_path
        self._connection: http.client.HTTPConnection | None = None
        self.last_answer_bytes = 0

    def request(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[float, Any]:
        """(seconds from sending to the whole answer read, decoded JSON)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        for attempt in (1, 2):
            connection = self._connect()
            try:
                started = time.perf_counter()
                connection.request(method, path, body=data, headers=headers)
                response = connection.getresponse()
                raw = response.read()
                seconds = time.perf_counter() - started
            except (http.client.HTTPException, OSError):
                self.close()
                if attempt == 2:
                    raise
                continue
            if response.status != 200:
                raise RuntimeError(f"{method} {path}: HTTP {response.status} {raw[:500]!r}")
            self.last_answer_bytes = len(raw)
            return seconds, json.loads(raw)
        raise AssertionError("unreachable")

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None and self._socket_path is not None:
            self._connection = UnixConnection(self._socket_path, timeout=120)
        elif self._connection is None:
            self._connection = http.client.HTTPConnection(self._host, self._port, timeout=120)
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


@dataclass
class Sample:
    """One measured request."""

    client_seconds: float
    phases: dict[str, float]
    calls: dict[str, int]
    rooms: int
    answer_bytes: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "client": self.client_seconds,
            "rooms": self.rooms,
            "bytes": self.answer_bytes,
            "phases": self.phases,
        }


@dataclass
class CaseResult:
    """One case: samples by (size, side), the module's counters over the
    case, the load average before and after."""

    name: str
    sequential_rooms: bool = False
    samples: dict[tuple[int, str], list[Sample]] = field(default_factory=dict)
    module_counts: dict[str, float] = field(default_factory=dict)
    load_before: str = ""
    load_after: str = ""


@dataclass(frozen=True)
class Case:
    name: str
    title: str
    incremental: bool
    # The write made before each request: (bench, request number).
    before: Callable[[Bench, int], None] | None


def _state_change(bench: Bench, number: int) -> None:
    room_id = quote(bench.dataset.elsewhere_room, safe="")
    path = f"/_matrix/client/v3/rooms/{room_id}/state/m.room.name/"
    content = {"name": f"Elsewhere {bench.run_id} {number}"}
    bench.http.request("PUT", path, content, bench.dataset.elsewhere.access_token)


def _new_message(bench: Bench, number: int) -> None:
    # Always the same room (shared by every user): each incremental answer
    # then carries exactly one room, with the message. The transaction ID is
    # new in every run (Synapse answers a known one with the event it made).
    room_id = quote(bench.dataset.shared_rooms[-1], safe="")
    path = f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{bench.run_id}-{number}"
    content = {"msgtype": "m.text", "body": f"message {number}"}
    bench.http.request("PUT", path, content, bench.speaker.access_token)


CASES = (
    Case("warm", "initial request, warm", False, None),
    Case("state_change", "initial request after a state change elsewhere", False, _state_change),
    Case("incremental", "incremental request after a new message", True, _new_message),
)


class Bench:
    """The users of a dataset, their connections, and the requests."""

    def __init__(self, homeserver: Homeserver, dataset: Dataset, roomcache_socket: Path) -> None:
        self.homeserver = homeserver
        self.dataset = dataset
        self.http = KeepAlive(homeserver.client_url)
        self.roomcache = KeepAlive(socket_path=roomcache_socket)
        self.speaker = dataset.crowd[0] if dataset.crowd else dataset.users[max(dataset.users)]
        self.run_id = uuid.uuid4().hex[:12]
        self._numbers = itertools.count(1)

    def sync(self, size: int, side: str, case: str, pos: str | None) -> tuple[float, Any]:
        user = self.dataset.users[size]
        conn_id = ("" if side == "module" else BYPASS_PREFIX) + f"bench-{case}"
        query = {"timeout": "0"}
        if pos is not None:
            query["pos"] = pos
        body = {"conn_id": conn_id, "lists": LISTS}
        path = f"{SLIDING_SYNC_PATH}?{urlencode(query)}"
        return self.http.request("POST", path, body, user.access_token)

    def take_phases(self) -> list[dict[str, Any]]:
        return self.http.request("GET", PHASES_PATH)[1]

    def run_case(
        self, case: Case, requests: int, warmup: int, *, sequential_rooms: bool = False
    ) -> CaseResult:
        """`sequential_rooms`: Synapse fetches the rooms' data one at a time
        (phases.py), to attribute the per-room time exactly."""
        self.http.request("POST", PHASES_PATH, {"sequential_rooms": sequential_rooms})
        try:
            return self._run_case(case, requests, warmup, sequential_rooms)
        finally:
            self.http.request("POST", PHASES_PATH, {"sequential_rooms": False})

    def _run_case(
        self, case: Case, requests: int, warmup: int, sequential_rooms: bool
    ) -> CaseResult:
        result = CaseResult(case.name, sequential_rooms, load_before=loadavg())
        counts_before = self.module_counts()
        pairs = [(size, side) for size in self.dataset.spec.sizes for side in SIDES]
        positions: dict[tuple[int, str], str | None] = dict.fromkeys(pairs)
        if case.incremental:  # each connection starts with an initial request
            for size, side in pairs:
                positions[(size, side)] = self.sync(size, side, case.name, None)[1]["pos"]
        self.take_phases()
        for round_number in range(warmup + requests):
            shift = round_number % len(pairs)
            for size, side in pairs[shift:] + pairs[:shift]:
                if case.before is not None:
                    case.before(self, next(self._numbers))
                seconds, answer = self.sync(size, side, case.name, positions[(size, side)])
                _check_answer(answer, size, side, case)
                if case.incremental:
                    positions[(size, side)] = answer["pos"]
                records = self.take_phases()
                if len(records) != 1:
                    raise RuntimeError(f"expected one phase record, got {len(records)}")
                if round_number >= warmup:
                    sample = sample_of(seconds, records[0])
                    sample.phases["replay.roomcache_direct"] = self.replay(records[0])
                    result.samples.setdefault((size, side), []).append(sample)
        after = self.module_counts()
        result.module_counts = {
            key: value - counts_before.get(key, 0.0)
            for key, value in after.items()
            if value - counts_before.get(key, 0.0)
        }
        result.load_after = loadavg()
        return result

    def replay(self, record: dict[str, Any]) -> float:
        """The requests the module sent roomcache, sent again from here (a
        plain client outside Synapse, on a kept-alive connection): seconds."""
        total = 0.0
        for asked in record.get("roomcache_requests") or ():
            path = f"/v1/users/{quote(asked['user_id'], safe='')}/room_list"
            total += self.roomcache.request("POST", path, asked["body"])[0]
        return total

    def close(self) -> None:
        self.http.close()
        self.roomcache.close()

    def module_counts(self) -> dict[str, float]:
        """The module's counters: `path/reason`, `unaffected`, `unsettled`."""
        counts: dict[str, float] = {}
        for (name, labels), value in self.homeserver.metrics().items():
            label = dict(labels)
            if name == "roomcache_synapse_room_lists_total":
                counts[f"{label['path']}/{label['reason']}".rstrip("/")] = value
            elif name == "roomcache_synapse_unaffected_total":
                counts["unaffected"] = value
            elif name == "roomcache_synapse_unsettled_rooms_total":
                counts["unsettled rooms"] = value
            elif label.get("name") == SNAPSHOT_CACHE and name in _CACHE_METRICS:
                counts[_CACHE_METRICS[name]] = value
        return counts


_CACHE_METRICS = {
    "synapse_util_caches_cache": "snapshot cache lookups",
    "synapse_util_caches_cache_hits": "snapshot cache hits",
}


def _check_answer(answer: Any, size: int, side: str, case: Case) -> None:
    """Every answer is a real one: the list counts the user's rooms, an
    incremental answer carries the room with the new message."""
    count = answer.get("lists", {}).get("all", {}).get("count")
    if count != size:
        raise RuntimeError(f"{case.name}, {side}: list count {count} for a user in {size} rooms")
    if case.incremental and not answer.get("rooms"):
        raise RuntimeError(
            f"{case.name}, {side}, user in {size} rooms: no room in the answer after a new "
            f"message: {json.dumps(answer)[:2000]}"
        )


def sample_of(seconds: float, record: dict[str, Any]) -> Sample:
    return Sample(
        client_seconds=seconds,
        phases={name: float(value) for name, value in record["phases"].items()},
        calls={name: int(value) for name, value in record["calls"].items()},
        rooms=int(record["rooms"]),
    )


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"
