"""The per-room seam's decisions (per_room.py) and the parsing of roomcache's
rooms' data (room_state.py), without a Synapse: Synapse is a
`Mock(spec=SynapseAdapter)`, roomcache a `Mock(spec=RoomcacheClient)`; each
test checks which state lookups roomcache answers, what it asks roomcache
(once per request), and why the others are Synapse's (counted)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any
from unittest.mock import AsyncMock, Mock

import pytest
from prometheus_client import REGISTRY
from synapse.api.constants import Direction
from synapse.types import RoomStreamToken
from synapse.types.state import StateFilter

from roomcache_synapse.adapter import CACHED_LOOKUPS as LOOKUPS
from roomcache_synapse.adapter import SlidingSyncInterestedRooms, SynapseAdapter
from roomcache_synapse.answer import BadAnswer
from roomcache_synapse.breaker import CircuitBreaker
from roomcache_synapse.client import RoomcacheClient, RoomcacheFailure
from roomcache_synapse.config import parse_config
from roomcache_synapse.per_room import RoomcacheRoomState, rooms_sent_in_full
from roomcache_synapse.room_state import HeldTypes, parse_room_data
from roomcache_synapse.tokens import StreamPosition

HELD = {
    "types": ["m.room.create", "m.room.name", "m.room.topic"],
    "wildcard_types": ["m.space.child"],
}
# What Synapse's own lookup answers (for the keys roomcache does not hold).
SYNAPSE_IDS = {("m.room.member", "@u:hs"): "$me"}
# Element X's shape, in short: keys "" of held types, a wildcard of a held
# wildcard type, the user's own membership.
FILTER = StateFilter.from_types(
    [("m.room.name", ""), ("m.room.topic", ""), ("m.space.child", None), ("m.room.member", "@u:hs")]
)


def room_state(room_id: str) -> dict[str, Any]:
    return {
        "state": [
            ["m.room.create", "", f"$create{room_id}"],
            ["m.room.name", "", f"$name{room_id}"],
            ["m.space.child", "!c1:hs", f"$child1{room_id}"],
            ["m.space.child", "!c2:hs", f"$child2{room_id}"],
        ]
    }


def room_timeline(room_id: str, limit: int) -> dict[str, Any]:
    """A room's timeline as roomcache answers it: `limit` events, newest
    first, of a room with more."""
    events = [[f"$event{n}{room_id}", 30 - n, 40 - n, "master", False] for n in range(limit)]
    return {"events": events, "limited": True}


def rooms_data(
    room_ids: list[str], timeline: Mapping[str, int] | None = None, **changes: Any
) -> dict[str, Any]:
    """roomcache's answer for the rooms (with `timeline`, as asked, their
    timelines too); `changes` replace its fields."""
    raw = {
        "rooms": {room_id: room_state(room_id) for room_id in room_ids},
        "held": HELD,
        "token": "s20",
        "timed_out": False,
    }
    raw.update(changes)
    if timeline is not None and isinstance(raw["rooms"], dict):
        raw["rooms"] = {
            room_id: {"timeline": room_timeline(room_id, timeline["limit"]), **entry}
            for room_id, entry in raw["rooms"].items()
        }
    return raw


def expected_ids(room_id: str) -> dict[tuple[str, str], str]:
    return {
        ("m.room.name", ""): f"$name{room_id}",
        ("m.space.child", "!c1:hs"): f"$child1{room_id}",
        ("m.space.child", "!c2:hs"): f"$child2{room_id}",
        **SYNAPSE_IDS,
    }


def interested(
    memberships: Mapping[str, str],
    newly_joined: frozenset[str] = frozenset(),
    timeline_limits: Mapping[str, int] | None = None,
) -> Any:
    timeline_limits = timeline_limits or {}
    rooms = Mock(spec=SlidingSyncInterestedRooms)
    rooms.relevant_rooms_to_send_map = {
        room_id: Mock(name="room config", timeline_limit=timeline_limits.get(room_id, 1))
        for room_id in memberships
    }
    rooms.room_membership_for_user_map = {
        room_id: Mock(membership=membership) for room_id, membership in memberships.items()
    }
    rooms.newly_joined_rooms = newly_joined
    return rooms


class Deployment:
    def __init__(self, **config: Any) -> None:
        synapse = Mock(spec=SynapseAdapter)
        synapse.original_current_state_ids_at = AsyncMock(side_effect=self._synapse_lookup)
        synapse.original_latest_bump_stamp = AsyncMock(return_value=99)
        synapse.original_topological_page = AsyncMock(
            return_value=(["synapse's event"], "synapse's token", False)
        )
        synapse.events_by_id = AsyncMock(side_effect=lambda ids: [f"event {i}" for i in ids])
        synapse.original_bundled_aggregations = AsyncMock(return_value={"$e": "Synapse's"})
        synapse.events_with_relations = AsyncMock(return_value=frozenset())
        synapse.aggregation_candidates.side_effect = SynapseAdapter.aggregation_candidates
        # Synapse's cached per-room lookups (batched.py) and the loads.
        self.originals = {
            lookup: AsyncMock(return_value=f"Synapse's {lookup}") for lookup in LOOKUPS
        }
        synapse.original_lookup.side_effect = self.originals.__getitem__
        synapse.user_of.return_value = "@u:hs"
        synapse.cached.return_value = None
        synapse.load = AsyncMock(
            side_effect=lambda lookup, user, rooms: {room: f"{lookup} of {room}" for room in rooms}
        )
        synapse.BACKWARDS = Direction.BACKWARDS
        synapse.room_stream_token.side_effect = SynapseAdapter.room_stream_token
        synapse.partial_state_rooms.return_value = frozenset()
        synapse.never_sent.side_effect = lambda state, rooms: set(rooms) - state.sent
        synapse.filter_types.side_effect = SynapseAdapter.filter_types
        synapse.state_filter.side_effect = SynapseAdapter.state_filter
        self.synapse = synapse
        self.client = Mock(spec=RoomcacheClient)
        self.client.rooms_data.side_effect = lambda body: rooms_data(
            body["rooms"], body.get("timeline")
        )
        self.config = parse_config(
            {"socket_path": "/rc.sock", "bypass_conn_id_prefix": "bypass", **config}
        )
        self.breaker = CircuitBreaker.of_config(self.config)
        self.seam = RoomcacheRoomState(synapse, self.client, self.config, self.breaker)
        self.synapse_filters: list[StateFilter] = []

    async def _synapse_lookup(self, **arguments: Any) -> dict[tuple[str, str], str]:
        state_filter = arguments["state_filter"]
        self.synapse_filters.append(state_filter)
        return dict(state_filter.filter_state(SYNAPSE_IDS))

    def request(
        self,
        rooms: Interested,
        lookups: list[tuple[str, str, StateFilter]],
        *,
        from_token: Any = None,
        sent: frozenset[str] = frozenset(),
        conn_id: str = "room-list",
        other_token: bool = False,
        bump_stamps: Mapping[str, int] | None = None,
        lists_from_roomcache: bool = True,
        bump_stamp_lookups: list[str] | None = None,
    ) -> list[tuple[Any, str]]:
        """One Sliding Sync request: the room lists' result `rooms`, then
        each lookup (room, membership, filter): its answer and who answered
        (`roomcache`, or Synapse's reason)."""
        to_token = Mock(room_key=RoomStreamToken(stream=20))

        async def run() -> list[tuple[Any, str]]:
            if bump_stamps is not None:
                self.seam.note_bump_stamps(bump_stamps)
            await self.prepare(
                rooms,
                to_token,
                from_token=from_token,
                sent=sent,
                conn_id=conn_id,
                lists_from_roomcache=lists_from_roomcache,
            )
            answers: list[tuple[Any, str]] = []
            for room_id in bump_stamp_lookups or ():
                before = _counts("roomcache_synapse_bump_stamps")
                stamp = await self.seam.latest_bump_stamp(room_id)
                after = _counts("roomcache_synapse_bump_stamps")
                (changed,) = [key for key in after if after[key] != before.get(key, 0)]
                answers.append((stamp, "roomcache" if changed[0] == "roomcache" else changed[1]))
            for room_id, membership, state_filter in lookups:
                before = _counts()
                ids = await self.seam.current_state_ids_at(
                    room_id=room_id,
                    room_membership_for_user_at_to_token=Mock(membership=membership),
                    state_filter=state_filter,
                    to_token=Mock() if other_token else to_token,
                )
                after = _counts()
                (changed,) = [key for key in after if after[key] != before.get(key, 0)]
                answers.append((ids, "roomcache" if changed[0] == "roomcache" else changed[1]))
            return answers

        return asyncio.run(run())

    async def prepare(
        self,
        rooms: Any,
        to_token: Any,
        *,
        from_token: Any = None,
        sent: frozenset[str] = frozenset(),
        conn_id: str = "room-list",
        lists_from_roomcache: bool = True,
    ) -> None:
        """The per-room seam's `prepare` of a request whose room lists'
        result is `rooms`, on connection `conn_id` (rooms `sent` before)."""
        await self.seam.prepare(
            sync_config=Mock(conn_id=conn_id),
            previous_connection_state=Mock(sent=sent),
            to_token=to_token,
            from_token=from_token,
            interested=rooms,
            lists_from_roomcache=lists_from_roomcache,
        )

    def asked(self) -> list[list[str]]:
        return [call.args[0]["rooms"] for call in self.client.rooms_data.call_args_list]


Interested = Any


def _counts(name: str = "roomcache_synapse_room_state") -> dict[tuple[str, str], float]:
    counts = {}
    for metric in REGISTRY.collect():
        if metric.name == name:
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    counts[(sample.labels["path"], sample.labels["reason"])] = sample.value
    return counts


def test_the_held_keys_come_from_one_fetch_and_the_rest_from_synapse() -> None:
    deployment = Deployment()
    rooms = interested({"!a:hs": "join", "!b:hs": "join", "!i:hs": "invite"})
    answers = deployment.request(rooms, [("!a:hs", "join", FILTER), ("!b:hs", "join", FILTER)])
    assert answers == [(expected_ids("!a:hs"), "roomcache"), (expected_ids("!b:hs"), "roomcache")]
    # One request for the joined rooms sent, at the request's token.
    assert deployment.asked() == [["!a:hs", "!b:hs"]]
    body = deployment.client.rooms_data.call_args.args[0]
    assert (body["wait_for"], body["timeout_ms"]) == ("s20", 500)
    # Synapse was asked only for the key roomcache does not hold.
    assert [dict(f.types) for f in deployment.synapse_filters] == [
        {"m.room.member": frozenset({"@u:hs"})}
    ] * 2


def test_the_first_lookup_sends_the_fetch_and_the_loads() -> None:
    """`prepare` (the room lists' phase) sends nothing: the per-room data's
    first lookup sends the one fetch, and each batched lookup's first call
    its load."""
    deployment = Deployment()
    to_token = Mock(room_key=RoomStreamToken(stream=20))

    async def run() -> None:
        await deployment.prepare(interested({"!a:hs": "join", "!b:hs": "join"}), to_token)
        deployment.client.rooms_data.assert_not_called()
        deployment.synapse.load.assert_not_called()
        await deployment.seam.current_state_ids_at(
            room_id="!b:hs",
            room_membership_for_user_at_to_token=Mock(membership="join"),
            state_filter=FILTER,
            to_token=to_token,
        )
        assert deployment.asked() == [["!a:hs", "!b:hs"]]
        deployment.synapse.load.assert_not_called()

    asyncio.run(run())


def test_the_name_alone_needs_no_synapse_lookup() -> None:
    deployment = Deployment()
    name = StateFilter.from_types([("m.room.name", "")])
    answers = deployment.request(interested({"!a:hs": "join"}), [("!a:hs", "join", name)])
    assert answers == [({("m.room.name", ""): "$name!a:hs"}, "roomcache")]
    deployment.synapse.original_current_state_ids_at.assert_not_awaited()


def test_a_held_key_absent_from_the_room_is_absent() -> None:
    deployment = Deployment()
    topic = StateFilter.from_types([("m.room.topic", ""), ("m.space.child", "!c1:hs")])
    answers = deployment.request(interested({"!a:hs": "join"}), [("!a:hs", "join", topic)])
    assert answers == [({("m.space.child", "!c1:hs"): "$child1!a:hs"}, "roomcache")]


def test_incremental_requests_fetch_the_rooms_sent_in_full_only() -> None:
    deployment = Deployment()
    rooms = interested(
        {"!live:hs": "join", "!new:hs": "join", "!joined:hs": "join"},
        newly_joined=frozenset({"!joined:hs"}),
    )
    answers = deployment.request(
        rooms,
        [(room, "join", FILTER) for room in ("!live:hs", "!new:hs", "!joined:hs")],
        from_token=Mock(name="from token"),
        sent=frozenset({"!live:hs", "!joined:hs"}),
    )
    assert [who for _, who in answers] == ["not_fetched", "roomcache", "roomcache"]
    assert deployment.asked() == [["!new:hs", "!joined:hs"]]
    assert rooms_sent_in_full(["!a", "!b", "!c"], None, (), ()) == ["!a", "!b", "!c"]
    assert rooms_sent_in_full(["!a", "!b", "!c"], object(), {"!c"}, {"!a"}) == ["!a", "!c"]


def test_nothing_to_send_in_full_asks_nothing() -> None:
    deployment = Deployment()
    answers = deployment.request(
        interested({"!live:hs": "join", "!gone:hs": "leave"}),
        [("!live:hs", "join", FILTER), ("!gone:hs", "leave", FILTER)],
        from_token=Mock(name="from token"),
        sent=frozenset({"!live:hs"}),
    )
    assert [who for _, who in answers] == ["not_fetched", "membership"]
    deployment.client.rooms_data.assert_not_called()


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("left", "membership"),
        ("partial_state", "partial_state"),
        ("all_state", "state_filter"),
        ("heroes_only", "not_held"),
        ("unknown", "room_unknown"),
        ("without_create", "room_unknown"),
        ("other_token", "not_fetched"),
        ("bypass", "bypass"),
        ("timed_out", "not_caught_up"),
        ("unavailable", "unavailable"),
        ("bad_answer", "bad_answer"),
    ],
)
def test_what_synapse_answers_and_why(case: str, reason: str) -> None:
    deployment = Deployment()
    state_filter, membership, kwargs = FILTER, "join", {}
    if case == "left":
        membership = "leave"
    elif case == "partial_state":
        deployment.synapse.partial_state_rooms.return_value = frozenset({"!a:hs"})
    elif case == "all_state":
        state_filter = StateFilter.all()
    elif case == "heroes_only":
        state_filter = StateFilter.from_types([("m.room.member", "@h:hs")])
    elif case == "unknown":
        deployment.client.rooms_data.side_effect = lambda body: rooms_data(
            body["rooms"], body.get("timeline"), rooms={"!a:hs": {"unknown": "recalculating"}}
        )
    elif case == "without_create":
        deployment.client.rooms_data.side_effect = lambda body: rooms_data(
            body["rooms"], body.get("timeline"), rooms={"!a:hs": {"state": []}}
        )
    elif case == "other_token":
        kwargs["other_token"] = True
    elif case == "bypass":
        kwargs["conn_id"] = "bypass-1"
    elif case == "timed_out":
        deployment.client.rooms_data.side_effect = lambda body: rooms_data(
            body["rooms"], body.get("timeline"), token="s10", timed_out=True
        )
    elif case == "unavailable":
        deployment.client.rooms_data.side_effect = RoomcacheFailure("unavailable", "gone")
    elif case == "bad_answer":
        deployment.client.rooms_data.side_effect = lambda body: rooms_data(["!other:hs"])
    rooms = interested({"!a:hs": membership})
    ((ids, who),) = deployment.request(rooms, [("!a:hs", membership, state_filter)], **kwargs)
    assert who == reason
    # Synapse's own lookup, with the request's own filter.
    assert deployment.synapse_filters == [state_filter]
    assert ids == state_filter.filter_state(SYNAPSE_IDS)


