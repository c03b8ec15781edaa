"""Connect-time benchmark: the Cloud SQL Connector path through the local emulation against a
direct DSN, and how many Connector connections one CLI run over `--env local` opens.

    .venv/bin/python bench/connect_bench.py [--rounds 20] [--runs 5]

Starts its own emulation (scenario legacy-nucleus-v12) in a temporary state directory and
stops it at the end. Prints a markdown table. Measured per connection, SQLAlchemy included,
each followed by `SELECT 1`:

- cold: a new Target (one new Connector: RSA key, connectSettings + generateEphemeralCert,
  then TLS 1.3 to the proxy and SCRAM) and its first connection;
- warm: another connection of the same Target (cached certificate: TLS + SCRAM only);
- direct: `--dsn` to the embedded PostgreSQL over TCP with SCRAM, no TLS.

Connections per run are read from the emulator's own records (proxy "startup" events per
database user, Admin API calls), for `inspect`, `apply` (the first one does the work, the
others are no-ops) and `verify` over `--env local`, each run as a subprocess.
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
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text

from provision import cloudsql, db
from provision.config import load_environment
from provision.local import plugin
from provision.local.gcp import state
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


@dataclass(frozen=True)
class Measured:
    connections: Counter[str]  # Connector connections per database user
    api_calls: int
    seconds: float


def _measure(state_dir: Path, env: dict[str, str], verb: list[str]) -> Measured:
    """Run `nucleus-provision VERB --env local` once and count what the emulator saw."""
    before = len(state.records(state_dir))
    command = [sys.executable, "-m", "provision", "--config", str(ROOT / "environments.toml")]
    command += [verb[0], "--env", "local", *verb[1:]]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(verb)} --env local failed: {result.stderr.strip()}")
    records = state.records(state_dir)[before:]
    return Measured(
        Counter(r["db_user"] for r in records if r["event"] == "startup"),
        sum(1 for r in records if r["component"] == "admin-api"),
        seconds,
    )


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
            cloudsql.target_for(
                local, overrides=plugin.overrides(local, state_dir=state_dir)
            ).dispose()

            def one_query(target: db.Target) -> None:
                with target.admin.connect() as conn:
                    conn.execute(text("SELECT 1")).scalar()

            def cold() -> None:
                target = cloudsql.target_for(
                    local, overrides=plugin.overrides(local, state_dir=state_dir)
                )
                try:
                    one_query(target)
                finally:
                    target.dispose()

            warm_target = cloudsql.target_for(
                local, overrides=plugin.overrides(local, state_dir=state_dir)
            )
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
            # inspect runs first, while the database is still in the legacy state; the first
            # apply does the work, the later ones are no-ops; verify gates.
            plan = [("inspect", ["inspect", "--format", "json"])] * args.runs
            plan += [("apply (first)", ["apply", "--auto-approve"])]
            plan += [("apply (rerun)", ["apply", "--auto-approve"])] * (args.runs - 1)
            plan += [("verify", ["verify"])] * args.runs
            per_command: dict[str, list[Measured]] = {}
            for label, verb in plan:
                per_command.setdefault(label, []).append(_measure(state_dir, env, verb))
        finally:
            server.stop()

    print(f"## Connect time ({args.rounds} connections per path, `SELECT 1` included)\n")
    print("| path | median ms | p90 ms |")
    print("|---|---:|---:|")
    print(f"| Connector via emulation, cold (new Connector) | {_ms(cold_samples)} |")
    print(f"| Connector via emulation, warm (cached cert) | {_ms(warm)} |")
    print(f"| direct DSN (TCP + SCRAM, no TLS) | {_ms(direct_samples)} |")
    print(f"\n## Connector connections per CLI run over `--env local` ({args.runs} runs each)\n")
    print("| command | as postgres | as nucleus | Admin API calls | wall time s (median) |")
    print("|---|---:|---:|---:|---:|")
    for label, runs in per_command.items():
        postgres = "/".join(str(n) for n in sorted({r.connections["postgres"] for r in runs}))
        nucleus = "/".join(str(n) for n in sorted({r.connections["nucleus"] for r in runs}))
        calls = "/".join(str(n) for n in sorted({r.api_calls for r in runs}))
        seconds = statistics.median(r.seconds for r in runs)
        print(f"| `{label}` | {postgres} | {nucleus} | {calls} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
