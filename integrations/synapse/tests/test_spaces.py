"""The deliberate difference: Synapse fails a whole Sliding Sync request
whose lists filter on `spaces` or `room_name_like` (HTTP 500, not
implemented); with the module, roomcache answers them, `spaces` by
MSC4186's rule over Synapse's current state, however roomcache's rows came
to be (followed, imported, recomputed after a restart)."""

from __future__ import annotations

import pytest

from .client import Client, MatrixError
from .deployment import BYPASS_PREFIX, ModuleDeployment
from .harness import Homeserver


def _list(**filters: object) -> dict[str, object]:
    return {"ranges": [[0, 99]], "timeline_limit": 0, "required_state": [], "filters": filters}


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


# MSC4186's rule from Synapse's current state: the children of a space are
# the state keys of its `m.space.child` events whose `via` is a non-empty
# array (and which are not redacted).
_CHILDREN = """
    SELECT c.room_id, c.state_key FROM current_state_events c JOIN event_json j USING (event_id)
    WHERE c.type = 'm.space.child'
      AND jsonb_typeof(j.json::jsonb -> 'content' -> 'via') = 'array'
      AND jsonb_array_length(j.json::jsonb -> 'content' -> 'via') > 0
      AND NOT EXISTS (SELECT 1 FROM redactions r WHERE r.redacts = c.event_id)
"""


def _localpart(user: Client) -> str:
    return user.user_id[1:].split(":", 1)[0]


def _expected(homeserver: Homeserver, user: Client, spaces: list[str]) -> set[str]:
    """The children of those of `spaces` the user is joined to (any of them)."""
    children: dict[str, set[str]] = {}
    for space, child in homeserver.query(_CHILDREN):
        children.setdefault(space, set()).add(child)
    joined = {
        room
        for (room,) in homeserver.query(
            "SELECT room_id FROM local_current_membership"
            " WHERE user_id = %s AND membership = 'join'",
            [user.user_id],
        )
    }
    return {child for space in spaces if space in joined for child in children.get(space, ())}


def _spaces_lists(
    homeserver: Homeserver, users: list[Client], spaces: dict[str, list[str]], stage: str
) -> dict[tuple[str, str], set[str]]:
    """Every user's lists filtering on `spaces` (list name → spaces), answered
    by the module from roomcache; each must hold the user's rooms that are
    children of the listed spaces the user is joined to. Returns the rooms
    per (user localpart, list name)."""
    lists = {"all": _list(), **{name: _list(spaces=s) for name, s in spaces.items()}}
    shown: dict[tuple[str, str], set[str]] = {}
    wrong: list[str] = []
    for user in users:
        answer = user.sliding_sync({"conn_id": f"msc4186-{stage}", "lists": lists})
        everything = _rooms(answer, "all")
        assert answer["lists"]["all"]["count"] == len(everything), stage
        localpart = _localpart(user)
        for name, listed in spaces.items():
            rooms = _rooms(answer, name)
            expected = everything & _expected(homeserver, user, listed)
            if rooms != expected or answer["lists"][name]["count"] != len(expected):
                wrong.append(f"{stage}: {localpart} {name}: {sorted(rooms)} != {sorted(expected)}")
            shown[(localpart, name)] = rooms
    assert wrong == [], "\n".join(wrong)
    return shown


def test_spaces_lists_follow_msc4186_on_every_path(with_module: ModuleDeployment) -> None:
    """Only spaces the user is joined to count, unknown ones are ignored,
    subspaces are not looked into, listed spaces are ORed, a child needs a
    non-empty `via`; the same whether roomcache followed the spaces being
    made, imported a database that already had them, or recomputed them
    after they changed while it was down."""
    homeserver, roomcache = with_module.homeserver, with_module.roomcache
    owner = homeserver.register("msc4186_owner")
    member = homeserver.register("msc4186_member")
    leaver = homeserver.register("msc4186_leaver")
    invitee = homeserver.register("msc4186_invitee")
    users = [owner, member, leaver, invitee]
    space = {"preset": "public_chat", "creation_content": {"type": "m.space"}}
    first, second, sub = (owner.create_room(**space) for _ in range(3))
    a, b, c, d = (owner.create_room(preset="public_chat") for _ in range(4))
    via = [homeserver.server_name]
    for parent, child, child_via in [
        (first, a, via),
        (first, b, via),
        (first, c, []),  # an empty `via`: no child
        (first, sub, via),
        (sub, d, via),
        (second, c, via),
    ]:
        owner.add_space_child(parent, child, via=child_via)
    for user, rooms in [
        (member, [first, sub, a, b, c, d]),
        (leaver, [first, a, b, c]),
        (invitee, [a, b, c]),
    ]:
        for room in rooms:
            user.join(room)
    leaver.leave(first)
    owner.invite(first, invitee.user_id)
    unknown = f"!unknown:{homeserver.server_name}"
    spaces = {
        "first": [first],
        "second": [second],
        "both": [first, second],
        "sub": [sub],
        "unknown": [unknown],
        "first_and_unknown": [first, unknown],
    }

    # Followed as they were made.
    shown = _spaces_lists(homeserver, users, spaces, "followed")
    assert shown[("msc4186_owner", "both")] == {a, b, c, sub}
    assert shown[("msc4186_member", "first")] == {a, b, sub}  # not d: no subspaces
    assert shown[("msc4186_member", "sub")] == {d}
    assert shown[("msc4186_member", "second")] == set()  # never in it, though in c
    assert shown[("msc4186_member", "first_and_unknown")] == {a, b, sub}
    assert shown[("msc4186_leaver", "first")] == set()  # left it, though in a, b
    assert shown[("msc4186_invitee", "first")] == set()  # only invited
    assert all(shown[(_localpart(u), "unknown")] == set() for u in users)

    # Imported: a fresh roomcache on the database that already has them.
    roomcache.stop()
    roomcache.create_database()
    roomcache.start()
    roomcache.wait_until_caught_up()
    assert _spaces_lists(homeserver, users, spaces, "imported") == shown

    # Changed while roomcache was down, recomputed at its restart: a child
    # removed, one added, the member leaves the subspace, the invitee joins.
    roomcache.stop()
    owner.add_space_child(first, b, via=[])
    owner.add_space_child(second, d, via=via)
    member.leave(sub)
    invitee.join(first)
    roomcache.start()
    roomcache.wait_until_caught_up()
    shown = _spaces_lists(homeserver, users, spaces, "recomputed")
    assert shown[("msc4186_member", "first")] == {a}
    assert shown[("msc4186_member", "sub")] == set()
    assert shown[("msc4186_invitee", "first")] == {a}
    assert shown[("msc4186_owner", "second")] == {c, d}

    # Followed again: a child restored.
    owner.add_space_child(first, b, via=via)
    shown = _spaces_lists(homeserver, users, spaces, "followed again")
    assert shown[("msc4186_invitee", "first")] == {a, b}