def test_a_failing_roomcache_opens_the_breaker() -> None:
    deployment = Deployment()
    deployment.client.rooms_data.side_effect = RoomcacheFailure("timeout", "slow")
    rooms = interested({"!a:hs": "join"})
    assert [who for _, who in deployment.request(rooms, [("!a:hs", "join", FILTER)])] == ["timeout"]
    assert [who for _, who in deployment.request(rooms, [("!a:hs", "join", FILTER)])] == [
        "circuit_open"
    ]
    assert len(deployment.asked()) == 1


def test_bump_stamps_come_from_the_room_list_answer() -> None:
    deployment = Deployment()
    rooms = interested({"!a:hs": "join", "!b:hs": "join"})
    lookups = ["!a:hs", "!b:hs"]
    answers = deployment.request(rooms, [], bump_stamps={"!a:hs": 41}, bump_stamp_lookups=lookups)
    assert answers == [(41, "roomcache"), (99, "not_noted")]
    deployment.synapse.original_latest_bump_stamp.assert_awaited_once_with("!b:hs")
    # Room lists computed Synapse's way (or replaced after verification):
    # the noted stamps are not used, nor kept for the next request.
    answers = deployment.request(
        rooms,
        [],
        bump_stamps={"!a:hs": 41},
        lists_from_roomcache=False,
        bump_stamp_lookups=["!a:hs"],
    )
    assert answers == [(99, "not_noted")]
    assert deployment.request(rooms, [], bump_stamp_lookups=["!a:hs"]) == [(99, "not_noted")]


