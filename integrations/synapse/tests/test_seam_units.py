"""The seam's decisions, without a Synapse: Synapse is a
`Mock(spec=SynapseAdapter)`, roomcache a `Mock(spec=RoomcacheClient)`, and
each test checks what the seam answers (roomcache's lists, or Synapse's own
computation and the reason counted), what it asks, and what it remembers.
Also the adapter's check at install, against `Mock(spec=…)` objects of
Synapse's own classes."""

from __future__ import annotations

import asyncio
import copy
import random
from collections.abc import Callable
from typing import Any
from unittest.mock import AsyncMock, Mock

import pytest
from prometheus_client import REGISTRY
from synapse.api.errors import SlidingSyncUnknownPosition
from synapse.handlers.sliding_sync.room_lists import SlidingSyncRoomLists
from synapse.types import RoomStreamToken, UserID, create_requester
from synapse.types.handlers.sliding_sync import (
    HaveSentRoom,
    PerConnectionState,
    RoomStatusMap,
    RoomSyncConfig,
    SlidingSyncConfig,
)

from roomcache_synapse.adapter import SynapseAdapter
from roomcache_synapse.breaker import CircuitBreaker
from roomcache_synapse.client import RoomcacheClient, RoomcacheFailure
from roomcache_synapse.config import parse_config
from roomcache_synapse.per_room import RoomcacheRoomState
from roomcache_synapse.seam import RoomcacheRoomLists
from roomcache_synapse.to_send import (
    ConnectionExpired,
    PreviousConnection,
    TooManyUpdates,
    rooms_to_send,
)
from roomcache_synapse.waker import RoomcacheWaker

from .test_answer_units import answer, entry

USER = "@u:hs"
SYNAPSE_RESULT = Mock(name="Synapse's own result")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def list_config(ranges: list[tuple[int, int]]) -> Any:
    return SlidingSyncConfig.SlidingSyncList(
        ranges=ranges, required_state=[("m.room.name", "")], timeline_limit=1
    )


def sync_config(conn_id: str = "conn", **lists: Any) -> SlidingSyncConfig:
    return SlidingSyncConfig(
        user=UserID.from_string(USER),
        requester=create_requester(USER),
        conn_id=conn_id,
        lists=lists or {"all": list_config([(0, 1)])},
    )


def token(stream: int, account_data: int = 5) -> Mock:
    """A Synapse `StreamToken` (what the seam reads of it)."""
    return Mock(room_key=RoomStreamToken(stream=stream), account_data_key=account_data)


def good_answer(**changes: Any) -> dict[str, Any]:
    """roomcache's answer for one list `[[0, 1]]` at `s20`."""
    raw = answer()
    raw.pop("other_rooms")
    raw.pop("rooms")
    raw["account_data_position"] = 5
    raw.update(changes)
    return raw


