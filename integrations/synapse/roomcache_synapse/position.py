# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""What the module knows of roomcache's progress, and what it lets roomcache
skip.

roomcache answers at a token at least the request's, so a request made
right after a write waits until roomcache has followed it. When nothing
that concerns the user happened after a position roomcache has reached (no
membership of theirs changed, and the rooms with an event since are not
theirs: roomcache checks those), roomcache's answer at its own token is the
answer at the request's, and it need not wait (`unaffected`); when those
rooms only had events that are not state (messages), it need not wait even
for the user's own rooms: it sets them apart, and the module places them
by their position at the request's token (`reorder_only`). The same for
account data: when the user's did not change after roomcache's last
account-data position, roomcache need not follow other users' first.
Synapse's stream change caches (in memory) tell what changed.

The position remembered is one roomcache has reached and Synapse has
handed out: the lower of roomcache's token and the request's, writer by
writer. So an answer with a token from the far future (a bug, or a party
that answers on roomcache's socket) can never switch the fast path off:
Synapse's own tokens bound it.

Owns: the remembered positions. May not touch: roomcache (the seam asks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .adapter import SynapseAdapter
from .answer import RoomListAnswer
from .tokens import StreamPosition

JsonDict = dict[str, Any]

# Beyond this many rooms changed since roomcache's last token, the module
# waits for roomcache to reach the request's token instead.
_MAX_UNAFFECTED_ROOMS = 1000


def lower(a: StreamPosition, b: StreamPosition) -> StreamPosition:
    """Writer by writer, the lower of two positions."""
    return _writer_by_writer(min, a, b)


def higher(a: StreamPosition, b: StreamPosition) -> StreamPosition:
    """Writer by writer, the higher of two positions."""
    return _writer_by_writer(max, a, b)


def _writer_by_writer(
    pick: Callable[[int, int], int], a: StreamPosition, b: StreamPosition
) -> StreamPosition:
    stream = pick(a.stream, b.stream)
    ahead = {
        writer: position
        for writer in {*a.ahead, *b.ahead}
        if (position := pick(a.position(writer), b.position(writer))) > stream
    }
    return StreamPosition(stream, ahead)


class RoomcachePosition:
    """A position roomcache has reached, and its account-data position, from
    its answers, each bounded by the request's token."""

    def __init__(self, synapse: SynapseAdapter) -> None:
        self._synapse = synapse
        self._reached: StreamPosition | None = None
        self._account_data: int | None = None

    @property
    def reached(self) -> StreamPosition | None:
        return self._reached

    def note(self, answer: RoomListAnswer, to_token: Any) -> None:
        """Remembers what roomcache's answer shows it has reached, no
        further than the request's token `to_token` (Synapse's own)."""
        reached = lower(answer.token, StreamPosition.of(to_token.room_key))
        self._reached = reached if self._reached is None else higher(self._reached, reached)
        position = answer.account_data_position
        if position is not None:
            position = min(position, to_token.account_data_key)
            if self._account_data is None or position > self._account_data:
                self._account_data = position

    def unaffected(self, user_id: str) -> JsonDict | None:
        """What lets roomcache answer before it reaches the token: the rooms
        with an event after the remembered position, when no membership of
        the user changed since, and whether none of them changed its current
        state (`reorder_only`: then roomcache answers at once even for the
        user's own rooms, whose recency alone may have moved). Synapse's
        stream change caches, in memory, tell."""
        since = self._reached
        if since is None:
            return None
        if self._synapse.membership_changed_since(user_id, since.stream):
            return None
        changed = self._synapse.rooms_with_events_since(since.stream)
        if changed is None or len(changed) > _MAX_UNAFFECTED_ROOMS:
            return None
        unaffected: JsonDict = {"since": since.text(), "rooms": sorted(changed)}
        if changed and not self._synapse.rooms_with_state_changes_since(changed, since.stream):
            unaffected["reorder_only"] = True
        return unaffected

    def account_data_to_wait_for(self, user_id: str, to_token: Any) -> int:
        """The request's account-data position, or roomcache's own when the
        user's account data did not change after it (so roomcache need not
        follow other users' changes first)."""
        known = self._account_data
        if known is not None and not self._synapse.account_data_changed_since(user_id, known):
            return min(known, to_token.account_data_key)
        return to_token.account_data_key
