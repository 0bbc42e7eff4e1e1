"""A hostile or buggy neighbour on Synapse's Redis, against a real Synapse with two
event persisters (p1, p2): a roomcache following over Redis and one polling only
hold exactly Synapse's live sliding-sync tables (all columns) after each kind of
hostile line followed by real traffic, and neither ever takes a position Synapse
has not allocated (`events_stream_seq`):

* an `RDATA` whose row Synapse's own processes refuse, at a position far ahead;
* lines of writers and processes that do not exist;
* five 10 MB lines and a flood of 100,000 junk lines: roomcache's RSS and idle CPU
  are measured before and after (printed; RSS bounded generously);
* a roomcache whose stored positions were set far ahead (as an older roomcache
  left them) repairs itself at start-up, without a re-import;
* `POSITION events p9 1 9999999999`, which Synapse's persisters adopt and write
  into `stream_positions` (so it comes last: the homeserver stays poisoned).

The homeserver is this module's own (ports: base + 18 to base + 23); the tests
run in order, each continuing where the previous one left it."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from .conftest import PORT_BASE, TEST_DIRECTORY
from .follower import Roomcache, assert_same_tables, build_roomcache
from .harness import Homeserver
from .redis_wire import RedisConnection, encode_command
from .scenes import Cast, chatter, named_chat, play, scenes

FAR = 9_999_999_999
WRITERS = ("p1", "p2")
# A row Synapse's processes refuse (EventsStream.parse_row fails): they drop the line.
BAD_ROW = '["not", "a row"]'


@pytest.fixture(scope="module")
def homeserver() -> Iterator[Homeserver]:
    with Homeserver(
        TEST_DIRECTORY / "hostile",
        pg_port=PORT_BASE + 18,
        http_port=PORT_BASE + 19,
        workers=True,
        redis_port=PORT_BASE + 23,
    ) as homeserver:
        yield homeserver


@pytest.fixture(scope="module")
def binary() -> Path:
    return build_roomcache()


@pytest.fixture(scope="module")
def cast(homeserver: Homeserver) -> Cast:
    return Cast.register(homeserver, "hostile")


@pytest.fixture(scope="module")
def redis_follower(homeserver: Homeserver, binary: Path) -> Iterator[Roomcache]:
    directory = homeserver.directory / "roomcache-redis"
    with Roomcache(binary, directory, homeserver, schema="hostile_redis") as cache:
        yield cache


@pytest.fixture(scope="module")
def polling_follower(homeserver: Homeserver, binary: Path) -> Iterator[Roomcache]:
    directory = homeserver.directory / "roomcache-polling"
    with Roomcache(binary, directory, homeserver, schema="hostile_polling", redis=False) as cache:
        yield cache


def allocated(homeserver: Homeserver) -> int:
    """The highest position Synapse has handed out on the events stream."""
    (last_value, is_called), *_ = homeserver.query(
        "SELECT last_value, is_called FROM events_stream_seq"
    )
    return last_value if is_called else last_value - 1


def publish(homeserver: Homeserver, *lines: str) -> None:
    with RedisConnection(homeserver.redis_port or 0) as redis:
        for line in lines:
            redis.command("PUBLISH", homeserver.server_name, line)


def traffic_and_check(homeserver: Homeserver, cast: Cast, seed: int, *caches: Roomcache) -> None:
    """Real traffic on both persisters, then every roomcache equals Synapse and no
    writer of it is past what Synapse allocated."""
    play(cast, scenes(named_chat, chatter), seed=seed)
    for cache in caches:
        assert_same_tables(homeserver, cache)
        ceiling = allocated(homeserver)
        positions = cache.status()["positions"]
        assert all(positions[writer] <= ceiling for writer in WRITERS), (positions, ceiling)


def rejected(cache: Roomcache) -> dict[tuple[str, str], float]:
    """roomcache_source_rejected_positions_total by (stream, reason)."""
    counts = {}
    for (name, labels), value in cache.samples().items():
        if name == "roomcache_source_rejected_positions_total":
            label = dict(labels)
            counts[(label["stream"], label["reason"])] = value
    return counts


def test_an_unparsable_row_and_unknown_writers_move_nothing(
    homeserver: Homeserver, cast: Cast, redis_follower: Roomcache, polling_follower: Roomcache
) -> None:
    traffic_and_check(homeserver, cast, 1, redis_follower, polling_follower)
    before = rejected(redis_follower)
    publish(
        homeserver,
        f"RDATA events p2 {FAR} {BAD_ROW}",
        f"RDATA events p9 {FAR} {BAD_ROW}",
        f"RDATA caches nobody {FAR} {BAD_ROW}",
    )

    def refused_since() -> dict[tuple[str, str], float]:
        after = rejected(redis_follower)
        return {key: value - before.get(key, 0) for key, value in after.items()}

    deadline = time.monotonic() + 30
    while refused_since().get(("events", "bad_row")) != 1:
        assert time.monotonic() < deadline, refused_since()
        time.sleep(0.05)
    counts = refused_since()
    assert counts.get(("events", "unknown_writer")) == 1, counts
    assert counts.get(("caches", "unknown_writer")) == 1, counts
    traffic_and_check(homeserver, cast, 2, redis_follower, polling_follower)
    # Synapse's own processes were never refused (nothing else was counted).
    assert sum(refused_since().values()) == 3, refused_since()


class Usage:
    """A process's resident memory and CPU time, from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def idle_cpu(self, seconds: float = 10) -> float:
        """CPU seconds used over `seconds` of wall time."""
        before = self.cpu_seconds()
        time.sleep(seconds)
        return self.cpu_seconds() - before


