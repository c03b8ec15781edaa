"""Issue 21: the statements a no-op `apply`, `plan` and `verify` send, counted by the server.

    .venv/bin/python bench/statements_bench.py [--show]

Starts its own emulation (legacy-nucleus-v12) with `nucleus-provision local up`, converges it
with prod's declaration as users run it (`--dsn .. --owner-dsn ..`; prod declares pgaudit,
which the emulated server cannot load, so every run ends with exit 3 for that one finding),
brings the alembic peer (bench/alembic_peer) to head on the same database, then turns on
`log_statement = all` for that database and runs each command once. The server's log is the
count: every BEGIN, COMMIT and ROLLBACK, every query, the driver's and SQLAlchemy's own
checks included, which a client-side count (bench/run.py) does not see. Each tool's
sessions are told apart by their application_name. Prints a markdown table; the
emulation is stopped at the end.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

from issue9_support import ALEMBIC, CLI, ROOT, Emulation, check, child_env, machine, run

sys.path.insert(0, str(ROOT / "src"))

from provision.exitcodes import ExitCode  # noqa: E402
from provision.local.instance import superuser_connection  # noqa: E402
from provision.local.server import Server  # noqa: E402

PEER = ROOT / "bench" / "alembic_peer"
# prod declares pgaudit, which the emulated server cannot load: our runs end with that finding.
MANUAL = ExitCode.MANUAL
PEER_APPLICATION = "alembic-peer"
# `--show`: each statement's first line on stderr, to see where a count comes from.
SHOW = "--show" in sys.argv[1:]
# With log_line_prefix '%m [%p] %a ': the application, then what the server logged.
LOGGED = re.compile(
    r"^\S+ \S+ \S+ \[\d+\] (?P<app>\S+) LOG:  (?:statement|execute [^:]*): (?P<sql>.*)$"
)


def kind(sql: str) -> str:
    """Transaction control apart from the rest."""
    word = sql.strip().split(" ", 1)[0].lower() if sql.strip() else "(continued)"
    return "transaction control" if word in ("begin", "commit", "rollback") else "other"


def counted(log: Path, start: int, application: str) -> Counter[str]:
    with open(log, encoding="utf-8", errors="replace") as f:
        f.seek(start)
        lines = f.read().splitlines()
    found: Counter[str] = Counter()
    for line in lines:
        match = LOGGED.match(line)
        if match and match["app"] == application:
            found[kind(match["sql"])] += 1
            if SHOW:
                print(f"  {application}: {' '.join(match['sql'].split())[:150]}", file=sys.stderr)
    return found


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="statements-bench-"))
    env = child_env(base / "pycache")
    errors = base / "stderr.log"
    rows = []
    try:
        with Emulation(base / "state") as emu:
            instance = Server(base / "state").status()
            assert instance is not None
            log = Path(instance.pgdata) / "server.log"
            target = ["--dsn", emu.admin_dsn, "--owner-dsn", emu.owner_dsn]
            check(
                run([CLI, "apply", "--auto-approve", *target], env, stderr=errors),
                MANUAL,
                "first apply",
                errors,
            )
            conn = superuser_connection(instance, instance.database)
            try:
                conn.run("CREATE SCHEMA IF NOT EXISTS bench_alembic AUTHORIZATION postgres")
                conn.run("ALTER SYSTEM SET log_line_prefix = '%m [%p] %a '")
                conn.run("SELECT pg_reload_conf()")
                conn.run(f"ALTER DATABASE \"{instance.database}\" SET log_statement = 'all'")
            finally:
                conn.close()
            url = emu.admin_dsn.replace("postgresql://", "postgresql+pg8000://", 1)
            alembic_env = dict(env, BENCH_ALEMBIC_URL=f"{url}?application_name={PEER_APPLICATION}")
            alembic = [ALEMBIC, "-c", str(PEER / "alembic.ini")]
            check(
                run([*alembic, "upgrade", "head"], alembic_env, stderr=errors), 0, "alembic", errors
            )
            commands = [
                (
                    "no-op `apply`",
                    [CLI, "apply", "--auto-approve", *target],
                    "nucleus-provision",
                    MANUAL,
                ),
                ("no-op `plan`", [CLI, "plan", *target], "nucleus-provision", MANUAL),
                ("`verify`", [CLI, "verify", *target], "nucleus-provision", MANUAL),
                (
                    "`alembic upgrade head` (no-op)",
                    [*alembic, "upgrade", "head"],
                    PEER_APPLICATION,
                    0,
                ),
                ("`alembic current`", [*alembic, "current"], PEER_APPLICATION, 0),
            ]
            for label, command, application, expected in commands:
                start = log.stat().st_size
                check(run(command, alembic_env, stderr=errors), expected, label, errors)
                found = counted(log, start, application)
                rows.append((label, found))
    finally:
        shutil.rmtree(base, ignore_errors=True)

    print(f"prod's declaration (`--dsn .. --owner-dsn ..`); {machine()}")
    print()
    print("| command | statements the server received | of which BEGIN / COMMIT / ROLLBACK |")
    print("|---|---:|---:|")
    for label, found in rows:
        print(f"| {label} | {sum(found.values())} | {found['transaction control']} |")


if __name__ == "__main__":
    main()
