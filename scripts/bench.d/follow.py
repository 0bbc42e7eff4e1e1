"""The follow lag: from the moment Synapse answers a client's `PUT .../send/...`
until roomcache serves a read at (or past) that event's position, for a roomcache
following Synapse's replication stream over Redis and another one polling only,
side by side, on one Synapse with two event persisters.

Run by `scripts/bench follow` (release build, var/synapse-venv). Knobs:
FOLLOW_EVENTS (600), FOLLOW_ROOMS (8), ROOMCACHE_BENCH_FOLLOW_PORT_BASE (25480: six
ports from it).
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import psycopg2

REPOSITORY = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPOSITORY / "integrations" / "synapse"))

from tests.harness import Homeserver  # noqa: E402
from tests.follower import Roomcache  # noqa: E402


def lag_of(cache: Roomcache, room_id: str, token: str, sent: float) -> float:
    """Seconds from `sent` until `cache` answers a read of `room_id` at `token`."""
    path = f"/v1/rooms/{quote(room_id, safe='')}?wait_for={token}&timeout_ms=30000"
    answer = cache.get(path, timeout=60)
    done = time.monotonic()
    if answer.get("timed_out"):
        raise RuntimeError(f"{cache.schema} did not reach {token}: {answer}")
    return done - sent


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def report(name: str, lags: list[float]) -> str:
    ms = [lag * 1000 for lag in lags]
    return (
        f"{name:<14} p50 {percentile(ms, 0.5):7.1f} ms   p99 {percentile(ms, 0.99):7.1f} ms"
        f"   max {max(ms):7.1f} ms   mean {statistics.fmean(ms):7.1f} ms   ({len(ms)} events)"
    )


def main() -> None:
    binary = Path(sys.argv[1])
    events = int(os.environ.get("FOLLOW_EVENTS", "600"))
    room_count = int(os.environ.get("FOLLOW_ROOMS", "8"))
    base = int(os.environ.get("ROOMCACHE_BENCH_FOLLOW_PORT_BASE", "25480"))
    directory = REPOSITORY / "var" / "bench-follow"
    print(f"load before: {Path('/proc/loadavg').read_text().strip()}")
    with Homeserver(
        directory, pg_port=base, http_port=base + 1, workers=True, redis_port=base + 5
    ) as homeserver:
        alice = homeserver.register("bench_alice")
        bob = homeserver.register("bench_bob")
        rooms = [alice.create_room(preset="public_chat") for _ in range(room_count)]
        for room_id in rooms:
            bob.join(room_id)
        caches = {
            "redis": Roomcache(binary, directory / "redis", homeserver, schema="bench_redis"),
            "polling only": Roomcache(
                binary, directory / "polling", homeserver, schema="bench_polling", redis=False
            ),
        }
        for cache in caches.values():
            cache.start()
        try:
            database = psycopg2.connect(homeserver.database_url)
            database.autocommit = True
            lags: dict[str, list[float]] = {name: [] for name in caches}
            writers: dict[str, int] = {}
            rng = random.Random(7)
            with ThreadPoolExecutor(max_workers=len(caches)) as pool:
                for number in range(events):
                    room_id = rng.choice(rooms)
                    event_id = rng.choice((alice, bob)).send_message(room_id, f"lag {number}")
                    sent = time.monotonic()
                    with database.cursor() as cursor:
                        cursor.execute(
                            "SELECT stream_ordering, instance_name FROM events WHERE event_id = %s",
                            (event_id,),
                        )
                        position, writer = cursor.fetchone()
                    writers[writer] = writers.get(writer, 0) + 1
                    token = f"m0~{writer}.{position}"
                    futures = {
                        name: pool.submit(lag_of, cache, room_id, token, sent)
                        for name, cache in caches.items()
                    }
                    for name, future in futures.items():
                        lags[name].append(future.result())
            database.close()
        finally:
            for cache in caches.values():
                cache.stop()
    print(f"load after:  {Path('/proc/loadavg').read_text().strip()}")
    print(f"events by writer: {writers}; rooms: {room_count}")
    print("lag from Synapse's answer to the send until roomcache serves a read at its position:")
    for name, values in lags.items():
        print(report(name, values))
    slowest = sorted(range(events), key=lambda n: lags["redis"][n])[-5:]
    print(
        "slowest with redis (event number: ms):",
        {n: round(lags["redis"][n] * 1000, 1) for n in slowest},
    )


if __name__ == "__main__":
    main()
