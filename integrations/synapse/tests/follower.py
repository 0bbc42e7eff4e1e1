"""roomcache as a real process beside a test homeserver: built with cargo, run in
source mode on the homeserver's Postgres (its own database `roomcache`, one
schema per process, as the roles docs/synapse.md creates), asked over its Unix
socket, stopped or killed by its process id; its tables read from Postgres and
compared with Synapse's live sliding-sync tables.

    binary = build_roomcache()
    with Roomcache(binary, directory, homeserver, schema="follow") as cache:
        cache.wait_until_caught_up(homeserver)
        assert_same_tables(homeserver, cache)
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg2

from .harness import REPOSITORY, Homeserver, parse_prometheus
from .roomcache import UnixConnection, documented_roles

JOINED_COLUMNS = (
    "room_id, event_stream_ordering, bump_stamp, room_type, room_name, is_encrypted,"
    " tombstone_successor_room_id"
)
SNAPSHOT_COLUMNS = (
    "room_id, user_id, sender, membership_event_id, membership, forgotten,"
    " event_stream_ordering, event_instance_name, has_known_state, room_type, room_name,"
    " is_encrypted, tombstone_successor_room_id"
)

Tables = dict[str, dict[tuple[str, ...], tuple[Any, ...]]]


def build_roomcache(profile: str = "debug") -> Path:
    """The roomcache binary: `ROOMCACHE_BIN` for the debug build when set
    (scripts/test.d/synapse builds it), else built here (nothing to do when it
    is current); returns its path."""
    configured = os.environ.get("ROOMCACHE_BIN")
    if configured and profile == "debug":
        return Path(configured)
    arguments = ["cargo", "build", "--locked", "--quiet", "--bin", "roomcache"]
    if profile == "release":
        arguments.append("--release")
    subprocess.run(arguments, cwd=REPOSITORY, check=True, stdin=subprocess.DEVNULL)
    return REPOSITORY / "target" / profile / "roomcache"


def drop_schema(database_url: str, schema: str) -> None:
    """Drops a schema of roomcache's database (left by an earlier session)."""
    with psycopg2.connect(database_url) as connection, connection.cursor() as cursor:
        cursor.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    connection.close()


