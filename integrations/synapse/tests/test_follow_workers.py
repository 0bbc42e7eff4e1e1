"""roomcache follows a Synapse with two event persisters (p1, p2) through its
replication stream over Redis, and another roomcache follows the same Synapse by
polling only: at every checkpoint both hold exactly Synapse's live sliding-sync
tables (all columns, both `event_instance_name`s), through a concurrent client
workload, a forget, an idle persister, Redis stopped and started, roomcache
SIGKILLed and restarted, and a persister restarted while the other writes.

The tests share one homeserver (the session's `workers`) and run in order: each
continues where the previous one left the homeserver and both roomcaches."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .client import Client
from .follower import Roomcache, assert_same_tables, build_roomcache, synapse_writer_positions
from .harness import SCRIPT, Homeserver
from .scenes import Cast, all_scenes, chatter, named_chat, play, scenes


@pytest.fixture(scope="module")
def binary() -> Path:
    return build_roomcache()


@pytest.fixture(scope="module")
def cast(workers: Homeserver) -> Cast:
    return Cast.register(workers, "follow")


@pytest.fixture(scope="module")
def redis_follower(workers: Homeserver, binary: Path) -> Iterator[Roomcache]:
    directory = workers.directory / "roomcache-redis"
    with Roomcache(binary, directory, workers, schema="follow_redis") as cache:
        yield cache


@pytest.fixture(scope="module")
def polling_follower(workers: Homeserver, binary: Path) -> Iterator[Roomcache]:
    directory = workers.directory / "roomcache-polling"
    with Roomcache(binary, directory, workers, schema="follow_polling", redis=False) as cache:
        yield cache


def assert_both_match(workers: Homeserver, *caches: Roomcache) -> None:
    for cache in caches:
        assert_same_tables(workers, cache)


def room_on(workers: Homeserver, owner: Client, writer: str) -> str:
    """A new room of `owner`'s that Synapse persists on `writer`."""
    for _ in range(40):
        room_id = owner.create_room(preset="public_chat")
        rows = workers.query(
            "SELECT DISTINCT instance_name FROM events WHERE room_id = %s", [room_id]
        )
        if rows == [(writer,)]:
            return room_id
    raise AssertionError(f"no room landed on {writer} in 40 tries")


def test_a_concurrent_workload_on_both_persisters_matches_synapse(
    workers: Homeserver, cast: Cast, redis_follower: Roomcache, polling_follower: Roomcache
) -> None:
    played = play(cast, all_scenes(), seed=1)
    assert_both_match(workers, redis_follower, polling_follower)
    writers = {
        row[0]
        for row in workers.query(
            "SELECT DISTINCT event_instance_name FROM sliding_sync_membership_snapshots"
            " WHERE room_id = ANY(%s)",
            [played.all_rooms()],
        )
    }
    assert writers == {"p1", "p2"}
    # A second round while both keep following.
    play(cast, all_scenes(), seed=2)
    assert_both_match(workers, redis_follower, polling_follower)
    assert redis_follower.metric("roomcache_source_redis_connected") == 1


def test_a_forget_is_applied_without_any_new_event(
    workers: Homeserver, cast: Cast, redis_follower: Roomcache, polling_follower: Roomcache
) -> None:
    alice, bob = cast.users[:2]
    room_id = alice.create_room(preset="public_chat")
    bob.join(room_id)
    bob.leave(room_id)
    assert_both_match(workers, redis_follower, polling_follower)
    positions = synapse_writer_positions(workers)
    bob.forget(room_id)
    for cache in (redis_follower, polling_follower):
        # Well within the full check's minute: the caches stream applied it.
        deadline = time.monotonic() + 10
        while not forgotten(cache, room_id, bob.user_id):
            assert time.monotonic() < deadline, f"{cache.schema}: the forget was not applied"
            time.sleep(0.01)
    assert synapse_writer_positions(workers) == positions, "an event was persisted meanwhile"
    assert_both_match(workers, redis_follower, polling_follower)


def forgotten(cache: Roomcache, room_id: str, user_id: str) -> bool:
    rows = cache.tables()["sliding_sync_membership_snapshots"]
    return rows[(room_id, user_id)][5] == 1


def test_an_idle_persister_does_not_stall_the_token(
    workers: Homeserver, cast: Cast, redis_follower: Roomcache, polling_follower: Roomcache
) -> None:
    alice = cast.users[0]
    room_id = room_on(workers, alice, "p1")
    assert_both_match(workers, redis_follower, polling_follower)
    idle_row = workers.query(
        "SELECT stream_id FROM stream_positions WHERE stream_name = 'events'"
        " AND instance_name = 'p2'"
    )
    streams: dict[str, list[int]] = {redis_follower.schema: [], polling_follower.schema: []}
    for _ in range(10):
        alice.send_message(room_id, "only p1 writes")
        last = synapse_writer_positions(workers)["p1"]
        for cache in (redis_follower, polling_follower):
            status = wait_for_stream(cache, last)
            streams[cache.schema].append(status["positions"]["p2"])
    # p2 persisted nothing (its row did not move), yet its position, and with
    # it the minimum over writers, followed every one of p1's events.
    assert (
        workers.query(
            "SELECT stream_id FROM stream_positions WHERE stream_name = 'events'"
            " AND instance_name = 'p2'"
        )
        == idle_row
    )
    for schema, positions in streams.items():
        assert len(positions) == 10, schema
        assert positions == sorted(set(positions)), f"{schema}: {positions}"


