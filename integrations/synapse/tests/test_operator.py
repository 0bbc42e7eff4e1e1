"""What an operator relies on, against the real thing: roomcache runs as the
roles docs/synapse.md creates (the harness runs the doc's SQL verbatim) and the
doc's URL examples encode their passwords as the harness does; a grant revoked
while running makes roomcache say so (`/health`, `/v1/status`, naming the
table) and the module fall back at once with reason `source_degraded`; every
metric the alert rules and the Grafana dashboard in contrib/ name is served by
roomcache or by the module."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from typing import Any
from urllib.parse import quote

import yaml

from .deployment import ModuleDeployment, counts_since
from .harness import REPOSITORY
from .roomcache import DOCS, OWN_ROLE, READER_ROLE, UnixConnection, documented_password

DASHBOARD = REPOSITORY / "contrib" / "grafana" / "roomcache.json"
ALERTS = REPOSITORY / "contrib" / "prometheus" / "roomcache-alerts.yml"
# Names Prometheus makes itself.
PROMETHEUS_OWN = {"up"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
PROMQL_WORDS |= {"and", "or", "unless", "offset", "inf", "nan"}


def test_roomcache_runs_as_the_documented_roles(with_module: ModuleDeployment) -> None:
    rows = with_module.homeserver.query(
        "SELECT DISTINCT application_name, usename FROM pg_stat_activity"
        " WHERE application_name IN ('roomcache', 'roomcache-source')"
    )
    assert sorted(rows) == [("roomcache", OWN_ROLE), ("roomcache-source", READER_ROLE)]
    doc = DOCS.read_text()
    for role, database in ((OWN_ROLE, "roomcache"), (READER_ROLE, "synapse")):
        password = documented_password(role)
        assert quote(password, safe="") != password, f"{role}'s password needs no encoding"
        url = f"postgres://{role}:{quote(password, safe='')}@localhost/{database}"
        assert url in doc, f"docs/synapse.md does not show {url}"


def _raw(socket_path: str, method: str, path: str, body: Any = None) -> tuple[int, str]:
    connection = UnixConnection(socket_path, timeout=30)
    try:
        data = None if body is None else json.dumps(body).encode()
        connection.request(method, path, body=data, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def _wait_for_health(socket_path: str, status: int) -> str:
    deadline = time.monotonic() + 30
    while True:
        got, text = _raw(socket_path, "GET", "/health")
        if got == status:
            return text
        assert time.monotonic() < deadline, f"/health stayed {got}: {text}"
        time.sleep(0.05)


def test_a_revoked_grant_shows_as_degraded_and_the_module_falls_back_at_once(
    with_module: ModuleDeployment,
) -> None:
    homeserver, roomcache = with_module.homeserver, with_module.roomcache
    socket_path = str(roomcache.socket_path)
    alice = homeserver.register("operator-alice")
    room = alice.create_room(preset="private_chat")
    roomcache.wait_until_caught_up()
    body = {"lists": {"all": {"ranges": [[0, 10]], "required_state": [], "timeline_limit": 1}}}
    homeserver.query(f"REVOKE SELECT ON stream_positions FROM {READER_ROLE}")
    try:
        health = json.loads(_wait_for_health(socket_path, 503))
        assert health["errcode"] == "ROOMCACHE_SOURCE_DEGRADED", health
        assert f"GRANT SELECT ON stream_positions TO {READER_ROLE};" in health["error"], health
        status = roomcache.get("/v1/status")
        assert (status["ready"], status["status"]) == (False, "degraded"), status
        assert status["source"]["degraded"]["reason"] == "permission_denied", status

        # Synapse moves on; roomcache cannot follow, so it refuses at once.
        alice.send_message(room, "while roomcache cannot read")
        before = with_module.room_list_counts()
        started = time.monotonic()
        alice.sliding_sync({**body, "conn_id": "operator"})
        print(f"sync with a degraded source: {time.monotonic() - started:.3f} s")
        counts = counts_since(before, with_module.room_list_counts())
        assert counts.get(("synapse", "source_degraded"), 0) == 1, counts
    finally:
        homeserver.query(f"GRANT SELECT ON stream_positions TO {READER_ROLE}")
    _wait_for_health(socket_path, 200)
    roomcache.wait_until_caught_up()
    before = with_module.room_list_counts()
    alice.sliding_sync({**body, "conn_id": "operator-after"})
    counts = counts_since(before, with_module.room_list_counts())
    assert counts.get(("roomcache", ""), 0) == 1, counts


def served_metric_names(text: str) -> set[str]:
    """Every metric name a Prometheus text answers (with the sample names of its
    counters and histograms)."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.add(name)
            if kind == "counter":
                names |= {f"{name}_total", f"{name}_created"}
            elif kind == "histogram":
                names |= {f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count")}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def query_metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word, rest = match.group(0), text[match.end() :].lstrip()
        if not rest.startswith("(") and word not in PROMQL_WORDS:
            names.add(word)
    return names


def test_the_dashboard_and_alert_rules_name_only_served_metrics(
    with_module: ModuleDeployment,
) -> None:
    socket_path = str(with_module.roomcache.socket_path)
    # An error answer and a read whose token is not reached, so that their
    # counters have samples.
    assert _raw(socket_path, "GET", "/v1/no-such-endpoint")[0] == 404
    request = {"lists": {"a": {"ranges": [[0, 0]]}}, "wait_for": "s999999999", "timeout_ms": 1}
    assert _raw(socket_path, "POST", "/v1/users/@nobody:localhost/room_list", request)[0] == 200
    _, roomcache_metrics = _raw(socket_path, "GET", "/metrics")
    url = f"{with_module.homeserver.client_url}/_synapse/metrics"
    with urllib.request.urlopen(url, timeout=30) as response:
        synapse_metrics = response.read().decode()
    served = served_metric_names(roomcache_metrics) | served_metric_names(synapse_metrics)
    served |= PROMETHEUS_OWN

    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    rules = yaml.safe_load(ALERTS.read_text())
    queries += [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    assert len(queries) > 10
    named = set().union(*(query_metric_names(q) for q in queries))
    assert {"roomcache_source_healthy", "roomcache_synapse_room_lists_total"} <= named
    assert named - served == set(), f"not served: {sorted(named - served)}"
