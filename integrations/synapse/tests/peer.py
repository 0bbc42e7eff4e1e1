"""A misbehaving stand-in for roomcache: a small HTTP server on a real Unix
socket, between the module and the real roomcache.

    with MisbehavingPeer(path, roomcache_socket) as peer:
        peer.mode = "wrong_count"

Each request the module sends is passed to the real roomcache, and its
answer passed back, changed as `mode` says: honest (unchanged), values of
the right shape but the wrong type or range (room lists' answers), a state
key of a type roomcache does not hold (rooms' data answers), a token from
the far future,
an answer announcing 2 GB and streaming it as fast as the module reads,
or no answer at all (the request is read, and the connection held open
until the module gives up). The requests' bodies are kept (`requests`).
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .roomcache import UnixConnection

JsonDict = dict[str, Any]

HUGE_LENGTH = 2_000_000_000


def _entries(answer: JsonDict) -> list[JsonDict]:
    """Every room entry of an answer (ranges, settled, unsettled, rooms)."""
    found: list[JsonDict] = []
    for list_answer in answer.get("lists", {}).values():
        for range_answer in list_answer.get("ranges", []):
            found += range_answer["rooms"]
        found += list_answer.get("settled") or []
        found += list_answer.get("unsettled") or []
    found += (answer.get("rooms") or {}).values()
    return found


def _set_counts(answer: JsonDict) -> None:
    for list_answer in answer["lists"].values():
        list_answer["count"] = "many"


def _set_entries(key: str, value: Callable[[Any], Any]) -> Callable[[JsonDict], None]:
    def change(answer: JsonDict) -> None:
        for entry in _entries(answer):
            entry[key] = value(entry[key])

    return change


def _foreign_state_key(answer: JsonDict) -> None:
    for room in answer["rooms"].values():
        if "state" in room:
            room["state"].append(["m.room.member", "@someone:hs", "$member"])


_ROOM_LIST = "/v1/users/"
_ROOMS_DATA = "/v1/rooms/data"
# Answers of the right shape with wrong values (issue 18's examples), each
# for the answers of the path it names.
CHANGES: dict[str, tuple[str, Callable[[JsonDict], None]]] = {
    "wrong_count": (_ROOM_LIST, _set_counts),
    "wrong_membership": (_ROOM_LIST, _set_entries("membership", lambda _: "bogus")),
    "string_ordering": (_ROOM_LIST, _set_entries("event_stream_ordering", str)),
    "far_future_token": (_ROOM_LIST, lambda answer: answer.update(token="s9999999999")),
    "foreign_state_key": (_ROOMS_DATA, _foreign_state_key),
}
MODES = ("honest", "huge", "hang", *CHANGES)


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    peer: MisbehavingPeer


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        peer: MisbehavingPeer = self.server.peer  # type: ignore[attr-defined]
        connection: socket.socket = self.request
        reader = connection.makefile("rb")
        while True:
            request = _read_request(reader)
            if request is None:
                return
            path, body = request
            peer.requests.append(json.loads(body))
            mode = peer.mode
            if mode == "hang":
                peer.hung += 1
                while connection.recv(65536):  # until the module gives up
                    pass
                return
            if mode == "huge":
                peer.huge_bytes_sent = _stream_huge(connection)
                return
            status, answer = peer.forward(path, body)
            prefix, change = CHANGES.get(mode, ("", None))
            if change is not None and status == 200 and path.startswith(prefix):
                change(answer)
            data = json.dumps(answer).encode()
            head = (
                f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
                f"content-length: {len(data)}\r\n\r\n"
            ).encode()
            connection.sendall(head + data)


def _read_request(reader: Any) -> tuple[str, bytes] | None:
    """One request (path, body) from the connection, or None at its end."""
    line = reader.readline()
    if not line:
        return None
    path = line.decode("latin-1").split(" ")[1]
    length = 0
    while True:
        header = reader.readline()
        if header in (b"\r\n", b""):
            break
        name, _, value = header.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return path, reader.read(length)


def _stream_huge(connection: socket.socket) -> int:
    """Announces 2 GB and sends as fast as the other side takes it, until
    it closes; returns the bytes it took."""
    sent = 0
    chunk = b" " * 65536
    try:
        connection.sendall(
            f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            f"content-length: {HUGE_LENGTH}\r\n\r\n[".encode()
        )
        while sent < HUGE_LENGTH:
            sent += connection.send(chunk)
    except OSError:
        pass
    return sent


class MisbehavingPeer:
    """See the module documentation."""

    def __init__(self, path: Path, roomcache_socket: Path) -> None:
        self.path = path
        self.roomcache_socket = roomcache_socket
        self.mode = "honest"
        self.requests: list[JsonDict] = []
        self.hung = 0
        self.huge_bytes_sent: int | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def forward(self, path: str, body: bytes) -> tuple[int, JsonDict]:
        connection = UnixConnection(str(self.roomcache_socket), timeout=60)
        try:
            connection.request(
                "POST", path, body=body, headers={"Content-Type": "application/json"}
            )
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = _Server(str(self.path), _Handler)
        self._server.peer = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> MisbehavingPeer:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