def wait_for_stream(cache: Roomcache, position: int, timeout: float = 10) -> dict:
    """Waits until the minimum over writers (the linear token) reaches `position`."""
    deadline = time.monotonic() + timeout
    while True:
        status = cache.status()
        if min(status["positions"].values()) >= position:
            return status
        assert time.monotonic() < deadline, f"{cache.schema} stalled below {position}: {status}"
        time.sleep(0.005)


def redis_script(workers: Homeserver, action: str) -> None:
    arguments = [str(SCRIPT), "redis", action, str(workers.directory / "redis")]
    if action == "start":
        arguments.append(str(workers.redis_port))
    subprocess.run(arguments, check=True, stdin=subprocess.DEVNULL)


def wait_for_metric(cache: Roomcache, name: str, value: float, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while cache.metric(name) != value:
        assert time.monotonic() < deadline, f"{name} never became {value}"
        time.sleep(0.05)


def test_redis_stopped_and_started_mid_run(
    workers: Homeserver, cast: Cast, redis_follower: Roomcache, polling_follower: Roomcache
) -> None:
    alice, bob = cast.users[:2]
    rooms = [room_on(workers, alice, "p1"), room_on(workers, alice, "p2")]
    for room_id in rooms:
        bob.join(room_id)
    assert_both_match(workers, redis_follower, polling_follower)
    redis_script(workers, "stop")
    try:
        wait_for_metric(redis_follower, "roomcache_source_redis_connected", 0)
        # Without Redis, Synapse persists events at once but answers its
        # clients only once Redis is back: the requests run in the background.
        requests = [
            *(
                Request(alice.send_message, room_id, f"during the outage {n}")
                for n in range(3)
                for room_id in rooms
            ),
            Request(alice.set_name, rooms[0], "renamed during the outage"),
            Request(bob.leave, rooms[1]),
        ]
        wait_until_persisted(workers, rooms, bob)
        assert_both_match(workers, redis_follower, polling_follower)
    finally:
        redis_script(workers, "start")
    for request in requests:
        request.join()
    wait_for_metric(redis_follower, "roomcache_source_redis_connected", 1)
    log = redis_follower.log()
    assert "unavailable; following by polling until it is back" in log
    assert "is back; following it again" in log
    play(cast, scenes(named_chat, chatter), seed=3)
    assert_both_match(workers, redis_follower, polling_follower)


class Request:
    """A client call running in a thread of its own."""

    def __init__(self, call: Callable[..., object], *arguments: object) -> None:
        self.failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(call, arguments), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[..., object], arguments: tuple[object, ...]) -> None:
        try:
            call(*arguments)
        except BaseException as error:  # reported by join
            self.failure = error

    def join(self, timeout: float = 120) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the request did not complete"
        assert self.failure is None, self.failure


def wait_until_persisted(workers: Homeserver, rooms: list[str], leaver: Client) -> None:
    """Until Synapse has persisted the outage's six messages, rename and leave."""
    deadline = time.monotonic() + 60
    while True:
        messages = workers.query(
            "SELECT count(*) FROM events e JOIN event_json j USING (event_id)"
            " WHERE e.room_id = ANY(%s) AND j.json LIKE '%%during the outage%%'"
            " AND e.type = 'm.room.message'",
            [rooms],
        )[0][0]
        renamed = workers.query(
            "SELECT count(*) FROM current_state_events c JOIN event_json j USING (event_id)"
            " WHERE c.room_id = %s AND c.type = 'm.room.name'"
            " AND j.json LIKE '%%renamed during the outage%%'",
            [rooms[0]],
        )[0][0]
        left = workers.query(
            "SELECT membership FROM local_current_membership WHERE room_id = %s AND user_id = %s",
            [rooms[1], leaver.user_id],
        )
        if (messages, renamed, left) == (6, 1, [("leave",)]):
            return
        assert time.monotonic() < deadline, f"not persisted: {messages}, {renamed}, {left}"
        time.sleep(0.1)


def test_roomcache_killed_mid_run_is_exact_after_restart(
    workers: Homeserver, cast: Cast, redis_follower: Roomcache, polling_follower: Roomcache
) -> None:
    done = threading.Event()
    failures: list[BaseException] = []

    def workload() -> None:
        try:
            play(cast, all_scenes(), seed=4)
        except BaseException as error:  # reported below
            failures.append(error)
        finally:
            done.set()

    thread = threading.Thread(target=workload)
    thread.start()
    time.sleep(1.5)
    assert not done.is_set(), "the workload ended before roomcache was killed"
    redis_follower.kill()
    polling_follower.kill()
    time.sleep(0.5)
    redis_follower.start()
    polling_follower.start()
    thread.join()
    assert failures == []
    assert_both_match(workers, redis_follower, polling_follower)
    assert re.search(r"start-up check: rooms changed", redis_follower.log())


def test_a_persister_restarted_while_the_other_writes(
    workers: Homeserver, cast: Cast, redis_follower: Roomcache, polling_follower: Roomcache
) -> None:
    alice = cast.users[0]
    busy = room_on(workers, alice, "p1")
    stop = threading.Event()
    sent: list[str] = []

    def keep_writing() -> None:
        while not stop.is_set():
            sent.append(alice.send_message(busy, "p1 keeps writing"))

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        workers.stop_process("p2")
        time.sleep(1)
        workers.start_process("p2")
        time.sleep(1)
    finally:
        stop.set()
        writer.join()
    assert len(sent) >= 10
    play(cast, scenes(named_chat, chatter), seed=5)
    assert_both_match(workers, redis_follower, polling_follower)
