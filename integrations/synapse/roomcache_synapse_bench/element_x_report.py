# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""The Element X case's tables (element_x_bench.py) and its goals (issues
19 and 20): per stage, size and phase, p50 / p99 on both sides and their
ratios; the whole loading sequence; what the comparison found."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .driver import Sample
from .element_x_bench import CASES, STAGES, ElementXResult
from .report import percentile, phase_value

PHASES = (
    ("client", "whole request (client)"),
    ("outside_handler", "outside the handler (HTTP, auth, JSON)"),
    ("total", "the handler"),
    ("connection_state_read", "connection state (read)"),
    ("room_lists", "room lists (the seam)"),
    ("seam.snapshots", "  Synapse: the user's membership snapshots"),
    ("seam.rewind", "  Synapse: rewind to the token, newly joined/left"),
    ("seam.sort", "  Synapse: sort"),
    ("seam.synapse_facts", "  module: Synapse's facts"),
    ("seam.roomcache_call", "  module: the call to roomcache"),
    ("replay.roomcache_direct", "  module:   the same call again, from a plain client"),
    ("seam.assemble", "  module: assemble lists"),
    ("seam.result", "  module: memberships, rooms to send, DM rooms"),
    ("result_rest", "  module:   of which a membership per room in range"),
    ("seam.to_send", "  rooms to send (both sides)"),
    ("room_data", "per-room data (wall)"),
    ("extensions", "extensions (account data, receipts, typing)"),
    ("rooms_out_of_range", "rooms out of range changed?"),
    ("connection_state_write", "connection state (write)"),
)
ROOM_LIST_GOAL = 10.0
WHOLE_STEADY_GOAL = 1.5
LOADING_GOAL = 3.0
GOAL_SIZES = (1000, 10000)
_TITLES = {case.name: case.title for case in CASES}


def _ms(samples: Sequence[Sample], phase: str, fraction: float) -> float:
    return percentile([phase_value(sample, phase) for sample in samples], fraction) * 1000


def _ratio(synapse: float, module: float) -> str:
    if math.isnan(synapse) or math.isnan(module) or module <= 0 or synapse <= 0:
        return "-"
    return f"{synapse / module:.2f}x"


def _present(samples: Sequence[Sample], phase: str) -> bool:
    return any(phase_value(sample, phase) for sample in samples)


def stage_table(result: ElementXResult, stage: str, sizes: Sequence[int]) -> list[str]:
    """Per size and phase: p50 / p99 (ms) on each side, Synapse / module."""
    lines = [
        "| user's rooms | phase | Synapse alone, p50 / p99 | module, p50 / p99 | "
        "Synapse / module, p50 | p99 |",
        "|---|---|---|---|---|---|",
    ]
    for size in sizes:
        synapse = result.samples.get((stage, size, "synapse"), [])
        module = result.samples.get((stage, size, "module"), [])
        for phase, title in PHASES:
            if not (_present(synapse, phase) or _present(module, phase)):
                continue
            s50, s99 = _ms(synapse, phase, 0.5), _ms(synapse, phase, 0.99)
            m50, m99 = _ms(module, phase, 0.5), _ms(module, phase, 0.99)
            lines.append(
                f"| {size:,} | {title} | {s50:.1f} / {s99:.1f} | {m50:.1f} / {m99:.1f} | "
                f"{_ratio(s50, m50)} | {_ratio(s99, m99)} |"
            )
        lines.append(
            f"| {size:,} | answer: rooms with data, bytes (mean) | {_rooms(synapse)} | "
            f"{_rooms(module)} | | |"
        )
    return lines


def _rooms(samples: Sequence[Sample]) -> str:
    if not samples:
        return "-"
    rooms = sum(sample.rooms for sample in samples) / len(samples)
    size = sum(sample.answer_bytes for sample in samples) / len(samples)
    return f"{rooms:.0f} rooms, {size / 1000:.0f} kB"


def _sequence_seconds(sequence: Sequence[Sample], phase: str) -> float:
    return sum(phase_value(sample, phase) for sample in sequence)


def loading_table(result: ElementXResult, sizes: Sequence[int]) -> list[str]:
    """The whole loading sequence (sums over its requests), median and
    slowest of the measured sequences, seconds."""
    lines = [
        "| user's rooms | requests | phase, whole sequence (s) | Synapse alone, median / max | "
        "module, median / max | Synapse / module (median) |",
        "|---|---|---|---|---|---|",
    ]
    for size in sizes:
        synapse = result.sequences.get((size, "synapse"), [])
        module = result.sequences.get((size, "module"), [])
        requests = len(synapse[0]) if synapse else 0
        for phase, title in (
            ("client", "whole requests (client)"),
            ("room_lists", "room lists"),
            ("room_data", "per-room data"),
            ("extensions", "extensions"),
            ("connection_state_write", "connection state (write)"),
        ):
            ours = [_sequence_seconds(sequence, phase) for sequence in module]
            theirs = [_sequence_seconds(sequence, phase) for sequence in synapse]
            s50, m50 = percentile(theirs, 0.5), percentile(ours, 0.5)
            lines.append(
                f"| {size:,} | {requests} | {title} | {s50:.2f} / {_max(theirs):.2f} | "
                f"{m50:.2f} / {_max(ours):.2f} | {_ratio(s50, m50)} |"
            )
    return lines


