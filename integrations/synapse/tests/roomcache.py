"""roomcache in source mode beside a test homeserver: its own database on the
homeserver's Postgres cluster, following Synapse's database read-only.

    with Roomcache(directory, homeserver, binary) as roomcache:
        roomcache.wait_until_caught_up()

roomcache connects as the roles docs/synapse.md (B.1) creates, made by
running the doc's SQL verbatim (`documented_roles`): its own role owning its
database, and the read-only role on Synapse's database, both logging in with
the doc's passwords (which need URL-encoding), so a grant missing from the
doc, or a wrong URL-encoding note, fails the tests.

The binary is `ROOMCACHE_BIN` when set (scripts/test.d/synapse builds it and
sets it), else the debug build, brought up to date with `cargo build`.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg2

from .harness import REPOSITORY, Homeserver

DATABASE = "roomcache"
SCHEMA = "roomcache"
DOCS = REPOSITORY / "docs" / "synapse.md"
OWN_ROLE = "roomcache"
READER_ROLE = "roomcache_reader"


def documented_sql(role: str) -> str:
    """The SQL block of docs/synapse.md that creates `role`, verbatim."""
    blocks = re.findall(r"```sql\n(.*?)```", DOCS.read_text(), re.DOTALL)
    found = [block for block in blocks if f"CREATE ROLE {role} LOGIN" in block]
    if len(found) != 1:
        raise AssertionError(f"docs/synapse.md has {len(found)} SQL blocks creating {role}")
    return found[0]


def run_statements(cursor: Any, sql: str) -> None:
    """Runs each statement of `sql` on its own (CREATE DATABASE refuses to run
    in the transaction a multi-statement query is)."""
    for statement in sql.split(";"):
        code = [line for line in statement.splitlines() if not line.strip().startswith("--")]
        if "".join(code).strip():
            cursor.execute(statement)


def documented_password(role: str) -> str:
    """The password docs/synapse.md gives `role`."""
    match = re.search(rf"CREATE ROLE {role} LOGIN PASSWORD '((?:[^']|'')*)'", documented_sql(role))
    if match is None:
        raise AssertionError(f"docs/synapse.md creates {role} without a password")
    return match.group(1).replace("''", "'")


def role_url(role: str, port: int, database: str) -> str:
    """A URL logging in as `role` with its documented password, URL-encoded."""
    password = quote(documented_password(role), safe="")
    return f"postgres://{role}:{password}@127.0.0.1:{port}/{database}"


@dataclass(frozen=True)
class Roles:
    """roomcache's URLs as the documented roles."""

    database_url: str
    source_url: str


# (cluster port, Synapse database's oid) whose roles this process has made.
_roles_made: set[tuple[int, int]] = set()

_HBA_LINES = (
    "# roomcache's documented roles log in with their passwords (tests/roomcache.py)\n"
    f"host all {OWN_ROLE} 127.0.0.1/32 scram-sha-256\n"
    f"host all {READER_ROLE} 127.0.0.1/32 scram-sha-256\n"
)


def documented_roles(homeserver: Homeserver) -> Roles:
    """Runs docs/synapse.md's SQL for roomcache's own role and database and for
    the read-only role, verbatim (once per Synapse database in this process:
    existing ones are dropped first), makes both log in by password, and
    returns roomcache's URLs as them."""
    base = homeserver.database_url.rsplit("/", 1)[0]
    port = homeserver.pg_port
    with psycopg2.connect(homeserver.database_url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT oid FROM pg_database WHERE datname = current_database()")
        row = cursor.fetchone()
    connection.close()
    key = (port, int(row[0]) if row else 0)
    if key not in _roles_made:
        _make_roles(base, homeserver.database_url)
        _require_passwords(homeserver)
        _roles_made.add(key)
    return Roles(
        database_url=role_url(OWN_ROLE, port, DATABASE),
        source_url=role_url(READER_ROLE, port, "synapse"),
    )


def _make_roles(base: str, synapse_url: str) -> None:
    admin = psycopg2.connect(f"{base}/postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute("SET client_min_messages = warning")
        cursor.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        _drop_role(cursor, OWN_ROLE)
        run_statements(cursor, documented_sql(OWN_ROLE))
    admin.close()
    synapse = psycopg2.connect(synapse_url)
    synapse.autocommit = True
    with synapse.cursor() as cursor:
        _drop_role(cursor, READER_ROLE)
        run_statements(cursor, documented_sql(READER_ROLE))
    synapse.close()


def _drop_role(cursor: Any, role: str) -> None:
    """Drops `role` (a previous session's) with its privileges in the
    connection's database and on shared objects."""
    cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
    if cursor.fetchone():
        cursor.execute(f"DROP OWNED BY {role}")
        cursor.execute(f"DROP ROLE {role}")


def _require_passwords(homeserver: Homeserver) -> None:
    """The cluster (trust for everyone, as scripts/pg makes it) asks both roles
    for their passwords over TCP."""
    hba = homeserver.directory / "postgres" / "data" / "pg_hba.conf"
    text = hba.read_text()
    if _HBA_LINES not in text:
        hba.write_text(_HBA_LINES + text)
        with psycopg2.connect(homeserver.database_url) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT pg_reload_conf()")
        connection.close()


def roomcache_binary() -> Path:
    """The roomcache binary the tests run."""
    configured = os.environ.get("ROOMCACHE_BIN")
    if configured:
        return Path(configured)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPOSITORY / "target"))
    subprocess.run(["cargo", "build", "--quiet", "--bin", "roomcache"], cwd=REPOSITORY, check=True)
    return target / "debug" / "roomcache"


class UnixConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a Unix socket."""

    def __init__(self, path: str | Path, timeout: float) -> None:
        super().__init__("roomcache", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class Roomcache:
    """One roomcache process following `homeserver`'s database."""

    def __init__(
        self,
        directory: Path,
        homeserver: Homeserver,
        *,
        writers: tuple[str, ...] = ("master",),
        poll_interval_ms: int | None = 20,
    ) -> None:
        """`poll_interval_ms`: source mode's poll interval (None: roomcache's
        default)."""
        self.directory = directory
        self.homeserver = homeserver
        self.writers = writers
        self.poll_interval_ms = poll_interval_ms
        self.socket_path = directory / "roomcache.sock"
        self.roles: Roles | None = None
        self._process: subprocess.Popen[bytes] | None = None

    # --- process ------------------------------------------------------------------

    def create_database(self) -> None:
        """The documented roles and roomcache's database (docs/synapse.md), with a
        fresh schema for roomcache's tables."""
        self.roles = documented_roles(self.homeserver)
        connection = psycopg2.connect(self.roles.database_url)
        with connection, connection.cursor() as cursor:
            cursor.execute("SET client_min_messages = warning")
            cursor.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        connection.close()

    def start(self) -> None:
        """Starts roomcache (importing on its first start) and waits until it
        answers on its socket."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.roles is None:
            self.roles = documented_roles(self.homeserver)
        arguments = [
            str(roomcache_binary()),
            "serve",
            "--config",
            "/dev/null",
            "--server-name",
            self.homeserver.server_name,
            "--socket-path",
            str(self.socket_path),
            "--database-url",
            self.roles.database_url,
            "--schema",
            SCHEMA,
            "--writers",
            ",".join(self.writers),
            "--source-database-url",
            self.roles.source_url,
            "--log-level",
            "info",
        ]
        if self.poll_interval_ms is not None:
            arguments += ["--source-poll-interval-ms", str(self.poll_interval_ms)]
        log = (self.directory / "roomcache.log").open("ab")
        environment = {k: v for k, v in os.environ.items() if not k.startswith("ROOMCACHE_")}
        self._process = subprocess.Popen(
            arguments,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=environment,
        )
        log.close()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"roomcache exited ({self.log_tail()})")
            try:
                if self.get("/health").get("status") == "ready":
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"roomcache did not become ready in 120 s ({self.log_tail()})")

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def stop(self) -> None:
        """SIGTERM, then waits for the process to end."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise RuntimeError("roomcache did not stop within 60 s of SIGTERM") from None

    def log_tail(self, lines: int = 20) -> str:
        path = self.directory / "roomcache.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Roomcache:
        self.create_database()
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    # --- API ----------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        connection = UnixConnection(str(self.socket_path), timeout=30)
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if data is not None else {}
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
        finally:
            connection.close()

    def get(self, path: str) -> Any:
        status, answer = self.request("GET", path)
        if status != 200:
            raise OSError(f"GET {path}: HTTP {status} {answer}")
        return answer

    def wait_until_caught_up(self, timeout: float = 60) -> None:
        """Waits until roomcache has followed Synapse's database to its current
        events position, recomputed every queued room, and read account data."""
        deadline = time.monotonic() + timeout
        status: Any = None
        while time.monotonic() < deadline:
            status = self.get("/v1/status")
            source = status.get("source") or {}
            if (
                status.get("recalculation_queue") == 0
                and source.get("position") is not None
                and _token_stream(status["token"]) >= source["position"]
            ):
                return
            time.sleep(0.05)
        raise RuntimeError(f"roomcache did not catch up in {timeout} s: {status}")


def _token_stream(token: str) -> int:
    """The minimum position of a token's text form (`s5`, `m5~p1.7`)."""
    return int(token[1:].split("~", 1)[0])
