# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""`scripts/bench synapse`: Sliding Sync on a real Synapse, with and without
the module, for users in 100, 1,000 and 10,000 rooms.

    python -m roomcache_synapse_bench [--sizes 100,1000,10000] [--requests 100]

Builds the dataset once (dataset.py; reused while its spec is the same; a
directory holding one for other sizes is refused unless `--rebuild`),
starts Synapse 1.163.2 with the module and the phase timer, roomcache
(`ROOMCACHE_BIN`) in source mode on its database, then runs every case:
the simple ones (driver.py: one 20-room window, one state key), then
Element X's (element_x_bench.py: the list loading and the steady state,
without and with room subscriptions), and prints the tables (report.py,
element_x_report.py). Ports: the base (`--port-base`, env
ROOMCACHE_BENCH_SYNAPSE_PORT_BASE, default 25470) for Postgres and the
next one for Synapse's client API.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness import REPOSITORY, Homeserver
from tests.roomcache import Roomcache, roomcache_binary

from . import dataset as datasets
from . import element_x_report, report
from .driver import BYPASS_PREFIX, CASES, SNAPSHOT_CACHE, Bench, CaseResult
from .element_x_bench import CASES as ELEMENT_X_CASES
from .element_x_bench import ElementXOptions, ElementXResult, ElementXRun


@dataclass
class Options:
    directory: Path
    sizes: tuple[int, ...]
    requests: int
    warmup: int
    port_base: int
    cases: tuple[str, ...]
    poll_interval_ms: int | None
    attribution_requests: int
    default_caches: bool = False
    element_x: ElementXOptions = field(default_factory=ElementXOptions)
    build_concurrency: int = 6
    rebuild: bool = False
    room_state: bool = True
    room_timeline: bool = True


class DatasetMismatch(Exception):
    """The directory holds a dataset built for other sizes (building anew
    takes up to an hour: only with `--rebuild`)."""


@dataclass
class Outcome:
    results: list[CaseResult]
    element_x: list[ElementXResult]
    synapse_errors: list[str]
    lines: list[str]


def parse(arguments: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(
        prog="scripts/bench synapse",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sizes", default="100,1000,10000", help="rooms of each measured user, ascending"
    )
    parser.add_argument("--requests", type=int, default=100, help="measured requests per side")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured rounds per case")
    parser.add_argument("--directory", type=Path, default=REPOSITORY / "var" / "bench-synapse")
    parser.add_argument(
        "--port-base",
        type=int,
        default=int(os.environ.get("ROOMCACHE_BENCH_SYNAPSE_PORT_BASE", "25470")),
    )
    parser.add_argument(
        "--attribution-requests",
        type=int,
        default=30,
        help="then, per case, requests with the rooms' data fetched one room at a time "
        "(exact per-room phases; 0: none)",
    )
    parser.add_argument(
        "--synapse-default-caches",
        action="store_true",
        help="keep Synapse's default cache sizes (its membership snapshot cache then "
        "cannot hold a user in 10,000 rooms)",
    )
    parser.add_argument(
        "--cases", default=",".join(case.name for case in (*CASES, *ELEMENT_X_CASES))
    )
    parser.add_argument(
        "--sequences",
        type=int,
        default=3,
        help="Element X: measured loading sequences per size and side",
    )
    parser.add_argument(
        "--warmup-sequences",
        type=int,
        default=1,
        help="Element X: unmeasured loading sequences first",
    )
    parser.add_argument(
        "--steady-requests",
        type=int,
        default=50,
        help="Element X: measured steady requests per stage, size and side",
    )
    parser.add_argument(
        "--batch", type=int, default=100, help="Element X: the list grows by this many rooms"
    )
    parser.add_argument(
        "--steady-settle-ms",
        type=int,
        default=0,
        help="Element X: a pause after each steady write, before its request (Synapse's "
        "background work after the write ends first; for telling phases apart)",
    )
    parser.add_argument(
        "--build-concurrency", type=int, default=6, help="requests at once building the dataset"
    )
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="build the dataset anew when the directory holds one for other sizes",
    )
    parser.add_argument(
        "--poll-interval-ms",
        type=int,
        default=None,
        help="roomcache's source poll interval (default: roomcache's own)",
    )
    parser.add_argument(
        "--no-room-state",
        action="store_true",
        help="the module leaves the rooms' current-state lookups to Synapse (its per-room "
        "seam off: the module's room lists only)",
    )
    parser.add_argument(
        "--no-room-timeline",
        action="store_true",
        help="the module leaves the rooms' initial timelines to Synapse's own query",
    )
    parsed = parser.parse_args(arguments)
    known = {case.name for case in (*CASES, *ELEMENT_X_CASES)}
    cases = tuple(parsed.cases.split(","))
    if not set(cases) <= known:
        parser.error(f"cases: {', '.join(sorted(known))}")
    return Options(
        directory=parsed.directory.resolve(),
        sizes=tuple(int(size) for size in parsed.sizes.split(",")),
        requests=parsed.requests,
        warmup=parsed.warmup,
        port_base=parsed.port_base,
        cases=cases,
        poll_interval_ms=parsed.poll_interval_ms,
        attribution_requests=parsed.attribution_requests,
        default_caches=parsed.synapse_default_caches,
        element_x=ElementXOptions(
            sequences=parsed.sequences,
            warmup_sequences=parsed.warmup_sequences,
            requests=parsed.steady_requests,
            warmup=parsed.warmup,
            batch=parsed.batch,
            settle_ms=parsed.steady_settle_ms,
        ),
        build_concurrency=parsed.build_concurrency,
        rebuild=parsed.rebuild,
        room_state=not parsed.no_room_state,
        room_timeline=not parsed.no_room_timeline,
    )


