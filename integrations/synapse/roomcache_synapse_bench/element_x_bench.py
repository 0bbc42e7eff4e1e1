# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""The Element X case of the benchmark: the requests Element X really sends
(element_x.py), both sides in one Synapse process, interleaved.

For every user (size) and side (through the module on `conn_id
"room-list"`, Synapse alone on the bypass prefix + "room-list"):
* **loading**: `[[0, 19]]` without `pos`, then growing by the batch (100)
  to `[[0, count - 1]]`, each with the previous `pos`, `timeout=0`;
  `warmup_sequences` unmeasured sequences, then `sequences` measured ones,
  each on a fresh connection; step by step, every connection that still
  loads makes its next request (`_order`: the order rotating one position
  a step, and each sequence starting one position further);
* **steady**, on the last sequence's connections: the full range with
  `pos`, long-polling (`timeout=30000`; the answer is immediate, there is
  news), `warmup + requests` rounds (ordered as the loading steps) of
  - `steady_message`: a message (by `crowd1`) in the newest shared room
    before each request;
  - `steady_state_change`: a state change in `elsewhere`'s room (which
    drops Synapse's per-user room-list caches for every user) and that
    message, before each request.
The variant with room subscriptions subscribes every request after the
first to the rooms on screen (the 20 newest shared rooms, the written
room among them; `timeline_limit: 20`, `m.room.pinned_events`).

Both sides' answers of every step are compared (answers.py); each
request's phases come from the phase timer (phases.py).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from tests.client import SLIDING_SYNC_PATH

from . import answers, element_x
from .driver import BYPASS_PREFIX, SIDES, Bench, Sample, loadavg, sample_of

JsonDict = dict[str, Any]
Pair = tuple[int, str]  # (size, side)

STAGES = (
    ("loading", "loading the list: [[0, 19]], then growing by the batch (timeout 0)"),
    ("steady_message", "steady: the full range after a message in one of the user's rooms"),
    (
        "steady_state_change",
        "steady: the full range after a state change elsewhere and a message",
    ),
)


@dataclass(frozen=True)
class ElementXCase:
    name: str
    title: str
    subscriptions: bool


CASES = (
    ElementXCase("element_x", "Element X", False),
    ElementXCase("element_x_subscriptions", "Element X with room subscriptions", True),
)


@dataclass
class ElementXResult:
    """One case: samples by (stage, size, side); each measured loading
    sequence's samples by (size, side); what the comparison found."""

    name: str
    samples: dict[tuple[str, int, str], list[Sample]] = field(default_factory=dict)
    sequences: dict[Pair, list[list[Sample]]] = field(default_factory=dict)
    compared: int = 0
    differences: list[str] = field(default_factory=list)
    module_counts: dict[str, float] = field(default_factory=dict)
    loads: dict[str, tuple[str, str]] = field(default_factory=dict)  # stage → before, after


@dataclass
class _Connection:
    size: int
    side: str
    conn_id: str
    pos: str | None = None
    count: int = 0
    writes_seen: int = 0  # writes made before its previous request


@dataclass(frozen=True)
class ElementXOptions:
    sequences: int = 3
    warmup_sequences: int = 1
    requests: int = 100
    warmup: int = 3
    batch: int = element_x.BATCH
    settle_ms: int = 0
    """A pause after each steady write, before the request (0: none): lets
    the work Synapse does in the background after a write end first."""