class Deployment:
    """The seam over a mocked Synapse and a mocked roomcache."""

    def __init__(self, **config: Any) -> None:
        self.clock = FakeClock()
        synapse = Mock(spec=SynapseAdapter)
        synapse.original_compute_interested_rooms = AsyncMock(return_value=SYNAPSE_RESULT)
        synapse.rooms_excluded_from_sync = frozenset()
        synapse.is_mine_id.side_effect = lambda user_id: user_id.endswith(":hs")
        synapse.sliding_sync_tables_ready.return_value = True
        synapse.ignored_users.return_value = frozenset()
        synapse.accepts_all_invites.return_value = True
        synapse.forgotten_rooms.return_value = frozenset()
        synapse.partial_state_rooms.return_value = frozenset()
        synapse.newly_joined_and_left.return_value = (set(), {})
        synapse.dm_rooms.return_value = frozenset()
        synapse.room_versions.side_effect = lambda room_ids: dict.fromkeys(room_ids, "10")
        # A connection that sent !b:hs before (and not !a:hs), nothing
        # changed since.
        synapse.previous_connection.return_value = PreviousConnection(
            never_sent=lambda rooms: set(rooms) - {"!b:hs"},
            previously=[],
            room_configs={},
            last_used_ts=None,
        )
        synapse.connection_expiry = TooManyUpdates(rooms=100, unused_ms=3_600_000)
        synapse.now_ms.return_value = 10**12
        synapse.rooms_with_updates_since.return_value = set()
        synapse.membership_changed_since.return_value = False
        synapse.rooms_with_events_since.return_value = set()
        synapse.rooms_with_state_changes_since.return_value = set()
        synapse.account_data_changed_since.return_value = True
        synapse.current_room_token.return_value = RoomStreamToken(stream=20)
        synapse.max_allocated_stream.return_value = 40
        self.synapse = synapse
        self.client = Mock(spec=RoomcacheClient)
        self.client.room_lists.return_value = good_answer()
        self.config = parse_config({"socket_path": "/rc.sock", **config})
        self.breaker = CircuitBreaker(
            failures=self.config.circuit_failures,
            open_seconds=self.config.circuit_open_ms / 1000,
            max_open_seconds=self.config.circuit_max_open_ms / 1000,
            clock=self.clock,
        )
        self.room_state = Mock(spec=RoomcacheRoomState)
        self.seam = RoomcacheRoomLists(
            synapse, self.client, self.config, self.breaker, self.room_state
        )

    def sync(
        self, config: SlidingSyncConfig | None = None, to_token: Any = None, from_token: Any = None
    ) -> tuple[Any, str]:
        """One computation: its result and who answered (`roomcache`, or
        Synapse's reason)."""
        before = _counts()
        result = asyncio.run(
            self.seam.compute_interested_rooms(
                sync_config=config or sync_config(),
                previous_connection_state=Mock(name="previous connection state"),
                to_token=to_token or token(20),
                from_token=from_token,
            )
        )
        after = _counts()
        changed = [key for key in after if after[key] != before.get(key, 0)]
        assert len(changed) == 1, changed
        path, reason = changed[0]
        return result, "roomcache" if path == "roomcache" else reason

    def last_body(self) -> dict[str, Any]:
        return self.client.room_lists.call_args.args[1]


def _counts() -> dict[tuple[str, str], float]:
    counts = {}
    for metric in REGISTRY.collect():
        if metric.name == "roomcache_synapse_room_lists":
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    counts[(sample.labels["path"], sample.labels["reason"])] = sample.value
    return counts


def test_lists_come_from_roomcache() -> None:
    deployment = Deployment()
    result, who = deployment.sync()
    assert who == "roomcache"
    window = result.lists["all"]
    assert window.count == 3
    assert [(op.range, op.room_ids) for op in window.ops] == [((0, 1), ["!a:hs", "!b:hs"])]
    assert set(result.relevant_room_map) == {"!a:hs", "!b:hs"}
    assert set(result.relevant_rooms_to_send_map) == {"!a:hs"}
    # Memberships of the rooms sent only, their versions in one lookup.
    (membership,) = result.room_membership_for_user_map.values()
    assert (membership.room_id, membership.membership, membership.room_version_id) == (
        "!a:hs",
        "join",
        "10",
    )
    assert (membership.event_pos.instance_name, membership.event_pos.stream) == ("master", 10)
    deployment.synapse.room_versions.assert_awaited_once()
    assert list(deployment.synapse.room_versions.call_args.args[0]) == ["!a:hs"]
    body = deployment.last_body()
    assert (body["wait_for"], body["at"], body["lists"]["0"]["ranges"]) == ("s20", "s20", [[0, 1]])
    deployment.synapse.original_compute_interested_rooms.assert_not_awaited()