def flood(homeserver: Homeserver, lines: int) -> None:
    """`lines` junk lines of a stream roomcache does not follow, each of a process
    of its own, pipelined. (Synapse's processes drop each with one log line: a
    stream they do not know.)"""
    channel = homeserver.server_name
    commands = b"".join(
        encode_command("PUBLISH", channel, f"RDATA junk process{n} {n + 2} []")
        for n in range(lines)
    )
    with RedisConnection(homeserver.redis_port or 0) as redis:
        redis.send_encoded(commands)
        for _ in range(lines):
            redis.read_reply(timeout=120)


def test_huge_lines_and_a_flood_leave_memory_and_idle_cpu_where_they_were(
    homeserver: Homeserver, cast: Cast, redis_follower: Roomcache, polling_follower: Roomcache
) -> None:
    assert redis_follower.process is not None
    usage = Usage(redis_follower.process.pid)
    rss_before = usage.rss_mb()
    cpu_before = usage.idle_cpu()
    sessions_before = redis_follower.metric("roomcache_source_redis_disconnects_total") or 0
    huge = "x" * (10 * 1024 * 1024)
    for n in range(5):
        publish(homeserver, f"RDATA junk {huge}{n} 2 []")
        time.sleep(0.5)
    started = time.monotonic()
    flood(homeserver, 100_000)
    flooded_in = time.monotonic() - started
    # The subscription starts again at once after the first big line, and once
    # more (at most one restart every 10 s) for the others, freeing the buffers
    # they grew.
    deadline = time.monotonic() + 180
    while (redis_follower.metric("roomcache_source_redis_disconnects_total") or 0) < (
        sessions_before + 2
    ):
        assert time.monotonic() < deadline, "the subscription did not start again"
        time.sleep(0.5)
    time.sleep(2)
    cpu_after = usage.idle_cpu()
    rss_after = usage.rss_mb()
    lines = {
        dict(labels)["kind"]: value
        for (name, labels), value in redis_follower.samples().items()
        if name == "roomcache_source_redis_lines_total"
    }
    print(
        f"\nroomcache (debug build) RSS {rss_before:.1f} MB -> {rss_after:.1f} MB;"
        f" idle CPU {cpu_before:.2f} s -> {cpu_after:.2f} s per 10 s;"
        f" 100,000 lines published in {flooded_in:.1f} s; lines by kind {lines}"
    )
    # Before the bound, these lines cost +130-230 MB, kept for good.
    assert rss_after < rss_before + 30, (rss_before, rss_after)
    # Measured, not timed: only a gross change fails (before, 0.04 -> 1.98 s).
    assert cpu_after < cpu_before + 1.0, (cpu_before, cpu_after)
    assert lines.get("oversized") == 5, lines
    traffic_and_check(homeserver, cast, 3, redis_follower, polling_follower)


def set_stored_positions(cache: Roomcache, position: int) -> None:
    """roomcache's stored events positions, moved behind its back (as an older
    roomcache that believed a bogus announcement left them)."""
    with psycopg2.connect(cache.database_url) as connection, connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {cache.schema}.stream_positions SET stream_id = %s"
            " WHERE stream_name = 'events'",
            [position],
        )
    connection.close()


def test_positions_stored_far_ahead_are_repaired_at_start_up(
    homeserver: Homeserver, cast: Cast, redis_follower: Roomcache, polling_follower: Roomcache
) -> None:
    polling_follower.stop()
    set_stored_positions(polling_follower, FAR)
    # Rows roomcache must not skip, written while it is down.
    play(cast, scenes(named_chat, chatter), seed=4)
    polling_follower.start()
    assert "a writer's position is ahead of what Synapse has allocated" in polling_follower.log()
    traffic_and_check(homeserver, cast, 5, redis_follower, polling_follower)


def test_a_position_synapse_adopts_for_a_writer_that_does_not_exist(
    homeserver: Homeserver, cast: Cast, redis_follower: Roomcache, polling_follower: Roomcache
) -> None:
    publish(homeserver, f"POSITION events p9 1 {FAR}")
    # Synapse's persisters adopt it and write it into stream_positions with
    # their next events.
    traffic_and_check(homeserver, cast, 6, redis_follower, polling_follower)
    deadline = time.monotonic() + 60
    query = "SELECT count(*) FROM stream_positions WHERE stream_name = 'events' AND stream_id = %s"
    while homeserver.query(query, [FAR])[0][0] == 0:
        assert time.monotonic() < deadline, "Synapse did not write the position"
        play(cast, scenes(chatter), seed=7)
    traffic_and_check(homeserver, cast, 8, redis_follower, polling_follower)
    # Nothing walks toward it either: the positions stay within the sequence.
    time.sleep(3)
    ceiling = allocated(homeserver)
    for cache in (redis_follower, polling_follower):
        positions = cache.status()["positions"]
        assert all(positions[writer] <= ceiling for writer in WRITERS), positions
        assert rejected(cache).get(("events", "stored_beyond_allocated"), 0) >= 1
