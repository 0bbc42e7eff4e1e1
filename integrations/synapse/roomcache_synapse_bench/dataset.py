# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""Users in N rooms on a real Synapse, with the state a real room list
shows, built through its client API (so every table, cache and stream
position is Synapse's own).

For sizes `s1 < s2 < ... < sk`, each measured user `u<si>` is in exactly
`si` rooms (its list's `count`):
* the pool: user `u<sk>` creates `sk - 3` rooms (`room_options`: most
  named, some with a topic, an avatar, an alias, power levels of their own,
  encryption, `joined`/`invited` history, MSC3401 call members, a live
  location beacon, member hints); each smaller `u<si>` joins the `si - 3`
  newest, so the rooms of a smaller user are also the larger users' rooms;
* the shared rooms (the smallest user's pool rooms, in every measured
  user's list): the oldest of them is a space whose children are the
  others (`m.space.child` in the space, `m.space.parent` in each child);
  `crowd` more users join them;
* a message in every pool room (by the newest member among the measured
  users, or `crowd2` in the shared rooms); the newest shared rooms pin it
  (`m.room.pinned_events`); every measured user has read it (a public read
  receipt in each of its pool rooms: a real server's receipts table is
  never empty, and Synapse treats an empty one as "every room's receipts
  changed");
* per measured user, two DMs (from `crowd1`, and an encrypted one from
  `crowd2`, both in `m.direct`, each with a message) and an invite it has
  not answered (from `crowd3`);
* last, `crowd1` sends a message in each shared room, oldest first, and
  `crowd2` reads it (unread for the measured users): the shared rooms are
  the most recent of every user, so the rooms a list `[[0, 19]]` shows
  (and their per-room data) are the same for every size from 23 rooms up,
  and only the number of rooms behind the list differs;
* user `elsewhere` owns one room no measured user is in (state changes
  "somewhere on the server").

Requests run `concurrency` at a time. `dataset.json` beside the homeserver
records what was built (and the access tokens); a later run with the same
spec reuses the database as it is. `prefix` prefixes every user's
localpart and alias, so several datasets can share a homeserver (the
tests').
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.client import Client
from tests.harness import Homeserver

VERSION = 3
DMS = 2
INVITES = 1
EXTRAS = DMS + INVITES
"""Rooms of each measured user outside the pool."""
PINNED = 10
"""The newest shared rooms that pin their message."""
CALL_MEMBER = "org.matrix.msc3401.call.member"
BEACON_INFO = "m.beacon_info"


@dataclass(frozen=True)
class DatasetSpec:
    sizes: tuple[int, ...]
    crowd: int = 3
    version: int = VERSION
    prefix: str = ""

    def __post_init__(self) -> None:
        if not self.sizes or list(self.sizes) != sorted(set(self.sizes)):
            raise ValueError(f"sizes must be distinct and ascending: {self.sizes}")
        if self.sizes[0] < EXTRAS + 2:
            raise ValueError(f"every user is in at least {EXTRAS + 2} rooms: {self.sizes}")
        if self.crowd < 3:
            raise ValueError("the DMs and invites need three crowd users")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "sizes": list(self.sizes)}


@dataclass
class UserAccess:
    user_id: str
    access_token: str

    def client(self, homeserver: Homeserver) -> Client:
        return Client(homeserver.client_url, self.user_id, self.access_token)


@dataclass
class Dataset:
    """What a benchmark run needs to know about the database."""

    spec: DatasetSpec
    users: dict[int, UserAccess]  # by rooms
    crowd: list[UserAccess]
    elsewhere: UserAccess
    elsewhere_room: str
    shared_rooms: list[str]  # the smallest user's pool rooms, oldest first (the space first)
    own_rooms: dict[int, list[str]] = field(default_factory=dict)  # DMs, then the invite
    oldest_room: str = ""  # the first pool room: the largest user's last

    @property
    def space(self) -> str:
        return self.shared_rooms[0]

    @property
    def on_screen(self) -> list[str]:
        """The rooms at the top of every measured user's list (the newest
        shared rooms, newest first): the rooms Element X subscribes to."""
        return list(reversed(self.shared_rooms[-20:]))

    def to_json(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_json(),
            "users": {str(size): asdict(user) for size, user in self.users.items()},
            "crowd": [asdict(user) for user in self.crowd],
            "elsewhere": asdict(self.elsewhere),
            "elsewhere_room": self.elsewhere_room,
            "shared_rooms": self.shared_rooms,
            "own_rooms": {str(size): rooms for size, rooms in self.own_rooms.items()},
            "oldest_room": self.oldest_room,
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> Dataset:
        spec = DatasetSpec(
            sizes=tuple(data["spec"]["sizes"]),
            crowd=data["spec"]["crowd"],
            version=data["spec"]["version"],
            prefix=data["spec"]["prefix"],
        )
        return Dataset(
            spec=spec,
            users={int(size): UserAccess(**user) for size, user in data["users"].items()},
            crowd=[UserAccess(**user) for user in data["crowd"]],
            elsewhere=UserAccess(**data["elsewhere"]),
            elsewhere_room=data["elsewhere_room"],
            shared_rooms=list(data["shared_rooms"]),
            own_rooms={int(size): rooms for size, rooms in data["own_rooms"].items()},
            oldest_room=data["oldest_room"],
        )


def recorded(path: Path, spec: DatasetSpec) -> Dataset | None:
    """The dataset recorded at `path` if it was built with `spec`."""
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    if data.get("spec") != spec.to_json():
        return None
    return Dataset.from_json(data)


def check_disk(directory: Path, spec: DatasetSpec) -> None:
    """Refuses to build when the disk is short: ~40 kB per room."""
    directory.mkdir(parents=True, exist_ok=True)
    needed = 1_000_000_000 + max(spec.sizes) * 40_000
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise SystemExit(
            f"only {free / 1e9:.1f} GB free under {directory}; building this dataset needs "
            f"about {needed / 1e9:.1f} GB"
        )


def room_options(index: int, creator: str, server_name: str, prefix: str) -> dict[str, Any]:
    """`createRoom`'s body for pool room `index` (0: the oldest): the mix of
    state a real room list shows, each kind in a fixed share of the rooms."""
    options: dict[str, Any] = {"preset": "public_chat"}
    state: list[dict[str, Any]] = []
    if index % 10 != 9:  # a tenth unnamed: their names come from heroes
        options["name"] = f"Room {index}"
    if index % 2 == 0:
        options["topic"] = f"What room {index} is about"
    if index % 3 == 0:
        state.append(_state("m.room.avatar", {"url": f"mxc://{server_name}/avatar{index % 7}"}))
    if index % 20 == 1:
        options["room_alias_name"] = f"{prefix}room{index}"
    if index % 5 == 2:
        options["power_level_content_override"] = {
            "events": {"m.room.name": 50, "m.room.pinned_events": 50, CALL_MEMBER: 0},
        }
    if index % 4 == 3:
        state.append(_state("m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"}))
    if index % 8 == 1:
        state.append(_state("m.room.history_visibility", {"history_visibility": "joined"}))
    elif index % 8 == 5:
        state.append(_state("m.room.history_visibility", {"history_visibility": "invited"}))
    if index % 25 == 4:  # a call going on, and a device that left it
        state.append(_state(CALL_MEMBER, _call_member(index), f"_{creator}_DEVICE1"))
        state.append(_state(CALL_MEMBER, {}, f"_{creator}_DEVICE2"))
    if index % 50 == 6:
        state.append(_state(BEACON_INFO, _beacon(), creator))
    if index % 30 == 5:
        state.append(_state("m.member_hints", {"service_members": [f"@bot:{server_name}"]}))
    if state:
        options["initial_state"] = state
    return options


def _state(event_type: str, content: dict[str, Any], state_key: str = "") -> dict[str, Any]:
    return {"type": event_type, "state_key": state_key, "content": content}


def _call_member(index: int) -> dict[str, Any]:
    return {
        "application": "m.call",
        "call_id": "",
        "scope": "m.room",
        "device_id": "DEVICE1",
        "expires": 14_400_000,
        "focus_active": {"type": "livekit", "focus_selection": "oldest_membership"},
        "foci_preferred": [
            {
                "type": "livekit",
                "livekit_service_url": "https://livekit.example.org",
                "livekit_alias": f"room{index}",
            }
        ],
    }


def _beacon() -> dict[str, Any]:
    return {
        "description": "Live location",
        "live": True,
        "timeout": 3_600_000,
        "org.matrix.msc3488.ts": 1_700_000_000_000,
        "org.matrix.msc3488.asset": {"type": "m.self"},
    }


def build(homeserver: Homeserver, spec: DatasetSpec, *, concurrency: int = 6) -> Dataset:
    """Builds the dataset on `homeserver` (minutes per 1,000 rooms on a
    loaded 2-core machine)."""
    return _Builder(homeserver, spec, concurrency).build()


class _Builder:
    def __init__(self, homeserver: Homeserver, spec: DatasetSpec, concurrency: int) -> None:
        self.homeserver = homeserver
        self.spec = spec
        self.concurrency = concurrency
        prefix = spec.prefix
        self.users = {size: homeserver.register(f"{prefix}u{size}") for size in spec.sizes}
        self.crowd = [homeserver.register(f"{prefix}crowd{n}") for n in range(1, spec.crowd + 1)]
        self.elsewhere = homeserver.register(f"{prefix}elsewhere")
        self.creator = self.users[max(spec.sizes)]

    def build(self) -> Dataset:
        started = time.monotonic()
        spec, creator, server_name = self.spec, self.creator, self.homeserver.server_name
        pool_size = max(spec.sizes) - EXTRAS
        shared_size = spec.sizes[0] - EXTRAS

        def create(index: int) -> str:
            options = room_options(index, creator.user_id, server_name, spec.prefix)
            return creator.create_room(**options)

        name = creator.user_id
        older = self._parallel(f"{name} creates rooms", create, range(pool_size - shared_size))
        space = creator.create_room(
            preset="public_chat", name="The space", creation_content={"type": "m.space"}
        )
        parent = _state("m.space.parent", {"via": [server_name], "canonical": True}, space)

        def create_child(index: int) -> str:
            options = room_options(index, creator.user_id, server_name, spec.prefix)
            options["initial_state"] = [*options.get("initial_state", []), parent]
            return creator.create_room(**options)

        children = self._parallel(
            f"{name} creates the space's children",
            create_child,
            range(pool_size - shared_size + 1, pool_size),
        )
        self._parallel(
            f"{name} adds them to the space",
            lambda child: creator.add_space_child(space, child, via=[server_name]),
            children,
        )
        pool = [*older, space, *children]
        shared = pool[-shared_size:]
        for size in sorted(spec.sizes, reverse=True)[1:]:
            user = self.users[size]
            self._parallel(f"{user.user_id} joins", user.join, pool[EXTRAS - size :])
        for member in self.crowd:
            self._parallel(f"{member.user_id} joins", member.join, shared)
        messages = self._parallel("messages", self._first_message, list(enumerate(pool)))
        own_rooms = {size: self._own_rooms(user) for size, user in self.users.items()}
        for size, user in self.users.items():
            self._parallel(
                f"{user.user_id} reads",
                lambda item, user=user: user.send_read_receipt(*item),
                list(zip(pool, messages, strict=True))[EXTRAS - size :],
            )
        for room_id, event_id in list(zip(pool, messages, strict=True))[-PINNED:]:
            creator.set_state(room_id, "m.room.pinned_events", {"pinned": [event_id]})
        for room_id in shared:  # in order: the shared rooms are everyone's newest
            event_id = self.crowd[0].send_message(room_id, f"hello {room_id}")
            self.crowd[1].send_read_receipt(room_id, event_id)
        elsewhere_room = self.elsewhere.create_room(preset="private_chat", name="Elsewhere")
        print(f"dataset built in {time.monotonic() - started:.0f} s", file=sys.stderr)
        return Dataset(
            spec=spec,
            users={size: _access(client) for size, client in self.users.items()},
            crowd=[_access(client) for client in self.crowd],
            elsewhere=_access(self.elsewhere),
            elsewhere_room=elsewhere_room,
            shared_rooms=shared,
            own_rooms=own_rooms,
            oldest_room=pool[0],
        )

    def _first_message(self, item: tuple[int, str]) -> str:
        """A message in pool room `index`, by its newest measured member (the
        smallest user joined last), or `crowd2` in the shared rooms."""
        index, room_id = item
        pool_size = max(self.spec.sizes) - EXTRAS
        if index >= pool_size - (self.spec.sizes[0] - EXTRAS):
            sender = self.crowd[1]
        else:
            members = [size for size in self.spec.sizes if index >= pool_size - (size - EXTRAS)]
            sender = self.users[min(members)]
        return sender.send_message(room_id, f"first words in {room_id}")

    def _own_rooms(self, user: Client) -> list[str]:
        """Two DMs (the second encrypted), both in `m.direct`, and an invite."""
        first, second, third = self.crowd[:3]
        encryption = _state("m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"})
        dms = []
        for other, state in ((first, []), (second, [encryption])):
            room_id = other.create_room(
                preset="trusted_private_chat",
                is_direct=True,
                invite=[user.user_id],
                initial_state=state,
            )
            user.join(room_id)
            other.send_message(room_id, f"hi {user.user_id}")
            dms.append(room_id)
        user.set_direct({first.user_id: [dms[0]], second.user_id: [dms[1]]})
        invite = third.create_room(
            preset="private_chat",
            name=f"Invitation for {user.user_id}",
            topic="Come and see",
            invite=[user.user_id],
        )
        return [*dms, invite]

    def _parallel(
        self, what: str, action: Callable[[Any], Any], items: Sequence[Any] | range
    ) -> list[Any]:
        """`action` over `items`, `concurrency` at a time, in order; progress on stderr."""
        started = time.monotonic()
        results: list[Any] = []
        with ThreadPoolExecutor(self.concurrency) as pool:
            for index, result in enumerate(pool.map(action, items), start=1):
                results.append(result)
                if index % 1000 == 0 or index == len(items):
                    rate = index / max(time.monotonic() - started, 1e-9)
                    print(f"  {what}: {index}/{len(items)} ({rate:.0f}/s)", file=sys.stderr)
        return results


def _access(client: Client) -> UserAccess:
    return UserAccess(client.user_id, client.access_token)
