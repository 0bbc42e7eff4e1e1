"""The per-room seam's member counts (per_room.py `member_counts`): the
rooms a request sends in full whose counts are not in Synapse's cache are
counted in one query, and Synapse's cached method answers the others.
Synapse and roomcache are mocks (test_per_room_units' `Deployment`)."""

from __future__ import annotations

import asyncio
from typing import Any
from unittest.mock import Mock

import pytest
from synapse.types import RoomStreamToken

from .test_per_room_units import Deployment, _counts, interested


def counts(deployment: Deployment, rooms: Any, lookups: list[str], **options: Any) -> list[Any]:
    """One request (prepared unless `prepared=False`), then each room's
    member counts and who answered (`batched`, Synapse's reason, or
    `uncounted`)."""
    to_token = Mock(room_key=RoomStreamToken(stream=20))

    async def run() -> list[Any]:
        if options.get("prepared", True):
            await deployment.seam.prepare(
                sync_config=Mock(conn_id=options.get("conn_id", "room-list")),
                previous_connection_state=Mock(sent=frozenset()),
                to_token=to_token,
                from_token=None,
                interested=rooms,
                lists_from_roomcache=True,
            )
        answers = []
        for room_id in lookups:
            before = _counts("roomcache_synapse_member_counts")
            found = await deployment.seam.member_counts(room_id)
            after = _counts("roomcache_synapse_member_counts")
            changed = [key for key in after if after[key] != before.get(key, 0)]
            answers.append((found, changed[0][1] or changed[0][0] if changed else "uncounted"))
        return answers

    return asyncio.run(run())


BATCHED = {"join": 2, "invite": 1}
SYNAPSE = {"join": 7}


def test_rooms_sent_in_full_are_counted_in_one_query() -> None:
    deployment = Deployment()
    deployment.synapse.cached_member_counts.side_effect = lambda room: (
        {"join": 3} if room == "!cached:hs" else None
    )
    rooms = interested({"!a:hs": "join", "!b:hs": "join", "!cached:hs": "join", "!i:hs": "invite"})
    answers = counts(deployment, rooms, ["!a:hs", "!b:hs", "!cached:hs", "!other:hs"])
    assert answers == [
        (BATCHED, "batched"),
        (BATCHED, "batched"),
        (SYNAPSE, "cached"),
        (SYNAPSE, "not_fetched"),
    ]
    deployment.synapse.member_counts.assert_awaited_once_with(["!a:hs", "!b:hs"])


@pytest.mark.parametrize(
    ("case", "reason"),
    [("outside", "uncounted"), ("bypass", "bypass"), ("query_fails", "module_error")],
)
def test_whose_counts_and_why(case: str, reason: str) -> None:
    deployment = Deployment()
    options: dict[str, Any] = {}
    if case == "outside":
        options["prepared"] = False
    elif case == "bypass":
        options["conn_id"] = "bypass-4"
    elif case == "query_fails":
        deployment.synapse.member_counts.side_effect = RuntimeError("database gone")
    answers = counts(deployment, interested({"!a:hs": "join"}), ["!a:hs"], **options)
    assert answers == [(SYNAPSE, reason)]


def test_install_replaces_the_counts() -> None:
    deployment = Deployment()
    deployment.seam.install()
    deployment.synapse.replace_member_counts.assert_called_once_with(deployment.seam.member_counts)
