"""Element X's room-list requests (roomcache_synapse_bench/element_x.py: the
shape the benchmark sends) answered through the module equal Synapse's own:
the list loading (`[[0, 19]]` without `pos`, then growing to the whole
list), then the steady state (the full range with `pos`) after each change
of a series that touches what the request shows (messages, the state types
it asks for, wildcards included, memberships, invites, DMs, receipts,
typing, tags), without and with room subscriptions.

The users and rooms are the benchmark's dataset (dataset.py) at a few
dozen rooms; the list grows by 10 rooms here (Element X: 100) so that it
takes several steps. Steady requests use `timeout=0`: a long poll with
news answers with the same computation at once.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from urllib.parse import quote

from roomcache_synapse_bench import element_x
from roomcache_synapse_bench.answers import differences
from roomcache_synapse_bench.dataset import (
    BEACON_INFO,
    CALL_MEMBER,
    Dataset,
    DatasetSpec,
    build,
)

from .client import Client, JsonDict
from .deployment import BYPASS_PREFIX, ModuleDeployment, counts_since
from .equivalence import (
    assert_answered_from_roomcache,
    assert_room_state_from_roomcache,
    assert_timelines_from_roomcache,
)
from .harness import Homeserver

SMALL, LARGE = SIZES = (10, 45)
BATCH = 10
_numbers = itertools.count(1)


class ElementXObserver:
    """A user running Element X's room list on two connections, one answered
    through the module and one by Synapse alone; each request goes to both,
    one after the other, with nothing written in between. Room
    subscriptions (if any) from the second request on."""

    def __init__(self, client: Client, subscriptions: list[str]) -> None:
        self.client = client
        self.subscriptions = subscriptions
        number = next(_numbers)
        self.conn_ids = {
            "module": f"{element_x.CONN_ID}-{number}",
            "synapse": f"{BYPASS_PREFIX}-{element_x.CONN_ID}-{number}",
        }
        self.positions: dict[str, str | None] = {"module": None, "synapse": None}
        self.count = 0
        self.requests = 0
        self.rooms_sent: set[str] = set()
        self.initial_timelines = 0
        """Rooms the module's side sent in full with a timeline (joined or
        left: invites and knocks have none)."""

    def compare(self, ranges: list[list[int]]) -> list[str]:
        answers = {side: self._sync(side, ranges) for side in ("module", "synapse")}
        self.requests += 1
        self.count = answers["synapse"]["lists"][element_x.LIST_NAME]["count"]
        self.rooms_sent |= set(answers["synapse"].get("rooms") or {})
        self.initial_timelines += sum(
            1
            for room in (answers["module"].get("rooms") or {}).values()
            if room.get("initial") and "timeline" in room
        )
        found = differences(answers["module"], answers["synapse"])
        return [f"{self.client.user_id} {ranges}: {difference}" for difference in found]

    def _sync(self, side: str, ranges: list[list[int]]) -> JsonDict:
        pos = self.positions[side]
        body = element_x.request(
            ranges,
            conn_id=self.conn_ids[side],
            subscriptions=self.subscriptions if pos is not None else (),
        )
        answer = self.client.sliding_sync(body, pos=pos)
        self.positions[side] = answer["pos"]
        return answer

    def load(self) -> list[str]:
        """The loading sequence; the differences of every step."""
        found = self.compare([element_x.FIRST_RANGE])
        for ranges in element_x.loading_ranges(self.count, BATCH):
            found += self.compare(ranges)
        return found

    def steady(self) -> list[str]:
        return self.compare(element_x.steady_range(self.count))


def test_element_x_requests_equal_synapse_own(with_module: ModuleDeployment) -> None:
    _compare_element_x(with_module, "ex_")


def test_with_two_event_writers(with_module_workers: ModuleDeployment) -> None:
    """The same with events persisted by two writers (tokens with writers
    ahead of the minimum: the timelines' rows are filtered by writer)."""
    _compare_element_x(with_module_workers, "exw_")
    writers = with_module_workers.homeserver.query(
        "SELECT DISTINCT instance_name FROM events WHERE sender LIKE %s", ["@exw%"]
    )
    assert {row[0] for row in writers} == {"p1", "p2"}


def _compare_element_x(with_module: ModuleDeployment, prefix: str) -> None:
    homeserver = with_module.homeserver
    dataset = build(homeserver, DatasetSpec(sizes=SIZES, prefix=prefix), concurrency=4)
    observers = [
        ElementXObserver(dataset.users[size].client(homeserver), subscriptions)
        for size in SIZES
        for subscriptions in ([], dataset.on_screen)
    ]
    before = with_module.room_list_counts()
    state_before = with_module.room_state_counts()

    found: list[str] = []
    for observer in observers:
        found += [f"loading: {d}" for d in observer.load()]
    # [[0, 19]]; and for the larger user [[0, 29]], [[0, 39]], [[0, 44]].
    assert [observer.requests for observer in observers] == [1, 1, 4, 4]
    assert [observer.count for observer in observers] == [SMALL, SMALL, LARGE, LARGE]
    # Loaded: every room of the user was sent.
    assert [len(observer.rooms_sent) for observer in observers] == [SMALL, SMALL, LARGE, LARGE]

    for name, change in _changes(dataset, homeserver):
        change()
        for observer in observers:
            found += [f"after {name!r}: {d}" for d in observer.steady()]
    assert found == [], "\n".join(found)

    counts = counts_since(before, with_module.room_list_counts())
    print(f"room lists computed, by (path, reason): {counts}")
    assert_answered_from_roomcache(counts, sum(observer.requests for observer in observers))
    # The rooms' required_state and names came from roomcache's held state:
    # two lookups (name, required_state) for every room sent in full on the
    # module's connections (the loading sequence's rooms at least).
    state_counts = counts_since(state_before, with_module.room_state_counts())
    print(f"room state lookups, by (path, reason): {state_counts}")
    loaded = sum(len(observer.rooms_sent) for observer in observers)
    assert_room_state_from_roomcache(state_counts, at_least=loaded)
    # Every initial timeline on the module's connections came from roomcache.
    initial_timelines = sum(observer.initial_timelines for observer in observers)
    # (Each user has one invite among its rooms: sent without a timeline.)
    assert initial_timelines >= loaded - len(observers), (initial_timelines, loaded)
    assert_timelines_from_roomcache(state_counts, at_least=initial_timelines)
    # Member counts of named rooms sent in full, and the account-data
    # extension's room account data and tags of rooms new on the
    # connection: from the request's one query each, unless Synapse's cache
    # had them (the other connection's requests fill it).
    for lookup in ("member_counts", "room_account_data", "room_tags"):
        assert state_counts.get((f"{lookup}_batched", ""), 0) > 0, (lookup, state_counts)
        by_synapse = {r for (path, r) in state_counts if path == f"{lookup}_synapse"}
        assert by_synapse <= {"bypass", "cached", "not_fetched"}, (lookup, state_counts)
    # Bump stamps Synapse looked up (rooms whose timeline had no bump
    # event): from the room-list answer's entries on the module's side.
    assert state_counts.get(("bump_stamp_roomcache", ""), 0) > 0
    # Loaded, each connection holds its whole list: the steady requests ask
    # roomcache only for the rooms that moved, but after a change of one of
    # the user's own memberships, and after a list showing a room left
    # since pos (four requests of each of the smaller user's connections:
    # after the invite accepted, the new DM, the leave, and the next one).
    steady = len(observers) * len(_changes(dataset, homeserver))
    assert counts.get(("held_lists", "true"), 0) == steady - 4 * 2, counts
    assert ("synapse", "held_order_mismatch") not in counts, counts


def _changes(dataset: Dataset, homeserver: Homeserver) -> list[tuple[str, Callable[[], object]]]:
    """What happens while the lists are loaded, one change a step. The
    larger user created the pool rooms (and may change their state)."""
    small = dataset.users[SMALL].client(homeserver)
    large = dataset.users[LARGE].client(homeserver)
    crowd = [access.client(homeserver) for access in dataset.crowd]
    elsewhere = dataset.elsewhere.client(homeserver)
    shared, server_name = dataset.shared_rooms, homeserver.server_name
    top, old = shared[-1], dataset.oldest_room
    state = large.set_state

    def typing() -> None:
        path = f"/_matrix/client/v3/rooms/{_id(top)}/typing/{_id(crowd[0].user_id)}"
        crowd[0].request("PUT", path, {"typing": True, "timeout": 120_000})

    def receipt() -> None:
        event_id = small.send_message(top, "read this")
        path = f"/_matrix/client/v3/rooms/{_id(top)}/receipt/m.read/{_id(event_id)}"
        large.request("POST", path, {})

    def new_dm() -> None:
        room_id = crowd[2].create_room(
            preset="trusted_private_chat", is_direct=True, invite=[small.user_id]
        )
        small.join(room_id)

    def power_levels() -> None:
        levels = large.get_state(shared[-3], "m.room.power_levels")
        levels.setdefault("users", {})[crowd[0].user_id] = 50
        state(shared[-3], "m.room.power_levels", levels)

    def avatar_and_name() -> None:
        state(shared[-4], "m.room.avatar", {"url": f"mxc://{server_name}/new"})
        large.set_name(shared[-4], "Renamed")

    call = {"application": "m.call", "call_id": "", "scope": "m.room", "device_id": "D"}
    return [
        ("a message at the top", lambda: crowd[0].send_message(top, "news")),
        ("a state change elsewhere", lambda: elsewhere.set_name(dataset.elsewhere_room, "Renamed")),
        ("a message far down the list", lambda: large.send_message(old, "the oldest room wakes")),
        ("a topic", lambda: state(top, "m.room.topic", {"topic": "new topic"})),
        ("a call member", lambda: state(top, CALL_MEMBER, call, f"_{crowd[1].user_id}_D")),
        ("a beacon", lambda: state(shared[-2], BEACON_INFO, {"live": True}, large.user_id)),
        (
            "a space child",
            lambda: state(dataset.space, "m.space.child", {"via": [server_name]}, old),
        ),
        ("pinned events", lambda: state(top, "m.room.pinned_events", {"pinned": []})),
        ("power levels", power_levels),
        ("an avatar and a rename", avatar_and_name),
        ("member hints", lambda: state(top, "m.member_hints", {"service_members": []})),
        ("encryption", lambda: large.set_encryption(shared[-5])),
        ("typing", typing),
        ("a read receipt", receipt),
        ("a room tag", lambda: small.set_room_tag(top, "m.favourite", order=0.5)),
        ("an invite accepted", lambda: small.join(dataset.own_rooms[SMALL][-1])),
        ("a new DM", new_dm),
        ("a leave", lambda: small.leave(shared[-6])),
        ("a new member far down", lambda: crowd[1].join(old)),
        ("a message at the top again", lambda: crowd[0].send_message(top, "more news")),
    ]


def _id(value: str) -> str:
    return quote(value, safe="")
