"""A concurrent client workload for a homeserver with event persisters: scenes,
each in rooms of its own, played by several threads at once through the client
API, covering the membership, state and message kinds of the fixtures (names
set, changed, cleared and redacted; encryption; spaces and other room types;
invites, rejections, joins, knocks, leaves, kicks, bans, unbans, forgets,
re-joins; room upgrades; messages and redactions; a room deletion). Synapse
spreads the rooms over its persisters by room ID.

    cast = Cast.register(homeserver, "w1")
    rooms = play(cast, scenes=all_scenes(), seed=1, threads=4)
"""

from __future__ import annotations

import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .client import Client
from .harness import Homeserver

KNOCK_RULES = {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}


@dataclass
class Cast:
    """The users who play the scenes: an admin and six others."""

    admin: Client
    users: list[Client]

    @classmethod
    def register(cls, homeserver: Homeserver, prefix: str) -> Cast:
        admin = homeserver.register(f"{prefix}_admin", admin=True)
        names = ("alice", "bob", "carol", "dave", "erin", "frank")
        return cls(admin, [homeserver.register(f"{prefix}_{name}") for name in names])


@dataclass
class Scene:
    """One scene: `play(cast, rng, rooms)` creates its rooms (appending their IDs)."""

    name: str
    play: Callable[[Cast, random.Random, list[str]], None]


@dataclass
class Played:
    """The rooms each scene created, and the rooms deleted."""

    rooms: dict[str, list[str]] = field(default_factory=dict)

    def all_rooms(self) -> list[str]:
        return [room for rooms in self.rooms.values() for room in rooms]


def chat(rng: random.Random, room_id: str, members: list[Client], count: int) -> list[str]:
    """`count` messages by random members; returns their event IDs."""
    return [
        rng.choice(members).send_message(room_id, f"message {rng.randrange(10**6)}")
        for _ in range(count)
    ]


def named_chat(cast: Cast, rng: random.Random, rooms: list[str]) -> None:
    """A public room renamed, its name cleared, set again and redacted; messages,
    some redacted; members leave and come back."""
    alice, bob, carol, dave = cast.users[:4]
    room_id = alice.create_room(preset="public_chat", name="first name")
    rooms.append(room_id)
    for member in (bob, carol, dave):
        member.join(room_id)
    members = [alice, bob, carol, dave]
    messages = chat(rng, room_id, members, 6)
    alice.set_name(room_id, "second name")
    alice.redact(room_id, rng.choice(messages), reason="oops")
    chat(rng, room_id, members, 4)
    alice.set_name(room_id, "")
    carol.leave(room_id)
    name_event = alice.set_name(room_id, "third name")
    chat(rng, room_id, [alice, bob], 3)
    alice.redact(room_id, name_event)
    carol.join(room_id)
    chat(rng, room_id, members, 3)


def encrypted_direct(cast: Cast, rng: random.Random, rooms: list[str]) -> None:
    """A direct room by invite, encrypted after the join; then a room created
    encrypted."""
    bob, erin = cast.users[1], cast.users[4]
    room_id = bob.create_room(preset="trusted_private_chat", is_direct=True, invite=[erin.user_id])
    rooms.append(room_id)
    erin.join(room_id)
    chat(rng, room_id, [bob, erin], 4)
    bob.set_encryption(room_id)
    chat(rng, room_id, [bob, erin], 4)
    second = erin.create_room(
        preset="private_chat",
        initial_state=[
            {
                "type": "m.room.encryption",
                "state_key": "",
                "content": {"algorithm": "m.megolm.v1.aes-sha2"},
            }
        ],
    )
    rooms.append(second)
    erin.invite(second, bob.user_id)
    bob.join(second)
    chat(rng, second, [bob, erin], 3)


def space_and_types(cast: Cast, rng: random.Random, rooms: list[str]) -> None:
    """A space with a child, and a room of another type."""
    carol, dave, frank = cast.users[2], cast.users[3], cast.users[5]
    space = carol.create_room(
        preset="public_chat", name="a space", creation_content={"type": "m.space"}
    )
    child = carol.create_room(preset="public_chat", name="a child")
    typed = dave.create_room(preset="public_chat", creation_content={"type": "org.example.kind"})
    rooms.extend([space, child, typed])
    carol.add_space_child(space, child, via=[carol.user_id.split(":", 1)[1]])
    for member in (dave, frank):
        member.join(space)
        member.join(child)
    frank.join(typed)
    chat(rng, child, [carol, dave, frank], 4)
    chat(rng, typed, [dave, frank], 3)


