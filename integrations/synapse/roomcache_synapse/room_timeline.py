# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""roomcache's initial timelines (the `timeline` of `POST /v1/rooms/data`),
parsed into typed values, and the pure decisions around them: which limit a
request's one fetch asks, and the page Synapse's query would return.

For a room, roomcache answers what Synapse's initial-timeline query
(`paginate_room_events_by_topological_ordering` backwards from the token,
no lower bound, no filter) selects before Synapse fetches the events: the
rows it keeps, newest first, rejected events included (fetching the events
by ID drops them), and `limited`; or why it cannot (`unknown`).

Owns: the timeline's wire form and its checks, `asked_limit`,
`next_position`, and whether the bundled aggregations of a timeline's
events are empty (`TimelineRelations`, from facts the adapter reads). May
not touch: Synapse, the connection, roomcache's client.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable
from typing import Any

import attr

from .answer import _MAX_INTEGER, BadAnswer, _boolean, _identifier, _integer, _text


@attr.s(frozen=True, slots=True, auto_attribs=True)
class TimelineRow:
    """One row Synapse's query keeps: an event and its orderings."""

    event_id: str
    topological_ordering: int
    stream_ordering: int


@attr.s(frozen=True, slots=True, auto_attribs=True)
class RoomTimeline:
    """A room's initial timeline as Synapse's query gives it: the rows it
    keeps, newest first, and whether it hit the limit."""

    rows: tuple[TimelineRow, ...]
    limited: bool

    @property
    def event_ids(self) -> list[str]:
        return [row.event_id for row in self.rows]


def asked_limit(limits: Iterable[int]) -> int | None:
    """The one timeline limit a request's fetch asks: the one most of its
    rooms sent in full use (the smaller on a tie); None when none of them
    has a timeline. roomcache's answer for one limit does not give another
    limit's (Synapse's query reads `2 * limit` rows), so rooms with another
    limit are Synapse's own."""
    counts = Counter(limit for limit in limits if limit > 0)
    if not counts:
        return None
    return min(counts, key=lambda limit: (-counts[limit], limit))


def next_position(timeline: RoomTimeline) -> tuple[int, int] | None:
    """The (topological, stream) ordering of the token Synapse's query
    returns after its rows: just before its last row, going backwards;
    None when it kept no rows (the query then returns the token it started
    from)."""
    if not timeline.rows:
        return None
    last = timeline.rows[-1]
    return last.topological_ordering, last.stream_ordering - 1


def parse_timeline(raw: Any, room_id: str, limit: int) -> RoomTimeline | str:
    """A room's `timeline` of an answer asking `limit` events: the
    timeline, or why roomcache does not know it (its `unknown` reason).
    `BadAnswer` when it is neither: more rows than `limit`, rows not
    newest first, a row not [event ID, topological ordering, stream
    ordering, writer, rejected]."""
    if type(raw) is not dict:
        raise BadAnswer(f"{room_id}: `timeline` is not an object")
    if "unknown" in raw:
        return _text(raw["unknown"], "timeline unknown")
    events = raw.get("events")
    if type(events) is not list:
        raise BadAnswer(f"{room_id}: the timeline's `events` is not a list")
    if len(events) > limit:
        raise BadAnswer(f"{room_id}: {len(events)} timeline events, asked {limit}")
    rows = tuple(_row(event, room_id) for event in events)
    for newer, older in itertools.pairwise(rows):
        if (older.topological_ordering, older.stream_ordering) >= (
            newer.topological_ordering,
            newer.stream_ordering,
        ):
            raise BadAnswer(f"{room_id}: the timeline's events are not newest first")
    return RoomTimeline(rows, _boolean(raw.get("limited"), "timeline limited"))


def _row(raw: Any, room_id: str) -> TimelineRow:
    if type(raw) is not list or len(raw) != 5:
        raise BadAnswer(
            f"{room_id}: a timeline event is not [event ID, topological ordering, "
            "stream ordering, writer, rejected]"
        )
    event_id, topological, stream, writer, rejected = raw
    _text(writer, "timeline writer")
    _boolean(rejected, "timeline rejected")
    return TimelineRow(
        event_id=_identifier(event_id, "$", "timeline event ID"),
        topological_ordering=_integer(topological, -_MAX_INTEGER, "topological ordering"),
        stream_ordering=_integer(stream, -_MAX_INTEGER, "stream ordering"),
    )


@attr.s(frozen=True, slots=True, auto_attribs=True)
class TimelineRelations:
    """Of the events of a request's timelines chosen from roomcache's
    answer (`looked_up`), those another event relates to (`related`: a row
    of Synapse's `event_relations` names them, read in one query)."""

    looked_up: frozenset[str]
    related: frozenset[str]

    def none_related(self, event_ids: Iterable[str]) -> str | None:
        """None when Synapse's bundled aggregations of these events are
        empty: each was looked up and no event relates to any of them (its
        threads, references and edits are all read from `event_relations`);
        else why not (`not_fetched`, `related`)."""
        for event_id in event_ids:
            if event_id not in self.looked_up:
                return "not_fetched"
            if event_id in self.related:
                return "related"
        return None