def test_held_types_split_a_filter() -> None:
    held = HeldTypes(types=frozenset({"m.room.name"}), wildcard_types=frozenset({"m.space.child"}))
    mine, rest = held.split(
        {
            "m.room.name": frozenset({"", "x"}),
            "m.space.child": None,
            "m.room.member": frozenset({"@u:hs"}),
            "m.beacon_info": None,
        }
    )
    assert mine == {"m.room.name": frozenset({""}), "m.space.child": None}
    assert rest == {
        "m.room.name": frozenset({"x"}),
        "m.room.member": frozenset({"@u:hs"}),
        "m.beacon_info": None,
    }


AT = StreamPosition.parse("s20")


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ([], "not a JSON object"),
        (rooms_data(["!a:hs"], held=None), "held"),
        (rooms_data(["!a:hs", "!b:hs"]), "not the rooms asked"),
        (rooms_data(["!a:hs"], token="s19"), "before s20"),
        (rooms_data(["!a:hs"], token="x"), "token"),
        (rooms_data([], rooms={"!a:hs": {"state": [["m.room.topic", "k", "$t"]]}}), "held key"),
        (rooms_data([], rooms={"!a:hs": {"state": [["m.room.name", "", "t"]]}}), "identifier"),
        (rooms_data([], rooms={"!a:hs": {"state": [["m.room.name", ""]]}}), "[type"),
        (rooms_data([], rooms={"!a:hs": {"state": [["m.room.name", "", "$n"]] * 2}}), "twice"),
        (rooms_data([], rooms={"!a:hs": {"unknown": 3}}), "unknown"),
    ],
)
def test_bad_rooms_data_is_refused(raw: Any, problem: str) -> None:
    with pytest.raises(BadAnswer, match=problem.replace("[", r"\[")):
        parse_room_data(raw, ["!a:hs"], AT)


def test_good_rooms_data_is_typed() -> None:
    answer = parse_room_data(
        rooms_data(["!a:hs"], rooms={"!a:hs": room_state("!a:hs"), "!u:hs": {"unknown": "x"}}),
        ["!a:hs", "!u:hs"],
        AT,
    )
    assert answer.token == AT and not answer.timed_out
    assert answer.held.holds("m.space.child", "!any:hs") and not answer.held.holds(
        "m.room.name", "k"
    )
    assert answer.states["!a:hs"].ids[("m.space.child", "!c2:hs")] == "$child2!a:hs"
    assert answer.unknown == {"!u:hs": "x"}