def _max(values: Sequence[float]) -> float:
    return max(values) if values else math.nan


def section(result: ElementXResult, sizes: Sequence[int]) -> list[str]:
    """Everything printed for one case."""
    lines = ["", f"## {_TITLES[result.name]}", ""]
    lines += [
        f"answers compared: {result.compared} steps (size, both sides); "
        f"differences: {len(result.differences)}"
    ]
    lines += [f"  {difference}" for difference in result.differences[:20]]
    counts = ", ".join(f"{key}: {value:.0f}" for key, value in sorted(result.module_counts.items()))
    lines += [f"module's counters over the case: {counts}"]
    lines += ["", "### The whole loading sequence", "", *loading_table(result, sizes)]
    for stage, title in STAGES:
        before, after = result.loads.get(stage, ("?", "?"))
        lines += [
            "",
            f"### {title}, per request, ms",
            "",
            f"load average: {before} before, {after} after",
            "",
            *stage_table(result, stage, sizes),
        ]
    return lines


def goals(results: Sequence[ElementXResult], sizes: Sequence[int]) -> list[str]:
    """Issue 19's goals (no phase slower; steady room lists ≥ 10x, whole
    steady request ≥ 1.5x at 1,000 and 10,000 rooms) and issue 20's (the
    whole loading sequence ≥ 3x), measured."""
    lines: list[str] = []
    for result in results:
        title = _TITLES[result.name]
        for stage, _ in STAGES:
            for size in sizes:
                slower = _slower_phases(result, stage, size)
                verdict = "none" if not slower else ", ".join(slower)
                lines.append(
                    f"{title}, {stage}, {size:,} rooms: phases slower with the module: {verdict}"
                )
        for size in (size for size in sizes if size in GOAL_SIZES):
            for stage in ("steady_message", "steady_state_change"):
                lines.append(_goal(result, stage, size, "room_lists", ROOM_LIST_GOAL))
                lines.append(_goal(result, stage, size, "client", WHOLE_STEADY_GOAL))
            synapse = result.sequences.get((size, "synapse"), [])
            module = result.sequences.get((size, "module"), [])
            s50 = percentile([_sequence_seconds(each, "client") for each in synapse], 0.5)
            m50 = percentile([_sequence_seconds(each, "client") for each in module], 0.5)
            lines.append(
                _verdict(
                    f"{title}, the whole loading sequence, {size:,} rooms",
                    s50,
                    m50,
                    LOADING_GOAL,
                    "s",
                )
            )
    return lines


def _slower_phases(result: ElementXResult, stage: str, size: int) -> list[str]:
    synapse = result.samples.get((stage, size, "synapse"), [])
    module = result.samples.get((stage, size, "module"), [])
    slower = []
    for phase in (
        "client",
        "total",
        "room_lists",
        "room_data",
        "extensions",
        "connection_state_write",
    ):
        for fraction, name in ((0.5, "p50"), (0.99, "p99")):
            ours, theirs = _ms(module, phase, fraction), _ms(synapse, phase, fraction)
            if ours > theirs + 0.05:  # what the tables show as more
                slower.append(f"{phase} {name} {ours:.1f} > {theirs:.1f} ms")
    return slower


def _goal(result: ElementXResult, stage: str, size: int, phase: str, goal: float) -> str:
    synapse = _ms(result.samples.get((stage, size, "synapse"), []), phase, 0.5)
    module = _ms(result.samples.get((stage, size, "module"), []), phase, 0.5)
    what = "the room-list part" if phase == "room_lists" else "the whole request"
    return _verdict(
        f"{_TITLES[result.name]}, {stage}, {what}, {size:,} rooms",
        synapse / 1000,
        module / 1000,
        goal,
        "ms",
    )


def _verdict(what: str, synapse: float, module: float, goal: float, unit: str) -> str:
    scale = 1000 if unit == "ms" else 1
    ratio = synapse / module if module > 0 else math.inf
    met = "met" if ratio >= goal else "NOT met"
    return (
        f"{what}: Synapse {synapse * scale:.2f} {unit}, module {module * scale:.2f} {unit} "
        f"(p50): {ratio:.2f}x (goal ≥ {goal:g}x): {met}"
    )


def as_json(results: Sequence[ElementXResult]) -> list[dict[str, Any]]:
    """Every sample, for the record."""
    return [
        {
            "case": result.name,
            "loads": result.loads,
            "module_counts": result.module_counts,
            "compared": result.compared,
            "differences": result.differences,
            "samples": {
                f"{stage}/{size}/{side}": [sample.as_json() for sample in samples]
                for (stage, size, side), samples in result.samples.items()
            },
        }
        for result in results
    ]
