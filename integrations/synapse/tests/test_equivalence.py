"""Sliding Sync answers with the module equal Synapse's own, over a workload
of creates, joins, invites, knocks, leaves, kicks, bans, renames,
encryption, spaces, room upgrades, DMs, tags, forgets and ignored users,
for every filter Synapse answers and several ranges, in initial and
incremental requests."""

from __future__ import annotations

from .deployment import ModuleDeployment, counts_since
from .equivalence import Observer
from .workload import Workload

# Requests the module may leave to Synapse in this workload, and why: a room
# left and forgotten within the request's range; a room the server left
# (its last local member left) within it; the user's own membership
# changed after the request's token (roomcache follows fast enough that it
# can be ahead of it).
ALLOWED_FALLBACKS = {"forgotten_newly_left", "left_without_event", "membership_after_token"}


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
    assert counts.pop(("synapse", "bypass")) == requests
    # Each answer from roomcache was also computed Synapse's way in the
    # module, at the same token, and was equal.
    assert counts.pop(("verified", "different"), 0) == 0
    verified = counts.pop(("verified", "equal"), 0)
    counts.pop(("unsettled", ""), None)
    counts.pop(("unaffected", ""), None)
    from_roomcache = counts.pop(("roomcache", ""), 0)
    fallbacks = {reason: n for (_, reason), n in counts.items()}
    assert from_roomcache + sum(fallbacks.values()) == requests
    assert set(fallbacks) <= ALLOWED_FALLBACKS, fallbacks
    assert from_roomcache >= 0.9 * requests
    assert verified == from_roomcache
