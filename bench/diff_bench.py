"""Benchmark of `nucleus-provision diff` on two databases of 10,000 tables each.

Run: `.venv/bin/python bench/diff_bench.py [--tables 10000] [--runs 5]`. Prints a markdown
table; the figures in docs/benchmarks.md come from this script.

Two databases on one embedded Cloud SQL emulation, each with the layout applied plus N tables
in schema `dna` (an identity primary key, two more columns, an index and a grant each: per
table a table, a sequence, two indexes, four columns, two constraints), differing in one
column type. Timed as whole processes, alternately, after one warm-up of each:
- `nucleus-provision diff --from-dsn A --to-dsn B --format json` (goal: under 2 s);
- the peer: `pg_dump --schema-only` of both databases and a text diff of the two dumps
  (PostgreSQL 16's own pg_dump, from the same installation as the server).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from provision import commands, db, diff  # noqa: E402
from provision.local.instance import (  # noqa: E402
    ADMIN_USER,
    BOOTSTRAP_SUPERUSER,
    superuser_connection,
)
from provision.local.server import Server  # noqa: E402


def pg_dump_binary() -> str:
    import pgserver

    return str(Path(pgserver.__file__).parent / "pginstall" / "bin" / "pg_dump")


def fill(instance, database: str, tables: int) -> None:
    conn = superuser_connection(instance, database)
    try:
        # Batches: one transaction cannot lock thousands of new tables.
        for start in range(1, tables + 1, 500):
            stop = min(start + 499, tables)
            conn.run(
                f"DO $$ BEGIN FOR i IN {start}..{stop} LOOP "
                "EXECUTE format('CREATE TABLE dna.bulk_%s (id bigint GENERATED ALWAYS AS IDENTITY "
                "PRIMARY KEY, name text NOT NULL, note text, created_at timestamptz NOT NULL "
                "DEFAULT now())', i); "
                "EXECUTE format('CREATE INDEX bulk_%s_name_idx ON dna.bulk_%s (name)', i, i); "
                "EXECUTE format('GRANT SELECT ON dna.bulk_%s TO postgres', i); "
                "END LOOP; END $$"
            )
    finally:
        conn.close()


def timed(command: list[str], env: dict[str, str]) -> tuple[float, int]:
    t = time.perf_counter()
    proc = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tables", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    server = Server(Path(tempfile.mkdtemp(prefix="bench-diff-")))
    instance = server.start("empty")
    try:
        # The `local` environment's desired state (the emulated server cannot load pgaudit,
        # which prod declares) and an app login password of this run's own: the bench needs
        # nothing set in the shell.
        applied = subprocess.run(
            [sys.executable, "-m", "provision", "apply", "--auto-approve", "--env", "local"]
            + ["--dsn", instance.admin_dsn, "--owner-dsn", instance.owner_dsn],
            capture_output=True,
            text=True,
            env={**os.environ, "NUCLEUS_APP_PASSWORD": secrets.token_urlsafe(24)},
        )
        assert applied.returncode == 0, applied.stderr
        t = time.perf_counter()
        fill(instance, instance.database, args.tables)
        fill_s = time.perf_counter() - t
        conn = superuser_connection(instance)
        try:
            conn.run(f"CREATE DATABASE copy TEMPLATE {instance.database} OWNER cloudsqlsuperuser")
        finally:
            conn.close()
        conn = superuser_connection(instance, "copy")
        try:
            conn.run(f"ALTER TABLE dna.bulk_{args.tables // 2} ALTER COLUMN note TYPE varchar(100)")
        finally:
            conn.close()

        left_dsn = instance.dsn(ADMIN_USER, instance.database)
        right_dsn = instance.dsn(ADMIN_USER, "copy")
        result = diff.run(
            diff.Side(db.engine_for_dsn(left_dsn), "left"),
            diff.Side(db.engine_for_dsn(right_dsn), "right"),
            diff.defaults(commands.load_desired("local")),
        )
        found = [d.to_dict() for d in result.differences]

        env = {**os.environ, "PGPASSWORD": instance.passwords[BOOTSTRAP_SUPERUSER]}
        ours = [sys.executable, "-m", "provision", "diff", "--from-dsn", left_dsn]
        ours += ["--to-dsn", right_dsn, "--format", "json"]
        dump = pg_dump_binary()
        conn_args = f"-h {instance.host} -p {instance.port} -U {BOOTSTRAP_SUPERUSER}"
        work = Path(tempfile.mkdtemp(prefix="bench-dump-"))
        peer_script = (
            f"{shlex.quote(dump)} {conn_args} --schema-only {instance.database} > {work}/a.sql && "
            f"{shlex.quote(dump)} {conn_args} --schema-only copy > {work}/b.sql && "
            f"diff {work}/a.sql {work}/b.sql > {work}/ab.diff; test $? -le 1"
        )
        peer = ["sh", "-c", peer_script]
        timed(ours, env), timed(peer, env)  # warm-up
        ours_s, peer_s, ratios = [], [], []
        for _ in range(args.runs):
            (a, code_a), (b, code_b) = timed(ours, env), timed(peer, env)
            assert code_a == 2 and code_b == 0, (code_a, code_b)
            ours_s.append(a)
            peer_s.append(b)
            ratios.append(a / b)
    finally:
        server.stop()

    print(f"{args.tables} tables per database, created in {fill_s:.0f} s; {args.runs} runs each\n")
    print("| measurement | result | goal |\n| --- | --- | --- |")
    print(
        f"| `diff --from-dsn A --to-dsn B --format json`, whole process (median; min-max) | "
        f"{statistics.median(ours_s):.2f} s ({min(ours_s):.2f}-{max(ours_s):.2f}) | < 2 s |"
    )
    print(
        f"| peer: `pg_dump --schema-only` of both + `diff` (median; min-max) | "
        f"{statistics.median(peer_s):.2f} s ({min(peer_s):.2f}-{max(peer_s):.2f}) | |"
    )
    print(f"| ratio diff / peer, pair by pair (median) | {statistics.median(ratios):.2f}x | |")
    print(f"| catalog queries per side | {result.queries[0]}, {result.queries[1]} | fixed |")
    print(f"| differences found | {len(found)}: {found} | 1 |")


if __name__ == "__main__":
    main()
