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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from tests.client import SLIDING_SYNC_PATH, Client
from tests.harness import Homeserver

from .dataset import Dataset
from .phases import PATH as PHASES_PATH

BYPASS_PREFIX = "synapse-only-"
SIDES = ("synapse", "module")

# The request the issue names: one list, the top 20 rooms, the last event
# of each and its name.
LISTS = {"all": {"ranges": [[0, 19]], "timeline_limit": 1, "required_state": [["m.room.name", ""]]}}


class KeepAlive:
    """HTTP/1.1 to Synapse on one kept-alive connection (timed requests
    should not pay for connecting)."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._connection: http.client.HTTPConnection | None = None

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
            return seconds, json.loads(raw)
        raise AssertionError("unreachable")

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
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
    bench.elsewhere.set_name(bench.dataset.elsewhere_room, f"Elsewhere {number}")


def _new_message(bench: Bench, number: int) -> None:
    # Always the same room (shared by every user): each incremental answer
    # then carries exactly one room, with the message.
    bench.speaker.send_message(bench.dataset.shared_rooms[-1], f"message {number}")


CASES = (
    Case("warm", "initial request, warm", False, None),
    Case("state_change", "initial request after a state change elsewhere", False, _state_change),
    Case("incremental", "incremental request after a new message", True, _new_message),
)


class Bench:
    """The users of a dataset, their connections, and the requests."""

    def __init__(self, homeserver: Homeserver, dataset: Dataset) -> None:
        self.homeserver = homeserver
        self.dataset = dataset
        self.http = KeepAlive(homeserver.client_url)
        self.elsewhere = dataset.elsewhere.client(homeserver)
        speaker = dataset.crowd[0] if dataset.crowd else dataset.users[max(dataset.users)]
        self.speaker: Client = speaker.client(homeserver)
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
        result = CaseResult(case.name, sequential_rooms, load_before=_loadavg())
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
                _check_answer(answer, size, case)
                if case.incremental:
                    positions[(size, side)] = answer["pos"]
                records = self.take_phases()
                if len(records) != 1:
                    raise RuntimeError(f"expected one phase record, got {len(records)}")
                if round_number >= warmup:
                    result.samples.setdefault((size, side), []).append(_sample(seconds, records[0]))
        after = self.module_counts()
        result.module_counts = {
            key: value - counts_before.get(key, 0.0)
            for key, value in after.items()
            if value - counts_before.get(key, 0.0)
        }
        result.load_after = _loadavg()
        return result

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
        return counts


def _check_answer(answer: Any, size: int, case: Case) -> None:
    """Every answer is a real one: the list counts the user's rooms, an
    incremental answer carries the room with the new message."""
    count = answer.get("lists", {}).get("all", {}).get("count")
    if count != size:
        raise RuntimeError(f"{case.name}: list count {count} for a user in {size} rooms")
    if case.incremental and not answer.get("rooms"):
        raise RuntimeError(f"{case.name}: no room in the answer after a new message")


def _sample(seconds: float, record: dict[str, Any]) -> Sample:
    return Sample(
        client_seconds=seconds,
        phases={name: float(value) for name, value in record["phases"].items()},
        calls={name: int(value) for name, value in record["calls"].items()},
        rooms=int(record["rooms"]),
    )


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"