class Roomcache:
    """`roomcache serve` in source mode beside `homeserver`, files in `directory`,
    its tables in a fresh `schema`. `redis=True` follows the homeserver's Redis;
    `extra` adds command-line flags."""

    def __init__(
        self,
        binary: Path,
        directory: Path,
        homeserver: Homeserver,
        *,
        schema: str,
        writers: Sequence[str] = ("p1", "p2"),
        redis: bool = True,
        extra: Sequence[str] = (),
    ) -> None:
        self.binary = binary
        self.directory = directory
        self.homeserver = homeserver
        self.schema = schema
        self.socket = directory / "roomcache.sock"
        self.log_path = directory / "roomcache.log"
        # The roles and database docs/synapse.md creates (tests/roomcache.py).
        roles = documented_roles(homeserver)
        self.database_url = roles.database_url
        drop_schema(self.database_url, schema)
        self.arguments = [
            "serve",
            "--config",
            "/dev/null",
            "--server-name",
            homeserver.server_name,
            "--database-url",
            self.database_url,
            "--schema",
            schema,
            "--socket-path",
            str(self.socket),
            "--writers",
            ",".join(writers),
            "--source-database-url",
            roles.source_url,
            *extra,
        ]
        if redis:
            self.arguments += ["--source-redis-url", f"redis://127.0.0.1:{homeserver.redis_port}/"]
        self.process: subprocess.Popen[bytes] | None = None

    # --- the process ------------------------------------------------------------

    def start(self, timeout: float = 120) -> None:
        """Starts the process and waits until it answers /health."""
        self.directory.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        environment = {**os.environ, "ROOMCACHE_LOG_LEVEL": "info", "NO_COLOR": "1"}
        self.process = subprocess.Popen(
            [str(self.binary), *self.arguments],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
        )
        log.close()
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.kill()
            raise

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"roomcache exited ({self.process.returncode}):\n{self.log()}")
            try:
                if self.get("/health").get("status") == "ready":
                    return
            except (OSError, http.client.HTTPException, ValueError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"roomcache did not become ready:\n{self.log()}")

    def stop(self) -> None:
        """SIGTERM, then waits for the process to end."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL (a crash), then waits for the process to end."""
        self._end(signal.SIGKILL)

    def _end(self, signal_number: int) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal_number)
            self.process.wait(timeout=60)
        self.process = None

    def __enter__(self) -> Roomcache:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # --- the API ----------------------------------------------------------------

    def get(self, path: str, timeout: float = 30) -> dict[str, Any]:
        connection = UnixConnection(self.socket, timeout)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        return json.loads(body)

    def status(self) -> dict[str, Any]:
        return self.get("/v1/status")

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics: (name, sorted labels) -> value."""
        connection = UnixConnection(self.socket, 30)
        try:
            connection.request("GET", "/metrics")
            text = connection.getresponse().read().decode()
        finally:
            connection.close()
        return parse_prometheus(text)

    def metric(self, name: str) -> float | None:
        """The value of an unlabelled metric of /metrics (None when absent)."""
        return self.samples().get((name, ()))

    def wait_until_caught_up(self, timeout: float = 120) -> dict[str, Any]:
        """Waits until every writer's position covers the homeserver's rows of that
        writer (events, de-outliered events, state deltas) and no room is queued;
        returns the status."""
        wanted = synapse_writer_positions(self.homeserver)
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.status()
            positions = status["positions"]
            if status["recalculation_queue"] == 0 and all(
                positions.get(writer, 0) >= position for writer, position in wanted.items()
            ):
                return status
            time.sleep(0.02)
        raise TimeoutError(f"not caught up with {wanted}: {status}\n{self.log()[-5000:]}")

    # --- the tables -------------------------------------------------------------

    def tables(self) -> Tables:
        with psycopg2.connect(self.database_url) as connection:
            tables = read_tables(connection, f"{self.schema}.")
        connection.close()
        return tables


def synapse_writer_positions(homeserver: Homeserver) -> dict[str, int]:
    """Each writer's highest position in use in the homeserver's events stream."""
    rows = homeserver.query(
        "SELECT w, MAX(p) FROM ("
        " SELECT COALESCE(instance_name, 'master') AS w, stream_ordering AS p FROM events"
        "  WHERE stream_ordering > 0"
        " UNION ALL SELECT COALESCE(instance_name, 'master'), event_stream_ordering"
        "  FROM ex_outlier_stream"
        " UNION ALL SELECT COALESCE(instance_name, 'master'), stream_id"
        "  FROM current_state_delta_stream) t GROUP BY w"
    )
    return {writer: position for writer, position in rows}


def read_tables(connection: Any, prefix: str = "") -> Tables:
    """Both sliding-sync tables, all columns, keyed by their primary keys."""
    tables: Tables = {}
    with connection.cursor() as cursor:
        for table, columns, key_length in (
            ("sliding_sync_joined_rooms", JOINED_COLUMNS, 1),
            ("sliding_sync_membership_snapshots", SNAPSHOT_COLUMNS, 2),
        ):
            cursor.execute(f"SELECT {columns} FROM {prefix}{table}")
            tables[table] = {tuple(row[:key_length]): tuple(row) for row in cursor.fetchall()}
    return tables


def synapse_tables(homeserver: Homeserver) -> Tables:
    with psycopg2.connect(homeserver.database_url) as connection:
        tables = read_tables(connection)
    connection.close()
    return tables


def differences(ours: Tables, theirs: Tables) -> list[str]:
    """One line per row that differs (empty when the tables are equal)."""
    lines = []
    for table, rows in theirs.items():
        mine = ours.get(table, {})
        for key in sorted(set(rows) | set(mine)):
            if rows.get(key) != mine.get(key):
                lines.append(f"{table} {key}: roomcache {mine.get(key)} synapse {rows.get(key)}")
    return lines


def assert_same_tables(homeserver: Homeserver, cache: Roomcache, timeout: float = 30) -> Tables:
    """Waits until roomcache has caught up, then until its tables equal Synapse's
    live ones (forgets and purges follow within the same lag); fails with the
    differences. Returns the tables."""
    cache.wait_until_caught_up()
    deadline = time.monotonic() + timeout
    while True:
        theirs = synapse_tables(homeserver)
        lines = differences(cache.tables(), theirs)
        if not lines:
            return theirs
        if time.monotonic() > deadline:
            shown = "\n".join(lines[:40])
            raise AssertionError(f"{len(lines)} rows differ from Synapse's:\n{shown}")
        time.sleep(0.05)
