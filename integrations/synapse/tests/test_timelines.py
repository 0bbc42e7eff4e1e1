"""The initial timelines of rooms sent in full, with the module (the
per-room seam's second part, docs/synapse.md A.7): the events roomcache's
latest events choose, `limited`, `prev_batch`'s position and the events'
bundled aggregations (threads, references, edits, in `unsigned`) equal
Synapse's own. Timelines of events no event relates to bundle nothing
without Synapse's queries; a timeline with a related event is Synapse's
(counted `related`)."""

from __future__ import annotations

from typing import Any

from .client import Client
from .deployment import ModuleDeployment, counts_since
from .equivalence import Observer

LISTS = {
    "all": {
        "ranges": [[0, 9]],
        "timeline_limit": 4,
        "required_state": [["m.room.name", ""]],
    }
}


def _relation(client: Client, room_id: str, event_type: str, content: dict[str, Any]) -> str:
    return client.send_event(room_id, event_type, content)


def test_timelines_and_their_aggregations_equal_synapse_own(
    with_module: ModuleDeployment,
) -> None:
    homeserver = with_module.homeserver
    alice = homeserver.register("tl_alice")
    bob = homeserver.register("tl_bob")
    related = alice.create_room(preset="public_chat", name="related")
    plain = alice.create_room(preset="public_chat", name="plain")
    for room_id in (related, plain):
        bob.join(room_id)
    for number in range(3):
        alice.send_message(plain, f"plain {number}")
    # The newest four events of `related`: a message, then a reaction, an
    # edit and a thread reply to it, and a reference to it.
    target = alice.send_message(related, "target")
    _relation(
        bob,
        related,
        "m.reaction",
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": "+1"}},
    )
    _relation(
        alice,
        related,
        "m.room.message",
        {
            "msgtype": "m.text",
            "body": "* target, edited",
            "m.new_content": {"msgtype": "m.text", "body": "target, edited"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": target},
        },
    )
    _relation(
        bob,
        related,
        "m.room.message",
        {
            "msgtype": "m.text",
            "body": "in the thread",
            "m.relates_to": {"rel_type": "m.thread", "event_id": target},
        },
    )
    before = with_module.room_state_counts()

    observer = Observer(bob)
    differences = observer.compare(LISTS)
    assert differences == [], "\n".join(differences)
    # What was compared: the target's thread and edit, bundled by Synapse.
    answer = Observer(bob).module_sync(LISTS)
    timeline = answer["rooms"][related]["timeline"]
    assert timeline[0]["event_id"] == target
    assert set(timeline[0]["unsigned"]["m.relations"]) == {"m.thread", "m.replace"}
    # A new connection (initial again), after a reference to the target:
    # now the fifth newest event, out of the timeline.
    _relation(
        alice,
        related,
        "m.room.message",
        {
            "msgtype": "m.text",
            "body": "see above",
            "m.relates_to": {"rel_type": "m.reference", "event_id": target},
        },
    )
    observer.restart()
    differences = observer.compare(LISTS)
    assert differences == [], "\n".join(differences)

    counts = counts_since(before, with_module.room_state_counts())
    print(f"per-room lookups, by (path, reason): {counts}")
    # Both rooms' timelines came from roomcache in the module's three
    # initial requests.
    assert counts.get(("timeline_roomcache", ""), 0) == 6, counts
    # The plain room's events bundle nothing, without Synapse's queries, and
    # so do `related`'s once the target is out of its timeline; with the
    # target in it (the first two requests), Synapse's.
    assert counts.get(("aggregations_roomcache", ""), 0) == 4, counts
    assert counts.get(("aggregations_synapse", "related"), 0) == 2, counts
