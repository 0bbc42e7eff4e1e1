"""Session-wide homeservers for the tests: each starts on first use and stops
at the end of the session.

Ports: ROOMCACHE_SYNAPSE_TEST_PORT_BASE (default 25440) and the fifteen after it
(test_bench_smoke.py: the two after those; test_follow_hostile.py: the six after
those; with_module_via_peer: base + 24, + 25).

Files: ROOMCACHE_SYNAPSE_TEST_DIR, else var/synapse-test (scripts/test.d/synapse
passes a short symlink to it, so that the Unix sockets' paths in it stay within
the 107 bytes a socket path may have however long the clone's path is).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .deployment import ModuleDeployment, module_config
from .harness import REPOSITORY, Homeserver
from .peer import MisbehavingPeer
from .roomcache import Roomcache

PORT_BASE = int(os.environ.get("ROOMCACHE_SYNAPSE_TEST_PORT_BASE", "25440"))
TEST_DIRECTORY = Path(
    os.environ.get("ROOMCACHE_SYNAPSE_TEST_DIR") or REPOSITORY / "var" / "synapse-test"
)


@pytest.fixture(scope="session")
def monolith() -> Iterator[Homeserver]:
    """One Synapse process (ports: base, base + 1)."""
    with Homeserver(
        TEST_DIRECTORY / "monolith", pg_port=PORT_BASE, http_port=PORT_BASE + 1
    ) as homeserver:
        yield homeserver


@pytest.fixture(scope="session")
def workers() -> Iterator[Homeserver]:
    """Main + event persisters p1, p2 over redis (ports: base + 2 to base + 7)."""
    with Homeserver(
        TEST_DIRECTORY / "workers",
        pg_port=PORT_BASE + 2,
        http_port=PORT_BASE + 3,
        workers=True,
        redis_port=PORT_BASE + 7,
    ) as homeserver:
        yield homeserver


@pytest.fixture(scope="session")
def with_module() -> Iterator[ModuleDeployment]:
    """One Synapse process with the module loaded and its metrics served
    (ports: base + 8, base + 9), and roomcache in source mode on its
    database, caught up."""
    directory = TEST_DIRECTORY / "module"
    modules = module_config(directory, directory / "roomcache" / "roomcache.sock")
    homeserver = Homeserver(
        directory / "synapse",
        pg_port=PORT_BASE + 8,
        http_port=PORT_BASE + 9,
        extra_config=[modules],
        metrics=True,
    )
    with homeserver, Roomcache(directory / "roomcache", homeserver) as roomcache:
        roomcache.wait_until_caught_up()
        yield ModuleDeployment(homeserver, roomcache)


@pytest.fixture(scope="session")
def with_module_workers() -> Iterator[ModuleDeployment]:
    """Main (with the module, serving the client API) and event persisters
    p1, p2 over redis (ports: base + 10 to base + 15), and roomcache in
    source mode following both writers, caught up."""
    directory = TEST_DIRECTORY / "module-workers"
    modules = module_config(directory, directory / "roomcache" / "roomcache.sock")
    homeserver = Homeserver(
        directory / "synapse",
        pg_port=PORT_BASE + 10,
        http_port=PORT_BASE + 11,
        workers=True,
        redis_port=PORT_BASE + 15,
        extra_config=[modules],
        metrics=True,
    )
    roomcache = Roomcache(directory / "roomcache", homeserver, writers=("p1", "p2"))
    with homeserver, roomcache:
        roomcache.wait_until_caught_up()
        yield ModuleDeployment(homeserver, roomcache)


# The module's settings with the misbehaving peer: short timeouts (a hang
# costs this much), a small answer limit, and no verification (the default:
# nothing but the module's own checks stands between the peer and clients).
PEER_REQUEST_TIMEOUT_MS = 1500
PEER_CIRCUIT_OPEN_MS = 5000
PEER_MAX_ANSWER_BYTES = 1024 * 1024


@pytest.fixture(scope="session")
def with_module_via_peer() -> Iterator[ModuleDeployment]:
    """One Synapse process with the module (ports: base + 24, base + 25),
    which asks a misbehaving peer (tests/peer.py) on its own socket; the
    peer passes requests on to a real roomcache in source mode, caught up."""
    directory = TEST_DIRECTORY / "module-peer"
    modules = module_config(
        directory,
        directory / "peer.sock",
        wait_timeout_ms=1000,
        request_timeout_ms=PEER_REQUEST_TIMEOUT_MS,
        verify_fraction=0,
        max_answer_bytes=PEER_MAX_ANSWER_BYTES,
        circuit_open_ms=PEER_CIRCUIT_OPEN_MS,
        circuit_max_open_ms=PEER_CIRCUIT_OPEN_MS * 2,
    )
    homeserver = Homeserver(
        directory / "synapse",
        pg_port=PORT_BASE + 24,
        http_port=PORT_BASE + 25,
        extra_config=[modules],
        metrics=True,
    )
    roomcache = Roomcache(directory / "roomcache", homeserver)
    peer = MisbehavingPeer(directory / "peer.sock", roomcache.socket_path)
    with homeserver, roomcache, peer:
        roomcache.wait_until_caught_up()
        yield ModuleDeployment(homeserver, roomcache, peer)
