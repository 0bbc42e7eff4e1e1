"""The module's parts that need no server: tokens, settings, versions,
placing rooms roomcache could not order at the token, and installing the
package with pip."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from roomcache_synapse.assemble import UnsettledRoomUnknown, range_entries
from roomcache_synapse.client import _parse
from roomcache_synapse.config import ConfigError, parse_config
from roomcache_synapse.tokens import room_token
from roomcache_synapse.versions import is_supported

PACKAGE = Path(__file__).resolve().parents[1]


def test_tokens_in_roomcache_text_form() -> None:
    assert room_token(5, {}) == "s5"
    assert room_token(5, {"p2": 9, "p1": 7, "p3": 5}) == "m5~p1.7~p2.9"


def test_versions() -> None:
    assert is_supported("1.163.2")
    assert is_supported("1.163.2 (b=develop,abc)")
    assert not is_supported("1.163.1")
    assert not is_supported("1.164.0")
    assert not is_supported(None)


def test_settings() -> None:
    config = parse_config({"socket_path": "/run/rc.sock", "verify_fraction": 0.5})
    assert (config.socket_path, config.wait_timeout_ms, config.verify_fraction) == (
        "/run/rc.sock",
        500,
        0.5,
    )
    for bad in (
        {},
        {"socket_path": ""},
        {"socket_path": "/s", "wait_timeout_ms": -1},
        {"socket_path": "/s", "wait_timeout_ms": True},
        {"socket_path": "/s", "verify_fraction": 2},
        {"socket_path": "/s", "unknown": 1},
    ):
        with pytest.raises(ConfigError):
            parse_config(bad)


def _entry(room_id: str, recency: int, membership: str = "join", position: int = 1) -> dict:  # type: ignore[type-arg]
    return {
        "room_id": room_id,
        "recency": recency,
        "membership": membership,
        "event_stream_ordering": position,
    }


def test_unsettled_rooms_are_placed_by_their_position_at_the_token() -> None:
    answer = {
        "count": 5,
        "ranges": [],
        "settled": [_entry("!a", 9), _entry("!b", 7), _entry("!c", 3)],
        "unsettled": [
            _entry("!late", 30),
            _entry("!invite", 12, membership="invite", position=8),
        ],
    }
    ranges = [(0, 1), (2, 4), (4, 9)]
    placed = range_entries(answer, ranges, {"!late": 5})
    ids = [[e["room_id"] for e in rooms] for rooms in placed]
    assert ids == [["!a", "!invite"], ["!b", "!late", "!c"], ["!c"]]
    with pytest.raises(UnsettledRoomUnknown):
        range_entries(answer, ranges, {})


def test_ranges_cut_by_roomcache_are_used_as_they_are() -> None:
    answer = {"count": 1, "ranges": [{"range": [0, 0], "rooms": [_entry("!a", 1)]}]}
    assert range_entries(answer, [(0, 0)], {}) == [[_entry("!a", 1)]]


def test_the_package_installs_with_pip(tmp_path: Path) -> None:
    # From a copy: building writes into the project's directory.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PACKAGE / name, source / name)
    shutil.copytree(
        PACKAGE / "roomcache_synapse",
        source / "roomcache_synapse",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    target = tmp_path / "installed"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
    )
    assert (target / "roomcache_synapse" / "seam.py").exists()
    metadata = next(target.glob("roomcache_synapse-*.dist-info")) / "METADATA"
    assert "License-Expression: Apache-2.0" in metadata.read_text()


def test_answers_are_read_whole_with_their_content_length() -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\ncontent-type: application/json\r\n\r\n"
    assert _parse(bytearray(head + b'{"a":')) is None
    assert _parse(bytearray(head + b'{"a":1}')) == (200, b'{"a":1}', True)
    closing = (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
    )
    assert _parse(bytearray(closing)) == (503, b"{}", False)
    with pytest.raises(ValueError):
        _parse(bytearray(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"))
    with pytest.raises(ValueError):
        _parse(bytearray(b"SSH-2.0-OpenSSH\r\n\r\n"))
