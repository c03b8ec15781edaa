"""Benchmark of `verify` (issue 18: the lock comparison) with many extra tables.

Run: `.venv/bin/python bench/verify_bench.py [--tables 10000] [--runs 5]` (`make bench` runs
it). Prints a markdown table; goal: a converged database with 10,000 extra tables verifies in
under 0.5 s.

One embedded Cloud SQL emulation, the layout applied, then N extra tables (an identity
primary key, three more columns, an index and a grant each) in a schema outside the managed
ones (`other_app`: what another service keeps in the same database), then N more in `dna`
(inside a managed schema: each is a `table-unexpected` finding, so that run is a failing
verify that still has to read and compare them all). Timed in process, after one warm-up:
`commands.verify` (connect, catalog, the lock comparison, findings), the median of the runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from provision import commands, db  # noqa: E402
from provision.local.instance import (  # noqa: E402
    ADMIN_USER,
    OWNER_USER,
    connect_as,
    superuser_connection,
)
from provision.local.server import Server  # noqa: E402


def fill(instance, schema: str, tables: int) -> None:
    # In a managed schema as its owner (what a hand-made table there would be), else as the
    # superuser (another service's schema).
    if schema == "dna":
        conn = connect_as(instance, OWNER_USER)
    else:
        conn = superuser_connection(instance, instance.database)
        conn.run(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    try:
        for start in range(1, tables + 1, 500):
            stop = min(start + 499, tables)
            conn.run(
                f"DO $$ BEGIN FOR i IN {start}..{stop} LOOP "
                f"EXECUTE format('CREATE TABLE {schema}.extra_%s (id bigint GENERATED ALWAYS AS "
                "IDENTITY PRIMARY KEY, name text NOT NULL, note text, created_at timestamptz NOT "
                "NULL DEFAULT now())', i); "
                f"EXECUTE format('CREATE INDEX extra_%s_name_idx ON {schema}.extra_%s (name)', i, i); "
                f"EXECUTE format('GRANT SELECT ON {schema}.extra_%s TO nucleus_readonly', i); "
                "END LOOP; END $$"
            )
    finally:
        conn.close()


def measure(instance, runs: int) -> tuple[float, bool]:
    desired = commands.load_desired("local")

    def once() -> tuple[float, bool]:
        target = db.Target(
            admin=db.engine_for_dsn(instance.dsn(ADMIN_USER)),
            owner=db.engine_for_dsn(instance.dsn(OWNER_USER)),
            description="bench",
        )
        started = time.perf_counter()
        verdict = commands.verify(target, desired)
        return time.perf_counter() - started, verdict.matches

    once()  # warm-up: imports, the server's caches
    results = [once() for _ in range(runs)]
    return statistics.median(r[0] for r in results), results[-1][1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tables", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    server = Server(Path(tempfile.mkdtemp(prefix="bench-verify-")))
    instance = server.start("legacy-nucleus-v12")
    try:
        target = db.Target(
            admin=db.engine_for_dsn(instance.admin_dsn),
            owner=db.engine_for_dsn(instance.owner_dsn),
            description="bench",
            app_password=lambda: "bench-app-password-0123456789",
        )
        commands.apply(target, commands.load_desired("local"))
        rows = [("converged, nothing extra", *measure(instance, args.runs))]
        fill(instance, "other_app", args.tables)
        rows.append(
            (f"+ {args.tables} tables outside the managed schemas", *measure(instance, args.runs))
        )
        fill(instance, "dna", args.tables)
        rows.append((f"+ {args.tables} tables in dna (findings)", *measure(instance, args.runs)))
    finally:
        server.stop()
    print(f"verify, median of {args.runs} runs after a warm-up (in process)\n")
    print("| database | verify | matches |")
    print("| --- | ---: | --- |")
    for name, seconds, matches in rows:
        print(f"| {name} | {seconds * 1000:.0f} ms | {'yes' if matches else 'no'} |")


if __name__ == "__main__":
    main()