def test_the_per_room_seam_hears_of_the_lists() -> None:
    """The joined rooms' bump stamps of roomcache's answer are noted, and
    the per-room seam prepared with the result, whichever way it came."""
    deployment = Deployment()
    result, _ = deployment.sync()
    deployment.room_state.note_bump_stamps.assert_called_once_with({"!a:hs": 12})
    prepared = deployment.room_state.prepare.call_args.kwargs
    assert (prepared["interested"], prepared["lists_from_roomcache"]) == (result, True)
    deployment.client.room_lists.side_effect = RoomcacheFailure("unavailable", "gone")
    result, who = deployment.sync()
    assert (result, who) == (SYNAPSE_RESULT, "unavailable")
    prepared = deployment.room_state.prepare.call_args.kwargs
    assert (prepared["interested"], prepared["lists_from_roomcache"]) == (SYNAPSE_RESULT, False)


def _answer_with(change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    raw = copy.deepcopy(good_answer())
    change(raw)
    return raw


FIRST_ROOM = ("lists", "0", "ranges", 0, "rooms", 0)


def _first_room(**changes: Any) -> Callable[[dict[str, Any]], Any]:
    return lambda raw: raw["lists"]["0"]["ranges"][0]["rooms"][0].update(changes)


# Answers the seam must not serve, and the reason it counts.
ANSWERS_REFUSED = {
    "count a string": (lambda raw: raw["lists"]["0"].update(count="many"), "bad_answer"),
    "membership bogus in a room sent": (_first_room(membership="bogus"), "bad_answer"),
    "stream ordering a string": (_first_room(event_stream_ordering="10"), "bad_answer"),
    "token far in the future": (lambda raw: raw.update(token="s9999999999"), "bad_answer"),
    "token of a writer far ahead": (lambda raw: raw.update(token="m20~p9.99999"), "bad_answer"),
    "timed out": (lambda raw: raw.update(timed_out=True, token="s15"), "not_caught_up"),
    "recalculating": (lambda raw: raw.update(fallback=True), "recalculating"),
    "membership after the token": (
        lambda raw: raw.update(memberships_after_at=["!a:hs"]),
        "membership_after_token",
    ),
    "an unknown room version": (lambda raw: None, "room_version"),
}


@pytest.mark.parametrize("name", sorted(ANSWERS_REFUSED))
def test_answers_not_served(name: str) -> None:
    change, reason = ANSWERS_REFUSED[name]
    deployment = Deployment()
    deployment.client.room_lists.return_value = _answer_with(change)
    if name == "an unknown room version":
        deployment.synapse.room_versions.side_effect = lambda ids: dict.fromkeys(ids, "bogus")
    result, who = deployment.sync()
    assert (result, who) == (SYNAPSE_RESULT, reason)


def test_a_token_ahead_of_this_process_but_handed_out_is_served() -> None:
    deployment = Deployment()
    deployment.client.room_lists.return_value = good_answer(token="s35")
    assert deployment.sync()[1] == "roomcache"
    deployment.synapse.max_allocated_stream.assert_awaited_once()
    # Known from then on: no second query.
    assert deployment.sync()[1] == "roomcache"
    deployment.synapse.max_allocated_stream.assert_awaited_once()


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (lambda d: d.synapse.sliding_sync_tables_ready.configure_mock(return_value=False), None),
        (
            lambda d: (
                d.synapse.ignored_users.configure_mock(return_value=frozenset({"@x:hs"})),
                d.synapse.accepts_all_invites.configure_mock(return_value=False),
            ),
            "invite_rules",
        ),
        (
            lambda d: (
                d.synapse.forgotten_rooms.configure_mock(return_value=frozenset({"!l:hs"})),
                d.synapse.newly_joined_and_left.configure_mock(
                    return_value=(set(), {"!l:hs": Mock(event_id="$leave")})
                ),
            ),
            "forgotten_newly_left",
        ),
        (
            lambda d: d.synapse.newly_joined_and_left.configure_mock(
                return_value=(set(), {"!l:hs": Mock(event_id=None)})
            ),
            "left_without_event",
        ),
        (
            lambda d: d.client.room_lists.configure_mock(
                side_effect=RoomcacheFailure("error", "HTTP 500")
            ),
            "error",
        ),
    ],
)
def test_facts_that_send_the_request_to_synapse(setup: Any, reason: str | None) -> None:
    deployment = Deployment()
    setup(deployment)
    result, who = deployment.sync()
    assert result is SYNAPSE_RESULT
    assert who == (reason or "synapse_tables_not_ready")