class ElementXRun:
    """One case on a `Bench`."""

    def __init__(self, bench: Bench, case: ElementXCase, options: ElementXOptions) -> None:
        self.bench = bench
        self.case = case
        self.options = options
        self.pairs: list[Pair] = [
            (size, side) for size in bench.dataset.spec.sizes for side in SIDES
        ]
        self.result = ElementXResult(case.name)
        self.writes = answers.WriteLog()
        self.written_room = bench.dataset.shared_rooms[-1]
        self.subscriptions = bench.dataset.on_screen if case.subscriptions else []
        self._numbers = 0

    def run(self) -> ElementXResult:
        counts_before = self.bench.module_counts()
        self.bench.take_phases()
        options = self.options
        connections: dict[Pair, _Connection] = {}
        loads_before = loadavg()
        for number in range(options.warmup_sequences + options.sequences):
            connections = self._loading(number, measured=number >= options.warmup_sequences)
        self.result.loads["loading"] = (loads_before, loadavg())
        for stage, write in (
            ("steady_message", self._message),
            ("steady_state_change", self._state_change_and_message),
        ):
            loads_before = loadavg()
            self._steady(stage, write, connections)
            self.result.loads[stage] = (loads_before, loadavg())
        after = self.bench.module_counts()
        self.result.module_counts = {
            key: value - counts_before.get(key, 0.0)
            for key, value in after.items()
            if value - counts_before.get(key, 0.0)
        }
        return self.result

    # --- the two stages -------------------------------------------------------------

    def _loading(self, number: int, *, measured: bool) -> dict[Pair, _Connection]:
        """Loading sequence `number` on fresh connections; returns them, loaded."""
        what = "measured" if measured else "warm-up"
        print(f"  {self.case.name}: loading sequence {number} ({what}) ...", file=sys.stderr)
        connections = {pair: self._connection(*pair) for pair in self.pairs}
        plans: dict[Pair, list[list[list[int]]]] = {}
        sequence: dict[Pair, list[Sample]] = {pair: [] for pair in self.pairs}
        step = 0
        while True:
            if step == 0:
                active = list(self.pairs)
            else:
                active = [pair for pair in self.pairs if step - 1 < len(plans[pair])]
            if not active:
                break
            answered: dict[Pair, JsonDict] = {}
            for pair in _order(active, number + step):
                connection = connections[pair]
                ranges = [element_x.FIRST_RANGE] if step == 0 else plans[pair][step - 1]
                sample, answer = self._request(connection, ranges, timeout_ms=0)
                if step == 0:
                    plans[pair] = element_x.loading_ranges(connection.count, self.options.batch)
                answered[pair] = answer
                sequence[pair].append(sample)
                if measured:
                    self.result.samples.setdefault(("loading", *pair), []).append(sample)
            self._compare(f"loading step {step}", answered, ())
            step += 1
        if measured:
            for pair, samples in sequence.items():
                self.result.sequences.setdefault(pair, []).append(samples)
        return connections

    def _steady(
        self, stage: str, write: Callable[[], None], connections: dict[Pair, _Connection]
    ) -> None:
        limit = 20 if self.subscriptions else 1
        options = self.options
        print(f"  {self.case.name}: {stage} ...", file=sys.stderr, flush=True)
        for round_number in range(options.warmup + options.requests):
            answered: dict[Pair, JsonDict] = {}
            for pair in _order(self.pairs, round_number):
                connection = connections[pair]
                write()
                if options.settle_ms:
                    time.sleep(options.settle_ms / 1000)
                written = self.writes.since(connection.writes_seen, self.written_room)
                connection.writes_seen = len(self.writes.events)
                sample, answer = self._request(
                    connection,
                    element_x.steady_range(connection.count),
                    timeout_ms=element_x.STEADY_TIMEOUT_MS,
                )
                problem = answers.timeline_problem(answer, self.written_room, written, limit)
                if problem is not None:
                    self.result.differences.append(f"{stage} {pair}: {problem}")
                answered[pair] = answer
                if round_number >= options.warmup:
                    self.result.samples.setdefault((stage, *pair), []).append(sample)
            self._compare(f"{stage} round {round_number}", answered, (self.written_room,))

    # --- requests and writes --------------------------------------------------------

    def _connection(self, size: int, side: str) -> _Connection:
        prefix = "" if side == "module" else BYPASS_PREFIX
        connection = _Connection(size, side, prefix + element_x.CONN_ID)
        connection.writes_seen = len(self.writes.events)
        return connection

    def _request(
        self, connection: _Connection, ranges: list[list[int]], *, timeout_ms: int
    ) -> tuple[Sample, JsonDict]:
        bench = self.bench
        subscriptions = self.subscriptions if connection.pos is not None else []
        body = element_x.request(ranges, conn_id=connection.conn_id, subscriptions=subscriptions)
        query = {"timeout": str(timeout_ms)}
        if connection.pos is not None:
            query["pos"] = connection.pos
        user = bench.dataset.users[connection.size]
        path = f"{SLIDING_SYNC_PATH}?{urlencode(query)}"
        seconds, answer = bench.http.request("POST", path, body, user.access_token)
        answer_bytes = bench.http.last_answer_bytes
        records = bench.take_phases()
        if len(records) != 1:
            raise RuntimeError(f"expected one phase record, got {len(records)}")
        count = answer.get("lists", {}).get(element_x.LIST_NAME, {}).get("count")
        if count != connection.size:
            raise RuntimeError(
                f"{self.case.name}, {connection.side}: list count {count} for a user in "
                f"{connection.size} rooms: {json.dumps(answer)[:2000]}"
            )
        connection.pos = answer["pos"]
        connection.count = count
        sample = sample_of(seconds, records[0])
        sample.answer_bytes = answer_bytes
        sample.phases["replay.roomcache_direct"] = bench.replay(records[0])
        return sample, answer

    def _message(self) -> None:
        self._numbers += 1
        room_id = self.written_room
        path = (
            f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/send/m.room.message/"
            f"ex-{self.bench.run_id}-{self.case.name}-{self._numbers}"
        )
        content = {"msgtype": "m.text", "body": f"news {self._numbers}"}
        speaker = self.bench.dataset.crowd[0]
        answer = self.bench.http.request("PUT", path, content, speaker.access_token)[1]
        self.writes.add(room_id, answer["event_id"])

    def _state_change_and_message(self) -> None:
        dataset = self.bench.dataset
        room_id = quote(dataset.elsewhere_room, safe="")
        path = f"/_matrix/client/v3/rooms/{room_id}/state/m.room.topic/"
        content = {"topic": f"Elsewhere {self.bench.run_id} {self._numbers}"}
        self.bench.http.request("PUT", path, content, dataset.elsewhere.access_token)
        self._message()

    def _compare(
        self, step: str, answered: dict[Pair, JsonDict], written_rooms: tuple[str, ...]
    ) -> None:
        for size in self.bench.dataset.spec.sizes:
            module, synapse = answered.get((size, "module")), answered.get((size, "synapse"))
            if module is None or synapse is None:
                if (module is None) != (synapse is None):
                    self.result.differences.append(f"{step}, {size:,} rooms: one side only")
                continue
            self.result.compared += 1
            found = answers.differences(module, synapse, written_rooms)
            self.result.differences += [f"{step}, {size:,} rooms: {d}" for d in found[:20]]


def _order(pairs: list[Pair], number: int) -> list[Pair]:
    """The order of step or round `number`: `pairs` rotated by `number`.
    Every (size, side) takes every position equally often over as many
    steps as there are pairs, so neither side is the one that always comes
    first to rooms whose caches the others warm (the users' top rooms are
    the same rooms)."""
    shift = number % len(pairs)
    return pairs[shift:] + pairs[:shift]
