"""The seam's decisions on a connection's second and later requests: the
short entries it asks for again (`entries: changed`) and the held lists
(`entries: changed_only`). Synapse is a `Mock(spec=SynapseAdapter)`,
roomcache a `Mock(spec=RoomcacheClient)` (the `Deployment` of
test_seam_units.py)."""

from __future__ import annotations

from typing import Any
from unittest.mock import Mock

from synapse.types import RoomStreamToken

from roomcache_synapse.to_send import PreviousConnection

from .test_answer_units import entry
from .test_seam_units import Deployment, good_answer, list_config, sync_config, token

# --- short entries (entries: changed) -------------------------------------------------


def test_short_entries_of_rooms_to_send_are_asked_for() -> None:
    deployment = Deployment()
    first = good_answer()
    # !a:hs unchanged since pos (short), but never sent on this connection.
    first["lists"]["0"]["ranges"][0]["rooms"][0] = {"room_id": "!a:hs", "recency": 12}
    second = good_answer(
        lists={"0": {"count": 3, "ranges": []}},
        rooms={"!a:hs": entry("!a:hs")},
    )
    deployment.client.room_lists.side_effect = [first, second]
    from_token = Mock(room_key=RoomStreamToken(stream=15))
    result, who = deployment.sync(from_token=from_token)
    assert who == "roomcache"
    assert deployment.client.room_lists.await_count == 2
    asked = deployment.client.room_lists.call_args_list
    assert asked[0].args[1]["entries"] == "changed"
    assert (asked[1].args[1]["room_ids"], asked[1].args[1]["wait_for"]) == (["!a:hs"], "s20")
    assert result.room_membership_for_user_map["!a:hs"].event_id == "$join"
    # The second answer must hold it.
    deployment.client.room_lists.side_effect = [first, good_answer(lists=second["lists"])]
    assert deployment.sync(from_token=from_token)[1] == "bad_answer"


# --- held lists (entries: changed_only) -----------------------------------------------


def _whole_list_answer(token_text: str, rooms: list[dict[str, Any]], **changes: Any) -> Any:
    end = len(rooms) - 1
    return good_answer(
        token=token_text,
        lists={"0": {"count": len(rooms), "ranges": [{"range": [0, end], "rooms": rooms}]}},
        **changes,
    )


def _every_room_sent_before(deployment: Deployment) -> None:
    deployment.synapse.previous_connection.return_value = PreviousConnection(
        never_sent=lambda rooms: set(), previously=[], room_configs={}, last_used_ts=None
    )


def test_a_connection_shown_its_whole_list_gets_only_what_moved_next() -> None:
    deployment = Deployment()
    _every_room_sent_before(deployment)
    config = sync_config(all=list_config([(0, 2)]))
    deployment.client.room_lists.return_value = _whole_list_answer(
        "s20",
        [entry("!a:hs", recency=12), entry("!b:hs", recency=11), entry("!c:hs", recency=5)],
    )
    result, who = deployment.sync(config, to_token=token(20))
    assert who == "roomcache"
    assert "entries" not in deployment.last_body()  # no pos: whole entries
    # With its pos: only !c:hs, which had a message at 25, comes back; the
    # others keep their places. And again from there: !b:hs moves up.
    steps = [
        (20, 30, "!c:hs", ["!c:hs", "!a:hs", "!b:hs"]),
        (30, 40, "!b:hs", ["!b:hs", "!c:hs", "!a:hs"]),
    ]
    for since, at, moved, order in steps:
        deployment.synapse.current_room_token.return_value = RoomStreamToken(stream=at)
        only_moved = {"range": [0, 2], "rooms": [entry(moved, recency=at - 5)]}
        deployment.client.room_lists.return_value = good_answer(
            token=f"s{at}",
            lists={"0": {"count": 3, "ranges": [only_moved]}},
            other_rooms=[moved],
        )
        pos = Mock(room_key=RoomStreamToken(stream=since))
        result, who = deployment.sync(config, to_token=token(at), from_token=pos)
        assert who == "roomcache"
        body = deployment.last_body()
        assert (body["entries"], body["lists"]["0"]["ranges"]) == ("changed_only", [[0, 2]])
        assert result.lists["all"].ops[0].room_ids == order


def test_held_lists_are_not_used_after_a_membership_change_or_a_miscount() -> None:
    deployment = Deployment()
    _every_room_sent_before(deployment)
    config = sync_config(all=list_config([(0, 1)]))
    whole = _whole_list_answer("s20", [entry("!a:hs", recency=12), entry("!b:hs", recency=11)])
    deployment.client.room_lists.return_value = whole
    assert deployment.sync(config, to_token=token(20))[1] == "roomcache"
    # A membership of the user changed after pos: the whole list is asked.
    deployment.synapse.membership_changed_since.return_value = True
    deployment.client.room_lists.return_value = whole
    pos = Mock(room_key=RoomStreamToken(stream=20))
    assert deployment.sync(config, to_token=token(20), from_token=pos)[1] == "roomcache"
    assert deployment.last_body()["entries"] == "changed"
    # Held again (the last answer showed the whole list); roomcache now
    # counts a room the held list lacks: Synapse's way, and nothing held.
    deployment.synapse.membership_changed_since.return_value = False
    deployment.client.room_lists.return_value = good_answer(
        lists={"0": {"count": 3, "ranges": [{"range": [0, 1], "rooms": []}]}}
    )
    assert deployment.sync(config, to_token=token(20), from_token=pos)[1] == "held_order_mismatch"
    assert deployment.last_body()["entries"] == "changed_only"
    deployment.client.room_lists.return_value = whole
    assert deployment.sync(config, to_token=token(20), from_token=pos)[1] == "roomcache"
    assert deployment.last_body()["entries"] == "changed"