def test_bypass_and_subscriptions_only() -> None:
    deployment = Deployment(bypass_conn_id_prefix="synapse-only")
    assert deployment.sync(sync_config("synapse-only-1"))[1] == "bypass"
    deployment.client.room_lists.assert_not_awaited()


def settled_answer(
    token_text: str, settled: list[Any], unsettled: list[Any], **changes: Any
) -> dict[str, Any]:
    """An answer at `token_text` for one list of 3 rooms that sets rooms
    apart as unsettled."""
    lists = {"0": {"count": 3, "ranges": [], "settled": settled, "unsettled": unsettled}}
    return good_answer(token=token_text, lists=lists, **changes)


def test_unsettled_rooms_take_synapse_positions_at_the_token() -> None:
    deployment = Deployment()
    deployment.client.room_lists.return_value = settled_answer(
        "s25",
        [entry("!a:hs", recency=12), entry("!b:hs", recency=11)],
        [entry("!late:hs", recency=24)],
    )
    deployment.synapse.positions_at_token.return_value = {"!late:hs": 11}
    result, who = deployment.sync()
    assert who == "roomcache"
    # 11 ties with !b:hs; ties go by room ID.
    assert result.lists["all"].ops[0].room_ids == ["!a:hs", "!b:hs"]
    deployment.synapse.positions_at_token.return_value = {"!late:hs": 19}
    assert deployment.sync()[0].lists["all"].ops[0].room_ids == ["!late:hs", "!a:hs"]
    deployment.synapse.positions_at_token.return_value = {}
    assert deployment.sync()[1] == "unsettled_room_unknown"


def test_a_hung_roomcache_costs_one_timeout_then_the_breaker_probes() -> None:
    deployment = Deployment(circuit_open_ms=1000, circuit_max_open_ms=3000)
    client = deployment.client.room_lists
    client.side_effect = RoomcacheFailure("timeout", "no answer")
    assert deployment.sync()[1] == "timeout"
    for _ in range(5):
        assert deployment.sync()[1] == "circuit_open"
    assert client.await_count == 1
    # After the interval one request probes; it times out: twice as long.
    deployment.clock.now += 1.0
    assert deployment.sync()[1] == "timeout"
    assert client.await_count == 2
    deployment.clock.now += 1.5
    assert deployment.sync()[1] == "circuit_open"
    deployment.clock.now += 0.5
    assert deployment.sync()[1] == "timeout"
    # Up to the maximum (3 s, not 4).
    deployment.clock.now += 3.0
    client.side_effect = None
    client.return_value = good_answer()
    assert deployment.sync()[1] == "roomcache"
    assert not deployment.breaker.is_open
    assert deployment.sync()[1] == "roomcache"


def test_only_one_probe_at_a_time_and_a_lost_probe_frees_its_place() -> None:
    deployment = Deployment(circuit_open_ms=1000)
    deployment.client.room_lists.side_effect = RoomcacheFailure("unavailable", "refused")
    assert deployment.sync()[1] == "unavailable"
    deployment.clock.now += 1.0
    probe = deployment.breaker.ticket()
    assert probe is not None and probe.probe
    assert deployment.breaker.ticket() is None  # the probe is out
    deployment.breaker.released(probe)
    # The module failed before roomcache could answer: the place is free.
    deployment.client.room_lists.side_effect = RuntimeError("a bug")
    assert deployment.sync()[1] == "module_error"
    assert deployment.breaker.ticket() is not None


def test_failures_of_requests_sent_before_the_opening_count_once() -> None:
    breaker = CircuitBreaker(failures=1, open_seconds=1, max_open_seconds=8, clock=FakeClock())
    first, second = breaker.ticket(), breaker.ticket()
    assert first is not None and second is not None
    breaker.failed(first, "timeout")
    breaker.failed(second, "timeout")  # already open: the interval does not grow
    breaker._clock.now += 1.0  # type: ignore[attr-defined]
    assert breaker.ticket() is not None


