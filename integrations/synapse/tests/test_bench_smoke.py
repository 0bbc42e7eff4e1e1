"""The end-to-end benchmark (`scripts/bench synapse`) on a tiny dataset: its
code runs as it does in a real run, and what it records is what was asked.
Asserts what the run did (requests, who answered them, phases recorded),
never how fast.

Ports: ROOMCACHE_SYNAPSE_TEST_PORT_BASE + 16 (Postgres) and + 17 (Synapse).
"""

from __future__ import annotations

import shutil

from roomcache_synapse_bench.__main__ import Options, run
from roomcache_synapse_bench.driver import CASES, SIDES

from .conftest import PORT_BASE, TEST_DIRECTORY

SIZES = (2, 3, 5)
REQUESTS = 3
WARMUP = 1
ATTRIBUTION = 2


def test_benchmark_runs_every_case_on_both_sides() -> None:
    directory = TEST_DIRECTORY / "bench"
    shutil.rmtree(directory, ignore_errors=True)  # a dataset of its own, every time
    options = Options(
        directory=directory,
        sizes=SIZES,
        requests=REQUESTS,
        warmup=WARMUP,
        port_base=PORT_BASE + 16,
        cases=tuple(case.name for case in CASES),
        poll_interval_ms=None,
        attribution_requests=ATTRIBUTION,
    )
    outcome = run(options)
    assert outcome.synapse_errors == []
    names = [(result.name, result.sequential_rooms) for result in outcome.results]
    assert names == [(case.name, False) for case in CASES] + [(case.name, True) for case in CASES]

    for result in outcome.results:
        requests = ATTRIBUTION if result.sequential_rooms else REQUESTS
        assert sorted(result.samples) == sorted((size, side) for size in SIZES for side in SIDES)
        incremental = result.name == "incremental"
        # Every request of the case (warm-up and each connection's first
        # request included) was answered by roomcache on the module's side
        # and by Synapse on the other.
        asked = (WARMUP + requests + (1 if incremental else 0)) * len(SIZES)
        expected = {"roomcache": asked, "synapse/bypass": asked}
        counts = {
            key: value
            for key, value in result.module_counts.items()
            if "/" in key or key == "roomcache"
        }
        assert counts == expected, (result.name, result.module_counts)
        for (size, side), samples in result.samples.items():
            assert len(samples) == requests
            for sample in samples:
                assert sample.rooms == (1 if incremental else size)
                assert sample.calls["room.total"] == sample.rooms
                assert sample.calls["room_lists"] == 1
                assert sample.client_seconds > sample.phases["total"] > 0
                if side == "module":
                    assert sample.calls["seam.ask_roomcache"] == 1
                    assert sample.calls["seam.roomcache_call"] == 1
                    assert "seam.rewind" not in sample.calls
                else:
                    assert "seam.ask_roomcache" not in sample.calls
                    assert sample.calls["seam.rewind"] >= 1
                    if not incremental:
                        assert sample.calls["seam.snapshots"] == 1
    assert any(line.startswith("## Goals") for line in outcome.lines)
