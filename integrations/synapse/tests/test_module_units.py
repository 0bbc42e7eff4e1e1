"""The module's parts that need no server: tokens, settings, versions,
reading and checking answers, the circuit breaker, placing rooms roomcache
could not order at the token, and installing the package with pip."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from roomcache_synapse.answer import ListAnswer, RoomEntry
from roomcache_synapse.assemble import UnsettledRoomUnknown, range_room_ids
from roomcache_synapse.client import AnswerReader, RoomcacheFailure
from roomcache_synapse.config import ConfigError, parse_config
from roomcache_synapse.tokens import StreamPosition, room_token
from roomcache_synapse.versions import is_supported

PACKAGE = Path(__file__).resolve().parents[1]


def test_tokens_in_roomcache_text_form() -> None:
    assert room_token(5, {}) == "s5"
    assert room_token(5, {"p2": 9, "p1": 7, "p3": 5}) == "m5~p1.7~p2.9"
    parsed = StreamPosition.parse("m5~event.persister-1.7~p2.9")
    assert (parsed.stream, dict(parsed.ahead)) == (5, {"event.persister-1": 7, "p2": 9})
    assert parsed.text() == "m5~event.persister-1.7~p2.9"
    assert (parsed.position("p2"), parsed.position("other"), parsed.highest()) == (9, 5, 9)
    assert StreamPosition.parse("s0") == StreamPosition(0)
    for bad in (
        None,
        5,
        "",
        "s",
        "s-1",
        "t5",
        "s5 ",
        "s99999999999999999999",
        "s9223372036854775808",
        "m5",
        "m5~p1.5",  # a writer listed must be ahead of the minimum
        "m5~p1.7~p1.8",
        "m5~.7",
        "m5~p1",
    ):
        with pytest.raises(ValueError):
            StreamPosition.parse(bad)


def test_positions_compare_writer_by_writer() -> None:
    low = StreamPosition.parse("m5~p1.7")
    assert low.is_before_or_eq(StreamPosition.parse("s7"))
    assert low.is_before_or_eq(StreamPosition.parse("m6~p1.7"))
    assert not low.is_before_or_eq(StreamPosition.parse("s6"))
    assert not StreamPosition.parse("s6").is_before_or_eq(low)


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
    assert (
        config.max_answer_bytes,
        config.circuit_failures,
        config.circuit_open_ms,
        config.circuit_max_open_ms,
    ) == (16 * 1024 * 1024, 1, 1000, 30000)
    for bad in (
        {},
        {"socket_path": ""},
        {"socket_path": "/s", "wait_timeout_ms": -1},
        {"socket_path": "/s", "wait_timeout_ms": True},
        {"socket_path": "/s", "verify_fraction": 2},
        {"socket_path": "/s", "unknown": 1},
        {"socket_path": "/s", "max_answer_bytes": 10},
        {"socket_path": "/s", "circuit_failures": 0},
        {"socket_path": "/s", "circuit_open_ms": 5000, "circuit_max_open_ms": 1000},
    ):
        with pytest.raises(ConfigError):
            parse_config(bad)


def _entry(room_id: str, recency: int, membership: str = "join", position: int = 1) -> RoomEntry:
    return RoomEntry(
        room_id=room_id,
        membership=membership,
        sender="@u:hs",
        membership_event_id="$e",
        event_stream_ordering=position,
        event_instance_name="master",
        bump_stamp=position,
        room_type=None,
        room_name=None,
        is_encrypted=False,
        tombstone_successor_room_id=None,
        has_known_state=True,
        recency=recency,
    )


def test_unsettled_rooms_are_placed_by_their_position_at_the_token() -> None:
    answer = ListAnswer(
        count=5,
        ranges=None,
        settled=((9, "!a"), (7, "!b"), (3, "!c")),
        unsettled=(_entry("!late", 30), _entry("!invite", 12, membership="invite", position=8)),
    )
    ranges = [(0, 1), (2, 4), (4, 9)]
    placed = range_room_ids(answer, ranges, {"!late": 5})
    assert placed == [("!a", "!invite"), ("!b", "!late", "!c"), ("!c",)]
    with pytest.raises(UnsettledRoomUnknown):
        range_room_ids(answer, ranges, {})


def test_ranges_cut_by_roomcache_are_used_as_they_are() -> None:
    answer = ListAnswer(count=1, ranges=(("!a",),))
    assert range_room_ids(answer, [(0, 0)], {}) == [("!a",)]


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


def _read(reader: AnswerReader, *chunks: bytes) -> tuple[int, bytes, bool] | None:
    whole = None
    for chunk in chunks:
        whole = reader.feed(chunk)
    return whole


def test_answers_are_read_whole_with_their_content_length() -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\ncontent-type: application/json\r\n\r\n"
    assert _read(AnswerReader(1024), head + b'{"a":') is None
    assert _read(AnswerReader(1024), head[:10], head[10:] + b'{"a":', b"1}") == (
        200,
        b'{"a":1}',
        True,
    )
    closing = (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
    )
    assert _read(AnswerReader(1024), closing) == (503, b"{}", False)
    for bad in (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}{}",  # more than announced
        b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 4000,  # a head without end
    ):
        with pytest.raises(RoomcacheFailure) as failure:
            _read(AnswerReader(1024), bad)
        assert failure.value.reason == "bad_answer"


def test_answers_over_the_limit_are_refused_at_their_head() -> None:
    reader = AnswerReader(1024)
    with pytest.raises(RoomcacheFailure) as failure:
        reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2000000000\r\n\r\n" + b"x" * 100)
    assert failure.value.reason == "answer_too_large"
    # Exactly at the limit is read.
    body = b"x" * 1024
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n\r\n"
    assert _read(AnswerReader(1024), head, body[:500], body[500:]) == (200, body, True)


def test_every_package_of_the_module_is_installed() -> None:
    """`pip install ./integrations/synapse` installs the packages
    pyproject.toml lists: every package of the module must be one."""
    root = Path(__file__).resolve().parents[1]
    # (No tomllib: Python 3.10 has none.)
    line = re.search(r"^packages = \[(.*)\]$", (root / "pyproject.toml").read_text(), re.M)
    assert line is not None
    listed = re.findall(r'"([^"]+)"', line.group(1))
    found = {
        ".".join(init.parent.relative_to(root).parts)
        for init in (root / "roomcache_synapse").rglob("__init__.py")
    }
    assert found == {"roomcache_synapse", "roomcache_synapse.adapter"}
    assert set(listed) == found
