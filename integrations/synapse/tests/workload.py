"""A workload of its own for the equivalence test: several users, and rooms
in every shape the room lists care about, changed step by step.

Each step is one small story (a knock accepted, a room upgraded, a DM
marked...); the test compares every observer's Sliding Sync answers after
each step. Rooms are named by role in `rooms`.
"""

from __future__ import annotations

from collections.abc import Callable

from .client import Client
from .harness import Homeserver

KNOCK_RULES = {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}


class Workload:
    """The users (`alice` creates most rooms; `bob`, `carol`, `dave` are
    observed along with her; `erin` is ignored by bob) and their rooms."""

    def __init__(self, homeserver: Homeserver, prefix: str) -> None:
        self.server_name = homeserver.server_name
        self.alice = homeserver.register(f"{prefix}_alice")
        self.bob = homeserver.register(f"{prefix}_bob")
        self.carol = homeserver.register(f"{prefix}_carol")
        self.dave = homeserver.register(f"{prefix}_dave")
        self.erin = homeserver.register(f"{prefix}_erin")
        self.rooms: dict[str, str] = {}

    @property
    def observers(self) -> list[Client]:
        return [self.alice, self.bob, self.carol, self.dave]

    def steps(self) -> list[tuple[str, Callable[[], None]]]:
        """The steps, in order, with a name each."""
        return [
            ("rooms of every kind", self.create_rooms),
            ("joins", self.joins),
            ("messages reorder rooms", self.messages),
            ("invites", self.invites),
            ("an invite accepted, one rejected", self.answer_invites),
            ("knocks, one accepted, one refused", self.knocks),
            ("direct messages and m.direct", self.direct_messages),
            ("tags", self.tags),
            ("encryption turned on", self.encryption),
            ("a rename", self.rename),
            ("a leave", self.leave),
            ("a kick, a ban, an unban", self.kick_ban_unban),
            ("forgetting a kicked and a left room", self.forget),
            ("a room upgrade", self.upgrade),
            ("spaces and children", self.spaces),
            ("tags and m.direct changed", self.change_account_data),
            ("a re-join after a kick and a forget", self.rejoin),
            ("an invite from an ignored user", self.ignored_invite),
            ("a leave and a forget together", self.leave_and_forget),
            ("the last member leaves", self.last_member_leaves),
            ("more messages", self.more_messages),
        ]

    def create_rooms(self) -> None:
        alice, rooms = self.alice, self.rooms
        for name in ("general", "random", "dev", "ops", "music", "books"):
            rooms[name] = alice.create_room(preset="public_chat", name=name)
        rooms["private1"] = alice.create_room(preset="private_chat", name="private one")
        rooms["private2"] = alice.create_room(preset="private_chat")
        rooms["secret"] = alice.create_room(preset="private_chat", name="secret")
        alice.set_encryption(rooms["secret"])
        rooms["space"] = alice.create_room(
            preset="public_chat", name="Space A", creation_content={"type": "m.space"}
        )
        for child in ("general", "dev"):
            alice.add_space_child(rooms["space"], rooms[child], via=[self.server_name])
        rooms["knock"] = alice.create_room(preset="private_chat", initial_state=[KNOCK_RULES])

    def joins(self) -> None:
        for user in (self.bob, self.carol):
            for name in ("general", "random", "dev", "music", "space"):
                user.join(self.rooms[name])
        self.dave.join(self.rooms["general"])
        self.dave.join(self.rooms["books"])

    def messages(self) -> None:
        self.alice.send_message(self.rooms["random"], "random first")
        self.bob.send_message(self.rooms["dev"], "dev news")
        self.carol.send_message(self.rooms["general"], "hello")

    def invites(self) -> None:
        alice, rooms = self.alice, self.rooms
        alice.invite(rooms["private1"], self.bob.user_id)
        alice.invite(rooms["private2"], self.carol.user_id)
        alice.invite(rooms["secret"], self.dave.user_id)
        alice.invite(rooms["secret"], self.bob.user_id)

    def answer_invites(self) -> None:
        self.bob.join(self.rooms["private1"])
        self.carol.leave(self.rooms["private2"])

    def knocks(self) -> None:
        rooms = self.rooms
        self.bob.knock(rooms["knock"], reason="please")
        self.carol.knock(rooms["knock"])
        self.dave.knock(rooms["knock"])
        self.alice.invite(rooms["knock"], self.bob.user_id)
        self.alice.kick(rooms["knock"], self.carol.user_id, reason="no")

    def direct_messages(self) -> None:
        alice, bob, carol, dave = self.alice, self.bob, self.carol, self.dave
        rooms = self.rooms
        rooms["dm_ab"] = alice.create_room(
            preset="trusted_private_chat", is_direct=True, invite=[bob.user_id]
        )
        bob.join(rooms["dm_ab"])
        alice.set_direct({bob.user_id: [rooms["dm_ab"]]})
        bob.set_direct({alice.user_id: [rooms["dm_ab"]]})
        rooms["dm_cd"] = carol.create_room(
            preset="trusted_private_chat", is_direct=True, invite=[dave.user_id]
        )
        carol.set_direct({dave.user_id: [rooms["dm_cd"]]})
        # dave marks the DM before joining it: an invite in his DM rooms.
        dave.set_direct({carol.user_id: [rooms["dm_cd"]], "@x:elsewhere": ["!notaroom", 3]})

    def tags(self) -> None:
        rooms = self.rooms
        self.bob.set_room_tag(rooms["general"], "m.favourite", order=0.1)
        self.bob.set_room_tag(rooms["dev"], "u.work")
        self.bob.set_room_tag(rooms["dev"], "m.favourite", order=0.2)
        self.carol.set_room_tag(rooms["random"], "m.lowpriority")
        self.carol.set_room_tag(rooms["music"], "u.work")

    def encryption(self) -> None:
        self.alice.set_encryption(self.rooms["dev"])

    def rename(self) -> None:
        self.alice.set_name(self.rooms["random"], "Random stuff")

    def leave(self) -> None:
        self.bob.leave(self.rooms["random"])

    def kick_ban_unban(self) -> None:
        rooms = self.rooms
        self.alice.kick(rooms["dev"], self.carol.user_id, reason="off topic")
        self.alice.ban(rooms["general"], self.dave.user_id, reason="spam")
        self.alice.ban(rooms["music"], self.carol.user_id)
        self.alice.unban(rooms["music"], self.carol.user_id)

    def forget(self) -> None:
        self.carol.forget(self.rooms["dev"])
        self.bob.forget(self.rooms["random"])

    def upgrade(self) -> None:
        rooms = self.rooms
        rooms["music2"] = self.alice.upgrade_room(rooms["music"], "10")
        self.bob.join(rooms["music2"])

    def spaces(self) -> None:
        alice, rooms = self.alice, self.rooms
        rooms["space_b"] = alice.create_room(
            preset="public_chat", name="Space B", creation_content={"type": "m.space"}
        )
        alice.add_space_child(rooms["space_b"], rooms["books"], via=[self.server_name])
        alice.add_space_child(rooms["space_b"], rooms["ops"], via=[self.server_name])
        self.carol.join(rooms["space_b"])
        self.dave.join(rooms["space_b"])
        # A child removed: its m.space.child has no `via` any more.
        alice.set_state(rooms["space_b"], "m.space.child", {}, state_key=rooms["ops"])

    def change_account_data(self) -> None:
        rooms = self.rooms
        self.bob.remove_room_tag(rooms["dev"], "m.favourite")
        self.bob.set_direct({})
        self.carol.set_room_tag(rooms["space_b"], "m.favourite")
        self.dave.set_direct({self.carol.user_id: [rooms["dm_cd"], rooms["books"]]})

    def rejoin(self) -> None:
        self.carol.join(self.rooms["dev"])
        self.dave.join(self.rooms["dm_cd"])

    def ignored_invite(self) -> None:
        rooms = self.rooms
        self.bob.ignore_users([self.erin.user_id])
        rooms["from_erin"] = self.erin.create_room(preset="private_chat", name="erin's")
        self.erin.invite(rooms["from_erin"], self.bob.user_id)
        self.erin.invite(rooms["from_erin"], self.carol.user_id)

    def leave_and_forget(self) -> None:
        self.dave.leave(self.rooms["books"])
        self.dave.forget(self.rooms["books"])

    def last_member_leaves(self) -> None:
        rooms = self.rooms
        rooms["alone"] = self.carol.create_room(preset="private_chat", name="alone")
        self.carol.send_message(rooms["alone"], "echo")
        self.carol.leave(rooms["alone"])

    def more_messages(self) -> None:
        rooms = self.rooms
        for name in ("ops", "private1", "dm_ab", "secret", "general", "space"):
            self.alice.send_message(rooms[name], f"later in {name}")
