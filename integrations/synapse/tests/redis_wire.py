"""A minimal redis client (RESP2 over TCP) for watching Synapse's replication
channel: commands, and the messages of a subscription.

Replies are parsed only once complete, so a read that times out leaves the
connection usable.
"""

from __future__ import annotations

import socket
import time
from typing import Union

Reply = Union[str, int, bytes, None, "RedisError", list["Reply"]]


class RedisError(Exception):
    """An error reply (`-ERR ...`)."""


class _Incomplete(Exception):
    pass


def encode_command(*args: str | bytes) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        raw = arg.encode() if isinstance(arg, str) else arg
        parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(parts)


def parse_reply(buffer: bytes, start: int = 0) -> tuple[Reply, int]:
    """The reply at `start` and the offset after it; `_Incomplete` if cut short."""
    end = buffer.find(b"\r\n", start)
    if end < 0:
        raise _Incomplete
    kind, text, after = buffer[start : start + 1], buffer[start + 1 : end], end + 2
    if kind == b"+":
        return text.decode(), after
    if kind == b"-":
        return RedisError(text.decode()), after
    if kind == b":":
        return int(text), after
    if kind == b"$":
        length = int(text)
        if length < 0:
            return None, after
        if len(buffer) < after + length + 2:
            raise _Incomplete
        return buffer[after : after + length], after + length + 2
    if kind == b"*":
        count = int(text)
        if count < 0:
            return None, after
        items: list[Reply] = []
        for _ in range(count):
            item, after = parse_reply(buffer, after)
            items.append(item)
        return items, after
    raise ValueError(f"not a RESP reply: {buffer[start:end]!r}")


class RedisConnection:
    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self._socket = socket.create_connection((host, port), timeout=10)
        self._buffer = b""

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> RedisConnection:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def send(self, *args: str | bytes) -> None:
        self._socket.sendall(encode_command(*args))

    def send_encoded(self, commands: bytes) -> None:
        """Sends commands already encoded (`encode_command`), e.g. a pipeline."""
        self._socket.sendall(commands)

    def command(self, *args: str | bytes, timeout: float = 10) -> Reply:
        """Sends one command and returns its reply (raises an error reply)."""
        self.send(*args)
        reply = self.read_reply(timeout)
        if isinstance(reply, RedisError):
            raise reply
        return reply

    def read_reply(self, timeout: float) -> Reply:
        """The next reply; `TimeoutError` when none is complete within `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                reply, consumed = parse_reply(self._buffer)
                self._buffer = self._buffer[consumed:]
                return reply
            except _Incomplete:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no complete redis reply in time")
            self._socket.settimeout(remaining)
            try:
                data = self._socket.recv(65536)
            except TimeoutError:
                continue
            if not data:
                raise ConnectionError("redis closed the connection")
            self._buffer += data


class Subscription:
    """A connection subscribed to one channel, yielding its messages as text."""

    def __init__(self, port: int, channel: str) -> None:
        self.channel = channel
        self._connection = RedisConnection(port)
        reply = self._connection.command("SUBSCRIBE", channel)
        if not (isinstance(reply, list) and reply[:1] == [b"subscribe"]):
            raise RedisError(f"unexpected SUBSCRIBE reply {reply!r}")

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def next_message(self, timeout: float) -> str | None:
        """The next message on the channel, or None when none came in `timeout` s."""
        try:
            reply = self._connection.read_reply(timeout)
        except TimeoutError:
            return None
        if not (isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message"):
            raise RedisError(f"unexpected pub/sub reply {reply!r}")
        payload = reply[2]
        assert isinstance(payload, bytes)
        return payload.decode()
