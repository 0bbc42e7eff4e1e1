# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""What the module knows of roomcache's progress, and what it lets roomcache
skip.

roomcache answers at a token at least the request's, so a request made
right after a write waits until roomcache has followed it. When nothing
that concerns the user happened after roomcache's last token (no
membership of theirs changed, and the rooms with an event since are not
theirs: roomcache checks those), roomcache's answer at its own token is the
answer at the request's, and it need not wait (`unaffected`). The same for
account data: when the user's did not change after roomcache's last
account-data position, roomcache need not follow other users' first.
Synapse's stream change caches (in memory) tell what changed.
"""

from __future__ import annotations

from typing import Any

from .tokens import token_stream

JsonDict = dict[str, Any]

# Beyond this many rooms changed since roomcache's last token, the module
# waits for roomcache to reach the request's token instead.
_MAX_UNAFFECTED_ROOMS = 1000


class RoomcachePosition:
    """roomcache's token and account-data position in its latest answer."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._token: str | None = None
        self._stream = -1
        self._account_data: int | None = None

    def note(self, answer: JsonDict) -> None:
        """Remembers roomcache's token and account-data position (they only
        grow; of two answers the later one is kept)."""
        token = answer.get("token")
        if not isinstance(token, str):
            return
        try:
            stream = token_stream(token)
        except ValueError:
            return
        if stream >= self._stream:
            self._token, self._stream = token, stream
            position = answer.get("account_data_position")
            if isinstance(position, int):
                self._account_data = position

    def unaffected(self, user_id: str) -> JsonDict | None:
        """What lets roomcache answer before it reaches the token: the rooms
        with an event after its last token, when no membership of the user
        changed since (Synapse's stream change caches, in memory)."""
        since = self._token
        if since is None:
            return None
        position = self._stream
        if self._store._membership_stream_cache.has_entity_changed(user_id, position):
            return None
        changed = self._store._events_stream_cache.get_all_entities_changed(position)
        if not changed.hit or len(changed.entities) > _MAX_UNAFFECTED_ROOMS:
            return None
        return {"since": since, "rooms": sorted(set(changed.entities))}

    def account_data_to_wait_for(self, user_id: str, to_token: Any) -> int:
        """The request's account-data position, or roomcache's own when the
        user's account data did not change after it (so roomcache need not
        follow other users' changes first)."""
        known = self._account_data
        if known is not None and not self._store._account_data_stream_cache.has_entity_changed(
            user_id, known
        ):
            return min(known, to_token.account_data_key)
        return to_token.account_data_key
