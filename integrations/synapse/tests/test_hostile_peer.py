"""The module against a misbehaving roomcache (issue 18): whatever answers on
roomcache's socket — values of the wrong type, a membership Synapse does not
know, a token from the far future, an answer announcing 2 GB, no answer at
all — every Sliding Sync request is answered exactly as Synapse answers it
alone, the module counts why it did not use the answer, Synapse's memory
stays where it was, and a hang costs one timeout in all, not one per
request (the circuit breaker).

The peer (tests/peer.py) stands between the module and a real roomcache;
the module's settings are conftest.py's PEER_*.
"""

from __future__ import annotations

import time

from .conftest import PEER_CIRCUIT_OPEN_MS, PEER_MAX_ANSWER_BYTES, PEER_REQUEST_TIMEOUT_MS
from .deployment import ModuleDeployment, counts_since
from .equivalence import Observer
from .peer import MisbehavingPeer
from .workload import Workload

# One list for the timed part (each request stays cheap on a loaded machine).
ONE_LIST = {
    "all": {
        "ranges": [[0, 19]],
        "timeline_limit": 1,
        "required_state": [["m.room.name", ""]],
    }
}


def _compare_all(observers: list[Observer], **options: object) -> list[str]:
    differences: list[str] = []
    for observer in observers:
        differences += observer.compare(**options)  # type: ignore[arg-type]
    return differences


def _peer(deployment: ModuleDeployment) -> MisbehavingPeer:
    assert deployment.peer is not None
    return deployment.peer


def test_wrong_answers_are_never_served(with_module_via_peer: ModuleDeployment) -> None:
    deployment = with_module_via_peer
    peer = _peer(deployment)
    workload = Workload(deployment.homeserver, "peer")
    observers = [Observer(client) for client in workload.observers]
    for _, step in workload.steps()[:5]:
        step()
    assert _compare_all(observers) == []

    cases = {
        "wrong_count": "bad_answer",
        "wrong_membership": "bad_answer",
        "string_ordering": "bad_answer",
        "far_future_token": "bad_answer",
        "huge": "answer_too_large",
    }
    for mode, reason in cases.items():
        rss_before = deployment.homeserver.rss_bytes()
        peer.mode = mode
        before = deployment.room_list_counts()
        for observer in observers:
            observer.restart()  # initial syncs: every room shown is sent
        differences = _compare_all(observers)
        counts = counts_since(before, deployment.room_list_counts())
        peer.mode = "honest"
        print(f"{mode}: {counts}")
        assert differences == [], f"{mode}: " + "\n".join(differences)
        assert counts.get(("synapse", reason), 0) == len(observers), (mode, counts)
        assert counts.get(("roomcache", ""), 0) == 0, (mode, counts)
        if mode == "huge":
            # Refused at the head: the module read next to nothing of it,
            # and kept nothing.
            deadline = time.monotonic() + 10
            while peer.huge_bytes_sent is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert peer.huge_bytes_sent is not None
            assert peer.huge_bytes_sent < 8 * PEER_MAX_ANSWER_BYTES, peer.huge_bytes_sent
            growth = deployment.homeserver.rss_bytes() - rss_before
            assert growth < 64 * 1024 * 1024, f"Synapse grew by {growth} bytes"

    # Rooms' data with a key roomcache does not hold: the room lists come
    # from roomcache, every state lookup is Synapse's (`bad_answer`).
    peer.mode = "foreign_state_key"
    before = deployment.room_list_counts()
    state_before = deployment.room_state_counts()
    for observer in observers:
        observer.restart()
    differences = _compare_all(observers)
    peer.mode = "honest"
    counts = counts_since(before, deployment.room_list_counts())
    state_counts = counts_since(state_before, deployment.room_state_counts())
    print(f"foreign_state_key: {counts} {state_counts}")
    assert differences == [], "foreign_state_key: " + "\n".join(differences)
    assert counts.get(("roomcache", ""), 0) == len(observers), counts
    assert state_counts.get(("fetch", "bad_answer"), 0) == len(observers), state_counts
    assert state_counts.get(("synapse", "bad_answer"), 0) > 0, state_counts
    assert state_counts.get(("roomcache", ""), 0) == 0, state_counts

    # Honest again: answers come from roomcache, and the position the module
    # remembers is one Synapse has handed out (the far-future token was not
    # remembered), so roomcache may answer early again.
    before = deployment.room_list_counts()
    assert _compare_all(observers) == []
    counts = counts_since(before, deployment.room_list_counts())
    assert counts.get(("roomcache", ""), 0) == len(observers), counts
    observers[0].module_sync()
    unaffected = peer.requests[-1].get("unaffected")
    assert unaffected is not None, peer.requests[-1]
    since = int(unaffected["since"][1:].split("~")[0])
    ((highest,),) = deployment.homeserver.query("SELECT max(stream_ordering) FROM events")
    assert since <= highest, unaffected


def test_a_hang_costs_one_timeout_in_all(with_module_via_peer: ModuleDeployment) -> None:
    deployment = with_module_via_peer
    peer = _peer(deployment)
    workload = Workload(deployment.homeserver, "hang")
    observers = [Observer(client) for client in workload.observers]
    workload.steps()[0][1]()  # rooms of every kind
    assert _compare_all(observers, lists=ONE_LIST) == []

    peer.mode = "hang"
    before = deployment.room_list_counts()
    started = time.monotonic()
    first = observers[0].compare(ONE_LIST)
    opened = time.monotonic()
    assert first == []
    assert opened - started >= PEER_REQUEST_TIMEOUT_MS / 1000
    # Every request while the breaker is open is answered at once, the
    # Synapse way; none waits for the peer.
    answered = 0
    while time.monotonic() < opened + PEER_CIRCUIT_OPEN_MS / 1000 - 2 and answered < 8:
        request_started = time.monotonic()
        assert observers[answered % len(observers)].compare(ONE_LIST) == []
        assert time.monotonic() - request_started < PEER_REQUEST_TIMEOUT_MS / 1000
        answered += 1
    counts = counts_since(before, deployment.room_list_counts())
    print(f"hang: {answered + 1} requests in {time.monotonic() - started:.1f} s: {counts}")
    assert answered >= 2, "the machine is too slow for the breaker's interval"
    assert counts.get(("synapse", "timeout"), 0) == 1, counts
    assert counts.get(("synapse", "circuit_open"), 0) == answered, counts
    assert peer.hung == 1

    # The peer answers again: after the interval, one request probes, gets
    # an answer, and the module uses roomcache again.
    peer.mode = "honest"
    time.sleep(max(0.0, opened + PEER_CIRCUIT_OPEN_MS / 1000 - time.monotonic()) + 0.2)
    before = deployment.room_list_counts()
    assert _compare_all(observers, lists=ONE_LIST) == []
    counts = counts_since(before, deployment.room_list_counts())
    assert counts.get(("roomcache", ""), 0) == len(observers), counts
