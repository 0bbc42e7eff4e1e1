"""A real Synapse for tests, started and stopped through `scripts/synapse`.

    with Homeserver(directory, pg_port=..., http_port=...) as homeserver:
        alice = homeserver.register("alice")
        room_id = alice.create_room(preset="private_chat")

`scripts/synapse start` writes `harness.json` in the directory: the client URL,
the database URL and the registration secret are read from there.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import subprocess
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg2

from .client import Client, http_json

REPOSITORY = Path(__file__).resolve().parents[3]
SCRIPT = REPOSITORY / "scripts" / "synapse"


class Homeserver:
    """A homeserver in `directory`: one process, or main + event persisters p1, p2
    (`workers=True`, which needs a `redis_port`). With workers, main's replication
    listener is on `http_port + 1` and p1, p2 on `http_port + 2`, `+ 3`."""

    def __init__(
        self,
        directory: Path,
        *,
        pg_port: int,
        http_port: int,
        workers: bool = False,
        redis_port: int | None = None,
        extra_config: Sequence[Path] = (),
        metrics: bool = False,
        keep_data: bool = False,
    ) -> None:
        self.directory = directory
        self.workers = workers
        self.redis_port = redis_port
        self._start_arguments = ["--pg-port", str(pg_port), "--http-port", str(http_port)]
        if workers:
            self._start_arguments.append("--workers")
        if redis_port is not None:
            self._start_arguments += ["--redis-port", str(redis_port)]
        for path in extra_config:
            self._start_arguments += ["--extra-config", str(path)]
        if metrics:
            self._start_arguments.append("--metrics")
        if keep_data:  # the database of a previous start, as it is
            self._start_arguments.append("--keep-data")
        self.pg_port = pg_port
        self._info: dict[str, Any] | None = None

    # --- processes ----------------------------------------------------------------

    def start(self) -> None:
        """Starts everything on a fresh database (unless `keep_data`); returns
        once every process is healthy and Synapse's background updates are done."""
        _run_script("start", str(self.directory), *self._start_arguments)
        self._info = json.loads((self.directory / "harness.json").read_text())

    def stop(self) -> None:
        _run_script("stop", str(self.directory))

    def stop_process(self, name: str) -> None:
        """Stops one Synapse process (`main`, `p1` or `p2`)."""
        _run_script("process", "stop", str(self.directory), name)

    def start_process(self, name: str) -> None:
        _run_script("process", "start", str(self.directory), name)

    def __enter__(self) -> Homeserver:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    # --- what it serves -----------------------------------------------------------

    @property
    def info(self) -> dict[str, Any]:
        if self._info is None:
            raise RuntimeError("the homeserver has not been started")
        return self._info

    @property
    def server_name(self) -> str:
        return self.info["server_name"]

    @property
    def client_url(self) -> str:
        return self.info["client_url"]

    @property
    def database_url(self) -> str:
        return self.info["database_url"]

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Main's Prometheus samples (needs `metrics=True`): (name, sorted
        labels) → value."""
        request = urllib.request.Request(f"{self.client_url}/_synapse/metrics")
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
        return parse_prometheus(text)

    def pid(self, process: str = "main") -> int:
        """The process id of one Synapse process (`main`, `p1`, `p2`)."""
        return int((self.directory / "run" / f"{process}.pid").read_text())

    def rss_bytes(self, process: str = "main") -> int:
        """One Synapse process's resident memory."""
        status = Path(f"/proc/{self.pid(process)}/status").read_text()
        kilobytes = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
        return int(kilobytes.split()[1]) * 1024

    def log_path(self, process: str = "main") -> Path:
        return Path(self.info["logs"]) / f"{process}.log"

    def register(self, localpart: str, *, admin: bool = False, password: str = "pw") -> Client:
        """Registers a user through the shared-secret admin API; returns its client."""
        url = f"{self.client_url}/_synapse/admin/v1/register"
        nonce = http_json("GET", url)["nonce"]
        role = b"admin" if admin else b"notadmin"
        message = b"\x00".join([nonce.encode(), localpart.encode(), password.encode(), role])
        secret = self.info["registration_shared_secret"].encode()
        body = {
            "nonce": nonce,
            "username": localpart,
            "password": password,
            "admin": admin,
            "mac": hmac.new(secret, message, hashlib.sha1).hexdigest(),
        }
        answer = http_json("POST", url, body)
        return Client(self.client_url, answer["user_id"], answer["access_token"])

    def query(self, sql: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Runs one SQL statement on Synapse's database and returns its rows."""
        with psycopg2.connect(self.database_url) as connection, connection.cursor() as cursor:
            cursor.execute(sql, tuple(parameters))
            rows = cursor.fetchall() if cursor.description is not None else []
        connection.close()
        return rows


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples of Prometheus' text format: (name, sorted labels) → value."""
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or line.startswith("#"):
            continue
        name, labels, value = match.groups()
        pairs = tuple(sorted(_LABEL.findall(labels or "")))
        samples[(name, pairs)] = float(value)
    return samples


def _run_script(*arguments: str) -> None:
    """Runs scripts/synapse; its output goes to the test's output, and a failure
    raises with the command line."""
    subprocess.run([str(SCRIPT), *arguments], check=True, stdin=subprocess.DEVNULL)
