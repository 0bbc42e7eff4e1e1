"""Sliding Sync answers with the module equal Synapse's own, over a workload
of creates, joins, invites, knocks, leaves, kicks, bans, renames,
encryption, spaces, room upgrades, DMs, tags, forgets and ignored users,
for every filter Synapse answers and several ranges, in initial and
incremental requests."""

from __future__ import annotations

from .deployment import ModuleDeployment, counts_since
from .equivalence import (
    Observer,
    assert_answered_from_roomcache,
    assert_room_state_from_roomcache,
    assert_timelines_from_roomcache,
)
from .workload import Workload


def test_room_lists_from_roomcache_equal_synapse_own(with_module: ModuleDeployment) -> None:
    _compare_over_the_workload(with_module, "equal")


def test_with_two_event_writers(with_module_workers: ModuleDeployment) -> None:
    """The same with events persisted by two writers (tokens with writers
    ahead of the minimum)."""
    _compare_over_the_workload(with_module_workers, "writers")
    writers = with_module_workers.homeserver.query("SELECT DISTINCT instance_name FROM events")
    assert {row[0] for row in writers} == {"p1", "p2"}


def _compare_over_the_workload(with_module: ModuleDeployment, prefix: str) -> None:
    workload = Workload(with_module.homeserver, prefix)
    observers = [Observer(client) for client in workload.observers]
    before = with_module.room_list_counts()
    state_before = with_module.room_state_counts()
    differences: list[str] = []
    for number, (name, step) in enumerate(workload.steps()):
        step()
        for observer in observers:
            if number % 6 == 5:
                observer.restart()  # initial requests now and then
            differences += [f"after {name!r}: {d}" for d in observer.compare()]
    counts = counts_since(before, with_module.room_list_counts())
    print(f"room lists computed, by (path, reason): {counts}")
    assert differences == [], "\n".join(differences)

    requests = sum(observer.requests for observer in observers)
    assert_answered_from_roomcache(counts, requests)
    state_counts = counts_since(state_before, with_module.room_state_counts())
    print(f"room state lookups, by (path, reason): {state_counts}")
    # Each observer's initial requests send rooms in full (one per request
    # at least).
    assert_room_state_from_roomcache(state_counts, at_least=len(observers))
    assert_timelines_from_roomcache(state_counts, at_least=len(observers))