def test_the_remembered_position_never_runs_ahead_of_synapse() -> None:
    deployment = Deployment()
    # An answer far ahead is refused and not remembered.
    deployment.client.room_lists.return_value = good_answer(token="s9999999999")
    assert deployment.sync()[1] == "bad_answer"
    assert deployment.seam._position.reached is None
    # roomcache legitimately ahead of the request (s35 was handed out):
    # remembered as the request's own token.
    deployment.client.room_lists.return_value = good_answer(token="s35")
    assert deployment.sync(to_token=token(20))[1] == "roomcache"
    assert deployment.seam._position.reached.text() == "s20"
    # So the next request lets roomcache answer from there.
    deployment.synapse.rooms_with_events_since.return_value = {"!elsewhere:hs"}
    deployment.client.room_lists.return_value = good_answer(token="s20", unaffected=True)
    assert deployment.sync(to_token=token(30))[1] == "roomcache"
    assert deployment.last_body()["unaffected"] == {
        "since": "s20",
        "rooms": ["!elsewhere:hs"],
        "reorder_only": True,
    }
    deployment.synapse.rooms_with_events_since.assert_called_with(20)
    # A change of state in one of them: no early answer for the user's rooms.
    deployment.synapse.rooms_with_state_changes_since.return_value = {"!elsewhere:hs"}
    assert deployment.sync(to_token=token(30))[1] == "roomcache"
    assert "reorder_only" not in deployment.last_body()["unaffected"]
    # Account data: never beyond the request's own position.
    deployment.client.room_lists.return_value = good_answer(account_data_position=10**12)
    deployment.synapse.account_data_changed_since.return_value = False
    assert deployment.sync(to_token=token(30, account_data=9))[1] == "roomcache"
    assert deployment.seam._position.account_data_to_wait_for(USER, token(40, 50)) == 9


def test_no_unaffected_shortcut_when_the_user_s_membership_changed() -> None:
    deployment = Deployment()
    assert deployment.sync()[1] == "roomcache"
    deployment.synapse.membership_changed_since.return_value = True
    assert deployment.sync(to_token=token(30))[1] == "roomcache"
    assert "unaffected" not in deployment.last_body()


# --- the rooms to send, against Synapse's own decision ------------------------------


def _configs(rng: random.Random) -> list[RoomSyncConfig]:
    """Configs as a request builds them (a few shared objects) and as
    Synapse loads them from its database (one required-state map per
    distinct required state)."""
    name = {"m.room.name": {""}}
    with_topic = {"m.room.name": {""}, "m.room.topic": {""}}
    everything = {"*": {"*"}}
    maps = [name, with_topic, everything, {"m.room.member": {"$LAZY", "$ME"}}]
    return [
        RoomSyncConfig(timeline_limit=rng.choice((0, 1, 20)), required_state_map=m) for m in maps
    ]