def membership_churn(cast: Cast, rng: random.Random, rooms: list[str]) -> None:
    """Invites accepted and rejected, a knock let in, a kick, a ban and an unban,
    a leave and a forget, a re-join after a forget."""
    alice, bob, carol, dave, erin, frank = cast.users
    room_id = alice.create_room(preset="private_chat", name="churn", initial_state=[KNOCK_RULES])
    rooms.append(room_id)
    for user in (bob, carol, dave, erin):
        alice.invite(room_id, user.user_id)
    bob.join(room_id)
    carol.leave(room_id)  # rejects the invite
    dave.join(room_id)
    frank.knock(room_id, reason="let me in")
    alice.invite(room_id, frank.user_id)
    frank.join(room_id)
    chat(rng, room_id, [alice, bob, dave, frank], 5)
    alice.kick(room_id, bob.user_id, reason="out")
    alice.ban(room_id, dave.user_id)
    alice.unban(room_id, dave.user_id)
    frank.leave(room_id)
    frank.forget(room_id)
    bob.forget(room_id)
    chat(rng, room_id, [alice], 2)
    alice.invite(room_id, frank.user_id)
    frank.join(room_id)  # re-join after a forget
    erin.leave(room_id)  # rejects the invite
    erin.forget(room_id)
    chat(rng, room_id, [alice, frank], 3)


def upgrade(cast: Cast, rng: random.Random, rooms: list[str]) -> None:
    """A named room upgraded (tombstone), members following into the new room;
    an invite into the old room after the upgrade."""
    dave, erin, frank = cast.users[3], cast.users[4], cast.users[5]
    room_id = dave.create_room(preset="public_chat", name="before the upgrade")
    rooms.append(room_id)
    erin.join(room_id)
    chat(rng, room_id, [dave, erin], 3)
    new_room = dave.upgrade_room(room_id, "11")
    rooms.append(new_room)
    erin.join(new_room)
    dave.invite(room_id, frank.user_id)
    chat(rng, new_room, [dave, erin], 3)


def deleted_room(cast: Cast, rng: random.Random, rooms: list[str]) -> None:
    """A room deleted and purged through the admin API; another room kept."""
    alice, carol = cast.users[0], cast.users[2]
    doomed = alice.create_room(preset="public_chat", name="doomed")
    carol.join(doomed)
    chat(rng, doomed, [alice, carol], 3)
    kept = carol.create_room(preset="public_chat", name="kept")
    rooms.append(kept)
    alice.join(kept)
    chat(rng, kept, [alice, carol], 2)
    cast.admin.delete_room(doomed)


def chatter(cast: Cast, rng: random.Random, rooms: list[str]) -> None:
    """Rooms with many messages and a few joins (most of the events)."""
    for number in range(3):
        owner = rng.choice(cast.users)
        room_id = owner.create_room(preset="public_chat", name=f"chatter {number}")
        rooms.append(room_id)
        members = [owner, *rng.sample([u for u in cast.users if u is not owner], 2)]
        for member in members[1:]:
            member.join(room_id)
        chat(rng, room_id, members, 8)


def scenes(*plays: Callable[[Cast, random.Random, list[str]], None]) -> list[Scene]:
    return [Scene(play.__name__, play) for play in plays]


def all_scenes() -> list[Scene]:
    return scenes(
        named_chat,
        encrypted_direct,
        space_and_types,
        membership_churn,
        upgrade,
        deleted_room,
        chatter,
    )


def play(cast: Cast, scenes: list[Scene], seed: int, threads: int = 4) -> Played:
    """Plays the scenes concurrently (`threads` at a time); returns their rooms."""
    played = Played()

    def run(index: int, scene: Scene) -> None:
        rooms: list[str] = []
        played.rooms[f"{scene.name} {index}"] = rooms
        scene.play(cast, random.Random(seed * 1000 + index), rooms)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [pool.submit(run, index, scene) for index, scene in enumerate(scenes)]
        for future in futures:
            future.result()
    return played
