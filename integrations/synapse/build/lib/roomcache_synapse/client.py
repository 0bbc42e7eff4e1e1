# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""roomcache's room-list endpoint over its Unix socket, from Synapse's reactor.

HTTP/1.1 through Twisted's `Agent` on a `UNIXClientEndpoint`, with a pool of
kept-alive connections, so a request never blocks the reactor and costs no
connection set-up. Every failure is raised as `RoomcacheFailure` with a
short reason that the caller counts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from synapse.logging.context import make_deferred_yieldable
from twisted.internet import defer
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.interfaces import IConsumer, IStreamClientEndpoint
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    ResponseNeverReceived,
    readBody,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IBodyProducer
from zope.interface import implementer

from .metrics import REQUEST_SECONDS

JsonDict = dict[str, Any]

# actix-web closes a connection idle for 5 s: drop ours before that.
_IDLE_CONNECTION_SECONDS = 4


class RoomcacheFailure(Exception):
    """roomcache did not answer usefully; `reason` is what the metrics count."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@implementer(IAgentEndpointFactory)
class _UnixEndpointFactory:
    """Every URI goes to the one socket."""

    def __init__(self, reactor: Any, socket_path: str) -> None:
        self._reactor = reactor
        self._socket_path = socket_path

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        return UNIXClientEndpoint(self._reactor, self._socket_path, timeout=5)


@implementer(IBodyProducer)
class _Body:
    """A request body written at once."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: IConsumer) -> defer.Deferred[None]:
        consumer.write(self._data)
        return defer.succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


_HEADERS = Headers({b"Content-Type": [b"application/json"], b"Host": [b"roomcache"]})


class RoomcacheClient:
    """POST /v1/users/{user_id}/room_list on roomcache's socket."""

    def __init__(
        self, reactor: Any, socket_path: str, *, timeout_seconds: float, max_connections: int
    ) -> None:
        self._reactor = reactor
        self._timeout_seconds = timeout_seconds
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = max_connections
        pool.cachedConnectionTimeout = _IDLE_CONNECTION_SECONDS
        pool.retryAutomatically = False
        self._pool = pool
        self._agent = Agent.usingEndpointFactory(
            reactor, _UnixEndpointFactory(reactor, socket_path), pool=pool
        )

    async def room_lists(self, user_id: str, body: Mapping[str, Any]) -> JsonDict:
        """One room-list request; its decoded answer, or `RoomcacheFailure`.
        A request that fails on a kept-alive connection roomcache had
        closed is sent once more on a new one (reads change nothing)."""
        started = time.perf_counter()
        data = json.dumps(body, separators=(",", ":")).encode()
        uri = f"http://roomcache/v1/users/{quote(user_id, safe='')}/room_list".encode()
        status, raw = await self._send(uri, data, retry=True)
        answer = _decode(status, raw)
        REQUEST_SECONDS.observe(time.perf_counter() - started)
        return answer

    async def _send(self, uri: bytes, data: bytes, *, retry: bool) -> tuple[int, bytes]:
        async def exchange() -> tuple[int, bytes]:
            response = await self._agent.request(b"POST", uri, _HEADERS, _Body(data))
            raw = await readBody(response)
            return response.code, raw

        deferred = defer.ensureDeferred(exchange())
        deferred.addTimeout(self._timeout_seconds, self._reactor)
        try:
            return await make_deferred_yieldable(deferred)
        except defer.TimeoutError as error:
            raise RoomcacheFailure(
                "timeout", f"no answer within {self._timeout_seconds} s"
            ) from error
        except ResponseNeverReceived as error:
            if retry:
                return await self._send(uri, data, retry=False)
            raise RoomcacheFailure("unavailable", repr(error)) from error
        except (ConnectionError, OSError) as error:
            raise RoomcacheFailure("unavailable", repr(error)) from error
        except Exception as error:
            # Twisted wraps connection failures (ConnectError, ConnectionRefusedError,
            # RequestTransmissionFailed, ResponseFailed...) in its own types.
            raise RoomcacheFailure("unavailable", repr(error)) from error

    async def close(self) -> None:
        await make_deferred_yieldable(self._pool.closeCachedConnections())


def _decode(status: int, raw: bytes) -> JsonDict:
    try:
        answer = json.loads(raw)
    except ValueError as error:
        raise RoomcacheFailure("bad_answer", f"HTTP {status}, not JSON") from error
    if not isinstance(answer, dict):
        raise RoomcacheFailure("bad_answer", f"HTTP {status}, not a JSON object")
    if status != 200:
        errcode = answer.get("errcode", "?")
        raise RoomcacheFailure("error", f"HTTP {status} {errcode}: {answer.get('error')}")
    return answer
