"""Benchmarks of the embedded emulation and the engine. Run: `make bench` (or .venv/bin/python bench/run.py).

Prints a markdown table; the figures in docs/benchmarks.md come from this script.
- start-to-ready of the embedded instance (initdb, start, Cloud SQL roles, scenario);
- `inspect` on a database with 10,000 extra tables (goal: <= 0.5 s), and its query count;
- statements sent by a full apply from legacy-nucleus-v12 beyond those in the migration files
  (goal: <= 30) and by a no-op apply (goal: <= 5 catalog queries, independent of object count).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import event

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from provision import commands, db  # noqa: E402
from provision.local.instance import superuser_connection  # noqa: E402
from provision.local.server import Server  # noqa: E402
from provision.migrations import load_migrations  # noqa: E402

# The emulated server is the `local` environment's (no pgaudit there), and the app login's
# password stands for its secret.
os.environ.setdefault("NUCLEUS_PROVISION_ENV", "local")
APP_PASSWORD = "bench-app-password"


def counted_target(instance) -> tuple[db.Target, list[str]]:
    seen: list[str] = []
    engines = [db.engine_for_dsn(instance.admin_dsn), db.engine_for_dsn(instance.owner_dsn)]
    for engine in engines:
        event.listen(engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    target = db.Target(engines[0], engines[1], "bench", app_password=lambda: APP_PASSWORD)
    return target, seen


def main() -> None:
    rows = []
    starts = {}
    for scenario in ("empty", "legacy-nucleus-v12"):
        times = []
        for _ in range(3):
            server = Server(Path(tempfile.mkdtemp(prefix="bench-")))
            t = time.perf_counter()
            server.start(scenario)
            times.append(time.perf_counter() - t)
            server.stop()
        starts[scenario] = statistics.median(times)
        rows.append(
            (
                f"`local up --scenario {scenario}` start-to-ready (median of 3)",
                f"{starts[scenario]:.2f} s",
                "a few s",
            )
        )

    server = Server(Path(tempfile.mkdtemp(prefix="bench-")))
    instance = server.start("legacy-nucleus-v12")
    try:
        migrations = load_migrations()
        file_statements = sum(len(m.statements) for m in migrations)
        target, seen = counted_target(instance)
        t = time.perf_counter()
        commands.apply(target)
        full_ms = (time.perf_counter() - t) * 1000
        rows.append(
            (
                "full apply from legacy-nucleus-v12: statements beyond the migration files",
                f"{len(seen) - file_statements} ({len(seen)} in all; {full_ms:.0f} ms)",
                "<= 30",
            )
        )
        target, seen = counted_target(instance)
        t = time.perf_counter()
        commands.apply(target)
        noop_ms = (time.perf_counter() - t) * 1000
        catalog_queries = [s for s in seen if "advisory" not in s]
        rows.append(
            (
                "no-op apply: statements sent (catalog queries + lock/unlock)",
                f"{len(seen)} ({len(catalog_queries)} catalog; {noop_ms:.0f} ms)",
                "<= 5 catalog",
            )
        )

        conn = superuser_connection(instance, "nucleus_v12")
        conn.run("CREATE SCHEMA bulk")
        for start in range(
            1, 10001, 1000
        ):  # batches: one transaction cannot lock 10,000 new tables
            conn.run(
                f"DO $$ BEGIN FOR i IN {start}..{start + 999} LOOP "
                "EXECUTE format('CREATE TABLE bulk.t%s (id int PRIMARY KEY, v text)', i); END LOOP; END $$"
            )
        conn.close()
        target, seen = counted_target(instance)
        commands.apply(target)
        rows.append(
            (
                "no-op apply with 10,000 extra tables: statements sent",
                str(len(seen)),
                "same as above",
            )
        )
        # 2,000 tables in a managed schema, created by the owner as a migration would: default
        # privileges grant them, so the no-op apply still sends the same statements (the
        # privileges concern reads all grants in one query, whatever their number).
        owner = superuser_connection(instance, "nucleus_v12")
        owner.run("SET ROLE nucleus")
        for start in range(1, 2001, 500):
            owner.run(
                f"DO $$ BEGIN FOR i IN {start}..{start + 499} LOOP "
                "EXECUTE format('CREATE TABLE dna.bulk%s (id int PRIMARY KEY, v text)', i); "
                "END LOOP; END $$"
            )
        owner.close()
        target, seen = counted_target(instance)
        t = time.perf_counter()
        result = commands.apply(target)
        managed_ms = (time.perf_counter() - t) * 1000
        rows.append(
            (
                "no-op apply with 2,000 more tables in schema dna (granted by default "
                "privileges): statements sent, actions",
                f"{len(seen)} statements, {len(result.plan.actions)} actions; {managed_ms:.0f} ms",
                "same as above, 0 actions",
            )
        )
        timings = []
        for _ in range(5):
            target, seen = counted_target(instance)
            t = time.perf_counter()
            commands.inspect(target)
            timings.append(time.perf_counter() - t)
        rows.append(
            (
                "`inspect` with 10,000 extra tables (connect + read + analyze, median of 5)",
                f"{statistics.median(timings) * 1000:.0f} ms, {len(seen)} queries",
                "<= 500 ms",
            )
        )
    finally:
        server.stop()

    print("| measurement | result | goal |\n| --- | --- | --- |")
    for name, value, goal in rows:
        print(f"| {name} | {value} | {goal} |")


if __name__ == "__main__":
    main()