def test_rooms_to_send_are_synapse_s() -> None:
    rng = random.Random(19)
    adapter = SynapseAdapter(Mock())
    synapse_lists = object.__new__(SlidingSyncRoomLists)
    for case in range(400):
        rooms = [f"!r{i}:hs" for i in range(rng.choice((5, 30, 150)))]
        configs = _configs(rng)
        relevant: dict[str, RoomSyncConfig] = {}
        # Every fourth case is the steady state's shape: one config object
        # shown, one required-state map and one limit loaded (the module's
        # fast path), which the shown config widens or not.
        steady = case % 4 == 0
        for room_id in rng.sample(rooms, rng.randrange(len(rooms) + 1)):
            config = configs[0] if steady else rng.choice(configs)
            if not steady and rng.random() < 0.1:  # shown by two lists
                config = config.combine_room_sync_config(rng.choice(configs))
            relevant[room_id] = config
        loaded = _configs(rng)  # the previous request's, as loaded
        limit = rng.choice((0, 1, 20))
        previous_configs = {
            room_id: RoomSyncConfig(
                timeline_limit=limit if steady else rng.choice((0, 1, 20)),
                required_state_map=(loaded[0] if steady else rng.choice(loaded)).required_state_map,
            )
            for room_id in rooms
            if rng.random() < 0.7
        }
        statuses = {
            room_id: rng.choice((HaveSentRoom.live(), HaveSentRoom.previously("s1")))
            for room_id in rooms
            if rng.random() < 0.8
        }
        update_rate = rng.choice((0.05, 0.9))
        updated = {room_id for room_id in rooms if rng.random() < update_rate}
        now = 10**12
        last_used = rng.choice((None, now - 1000, now - 2 * 3_600_000))
        state = PerConnectionState(
            last_used_ts=last_used,
            rooms=RoomStatusMap(statuses),
            room_configs=previous_configs,
        )
        from_token = Mock(room_key=RoomStreamToken(stream=1))
        store = Mock()
        store.get_rooms_that_have_updates_since_sliding_sync_table = AsyncMock(
            side_effect=lambda room_ids, _key, updated=updated: [
                r for r in room_ids if r in updated
            ]
        )
        synapse_lists.store = store
        synapse_lists._clock = Mock(time_msec=Mock(return_value=now))
        try:
            theirs = asyncio.run(
                synapse_lists._filter_relevant_rooms_to_send(state, from_token, dict(relevant))
            )
        except SlidingSyncUnknownPosition:
            theirs = None
        try:
            ours = rooms_to_send(
                relevant,
                adapter.previous_connection(state, from_token),
                updated,
                now_ms=now,
                expiry=adapter.connection_expiry,
            )
        except ConnectionExpired:
            ours = None
        assert ours == theirs, f"case {case}"
        # In Synapse's order too.
        assert list(ours or ()) == list(theirs or ()), f"case {case}"
        assert (
            rooms_to_send(relevant, None, updated, now_ms=now, expiry=adapter.connection_expiry)
            is relevant
        )


# --- waking roomcache after events are persisted ------------------------------------


def test_a_new_events_position_wakes_roomcache_once_at_a_time() -> None:
    synapse = Mock(spec=SynapseAdapter)
    synapse.events_position.return_value = 10
    client = Mock(spec=RoomcacheClient)
    started: list[Any] = []
    waker = RoomcacheWaker(synapse, client, lambda _name, wake: started.append(wake))
    waker.install()
    synapse.on_new_stream_data.assert_called_once_with(waker.on_new_stream_data)
    waker.on_new_stream_data()  # another stream: the events position is the same
    assert started == []
    synapse.events_position.return_value = 11
    waker.on_new_stream_data()
    synapse.events_position.return_value = 12
    waker.on_new_stream_data()  # before the wake is sent: it covers both
    assert len(started) == 1

    async def persisted_meanwhile() -> None:
        if client.wake.await_count == 1:
            synapse.events_position.return_value = 13
            waker.on_new_stream_data()  # while the wake is out: one more after it

    client.wake.side_effect = persisted_meanwhile
    asyncio.run(started[0]())
    assert len(started) == 1
    assert client.wake.await_count == 2
    synapse.events_position.return_value = 14
    client.wake.side_effect = RoomcacheFailure("unavailable", "refused")
    waker.on_new_stream_data()
    asyncio.run(started[1]())  # a failure is logged, never raised
    assert client.wake.await_count == 3


def test_rooms_that_only_moved_are_placed_by_synapse() -> None:
    deployment = Deployment()
    # An early answer at s18 for a request at s20: !b:hs had a message at
    # 19, roomcache sets it apart with its recency at s18.
    deployment.client.room_lists.return_value = settled_answer(
        "s18",
        [entry("!a:hs", recency=12), entry("!c:hs", recency=5)],
        [entry("!b:hs", recency=11)],
        unaffected=True,
    )
    deployment.synapse.positions_at_token.return_value = {"!b:hs": 19}
    result, who = deployment.sync()
    assert who == "roomcache"
    assert result.lists["all"].ops[0].room_ids == ["!b:hs", "!a:hs"]
