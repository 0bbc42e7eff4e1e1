"""The deliberate difference: Synapse fails a whole Sliding Sync request
whose lists filter on `spaces` or `room_name_like` (HTTP 500, not
implemented); with the module, roomcache answers them."""

from __future__ import annotations

import pytest

from .client import MatrixError
from .deployment import BYPASS_PREFIX, ModuleDeployment


def _list(**filters: object) -> dict[str, object]:
    return {"ranges": [[0, 9]], "timeline_limit": 0, "required_state": [], "filters": filters}


def _rooms(answer: dict, name: str) -> set[str]:  # type: ignore[type-arg]
    return {room for op in answer["lists"][name].get("ops", []) for room in op["room_ids"]}


def test_spaces_and_room_names_are_answered_with_the_module(with_module: ModuleDeployment) -> None:
    homeserver = with_module.homeserver
    alice = homeserver.register("spaces_alice")
    bob = homeserver.register("spaces_bob")
    space = alice.create_room(preset="public_chat", creation_content={"type": "m.space"})
    alpha = alice.create_room(preset="public_chat", name="Alpha team")
    beta = alice.create_room(preset="public_chat", name="beta")
    gamma = alice.create_room(preset="public_chat", name="ALPHABET soup")
    unlisted = alice.create_room(preset="public_chat")
    for child in (alpha, beta):
        alice.add_space_child(space, child, via=[homeserver.server_name])
    # A child whose `via` is empty is no child.
    alice.add_space_child(space, gamma, via=[])
    for room_id in (space, alpha, gamma, unlisted):
        bob.join(room_id)
    lists = {"in_space": _list(spaces=[space]), "named": _list(room_name_like="alpha")}

    answer = bob.sliding_sync({"conn_id": "spaces", "lists": lists})
    assert answer["lists"]["in_space"]["count"] == 1
    assert _rooms(answer, "in_space") == {alpha}
    assert answer["lists"]["named"]["count"] == 2
    assert _rooms(answer, "named") == {alpha, gamma}

    with pytest.raises(MatrixError) as failure:
        bob.sliding_sync({"conn_id": f"{BYPASS_PREFIX}-spaces", "lists": lists})
    assert failure.value.status == 500
