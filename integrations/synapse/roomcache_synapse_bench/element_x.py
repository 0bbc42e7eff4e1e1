# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""The room-list requests Element X sends (matrix-rust-sdk's room list
service), the one definition the benchmark and the equivalence tests share.

The shape is `element_x.json` beside this file, as measured: one connection
`conn_id: "room-list"`, one list `all_rooms` (no filters, `timeline_limit:
1`, 17 `required_state` entries, four of them wildcards), the extensions
`account_data`, `receipts` and `typing`; room subscriptions (the rooms on
screen, at most 30) with `m.room.pinned_events` and `timeline_limit: 20`.

The sequence: `[[0, 19]]` without `pos`, then growing by `batch` (100):
`[[0, 99]]`, `[[0, 199]]`, ... up to `[[0, count - 1]]`, each with the
previous `pos` and `timeout=0` (`loading_ranges`); once loaded, every
request carries the full range `[[0, count - 1]]` with its `pos`,
long-polling (`steady_range`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

JsonDict = dict[str, Any]

SHAPE: JsonDict = json.loads((Path(__file__).parent / "element_x.json").read_text())
CONN_ID: str = SHAPE["loading_first"]["conn_id"]
LIST_NAME = "all_rooms"
FIRST_RANGE = SHAPE["loading_first"]["lists"][LIST_NAME]["ranges"][0]
BATCH = 100
"""Element X's growing batch."""
MAX_SUBSCRIPTIONS = 30
"""At most this many rooms on screen (Element X on iOS)."""
STEADY_TIMEOUT_MS = 30_000
"""The long poll of a loaded room list."""


def request(
    ranges: list[list[int]],
    *,
    conn_id: str = CONN_ID,
    subscriptions: Iterable[str] = (),
) -> JsonDict:
    """Element X's request body with the list's `ranges`, on `conn_id`,
    with room subscriptions to `subscriptions` (if any)."""
    body = copy.deepcopy(SHAPE["loading_first"])
    body["conn_id"] = conn_id
    body["lists"][LIST_NAME]["ranges"] = [list(each) for each in ranges]
    rooms = list(subscriptions)
    if len(rooms) > MAX_SUBSCRIPTIONS:
        raise ValueError(f"{len(rooms)} room subscriptions; Element X sends at most 30")
    if rooms:
        subscription = SHAPE["room_subscription"]
        body["room_subscriptions"] = {room_id: copy.deepcopy(subscription) for room_id in rooms}
    return body


def loading_ranges(count: int, batch: int = BATCH) -> list[list[list[int]]]:
    """The ranges of the requests after the first (`[[0, 19]]`), given the
    list's `count` from the first answer: growing by `batch` up to the whole
    list (nothing when the first window already showed it)."""
    first_end = FIRST_RANGE[1]
    if count <= first_end + 1:
        return []
    ranges = []
    end = batch - 1
    while True:
        if end > first_end:
            ranges.append([[0, min(end, count - 1)]])
        if end >= count - 1:
            return ranges
        end += batch


def steady_range(count: int) -> list[list[int]]:
    """The range of every request once the list is loaded."""
    return [[0, max(count - 1, 0)]]
