# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""Percentiles, the tables the benchmark prints, and the goals."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .driver import CASES, SIDES, CaseResult, Sample

TOP_PHASES = (
    ("connection_state_read", "connection state (read)"),
    ("room_lists", "room lists (the seam)"),
    ("room_data", "per-room data (wall)"),
    ("extensions", "extensions"),
    ("rooms_out_of_range", "rooms out of range changed?"),
    ("connection_state_write", "connection state (write)"),
)
ROOM_PHASES = (
    ("room.timeline_fetch", "timeline: fetch the events"),
    ("room.timeline_visibility", "timeline: filter them for the client"),
    ("room.timeline_aggregations", "timeline: bundled aggregations"),
    ("room.room_name", "room name"),
    ("room.heroes", "heroes (room summary)"),
    ("room.counts", "member counts"),
    ("room.required_state", "required state"),
    ("room.state_deltas", "state deltas"),
    ("room.bump_stamp", "bump stamp"),
    ("room.other_events", "other events"),
    ("room.total", "all of it"),
)
SEAM_PHASES = (
    ("seam.snapshots", "Synapse: the user's membership snapshots"),
    ("seam.rewind", "Synapse: rewind to the token, newly joined/left"),
    ("seam.filter", "Synapse: filters"),
    ("seam.sort", "Synapse: sort"),
    ("seam.to_send", "rooms to send (Synapse's walk over the rooms in range; the module's too)"),
    ("seam.dm_rooms", "DM rooms (Synapse's; the module's too)"),
    ("seam.synapse_facts", "module: Synapse's facts (forgotten, newly joined/left...)"),
    ("seam.ask_roomcache", "module: ask roomcache"),
    ("seam.roomcache_call", "module:   of which the call over the socket"),
    ("replay.roomcache_direct", "module:   the same call from a plain client, outside Synapse"),
    ("seam.assemble", "module: assemble lists"),
    ("seam.result", "module: memberships, rooms to send, DM rooms"),
)
LIST_RATIO_GOAL = 20.0
FLAT_GOAL = 1.10
GOAL_SIZES = (1000, 10000)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _ms(samples: list[Sample], phase: str | None, fraction: float) -> float:
    values = [
        sample.client_seconds if phase is None else sample.phases.get(phase, 0.0)
        for sample in samples
    ]
    return percentile(values, fraction) * 1000


def _mean_ms(samples: list[Sample], phase: str) -> float:
    if not samples:
        return math.nan
    return sum(phase_value(sample, phase) for sample in samples) / len(samples) * 1000


def phase_value(sample: Sample, phase: str) -> float:
    if phase == "client":
        return sample.client_seconds
    if phase == "outside_handler":
        return sample.client_seconds - sample.phases.get("total", 0.0)
    if phase == "result_rest":  # the module's result step besides Synapse's two helpers
        return sample.phases.get("seam.result", 0.0) - sum(
            sample.phases.get(name, 0.0) for name in ("seam.to_send", "seam.dm_rooms")
        )
    if phase == "handler_other":
        return sample.phases.get("total", 0.0) - sum(
            sample.phases.get(name, 0.0) for name, _ in TOP_PHASES
        )
    return sample.phases.get(phase, 0.0)


def _pair(samples: list[Sample], phase: str | None) -> str:
    return f"{_ms(samples, phase, 0.5):.1f} / {_ms(samples, phase, 0.99):.1f}"


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.inf


def summary_table(results: list[CaseResult], sizes: Sequence[int]) -> list[str]:
    lines = [
        "| case | user's rooms | whole request, Synapse | whole request, module | "
        "room lists, Synapse | room lists, module | room lists: Synapse / module (p50) |",
        "|---|---|---|---|---|---|---|",
    ]
    titles = {case.name: case.title for case in CASES}
    for result in results:
        for size in sizes:
            synapse = result.samples.get((size, "synapse"), [])
            module = result.samples.get((size, "module"), [])
            ratio = _ratio(_ms(synapse, "room_lists", 0.5), _ms(module, "room_lists", 0.5))
            lines.append(
                f"| {titles[result.name]} | {size:,} | {_pair(synapse, None)} | "
                f"{_pair(module, None)} | {_pair(synapse, 'room_lists')} | "
                f"{_pair(module, 'room_lists')} | {ratio:.1f}x |"
            )
    return lines


