"""Benchmark of `retire` (issue 20). Run: `.venv/bin/python bench/retire_bench.py [--rows N]`.

On its own emulation (the legacy scenario plus `local seed --rows N`: N entities; default
N = 1,000,000), side by side in one run:

1. the export alone: `COPY dna_schema.entities TO STDOUT` into a file (what any archive
   costs at least), against the verified archive (`provision.retire.archive`: the same COPY,
   the row count and per-range hashes into the manifest, the file's sha256, then the check:
   sha256 again, the restore into a scratch temporary table, per-range hashes of the
   restored and of the live rows) (goal, issue 20: archive + verify <= 2x the export);
2. reads of a frozen table: point lookups by key and a full count, without and with the
   freeze (trigger + REVOKEs of the writes), rounds alternated (goal: <= 1.05x).

Small scale (a check that it runs, not a figure): `--rows 20000 --lookups 500`.
Prints a markdown table (the figures of docs/benchmarks.md) and the machine's load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sqlalchemy import text  # noqa: E402

from provision import db  # noqa: E402
from provision.local.instance import ADMIN_USER, connect_as  # noqa: E402
from provision.local.seed import seed  # noqa: E402
from provision.local.server import Server  # noqa: E402
from provision.retire import archive, state  # noqa: E402

TABLE = ("dna_schema", "entities")


def export_alone(conn: Any, path: Path) -> float:
    started = time.perf_counter()
    raw: Any = conn.connection.dbapi_connection
    with path.open("wb") as out:
        raw.cursor().execute("COPY dna_schema.entities TO STDOUT", stream=out)
    conn.rollback()
    return time.perf_counter() - started


def archive_and_check(conn: Any, bucket: Path) -> tuple[float, int]:
    started = time.perf_counter()
    written = archive.write(conn, bucket, TABLE, "entities", "id")
    conn.rollback()
    loaded = archive.load(written.directory)
    checked = archive.check(conn, loaded, live=False)  # as `retire archive` does
    conn.rollback()
    return time.perf_counter() - started, int(checked["rows"])


def reads(conn: Any, lookups: int, top: int) -> float:
    started = time.perf_counter()
    for n in range(lookups):
        conn.execute(
            text("SELECT name FROM dna_schema.entities WHERE id = :id"),
            {"id": 1 + (n * 7919) % top},
        ).all()
    conn.execute(text("SELECT count(*) FROM dna_schema.entities")).scalar_one()
    conn.rollback()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-retire-"))
    server = Server(work / "cloudsql")
    instance = server.start("legacy-nucleus-v12")
    rows: list[tuple[str, str, str]] = []
    try:
        seeding = connect_as(instance, ADMIN_USER, timeout=1800)
        seed(seeding, args.rows)
        seeding.run("VACUUM ANALYZE dna_schema.entities")
        seeding.close()
        engine = db.engine_for_dsn(instance.admin_dsn)
        with engine.connect() as conn:
            top = conn.execute(text("SELECT max(id) FROM dna_schema.entities")).scalar_one()
            conn.rollback()
            exports, archives = [], []
            for n in range(args.rounds if args.rows <= 100_000 else 3):
                exports.append(export_alone(conn, work / f"export-{n}.copy"))
                seconds, restored = archive_and_check(conn, work / f"bucket-{n}")
                archives.append(seconds)
            export_s, archive_s = statistics.median(exports), statistics.median(archives)
            rows.append(
                (
                    f"export alone, {restored:,} rows (COPY TO a file; median of {len(exports)})",
                    f"{export_s:.2f} s",
                    "",
                )
            )
            rows.append(
                (
                    "archive + check (COPY, count, per-range hashes, sha256; restore into a "
                    "scratch table, hashes of restored and live rows)",
                    f"{archive_s:.2f} s = {archive_s / export_s:.2f}x the export",
                    "<= 2x",
                )
            )
            reads(conn, args.lookups, top)  # warm the cache
            plain, frozen = [], []
            for _ in range(args.rounds):
                plain.append(reads(conn, args.lookups, top))
                for sql in (*state.BOOKKEEPING, *state.freeze_trigger(TABLE)):
                    conn.execute(text(sql))
                conn.execute(
                    text(
                        "REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON dna_schema.entities FROM nucleus"
                    )
                )
                conn.commit()
                frozen.append(reads(conn, args.lookups, top))
                for sql in state.unfreeze_trigger(TABLE):
                    conn.execute(text(sql))
                conn.execute(text("GRANT INSERT, UPDATE, DELETE ON dna_schema.entities TO nucleus"))
                conn.commit()
            plain_s, frozen_s = statistics.median(plain), statistics.median(frozen)
            rows.append(
                (
                    f"{args.lookups:,} point lookups + 1 count, not frozen (median of {args.rounds})",
                    f"{plain_s:.3f} s",
                    "",
                )
            )
            rows.append(
                (
                    "the same reads, frozen (trigger + REVOKEs), rounds alternated",
                    f"{frozen_s:.3f} s = {frozen_s / plain_s:.3f}x",
                    "<= 1.05x",
                )
            )
        engine.dispose()
    finally:
        server.stop()
    print(
        f"rows: {args.rows:,}; load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f}"
    )
    print("| measurement | result | goal |\n| --- | --- | --- |")
    for what, result, goal in rows:
        print(f"| {what} | {result} | {goal} |")


if __name__ == "__main__":
    main()
