"""The harness works end to end: a real Synapse registers users, persists
events, serves Sliding Sync, and (with workers) publishes both persisters'
events on redis."""

from __future__ import annotations

import re
import time
from pathlib import Path

from .client import Client, JsonDict
from .harness import Homeserver
from .redis_wire import RedisConnection, Subscription

ALL_ROOMS = {"ranges": [[0, 99]], "timeline_limit": 1, "required_state": [["m.room.name", ""]]}


def list_room_ids(answer: JsonDict, name: str) -> set[str]:
    """The rooms of one list of a Sliding Sync answer (as a set: Synapse does not
    sort a range that covers the whole list)."""
    found = answer["lists"][name]
    return {room_id for op in found.get("ops", []) for room_id in op["room_ids"]}


def timeline_bodies(answer: JsonDict, room_id: str) -> list[str]:
    return [event["content"].get("body") for event in answer["rooms"][room_id]["timeline"]]


def test_monolith_lists_a_joined_room(monolith: Homeserver) -> None:
    alice = monolith.register("smoke_alice")
    bob = monolith.register("smoke_bob")
    room_id = alice.create_room(preset="public_chat", name="smoke")
    assert bob.join(room_id) == room_id
    alice.send_message(room_id, "hello")

    first = bob.sliding_sync({"lists": {"all": ALL_ROOMS}})
    assert first["lists"]["all"]["count"] == 1
    assert list_room_ids(first, "all") == {room_id}
    assert first["rooms"][room_id]["name"] == "smoke"
    assert timeline_bodies(first, room_id) == ["hello"]

    alice.send_message(room_id, "again")
    second = bob.sliding_sync({"lists": {"all": ALL_ROOMS}}, pos=first["pos"])
    assert second["pos"] != first["pos"]
    assert timeline_bodies(second, room_id) == ["again"]


def test_monolith_client_helpers(monolith: Homeserver) -> None:
    """Each membership, state and account-data helper does what Sliding Sync and
    Synapse's sliding-sync tables then show."""
    alice = monolith.register("helpers_alice")
    carol = monolith.register("helpers_carol")
    rooms = _rooms_in_every_shape(alice, carol)

    lists = {
        "all": ALL_ROOMS,
        "dms": {**ALL_ROOMS, "filters": {"is_dm": True}},
        "encrypted": {**ALL_ROOMS, "filters": {"is_encrypted": True}},
        "spaces": {**ALL_ROOMS, "filters": {"room_types": ["m.space"]}},
        "favourites": {**ALL_ROOMS, "filters": {"tags": ["m.favourite"]}},
        "invites": {**ALL_ROOMS, "filters": {"is_invite": True}},
    }
    answer = carol.sliding_sync({"lists": lists})
    shown = {name: list_room_ids(answer, name) for name in lists}
    assert shown == {
        "all": {
            rooms[name]
            for name in (
                "dm",
                "encrypted",
                "space",
                "tagged",
                "invited",
                "knocked",
                "kicked",
                "banned",
            )
        },
        "dms": {rooms["dm"]},
        "encrypted": {rooms["encrypted"]},
        "spaces": {rooms["space"]},
        "favourites": {rooms["tagged"]},
        "invites": {rooms["invited"]},
    }

    # Forgetting a room one was kicked from hides it; an untagged room leaves
    # the favourites.
    carol.forget(rooms["kicked"])
    carol.remove_room_tag(rooms["tagged"], "m.favourite")
    answer = carol.sliding_sync({"lists": lists})
    assert rooms["kicked"] not in list_room_ids(answer, "all")
    assert list_room_ids(answer, "favourites") == set()

    # Unbanned, carol's membership is a leave by alice.
    alice.unban(rooms["banned"], carol.user_id)
    membership = monolith.query(
        "SELECT membership, sender FROM sliding_sync_membership_snapshots"
        " WHERE room_id = %s AND user_id = %s",
        [rooms["banned"], carol.user_id],
    )
    assert membership == [("leave", alice.user_id)]

    # The tombstone and the space's child are in Synapse's tables and state.
    tombstoned = monolith.query(
        "SELECT tombstone_successor_room_id FROM sliding_sync_joined_rooms WHERE room_id = %s",
        [rooms["tombstoned"]],
    )
    assert tombstoned == [(rooms["encrypted"],)]
    child = alice.get_state(rooms["space"], "m.space.child", rooms["encrypted"])
    assert child == {"via": [monolith.server_name]}


