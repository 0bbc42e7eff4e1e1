"""Writes the multi-writer fixture of tests/fixtures/synapse/: a Synapse with two
event persisters (p1, p2) over Redis, after two rounds of the concurrent test
workload (tests/scenes.py), exported as its database (workers.sql.gz) and its
live sliding-sync tables (workers.*.csv), as small.* are.

    var/synapse-venv/bin/python integrations/synapse/make_workers_fixture.py [PORT_BASE]

Ports: PORT_BASE (default 25460) to PORT_BASE + 5. Takes about a minute.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time

from tests.follower import JOINED_COLUMNS, SNAPSHOT_COLUMNS, synapse_writer_positions
from tests.harness import REPOSITORY, Homeserver
from tests.scenes import Cast, all_scenes, play

FIXTURES = REPOSITORY / "tests" / "fixtures" / "synapse"


def settle(homeserver: Homeserver) -> None:
    """Waits until Synapse has nothing more to write (positions unchanged for 2 s)."""
    last: dict[str, int] = {}
    while True:
        now = synapse_writer_positions(homeserver)
        if now == last:
            return
        last = now
        time.sleep(2)


def export(homeserver: Homeserver) -> dict[str, object]:
    url = homeserver.database_url
    dump = subprocess.run(
        ["pg_dump", "--no-owner", "--no-privileges", url],
        check=True,
        capture_output=True,
    ).stdout
    (FIXTURES / "workers.sql.gz").write_bytes(gzip.compress(dump, mtime=0))
    counts = {}
    for table, columns, name in (
        ("sliding_sync_joined_rooms", JOINED_COLUMNS, "joined_rooms"),
        ("sliding_sync_membership_snapshots", SNAPSHOT_COLUMNS, "membership_snapshots"),
    ):
        query = f"COPY (SELECT {columns} FROM {table} ORDER BY 1, 2) TO STDOUT WITH CSV HEADER"
        csv = subprocess.run(["psql", "-Atc", query, url], check=True, capture_output=True).stdout
        (FIXTURES / f"workers.{name}.csv").write_bytes(csv)
        counts[name] = csv.count(b"\n") - 1
    positions = dict(
        homeserver.query(
            "SELECT instance_name, stream_id FROM stream_positions WHERE stream_name = 'events'"
        )
    )
    writers = dict(
        homeserver.query(
            "SELECT instance_name, count(*) FROM events GROUP BY instance_name ORDER BY 1"
        )
    )
    return {
        "synapse": "1.163.2",
        "server_name": homeserver.server_name,
        "rows": counts,
        "events_by_writer": writers,
        "stream_positions": positions,
        "highest_positions": synapse_writer_positions(homeserver),
    }


def main() -> None:
    base = int(sys.argv[1]) if len(sys.argv) > 1 else 25460
    directory = REPOSITORY / "var" / "workers-fixture"
    with Homeserver(
        directory, pg_port=base, http_port=base + 1, workers=True, redis_port=base + 5
    ) as homeserver:
        cast = Cast.register(homeserver, "fixture")
        play(cast, all_scenes(), seed=11)
        play(cast, all_scenes(), seed=12)
        settle(homeserver)
        summary = export(homeserver)
    (FIXTURES / "workers.summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
