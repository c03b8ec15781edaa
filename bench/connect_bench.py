"""Connect-time benchmark: the Cloud SQL Connector path through the local emulation against a
direct DSN, and how many Connector connections one `inspect --env local` run opens.

    .venv/bin/python bench/connect_bench.py [--rounds 20] [--runs 5]

Starts its own emulation (scenario legacy-nucleus-v12) in a temporary state directory and
stops it at the end. Prints a markdown table. Measured per connection, SQLAlchemy included,
each followed by `SELECT 1`:

- cold: a new Target (one new Connector: RSA key, connectSettings + generateEphemeralCert,
  then TLS 1.3 to the proxy and SCRAM) and its first connection;
- warm: another connection of the same Target (cached certificate: TLS + SCRAM only);
- direct: `--dsn` to the embedded PostgreSQL over TCP with SCRAM, no TLS.

Connections per run are read from the emulator's own records (proxy "startup" events per
database user, Admin API calls), for `inspect --env local` run as a subprocess.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import text

from provision import cloudsql, db
from provision.config import load_environment
from provision.local import emulator
from provision.local.server import Server

ROOT = Path(__file__).resolve().parents[1]


def _ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return f"{statistics.median(samples) * 1000:.1f} | {p90 * 1000:.1f}"


def _time(action: Callable[[], None], rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="connections timed per path")
    parser.add_argument("--runs", type=int, default=5, help="`inspect --env local` runs counted")
    args = parser.parse_args()

    local = load_environment("local", ROOT / "environments.toml")
    with tempfile.TemporaryDirectory(prefix="connect-bench-") as tmp:
        state_dir = Path(tmp) / "state"
        server = Server(state_dir)
        instance = server.start("legacy-nucleus-v12")
        try:
            # Import cost is paid once here, not in the first "cold" sample.
            cloudsql.target_for(local, state_dir=state_dir).dispose()

            def one_query(target: db.Target) -> None:
                with target.admin.connect() as conn:
                    conn.execute(text("SELECT 1")).scalar()

            def cold() -> None:
                target = cloudsql.target_for(local, state_dir=state_dir)
                try:
                    one_query(target)
                finally:
                    target.dispose()

            warm_target = cloudsql.target_for(local, state_dir=state_dir)
            one_query(warm_target)
            try:
                warm = _time(lambda: one_query(warm_target), args.rounds)
            finally:
                warm_target.dispose()
            cold_samples = _time(cold, args.rounds)
            direct_engine = db.engine_for_dsn(instance.admin_dsn)

            def direct() -> None:
                with direct_engine.connect() as conn:
                    conn.execute(text("SELECT 1")).scalar()

            direct()
            direct_samples = _time(direct, args.rounds)

            env = {**os.environ, "NUCLEUS_LOCAL_STATE_DIR": str(state_dir)}
            per_run: list[tuple[Counter[str], Counter[str]]] = []
            run_seconds = []
            for _ in range(args.runs):
                before = len(emulator.records(state_dir))
                started = time.perf_counter()
                result = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "provision",
                        "--config",
                        str(ROOT / "environments.toml"),
                        "inspect",
                        "--env",
                        "local",
                        "--format",
                        "json",
                    ],
                    capture_output=True,
                    text=True,
                    env=env,
                    check=False,
                )
                run_seconds.append(time.perf_counter() - started)
                if result.returncode != 0:
                    sys.exit(f"inspect --env local failed: {result.stderr.strip()}")
                records = emulator.records(state_dir)[before:]
                per_run.append(
                    (
                        Counter(r["db_user"] for r in records if r["event"] == "startup"),
                        Counter(r["event"] for r in records if r["component"] == "admin-api"),
                    )
                )
        finally:
            server.stop()

    print(f"## Connect time ({args.rounds} connections per path, `SELECT 1` included)\n")
    print("| path | median ms | p90 ms |")
    print("|---|---:|---:|")
    print(f"| Connector via emulation, cold (new Connector) | {_ms(cold_samples)} |")
    print(f"| Connector via emulation, warm (cached cert) | {_ms(warm)} |")
    print(f"| direct DSN (TCP + SCRAM, no TLS) | {_ms(direct_samples)} |")
    print(f"\n## Per `inspect --env local` run ({args.runs} runs)\n")
    print(
        "| role | Connector connections per run | Admin API calls per run | wall time s (median) |"
    )
    print("|---|---:|---:|---:|")
    users = sorted({user for connections, _ in per_run for user in connections})
    api_calls = {sum(calls.values()) for _, calls in per_run}
    for user in users:
        counts = sorted({connections[user] for connections, _ in per_run})
        print(
            f"| {user} | {'/'.join(map(str, counts))} | {'/'.join(map(str, sorted(api_calls)))} "
            f"| {statistics.median(run_seconds):.2f} |"
        )


if __name__ == "__main__":
    main()