def _rooms_in_every_shape(alice: Client, carol: Client) -> dict[str, str]:
    """Rooms of alice's in which carol has each kind of membership."""
    rooms: dict[str, str] = {}
    rooms["dm"] = alice.create_room(preset="trusted_private_chat", is_direct=True)
    alice.invite(rooms["dm"], carol.user_id)
    carol.join(rooms["dm"])
    carol.set_direct({alice.user_id: [rooms["dm"]]})

    rooms["encrypted"] = alice.create_room(preset="public_chat")
    alice.set_encryption(rooms["encrypted"])
    carol.join(rooms["encrypted"])

    rooms["space"] = alice.create_room(preset="public_chat", creation_content={"type": "m.space"})
    alice.add_space_child(rooms["space"], rooms["encrypted"], via=[carol.user_id.split(":")[1]])
    carol.join(rooms["space"])

    rooms["tagged"] = alice.create_room(preset="public_chat", name="tagged")
    carol.join(rooms["tagged"])
    carol.set_room_tag(rooms["tagged"], "m.favourite", order=0.5)

    rooms["invited"] = alice.create_room(preset="private_chat")
    alice.invite(rooms["invited"], carol.user_id)

    knock_rules = {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}
    rooms["knocked"] = alice.create_room(preset="private_chat", initial_state=[knock_rules])
    assert carol.knock(rooms["knocked"], reason="let me in") == rooms["knocked"]

    for shape in ("kicked", "banned", "left"):
        rooms[shape] = alice.create_room(preset="public_chat")
        carol.join(rooms[shape])
    alice.kick(rooms["kicked"], carol.user_id, reason="out")
    alice.ban(rooms["banned"], carol.user_id)
    carol.leave(rooms["left"])
    carol.forget(rooms["left"])

    rooms["tombstoned"] = alice.create_room(preset="public_chat")
    alice.set_name(rooms["tombstoned"], "old")
    alice.set_tombstone(rooms["tombstoned"], rooms["encrypted"])
    return rooms


def test_workers_persist_on_both_writers_and_publish_on_redis(workers: Homeserver) -> None:
    """Rooms land on both event persisters (Synapse shards them by room ID), and
    both persisters' events, the cache invalidations of a forget and the
    answers to REPLICATE are published on the channel named after the server.
    The lines read are saved as logs/redis-channel.txt."""
    assert workers.redis_port is not None
    with Subscription(workers.redis_port, workers.server_name) as channel:
        alice = workers.register("workers_alice")
        bob = workers.register("workers_bob")
        writers: set[str] = set()
        rooms: list[str] = []
        for number in range(40):  # each room misses one of two writers with odds 1/2
            room_id = alice.create_room(preset="public_chat", name=f"room {number}")
            rooms.append(room_id)
            bob.join(room_id)
            alice.send_message(room_id, f"message {number}")
            # Only this test's rooms: other tests of the session wrote too.
            query = "SELECT DISTINCT instance_name FROM events WHERE room_id = ANY(%s)"
            writers = {row[0] for row in workers.query(query, [rooms])}
            if writers == {"p1", "p2"}:
                break
        assert writers == {"p1", "p2"}
        bob.leave(room_id)
        bob.forget(room_id)

        with RedisConnection(workers.redis_port) as publisher:
            publisher.command("PUBLISH", workers.server_name, "REPLICATE")
        wanted = [
            r"RDATA events p1 \d+ \[",
            r"RDATA events p2 \d+ \[",
            # Answers to REPLICATE: each writer's current position, twice.
            r"POSITION events p1 (\d+) \1$",
            r"POSITION events p2 (\d+) \1$",
            rf'RDATA caches master \d+ \["did_forget",\["{bob.user_id}","{room_id}"\],\d+\]$',
        ]
        lines = _read_until_seen(channel, wanted, timeout=30)
    _save(workers.log_path().parent / "redis-channel.txt", lines)
    missing = [pattern for pattern in wanted if not any(re.match(pattern, x) for x in lines)]
    assert missing == [], f"no line matches {missing} among {len(lines)} lines"


def _read_until_seen(channel: Subscription, patterns: list[str], timeout: float) -> list[str]:
    """The channel's messages until each pattern has matched one (or the timeout)."""
    lines: list[str] = []
    unseen = set(patterns)
    deadline = time.monotonic() + timeout
    while unseen and time.monotonic() < deadline:
        line = channel.next_message(timeout=deadline - time.monotonic())
        if line is None:
            break
        lines.append(line)
        unseen = {pattern for pattern in unseen if not re.match(pattern, line)}
    return lines


def _save(path: Path, lines: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines))
