"""The end-to-end benchmark (`scripts/bench synapse`) on a tiny dataset: its
code runs as it does in a real run, and what it records is what was asked.
Asserts what the run did (requests, who answered them, phases recorded),
never how fast.

Ports: ROOMCACHE_SYNAPSE_TEST_PORT_BASE + 16 (Postgres) and + 17 (Synapse).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from roomcache_synapse_bench.__main__ import DatasetMismatch, Options, Outcome, run
from roomcache_synapse_bench.dataset import DatasetSpec
from roomcache_synapse_bench.driver import CASES, SIDES
from roomcache_synapse_bench.element_x_bench import CASES as ELEMENT_X_CASES
from roomcache_synapse_bench.element_x_bench import STAGES, ElementXOptions

from .conftest import PORT_BASE, TEST_DIRECTORY

SIZES = (6, 35)
REQUESTS = 3
WARMUP = 1
ATTRIBUTION = 2
# Element X's list grows by 10 here: [[0, 19]], then for 35 rooms [[0, 29]], [[0, 34]].
ELEMENT_X = ElementXOptions(sequences=1, warmup_sequences=1, requests=2, warmup=1, batch=10)
LOADING_STEPS = {6: 1, 35: 3}


def _options(directory: Path) -> Options:
    return Options(
        directory=directory,
        sizes=SIZES,
        requests=REQUESTS,
        warmup=WARMUP,
        port_base=PORT_BASE + 16,
        cases=tuple(case.name for case in (*CASES, *ELEMENT_X_CASES)),
        poll_interval_ms=None,
        attribution_requests=ATTRIBUTION,
        element_x=ELEMENT_X,
        build_concurrency=4,
    )


def test_benchmark_runs_every_case_on_both_sides() -> None:
    directory = TEST_DIRECTORY / "bench"
    shutil.rmtree(directory, ignore_errors=True)  # a dataset of its own, every time
    outcome = run(_options(directory))
    assert outcome.synapse_errors == []
    _check_simple_cases(outcome)
    _check_element_x(outcome)
    assert any(line.startswith("## Goals") for line in outcome.lines)


def test_a_dataset_built_for_other_sizes_is_kept_unless_rebuild_is_asked() -> None:
    """Asking for other sizes than the directory's dataset was built for
    refuses before starting anything (building anew takes up to an hour)."""
    directory = TEST_DIRECTORY / "bench-other-sizes"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    record = directory / "dataset.json"
    other = {"spec": DatasetSpec(sizes=(6, 36)).to_json(), "users": {}}
    record.write_text(json.dumps(other))
    with pytest.raises(DatasetMismatch, match="built for"):
        run(_options(directory))
    assert json.loads(record.read_text()) == other
    assert sorted(path.name for path in directory.iterdir()) == ["dataset.json"]


def _check_simple_cases(outcome: Outcome) -> None:
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
                assert sample.rooms == (1 if incremental else min(size, 20))
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


def _check_element_x(outcome: Outcome) -> None:
    """Every step of the loading sequences and of the steady state, on both
    sides, answered equal; what was recorded."""
    assert [result.name for result in outcome.element_x] == [c.name for c in ELEMENT_X_CASES]
    sequences = ELEMENT_X.warmup_sequences + ELEMENT_X.sequences
    rounds = ELEMENT_X.warmup + ELEMENT_X.requests
    steady_stages = len(STAGES) - 1
    for result in outcome.element_x:
        assert result.differences == []
        steps = sum(LOADING_STEPS.values())
        assert result.compared == sequences * steps + steady_stages * rounds * len(SIZES)
        asked = sequences * steps + steady_stages * rounds * len(SIZES)
        counts = {key: value for key, value in result.module_counts.items() if "/" in key}
        counts.update({"roomcache": result.module_counts.get("roomcache", 0)})
        assert counts == {"roomcache": asked, "synapse/bypass": asked}, result.module_counts
        for size in SIZES:
            for side in SIDES:
                [sequence] = result.sequences[(size, side)]
                assert len(sequence) == LOADING_STEPS[size]
                assert result.samples[("loading", size, side)] == sequence
                if result.name == "element_x":  # each room sent once
                    assert sum(sample.rooms for sample in sequence) == size
                for stage, _ in STAGES[1:]:
                    samples = result.samples[(stage, size, side)]
                    assert len(samples) == ELEMENT_X.requests
                    for sample in samples:
                        assert sample.rooms == 1  # the written room
                        assert sample.calls["room_lists"] == 1
                        # At least the list's room IDs (43 characters and more each).
                        assert sample.answer_bytes > 43 * size
                        module_calls = sample.calls.get("seam.roomcache_call", 0)
                        assert module_calls == (1 if side == "module" else 0)