def module_config(
    directory: Path,
    socket_path: Path,
    *,
    default_caches: bool,
    room_state: bool = True,
    room_timeline: bool = True,
) -> Path:
    """The roomcache module (never verifying: it would double Synapse's work;
    its per-room seam on unless not `room_state`, with the initial timelines
    unless not `room_timeline`) and, after it, the phase
    timer; unless `default_caches`, a snapshot cache large enough for every
    user."""
    caches = "" if default_caches else f"caches:\n  per_cache_factors:\n    {SNAPSHOT_CACHE}: 5\n"
    path = directory / "modules.yaml"
    path.write_text(
        caches + "modules:\n"
        "  - module: roomcache_synapse.RoomcacheModule\n"
        "    config:\n"
        f"      socket_path: {socket_path}\n"
        f"      bypass_conn_id_prefix: {BYPASS_PREFIX}\n"
        "      verify_fraction: 0\n"
        f"      room_state: {'true' if room_state else 'false'}\n"
        f"      room_timeline: {'true' if room_timeline else 'false'}\n"
        "  - module: roomcache_synapse_bench.phases.PhaseTimer\n"
        "    config: {}\n"
    )
    return path


def run(options: Options) -> Outcome:
    """Everything: dataset, processes, cases; stops what it started."""
    options.directory.mkdir(parents=True, exist_ok=True)
    spec = datasets.DatasetSpec(sizes=options.sizes)
    record_path = options.directory / "dataset.json"
    existing = datasets.recorded(record_path, spec)
    if existing is None and record_path.exists() and not options.rebuild:
        built_for = json.loads(record_path.read_text()).get("spec")
        raise DatasetMismatch(
            f"{options.directory} holds a dataset built for {built_for}, not for {spec.to_json()}: "
            "ask for its sizes, use another --directory, or --rebuild to replace it"
        )
    homeserver_directory = options.directory / "synapse"
    if existing is not None and not (homeserver_directory / "postgres").exists():
        existing = None
    if existing is None:
        datasets.check_disk(options.directory, spec)
        record_path.unlink(missing_ok=True)
    roomcache_directory = options.directory / "roomcache"
    homeserver = Homeserver(
        homeserver_directory,
        pg_port=options.port_base,
        http_port=options.port_base + 1,
        extra_config=[
            module_config(
                options.directory,
                roomcache_directory / "roomcache.sock",
                default_caches=options.default_caches,
                room_state=options.room_state,
                room_timeline=options.room_timeline,
            )
        ],
        metrics=True,
        keep_data=existing is not None,
    )
    with homeserver:
        dataset = existing
        if dataset is None:
            dataset = datasets.build(homeserver, spec, concurrency=options.build_concurrency)
            record_path.write_text(json.dumps(dataset.to_json(), indent=1))
        log_offset = _log_size(homeserver)
        roomcache = Roomcache(
            roomcache_directory, homeserver, poll_interval_ms=options.poll_interval_ms
        )
        started = time.monotonic()
        with roomcache:
            roomcache.wait_until_caught_up(timeout=900)
            lines = _header(options, roomcache, time.monotonic() - started)
            print("\n".join(lines), flush=True)
            bench = Bench(homeserver, dataset, roomcache.socket_path)
            results = _run_cases(bench, options)
            element_x = _run_element_x(bench, options)
            bench.close()
        errors = _log_errors(homeserver, log_offset)
    lines = _report(options, results, element_x, errors)
    print("\n".join(lines), flush=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (options.directory / f"results-{stamp}.json").write_text(
        json.dumps(
            {
                "sizes": options.sizes,
                "cases": report.as_json(results),
                "element_x": element_x_report.as_json(element_x),
            }
        )
    )
    return Outcome(results, element_x, errors, lines)


def _run_cases(bench: Bench, options: Options) -> list[CaseResult]:
    cases = [case for case in CASES if case.name in options.cases]
    results = []
    for case in cases:
        print(f"case {case.name} ...", file=sys.stderr, flush=True)
        results.append(bench.run_case(case, options.requests, options.warmup))
    if options.attribution_requests > 0:
        for case in cases:
            print(f"case {case.name}, rooms one at a time ...", file=sys.stderr, flush=True)
            results.append(
                bench.run_case(
                    case, options.attribution_requests, options.warmup, sequential_rooms=True
                )
            )
    return results


def _run_element_x(bench: Bench, options: Options) -> list[ElementXResult]:
    results = []
    for case in ELEMENT_X_CASES:
        if case.name in options.cases:
            print(f"case {case.name} ...", file=sys.stderr, flush=True)
            result = ElementXRun(bench, case, options.element_x).run()
            # On stderr at once: a run stopped later still leaves these.
            section = element_x_report.section(result, options.sizes)
            print("\n".join(section), file=sys.stderr, flush=True)
            results.append(result)
    return results


def _header(options: Options, roomcache: Roomcache, startup_seconds: float) -> list[str]:
    import synapse

    rss = _rss_mib(roomcache.pid)
    return [
        f"# scripts/bench synapse, {time.strftime('%Y-%m-%d %H:%M')}",
        f"Synapse {synapse.__version__}, one process (the module's side and Synapse's side "
        "in the same process, interleaved request by request); roomcache "
        f"{roomcache_binary()}; Python {platform.python_version()}",
        f"users in {', '.join(f'{size:,}' for size in options.sizes)} rooms; "
        f"{options.requests} measured requests per case, size and side "
        f"({options.warmup} rounds of warm-up); Element X: "
        f"{options.element_x.warmup_sequences} + {options.element_x.sequences} loading "
        f"sequences (the list growing by {options.element_x.batch}), then "
        f"{options.element_x.requests} steady requests per stage, size and side",
        f"roomcache: started (import + catch-up) in {startup_seconds:.1f} s, RSS {rss}",
        f"load average at start: {Path('/proc/loadavg').read_text().strip()}",
    ]


def _report(
    options: Options,
    results: list[CaseResult],
    element_x: list[ElementXResult],
    errors: list[str],
) -> list[str]:
    lines = _simple_report(options, results)
    for result in element_x:
        lines += element_x_report.section(result, options.sizes)
    lines += ["", "## Goals", "", *report.goals(main_results(results), options.sizes)]
    lines += [*element_x_report.goals(element_x, options.sizes), ""]
    lines.append(f"errors in Synapse's log during the run: {len(errors)}")
    lines += [f"  {line}" for line in errors[:10]]
    return lines


def main_results(results: list[CaseResult]) -> list[CaseResult]:
    return [result for result in results if not result.sequential_rooms]


def _simple_report(options: Options, results: list[CaseResult]) -> list[str]:
    if not results:
        return []
    lines = ["", "## Whole request (client) and room-list part (the seam), ms, p50 / p99", ""]
    lines += report.summary_table(main_results(results), options.sizes)
    titles = {case.name: case.title for case in CASES}
    for result in results:
        how = ", rooms one at a time (attribution)" if result.sequential_rooms else ""
        lines += ["", f"## Phases: {titles[result.name]}{how}", ""]
        lines += report.phase_table(result, options.sizes)
        lines += ["", *report.database_table(result, options.sizes)]
        counts = ", ".join(
            f"{key}: {value:.0f}" for key, value in sorted(result.module_counts.items())
        )
        lines += [
            "",
            f"module's counters over the case: {counts}",
            f"load average: {result.load_before} before, {result.load_after} after",
        ]
    return lines


def _log_size(homeserver: Homeserver) -> int:
    path = homeserver.log_path()
    return path.stat().st_size if path.exists() else 0


def _log_errors(homeserver: Homeserver, offset: int) -> list[str]:
    path = homeserver.log_path()
    with path.open("rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    return [line for line in text.splitlines() if " ERROR " in line or " CRITICAL " in line]


def _rss_mib(pid: int | None) -> str:
    if pid is None:
        return "unknown"
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return f"{int(line.split()[1]) / 1024:.0f} MiB"
    except OSError:
        pass
    return "unknown"


def main(arguments: Sequence[str]) -> int:
    try:
        outcome = run(parse(arguments))
    except DatasetMismatch as mismatch:
        print(f"scripts/bench synapse: {mismatch}", file=sys.stderr)
        return 2
    different = any(result.differences for result in outcome.element_x)
    return 1 if outcome.synapse_errors or different else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
