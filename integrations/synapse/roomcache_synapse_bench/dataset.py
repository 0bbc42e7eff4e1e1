# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""Users in N rooms on a real Synapse, built through its client API (so
every table, cache and stream position is Synapse's own).

For sizes `s1 < s2 < ... < sk`:
* user `u<sk>` creates `sk` public rooms, every other one named;
* each smaller `u<si>` joins the `si` most recently created rooms, so the
  rooms of a smaller user are also the larger users' rooms;
* `crowd` more users join the rooms of the smallest user (the shared rooms)
  and the first of them sends one message in each: the shared rooms are the
  most recent of every user, so the 20 rooms a list `[[0, 19]]` shows (and
  their per-room data) are the same for every size, and only the number of
  rooms behind the list differs;
* user `elsewhere` owns one room no measured user is in (state changes
  "somewhere on the server").

`dataset.json` beside the homeserver records what was built (and the access
tokens); a later run with the same spec reuses the database as it is.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tests.client import Client
from tests.harness import Homeserver

VERSION = 1


@dataclass(frozen=True)
class DatasetSpec:
    sizes: tuple[int, ...]
    crowd: int = 3
    version: int = VERSION

    def __post_init__(self) -> None:
        if not self.sizes or list(self.sizes) != sorted(set(self.sizes)) or self.sizes[0] < 1:
            raise ValueError(f"sizes must be distinct, ascending and positive: {self.sizes}")

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
    shared_rooms: list[str]  # the smallest user's rooms, oldest first

    def to_json(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_json(),
            "users": {str(size): asdict(user) for size, user in self.users.items()},
            "crowd": [asdict(user) for user in self.crowd],
            "elsewhere": asdict(self.elsewhere),
            "elsewhere_room": self.elsewhere_room,
            "shared_rooms": self.shared_rooms,
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> Dataset:
        spec = DatasetSpec(
            sizes=tuple(data["spec"]["sizes"]),
            crowd=data["spec"]["crowd"],
            version=data["spec"]["version"],
        )
        return Dataset(
            spec=spec,
            users={int(size): UserAccess(**user) for size, user in data["users"].items()},
            crowd=[UserAccess(**user) for user in data["crowd"]],
            elsewhere=UserAccess(**data["elsewhere"]),
            elsewhere_room=data["elsewhere_room"],
            shared_rooms=list(data["shared_rooms"]),
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
    """Refuses to build when the disk is short: ~25 kB per room."""
    directory.mkdir(parents=True, exist_ok=True)
    needed = 1_000_000_000 + max(spec.sizes) * 25_000
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise SystemExit(
            f"only {free / 1e9:.1f} GB free under {directory}; building this dataset needs "
            f"about {needed / 1e9:.1f} GB"
        )


def build(homeserver: Homeserver, spec: DatasetSpec, *, concurrency: int = 4) -> Dataset:
    """Builds the dataset on a fresh homeserver (a few minutes per 1,000 rooms
    on a loaded 2-core machine)."""
    started = time.monotonic()
    largest = max(spec.sizes)
    users = {size: homeserver.register(f"u{size}") for size in spec.sizes}
    crowd = [homeserver.register(f"crowd{n}") for n in range(1, spec.crowd + 1)]
    elsewhere = homeserver.register("elsewhere")
    creator = users[largest]

    def create(index: int) -> str:
        options: dict[str, Any] = {"preset": "public_chat"}
        if index % 2 == 1:
            options["name"] = f"Room {index}"
        return creator.create_room(**options)

    rooms = _in_parallel(f"{creator.user_id} creates rooms", create, range(largest), concurrency)
    for size in sorted(spec.sizes, reverse=True)[1:]:
        _in_parallel(f"{users[size].user_id} joins", users[size].join, rooms[-size:], concurrency)
    shared = rooms[-spec.sizes[0] :]
    for member in crowd:
        _in_parallel(f"{member.user_id} joins", member.join, shared, concurrency)
    if crowd:
        for room_id in shared:
            crowd[0].send_message(room_id, f"hello {room_id}")
    elsewhere_room = elsewhere.create_room(preset="private_chat", name="Elsewhere")
    print(f"dataset built in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return Dataset(
        spec=spec,
        users={size: _access(client) for size, client in users.items()},
        crowd=[_access(client) for client in crowd],
        elsewhere=_access(elsewhere),
        elsewhere_room=elsewhere_room,
        shared_rooms=shared,
    )


def _access(client: Client) -> UserAccess:
    return UserAccess(client.user_id, client.access_token)


def _in_parallel(
    what: str, action: Callable[[Any], Any], items: Sequence[Any] | range, concurrency: int
) -> list[Any]:
    """`action` over `items`, `concurrency` at a time, in order; progress on stderr."""
    started = time.monotonic()
    results: list[Any] = []
    with ThreadPoolExecutor(concurrency) as pool:
        for index, result in enumerate(pool.map(action, items), start=1):
            results.append(result)
            if index % 1000 == 0 or index == len(items):
                rate = index / max(time.monotonic() - started, 1e-9)
                print(f"  {what}: {index}/{len(items)} ({rate:.0f}/s)", file=sys.stderr)
    return results
