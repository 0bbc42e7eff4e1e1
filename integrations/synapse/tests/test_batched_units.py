"""Per-room lookups answered from one query a request (batched.py): the
rooms a request sends in full whose values are not in Synapse's cache are
loaded in one query a lookup (member counts; the account-data extension's
room account data and tags), and Synapse's cached methods answer the
others. Synapse and roomcache are mocks (test_per_room_units' `Deployment`)."""

from __future__ import annotations

import asyncio
from typing import Any
from unittest.mock import Mock

import pytest
from prometheus_client import REGISTRY
from synapse.types import RoomStreamToken

from .test_per_room_units import Deployment, interested


def _counts() -> dict[tuple[str, str, str], float]:
    counts = {}
    for metric in REGISTRY.collect():
        if metric.name == "roomcache_synapse_batched_lookups":
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    labels = sample.labels
                    counts[(labels["lookup"], labels["path"], labels["reason"])] = sample.value
    return counts


def lookups(
    deployment: Deployment, rooms: Any, calls: list[tuple[Any, ...]], **options: Any
) -> list[tuple[Any, str]]:
    """One request (prepared unless `prepared=False`), then each lookup
    (name, arguments): its value and who answered (`batched`, Synapse's
    reason, or `uncounted`)."""
    to_token = Mock(room_key=RoomStreamToken(stream=20))

    async def run() -> list[tuple[Any, str]]:
        if options.get("prepared", True):
            await deployment.prepare(rooms, to_token, conn_id=options.get("conn_id", "room-list"))
        answers = []
        for lookup, *arguments in calls:
            before = _counts()
            found = await deployment.seam._lookups.answer(lookup, *arguments)
            after = _counts()
            changed = [key for key in after if after[key] != before.get(key, 0)]
            who = "uncounted" if not changed else changed[0][2] or changed[0][1]
            answers.append((found, who))
        return answers

    return asyncio.run(run())


def test_rooms_sent_in_full_are_loaded_in_one_query_a_lookup() -> None:
    deployment = Deployment()
    cached = {("member_counts", "!cached:hs"), ("room_tags", "!a:hs")}
    deployment.synapse.cached.side_effect = lambda lookup, user, room: (
        "cached" if (lookup, room) in cached else None
    )
    rooms = interested({"!a:hs": "join", "!b:hs": "join", "!cached:hs": "join", "!i:hs": "invite"})
    answers = lookups(
        deployment,
        rooms,
        [
            ("member_counts", "!a:hs"),
            ("member_counts", "!cached:hs"),
            ("member_counts", "!other:hs"),
            ("room_account_data", "@u:hs", "!b:hs"),
            ("room_account_data", "@someone:hs", "!b:hs"),
            ("room_tags", "@u:hs", "!a:hs"),
            ("room_tags", "@u:hs", "!cached:hs"),
        ],
    )
    assert answers == [
        ("member_counts of !a:hs", "batched"),
        ("Synapse's member_counts", "cached"),
        ("Synapse's member_counts", "not_fetched"),
        ("room_account_data of !b:hs", "batched"),
        ("Synapse's room_account_data", "other_user"),
        ("Synapse's room_tags", "cached"),
        ("room_tags of !cached:hs", "batched"),
    ]
    # One load a lookup, for the joined rooms sent in full not cached.
    assert sorted(call.args for call in deployment.synapse.load.await_args_list) == [
        ("member_counts", "@u:hs", ["!a:hs", "!b:hs"]),
        ("room_account_data", "@u:hs", ["!a:hs", "!b:hs", "!cached:hs"]),
        ("room_tags", "@u:hs", ["!b:hs", "!cached:hs"]),
    ]
    # Synapse's own with the very arguments.
    deployment.originals["room_account_data"].assert_awaited_once_with("@someone:hs", "!b:hs")


@pytest.mark.parametrize(
    ("case", "reason"),
    [("outside", "uncounted"), ("bypass", "bypass"), ("load_fails", "module_error")],
)
def test_whose_lookups_and_why(case: str, reason: str) -> None:
    deployment = Deployment()
    options: dict[str, Any] = {}
    if case == "outside":
        options["prepared"] = False
    elif case == "bypass":
        options["conn_id"] = "bypass-4"
    elif case == "load_fails":
        deployment.synapse.load.side_effect = RuntimeError("database gone")
    calls = [("member_counts", "!a:hs"), ("room_tags", "@u:hs", "!a:hs")]
    answers = lookups(deployment, interested({"!a:hs": "join"}), calls, **options)
    assert answers == [("Synapse's member_counts", reason), ("Synapse's room_tags", reason)]


def test_install_replaces_every_lookup() -> None:
    deployment = Deployment()
    deployment.seam.install()
    replaced = [call.args[0] for call in deployment.synapse.replace_lookup.call_args_list]
    assert replaced == ["member_counts", "room_account_data", "room_tags"]
