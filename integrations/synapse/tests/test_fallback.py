"""Never worse than Synapse alone: with roomcache stopped in the middle of a
run, every Sliding Sync request is still answered, exactly as Synapse
answers it alone (the module counts each as a fallback: `unavailable`, then
`circuit_open` while the breaker keeps it from asking), and once roomcache
is back the answers come from it again."""

from __future__ import annotations

import time

from .deployment import CIRCUIT_MAX_OPEN_MS, ModuleDeployment, counts_since
from .equivalence import Observer
from .workload import Workload


def _run(observers: list[Observer], steps: list) -> tuple[list[str], int]:  # type: ignore[type-arg]
    differences: list[str] = []
    requests = 0
    for name, step in steps:
        step()
        for observer in observers:
            differences += [f"after {name!r}: {d}" for d in observer.compare()]
            requests += 1
    return differences, requests


def test_requests_are_answered_while_roomcache_is_down(with_module: ModuleDeployment) -> None:
    workload = Workload(with_module.homeserver, "down")
    observers = [Observer(client) for client in workload.observers]
    steps = workload.steps()

    before = with_module.room_list_counts()
    differences, requests = _run(observers, steps[:6])
    counts = counts_since(before, with_module.room_list_counts())
    assert differences == [], "\n".join(differences)
    assert counts.get(("roomcache", ""), 0) == requests

    with_module.roomcache.stop()
    for observer in observers:
        observer.restart()  # initial requests: rooms sent in full
    before = with_module.room_list_counts()
    state_before = with_module.room_state_counts()
    differences, requests = _run(observers, steps[6:14])
    counts = counts_since(before, with_module.room_list_counts())
    state_counts = counts_since(state_before, with_module.room_state_counts())
    print(f"roomcache down: {counts}")
    assert differences == [], "\n".join(differences)
    unavailable = counts.get(("synapse", "unavailable"), 0)
    circuit_open = counts.get(("synapse", "circuit_open"), 0)
    assert unavailable + circuit_open == requests
    assert unavailable >= 1 and circuit_open >= 1
    assert counts.get(("roomcache", ""), 0) == 0
    # The rooms' state too: Synapse's own (the breaker, opened by the room
    # lists' call, keeps the fetch from being tried).
    print(f"room state while roomcache is down: {state_counts}")
    assert state_counts.get(("roomcache", ""), 0) == 0
    fetches = {outcome for (kind, outcome) in state_counts if kind == "fetch"}
    assert fetches and fetches <= {"unavailable", "circuit_open"}, fetches

    with_module.roomcache.start()
    with_module.roomcache.wait_until_caught_up()
    # The breaker's next probe (at most its longest interval away) finds
    # roomcache back; another user's request makes it.
    time.sleep(CIRCUIT_MAX_OPEN_MS / 1000 + 0.2)
    workload.erin.sliding_sync(
        {"lists": {"all": {"ranges": [[0, 0]], "required_state": [], "timeline_limit": 0}}}
    )
    before = with_module.room_list_counts()
    differences, requests = _run(observers, steps[14:])
    counts = counts_since(before, with_module.room_list_counts())
    print(f"roomcache back: {counts}")
    assert differences == [], "\n".join(differences)
    fallbacks = {
        reason: n
        for (path, reason), n in counts.items()
        if path == "synapse" and reason != "bypass"
    }
    assert set(fallbacks) <= {"forgotten_newly_left", "left_without_event"}, fallbacks
    assert counts.get(("roomcache", ""), 0) == requests - sum(fallbacks.values())
    assert counts.get(("verified", "different"), 0) == 0
