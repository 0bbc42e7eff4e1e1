"""A Matrix client-server API client for tests, on the standard library only.

Every call is one HTTP request to Synapse; an answer other than 2xx raises
`MatrixError` with the status and Matrix error code.
"""

from __future__ import annotations

import itertools
import json
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, urlencode

JsonDict = dict[str, Any]

SLIDING_SYNC_PATH = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"

_transaction_ids = itertools.count(1)


class MatrixError(Exception):
    """Synapse answered with an HTTP error."""

    def __init__(self, method: str, path: str, status: int, body: JsonDict) -> None:
        self.status = status
        self.errcode = body.get("errcode")
        self.body = body
        super().__init__(f"{method} {path}: HTTP {status} {body}")


def http_json(
    method: str,
    url: str,
    body: JsonDict | None = None,
    *,
    access_token: str | None = None,
    timeout: float = 60,
) -> JsonDict:
    """Sends one request with a JSON body (if any) and decodes the JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if access_token is not None:
        request.add_header("Authorization", f"Bearer {access_token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = {"raw": raw.decode(errors="replace")}
        raise MatrixError(method, url, error.code, answer) from None


def _id(value: str) -> str:
    return quote(value, safe="")


class Client:
    """One logged-in user of a homeserver."""

    def __init__(self, base_url: str, user_id: str, access_token: str) -> None:
        self.base_url = base_url
        self.user_id = user_id
        self.access_token = access_token

    def request(
        self,
        method: str,
        path: str,
        body: JsonDict | None = None,
        *,
        query: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> JsonDict:
        url = self.base_url + path + (f"?{urlencode(query)}" if query else "")
        return http_json(method, url, body, access_token=self.access_token, timeout=timeout)

    # --- rooms and membership ---------------------------------------------------

    def create_room(self, **options: Any) -> str:
        """`POST /createRoom` with the options as its body (e.g. preset, invite,
        is_direct, name, room_version, creation_content, initial_state)."""
        return self.request("POST", "/_matrix/client/v3/createRoom", options)["room_id"]

    def join(self, room: str) -> str:
        """Joins a room by ID or alias; returns the room ID."""
        return self.request("POST", f"/_matrix/client/v3/join/{_id(room)}", {})["room_id"]

    def knock(self, room: str, reason: str | None = None) -> str:
        body = {} if reason is None else {"reason": reason}
        return self.request("POST", f"/_matrix/client/v3/knock/{_id(room)}", body)["room_id"]

    def leave(self, room_id: str) -> None:
        self._room_post(room_id, "leave", {})

    def forget(self, room_id: str) -> None:
        self._room_post(room_id, "forget", {})

    def invite(self, room_id: str, user_id: str) -> None:
        self._room_post(room_id, "invite", {"user_id": user_id})

    def kick(self, room_id: str, user_id: str, reason: str | None = None) -> None:
        self._room_post(room_id, "kick", _with_reason({"user_id": user_id}, reason))

    def ban(self, room_id: str, user_id: str, reason: str | None = None) -> None:
        self._room_post(room_id, "ban", _with_reason({"user_id": user_id}, reason))

    def unban(self, room_id: str, user_id: str) -> None:
        self._room_post(room_id, "unban", {"user_id": user_id})

    def upgrade_room(self, room_id: str, new_version: str) -> str:
        """Upgrades a room (tombstone in the old one); returns the new room's ID."""
        answer = self._room_post(room_id, "upgrade", {"new_version": new_version})
        return answer["replacement_room"]

    def _room_post(self, room_id: str, action: str, body: JsonDict) -> JsonDict:
        return self.request("POST", f"/_matrix/client/v3/rooms/{_id(room_id)}/{action}", body)

    # --- events -------------------------------------------------------------------

    def send_event(self, room_id: str, event_type: str, content: JsonDict) -> str:
        """Sends a message-like event; returns its event ID."""
        path = (
            f"/_matrix/client/v3/rooms/{_id(room_id)}/send/{_id(event_type)}"
            f"/{next(_transaction_ids)}"
        )
        return self.request("PUT", path, content)["event_id"]

    def send_message(self, room_id: str, text: str) -> str:
        return self.send_event(room_id, "m.room.message", {"msgtype": "m.text", "body": text})

    def send_read_receipt(self, room_id: str, event_id: str) -> None:
        """A public read receipt (`m.read`) on `event_id`."""
        self._room_post(room_id, f"receipt/m.read/{_id(event_id)}", {})

    def redact(self, room_id: str, event_id: str, reason: str | None = None) -> str:
        """Redacts an event; returns the redaction's event ID."""
        path = (
            f"/_matrix/client/v3/rooms/{_id(room_id)}/redact/{_id(event_id)}"
            f"/{next(_transaction_ids)}"
        )
        return self.request("PUT", path, _with_reason({}, reason))["event_id"]

    def set_state(
        self, room_id: str, event_type: str, content: JsonDict, state_key: str = ""
    ) -> str:
        """Sends a state event; returns its event ID."""
        path = f"/_matrix/client/v3/rooms/{_id(room_id)}/state/{_id(event_type)}/{_id(state_key)}"
        return self.request("PUT", path, content)["event_id"]

    def get_state(self, room_id: str, event_type: str, state_key: str = "") -> JsonDict:
        path = f"/_matrix/client/v3/rooms/{_id(room_id)}/state/{_id(event_type)}/{_id(state_key)}"
        return self.request("GET", path)

    def set_name(self, room_id: str, name: str) -> str:
        return self.set_state(room_id, "m.room.name", {"name": name})

    def set_encryption(self, room_id: str) -> str:
        return self.set_state(room_id, "m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"})

    def set_tombstone(self, room_id: str, replacement_room: str) -> str:
        content = {"body": "This room was replaced", "replacement_room": replacement_room}
        return self.set_state(room_id, "m.room.tombstone", content)

    def add_space_child(self, space_id: str, child_id: str, via: list[str]) -> str:
        return self.set_state(space_id, "m.space.child", {"via": via}, state_key=child_id)

    # --- account data -------------------------------------------------------------

    def set_account_data(self, data_type: str, content: JsonDict) -> None:
        path = f"/_matrix/client/v3/user/{_id(self.user_id)}/account_data/{_id(data_type)}"
        self.request("PUT", path, content)

    def set_direct(self, rooms_by_user: dict[str, list[str]]) -> None:
        """Replaces the user's `m.direct`: user ID → that user's DM room IDs."""
        self.set_account_data("m.direct", rooms_by_user)

    def ignore_users(self, user_ids: list[str]) -> None:
        """Replaces the user's ignored users (`m.ignored_user_list`)."""
        self.set_account_data("m.ignored_user_list", {"ignored_users": {u: {} for u in user_ids}})

    def set_room_tag(self, room_id: str, tag: str, order: float | None = None) -> None:
        body = {} if order is None else {"order": order}
        self.request("PUT", self._tag_path(room_id, tag), body)

    def remove_room_tag(self, room_id: str, tag: str) -> None:
        self.request("DELETE", self._tag_path(room_id, tag))

    def _tag_path(self, room_id: str, tag: str) -> str:
        user = _id(self.user_id)
        return f"/_matrix/client/v3/user/{user}/rooms/{_id(room_id)}/tags/{_id(tag)}"

    # --- admin ------------------------------------------------------------------

    def delete_room(self, room_id: str, timeout: float = 120) -> None:
        """Deletes and purges a room through the admin API (the user must be an
        admin); returns once the deletion is complete."""
        answer = self.request("DELETE", f"/_synapse/admin/v2/rooms/{_id(room_id)}", {"purge": True})
        path = f"/_synapse/admin/v2/rooms/delete_status/{_id(answer['delete_id'])}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.request("GET", path)["status"]
            if status == "complete":
                return
            if status == "failed":
                raise RuntimeError(f"deleting {room_id} failed")
            time.sleep(0.1)
        raise TimeoutError(f"deleting {room_id} did not complete")

    # --- Sliding Sync -------------------------------------------------------------

    def sliding_sync(
        self, body: JsonDict, *, pos: str | None = None, timeout_ms: int = 0
    ) -> JsonDict:
        """One Sliding Sync request (MSC4186, Synapse's unstable path). `pos`
        continues a connection (the `pos` of the previous answer); `timeout_ms`
        is how long Synapse may wait for news when there is none (0: answer now)."""
        query = {"timeout": str(timeout_ms)}
        if pos is not None:
            query["pos"] = pos
        return self.request(
            "POST", SLIDING_SYNC_PATH, body, query=query, timeout=60 + timeout_ms / 1000
        )


def _with_reason(body: JsonDict, reason: str | None) -> JsonDict:
    return body if reason is None else {**body, "reason": reason}