def phase_table(result: CaseResult, sizes: Sequence[int]) -> list[str]:
    """Means per request (ms): means add up, percentiles do not."""
    columns = [(size, side) for size in sizes for side in SIDES]
    header = "| phase (mean ms per request) | " + " | ".join(
        f"{size:,} {side}" for size, side in columns
    )
    lines = [header + " |", "|---|" + "---|" * len(columns)]
    rows: list[tuple[str, str]] = [
        ("client", "whole request (client)"),
        ("outside_handler", "outside the handler (HTTP, auth, JSON)"),
        ("total", "the handler (current_sync_for_user)"),
        *[(name, f"  {title}") for name, title in TOP_PHASES],
        ("handler_other", "  rest of the handler"),
        *[(name, f"  per room, summed over rooms: {title}") for name, title in ROOM_PHASES],
        *[(name, f"  {title}") for name, title in SEAM_PHASES],
    ]
    for phase, title in rows:
        values = [result.samples.get(column, []) for column in columns]
        if all(_mean_ms(samples, phase) == 0 for samples in values):
            continue
        cells = " | ".join(f"{_mean_ms(samples, phase):.2f}" for samples in values)
        lines.append(f"| {title} | {cells} |")
    rooms = " | ".join(f"{_mean_rooms(result.samples.get(column, [])):.0f}" for column in columns)
    lines.append(f"| rooms with data per request | {rooms} |")
    return lines


def database_table(result: CaseResult, sizes: Sequence[int], top: int = 8) -> list[str]:
    """The database transactions that took most time, mean ms per request
    (and transactions per request)."""
    columns = [(size, side) for size in sizes for side in SIDES]
    names: set[str] = set()
    for samples in result.samples.values():
        for sample in samples:
            names.update(name for name in sample.phases if name.startswith("db."))

    def weight(name: str) -> float:
        return max(_mean_ms(result.samples.get(column, []), name) for column in columns)

    chosen = sorted(names, key=weight, reverse=True)[:top]
    header = "| database transaction (mean ms / count per request) | " + " | ".join(
        f"{size:,} {side}" for size, side in columns
    )
    lines = [header + " |", "|---|" + "---|" * len(columns)]
    for name in chosen:
        cells = []
        for column in columns:
            samples = result.samples.get(column, [])
            count = sum(sample.calls.get(name, 0) for sample in samples) / max(len(samples), 1)
            cells.append(f"{_mean_ms(samples, name):.2f} / {count:.1f}")
        lines.append(f"| {name[3:]} | {' | '.join(cells)} |")
    return lines


def _mean_rooms(samples: list[Sample]) -> float:
    return sum(sample.rooms for sample in samples) / len(samples) if samples else math.nan


def goals(results: list[CaseResult], sizes: Sequence[int]) -> list[str]:
    lines: list[str] = []
    by_name = {result.name: result for result in results}
    changed = by_name.get("state_change")
    if changed is not None:
        for size in sizes:
            if size not in GOAL_SIZES:
                continue
            synapse = _ms(changed.samples.get((size, "synapse"), []), "room_lists", 0.5)
            module = _ms(changed.samples.get((size, "module"), []), "room_lists", 0.5)
            ratio = _ratio(synapse, module)
            verdict = "met" if ratio >= LIST_RATIO_GOAL else "NOT met"
            lines.append(
                f"room lists after a state change, {size:,} rooms: Synapse {synapse:.2f} ms, "
                f"module {module:.2f} ms (p50): {ratio:.1f}x (goal ≥ {LIST_RATIO_GOAL:.0f}x): "
                f"{verdict}"
            )
    smallest, largest = min(sizes), max(sizes)
    for result in results:
        module = {
            size: _ms(result.samples.get((size, "module"), []), None, 0.5)
            for size in (smallest, largest)
        }
        synapse = {
            size: _ms(result.samples.get((size, "synapse"), []), None, 0.5)
            for size in (smallest, largest)
        }
        flat = _ratio(module[largest], module[smallest])
        grows = _ratio(synapse[largest], synapse[smallest])
        verdict = "met" if flat <= FLAT_GOAL else "NOT met"
        lines.append(
            f"{result.name}: whole request p50 at {largest:,} / at {smallest:,} rooms: "
            f"module {flat:.2f} ({module[smallest]:.1f} → {module[largest]:.1f} ms; goal "
            f"≤ {FLAT_GOAL:.2f}): {verdict}; Synapse alone {grows:.2f} "
            f"({synapse[smallest]:.1f} → {synapse[largest]:.1f} ms)"
        )
    return lines


def as_json(results: list[CaseResult]) -> list[dict[str, Any]]:
    """Every sample, for the record."""
    return [
        {
            "case": result.name,
            "sequential_rooms": result.sequential_rooms,
            "load_before": result.load_before,
            "load_after": result.load_after,
            "module_counts": result.module_counts,
            "samples": {
                f"{size}/{side}": [sample.as_json() for sample in samples]
                for (size, side), samples in result.samples.items()
            },
        }
        for result in results
    ]
