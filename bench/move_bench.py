"""Benchmark of `move run` (Phase 4). Run: `.venv/bin/python bench/move_bench.py [--rows N]`.

On its own emulation (the legacy scenario plus `local seed --rows N`: N entities, 2N
interests; default N = 1,000,000), side by side in one run:

1. a single raw `INSERT ... SELECT` of the entities' and interests' mapping (the same SQL the
   move uses, without batches), then the same rows through `move run` (keyset batches, each
   its own transaction), throttled (the default: each batch sized to take --batch-target
   seconds, pausing on lock waiters, autovacuum of the target, replica lag) and at the fixed
   --batch-size: throughput of each (goal, issue 21: throttled move >= 0.85x raw);
2. a catch-up pass when nothing changed (`move run` on a finished move: the per-range
   summaries of the legacy tables match those of the last pass, nothing else is read),
   against a full pass on the same data (the summaries forgotten, so every range is
   compared: what every pass cost before the summaries) (goal: no-change pass <= 2 s);
3. the latency a legacy writer sees (one INSERT and one UPDATE on dna_schema.entities per
   operation, as `nucleus`, ~100 operations per second): p50/p99 with no move running, then
   during the throttled `move run` and during the fixed-size one (goal, issue 21: p99 of the
   throttled move <= 1.1x).

Small scale (a check that it runs, not a figure): `--rows 20000 --baseline-seconds 3`.

Prints a markdown table (the figures of docs/benchmarks.md) and the machine's load.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from provision import commands, db  # noqa: E402
from provision.local.instance import ADMIN_USER, OWNER_USER, connect_as, superuser_connection  # noqa: E402
from provision.local.seed import seed  # noqa: E402
from provision.local.server import Server  # noqa: E402
from provision.move import declare, plan, runner, throttle  # noqa: E402

MOVES = ("entities", "interests")


def reset(instance) -> None:
    """Empty the targets and forget the move (as the emulated superuser), then checkpoint."""
    conn = superuser_connection(instance, instance.database)
    try:
        conn.run("TRUNCATE dna.entity CASCADE")
        conn.run("DROP SCHEMA IF EXISTS nucleus_move CASCADE")
        conn.run("VACUUM ANALYZE dna_schema.entities, dna_schema.interests")
        conn.run("CHECKPOINT")
    finally:
        conn.close()


def forget_summaries(instance) -> None:
    """Make the next pass compare every range (as every pass did before the summaries)."""
    conn = superuser_connection(instance, instance.database)
    try:
        conn.run("DELETE FROM nucleus_move.ranges")
    finally:
        conn.close()


class Writer:
    """A legacy service: one INSERT and one UPDATE per operation, paced, latencies kept."""

    def __init__(self, instance, per_second: float = 100.0) -> None:
        self.instance, self.period = instance, 1.0 / per_second
        self.latencies: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = connect_as(self.instance, OWNER_USER)
        i = 0
        try:
            next_at = time.perf_counter()
            while not self.stop.is_set():
                i += 1
                started = time.perf_counter()
                conn.run(
                    "INSERT INTO dna_schema.entities (external_id, name) "
                    "VALUES (gen_random_uuid(), 'bench writer')"
                )
                conn.run(
                    "UPDATE dna_schema.entities SET updated_at = now() WHERE id = :id",
                    id=1 + (i * 7919) % 1_000_000,
                )
                self.latencies.append(time.perf_counter() - started)
                next_at += self.period
                time.sleep(max(0.0, next_at - time.perf_counter()))
        finally:
            conn.close()

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=runner.DEFAULT_BATCH_SIZE)
    parser.add_argument("--batch-target", type=float, default=throttle.DEFAULT_TARGET_S)
    parser.add_argument("--baseline-seconds", type=float, default=15.0)
    args = parser.parse_args()
    load_before = os.getloadavg()

    server = Server(Path(tempfile.mkdtemp(prefix="bench-move-")))
    instance = server.start("legacy-nucleus-v12")
    rows: list[tuple[str, str, str]] = []
    try:
        conn = connect_as(instance, ADMIN_USER, timeout=1800)
        started = time.perf_counter()
        seeded = seed(conn, args.rows)
        conn.close()
        rows.append(
            (
                f"`local seed --rows {args.rows:,}`",
                f"{time.perf_counter() - started:.1f} s",
                str(seeded),
            )
        )
        desired = commands.load_desired("local")

        def target() -> db.Target:
            admin = db.engine_for_dsn(instance.admin_dsn)
            return db.Target(
                admin,
                db.engine_for_dsn(instance.owner_dsn),
                "bench",
                app_password=lambda: "bench-app-password",
            )

        # The layout and the declared privileges: postgres writes the new tables through
        # nucleus_readwrite (users.admin.member_of).
        commands.apply(target(), desired)
        declaration = declare.load()
        moves = [m for m in declaration.moves if m.name in MOVES]
        protected = desired.layout.protected_schemas

        engine = db.engine_for_dsn(instance.admin_dsn)
        with engine.connect() as sa:
            facts = runner._check(sa, declaration, moves, protected)
            sa.rollback()
            counts = sa.execute(
                text(
                    "SELECT (SELECT count(*) FROM dna_schema.entities), "
                    "(SELECT count(*) FROM dna_schema.interests)"
                )
            ).one()
            sa.rollback()
            # 1. raw INSERT ... SELECT, one transaction per table.
            started = time.perf_counter()
            for move in moves:
                sa.execute(text(plan.raw_insert(move, facts.infos[move.name])))
                sa.commit()
            raw_seconds = time.perf_counter() - started
            moved = sa.execute(
                text(
                    "SELECT (SELECT count(*) FROM dna.entity) + (SELECT count(*) FROM dna.interests)"
                )
            ).scalar_one()
            sa.rollback()
        engine.dispose()
        reset(instance)

        # 1b. move run: copy + first catch-up pass; the copy phase timed from its events.
        marks: dict[str, float] = {"copied": 0.0}

        def listener(event: runner.Event) -> None:
            if event.kind == runner.EventKind.START:
                marks["start"] = time.perf_counter()
            elif event.kind == runner.EventKind.COPIED:
                marks["copied"] += time.perf_counter() - marks["start"]

        throttled = runner.Options(
            batch_size=args.batch_size, limits=throttle.Limits(target_s=args.batch_target)
        )
        fixed = runner.Options(batch_size=args.batch_size, limits=throttle.Limits(target_s=None))
        sizes: list[int] = []

        def move_run(
            listen: runner.Listener = lambda e: None, options: runner.Options = throttled
        ) -> float:
            started = time.perf_counter()
            runner.run(target(), declaration, moves, protected, options, listen)
            return time.perf_counter() - started

        def listen_sizes(event: runner.Event) -> None:
            listener(event)
            if event.kind == runner.EventKind.BATCH:
                sizes.append(event.rows)

        total = move_run(listen_sizes)
        copy_seconds = marks["copied"]
        reset(instance)
        marks["copied"] = 0.0
        move_run(listener, fixed)
        fixed_seconds = marks["copied"]
        rows += [
            (
                f"raw `INSERT ... SELECT` of entities + interests ({moved:,} rows of "
                f"{counts[0] + counts[1]:,} legacy rows)",
                f"{raw_seconds:.1f} s, {moved / raw_seconds:,.0f} rows/s",
                "baseline",
            ),
            (
                f"`move run` copy phase, throttled (--batch-target {args.batch_target:g} s: "
                f"{len(sizes)} batches, {min(sizes, default=0):,}-{max(sizes, default=0):,} keys)",
                f"{copy_seconds:.1f} s, {moved / copy_seconds:,.0f} rows/s = "
                f"**{raw_seconds / copy_seconds:.2f}x** raw",
                ">= 0.85x",
            ),
            (
                f"`move run` copy phase, fixed batches of {args.batch_size:,} (--batch-target 0)",
                f"{fixed_seconds:.1f} s, {moved / fixed_seconds:,.0f} rows/s = "
                f"**{raw_seconds / fixed_seconds:.2f}x** raw",
                "-",
            ),
            ("`move run` in all (copy + first catch-up pass)", f"{total:.1f} s", "-"),
        ]

        # 2. catch-up pass when nothing changed, against a full pass on the same data.
        def catch_up_seconds() -> tuple[float, float]:
            """The pass (from the first move's start to the end) and the whole `move run`."""
            marks.clear()

            def listen(event: runner.Event) -> None:
                if event.kind == runner.EventKind.START:
                    marks.setdefault("pass", time.perf_counter())

            total = move_run(listen)
            return time.perf_counter() - marks["pass"], total

        unchanged, unchanged_total = catch_up_seconds()
        forget_summaries(instance)
        full, full_total = catch_up_seconds()
        rows += [
            (
                "catch-up pass, nothing changed (`move run` again: per-range summaries match)",
                f"{unchanged:.2f} s (whole `move run`, checks included: {unchanged_total:.1f} s)",
                "<= 2 s",
            ),
            (
                "full catch-up pass on the same data (summaries forgotten: every range compared)",
                f"{full:.1f} s (whole `move run`: {full_total:.1f} s) = "
                f"**{full / unchanged:.0f}x** the no-change pass",
                "-",
            ),
        ]

        # 3. a legacy writer's latency without and with a move.
        reset(instance)
        with Writer(instance) as idle:
            time.sleep(args.baseline_seconds)
        with Writer(instance) as busy:
            move_run()
        reset(instance)
        with Writer(instance) as busy_fixed:
            move_run(options=fixed)
        rows += [
            (
                "legacy writer latency, no move running (INSERT + UPDATE, ~100 op/s)",
                f"p50 {idle.percentile(0.5):.2f} ms, p99 {idle.percentile(0.99):.2f} ms "
                f"({len(idle.latencies)} ops)",
                "baseline",
            ),
            (
                "legacy writer latency during the throttled `move run`",
                f"p50 {busy.percentile(0.5):.2f} ms, p99 {busy.percentile(0.99):.2f} ms "
                f"({len(busy.latencies)} ops) = **{busy.percentile(0.99) / idle.percentile(0.99):.2f}x** p99",
                "<= 1.1x",
            ),
            (
                "legacy writer latency during a fixed-size `move run`",
                f"p50 {busy_fixed.percentile(0.5):.2f} ms, p99 {busy_fixed.percentile(0.99):.2f} "
                f"ms ({len(busy_fixed.latencies)} ops) = "
                f"**{busy_fixed.percentile(0.99) / idle.percentile(0.99):.2f}x** p99",
                "-",
            ),
        ]
    finally:
        server.stop()
    load_after = os.getloadavg()
    print("| measure | result | goal |")
    print("| --- | --- | --- |")
    for measure, result, goal in rows:
        print(f"| {measure} | {result} | {goal} |")
    print(
        f"\nload average (1, 5, 15 min) before {tuple(round(x, 2) for x in load_before)}, "
        f"after {tuple(round(x, 2) for x in load_after)}; {os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    main()
