"""roomcache in source mode beside a test homeserver: its own database on the
homeserver's Postgres cluster, following Synapse's database read-only.

    with Roomcache(directory, homeserver, binary) as roomcache:
        roomcache.wait_until_caught_up()

The binary is `ROOMCACHE_BIN` when set (scripts/test.d/synapse builds it and
sets it), else the debug build, brought up to date with `cargo build`.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg2

from .harness import REPOSITORY, Homeserver

DATABASE = "roomcache"


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

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("roomcache", timeout=timeout)
        self._path = path

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
        self._process: subprocess.Popen[bytes] | None = None

    # --- process ------------------------------------------------------------------

    def create_database(self) -> None:
        """A fresh database for roomcache's own tables, on the homeserver's cluster."""
        url = self.homeserver.database_url.rsplit("/", 1)[0] + "/postgres"
        connection = psycopg2.connect(url)
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
            cursor.execute(f"CREATE DATABASE {DATABASE}")
        connection.close()

    def start(self) -> None:
        """Starts roomcache (importing on its first start) and waits until it
        answers on its socket."""
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "empty.toml").write_text("")
        database = self.homeserver.database_url.rsplit("/", 1)[0] + f"/{DATABASE}"
        arguments = [
            str(roomcache_binary()),
            "serve",
            "--config",
            str(self.directory / "empty.toml"),
            "--server-name",
            self.homeserver.server_name,
            "--socket-path",
            str(self.socket_path),
            "--database-url",
            database,
            "--schema",
            "roomcache",
            "--writers",
            ",".join(self.writers),
            "--source-database-url",
            self.homeserver.database_url,
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
