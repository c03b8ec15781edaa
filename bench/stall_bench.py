"""Issue 9, safety: what a live workload sees while `apply` runs, with a session in the way.

    .venv/bin/python bench/stall_bench.py [--seconds 12] [--writers 2] [--readers 2]

Starts its own emulation (legacy-nucleus-v12) through `nucleus-provision local up` and runs a
workload on loopback, each worker a thread with its own psycopg connection (autocommit, as
`nucleus`, the services' login; statement_timeout 30 s):

- writers on the legacy tables: `UPDATE dna_schema.entities` and `INSERT INTO
  dna_schema.interests`, in turn, every ~10 ms;
- the old tooling: `INSERT INTO public.migrations (migration_name)` every ~50 ms;
- readers of the new tables: `SELECT ... FROM dna.entity` every ~10 ms (before 001 has run
  the table does not exist: those failures are counted apart, not timed).

Every operation's latency is recorded. Phases, each about `--seconds` long:

- B, legacy apply: on the fresh legacy database, `apply` (001, 002) converges it while,
  from 2 s on, an old-tooling session holds `BEGIN; SELECT ... FROM public.migrations` open
  for 5 s (ACCESS SHARE: the ownership hand-off and the adoption of public.migrations need
  ACCESS EXCLUSIVE); `apply` starts at 2.5 s;
- A, baseline: the workload alone (on the converged database, so every kind of operation
  runs);
- C, lock outlasted: `apply` runs fixture migration 900 (`ALTER TABLE dna.entity ADD COLUMN
  IF NOT EXISTS note text`) while a session holds `BEGIN; SELECT * FROM dna.entity LIMIT 1`
  for 5 s: each ALTER attempt waits at most --lock-timeout (0.2 s), is rolled back and
  retried; it converges once the session ends;
- D, budget runs out: the same with migration 901 and `--lock-budget 2`: `apply` must stop
  and name the blocker (its stderr is shown);
- F, legacy rows locked (issue 17): migration 903 runs `SELECT ... FROM dna_schema.entities
  FOR UPDATE` through EXECUTE in a function, then sleeps 5 s: the lock guard cancels it as
  soon as it sees the ROW SHARE lock, `apply` stops naming it, the writers wait no longer;
- G, a legacy table locked through a view (issue 17): migration 904 runs `LOCK TABLE` on a
  view over dna_schema.entities, then sleeps 5 s: the same;
- E, control: migration 902 with `--lock-timeout 30`, i.e. without the short lock waits:
  the readers of dna.entity queue behind the waiting ALTER for the rest of the 5 s. This
  shows the bench can see a stall; it is not a mode anyone should run.

Reports per phase and kind of operation: count, p50, p99 and max latency, and the worst
added stall (the phase's max minus the baseline's p50); and for each `apply` its exit code,
duration and what it said about the lock waits. Goal (issue 9): worst added stall under 1 s
in B, C, D, F and G; `apply` converges (B, C), exits naming the blocker (D) or the lock it
refused (F, G). Prints markdown.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from issue9_support import BOOTSTRAP_SQL, CLI, Emulation, child_env, machine, masked

BLOCK_AT, APPLY_AT, BLOCK_FOR = 2.0, 2.5, 5.0
FIXTURES = {
    900: "ALTER TABLE dna.entity ADD COLUMN IF NOT EXISTS note text;\n",
    901: "ALTER TABLE dna.entity ADD COLUMN IF NOT EXISTS note2 text;\n",
    902: "ALTER TABLE dna.entity ADD COLUMN IF NOT EXISTS note3 text;\n",
    # Issue 17: hostile migrations that try to hold locks on the legacy tables, walking around
    # the guard rail (dynamic SQL in a function), then sit on them.
    903: "CREATE FUNCTION dna.bench_hold_rows() RETURNS void LANGUAGE plpgsql AS\n"
    "$$ BEGIN EXECUTE 'SELECT id FROM dna_schema.entities FOR UPDATE'; PERFORM pg_sleep(5); "
    "END $$;\nSELECT dna.bench_hold_rows();\n",
    904: "CREATE VIEW dna.bench_every_entity AS SELECT * FROM dna_schema.entities;\n"
    "LOCK TABLE dna.bench_every_entity IN ACCESS EXCLUSIVE MODE;\nSELECT pg_sleep(5);\n",
}
KINDS = (
    "UPDATE dna_schema.entities",
    "INSERT dna_schema.interests",
    "INSERT public.migrations (old tooling)",
    "SELECT dna.entity",
)


@dataclass
class Samples:
    """Latencies (seconds) per kind of operation, and failures by reason."""

    latencies: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, at: float, seconds: float) -> None:
        with self.lock:
            self.latencies.setdefault(kind, []).append((at, seconds))

    def fail(self, reason: str) -> None:
        with self.lock:
            self.failures[reason] = self.failures.get(reason, 0) + 1


class Workload:
    """The live traffic: worker threads, each with its own connection, until stopped."""

    def __init__(self, dsn: str, writers: int, readers: int) -> None:
        self.dsn, self.samples, self.stop = dsn, Samples(), threading.Event()
        self.started = time.monotonic()
        self.threads = [
            threading.Thread(target=self._writer, args=(n,), daemon=True) for n in range(writers)
        ]
        self.threads.append(threading.Thread(target=self._old_tooling, daemon=True))
        self.threads += [threading.Thread(target=self._reader, daemon=True) for _ in range(readers)]

    def __enter__(self) -> Workload:
        self.started = time.monotonic()
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(35)  # each statement is bounded by statement_timeout (30 s)

    def _connect(self, name: str) -> psycopg.Connection:
        conn = psycopg.connect(self.dsn, autocommit=True, application_name=f"bench-{name}")
        conn.execute("SET statement_timeout = '30s'")
        return conn

    def _timed(self, conn: psycopg.Connection, kind: str, sql: str, params: tuple) -> None:
        at = time.monotonic()
        try:
            cursor = conn.execute(sql, params)
            if cursor.description is not None:
                cursor.fetchall()
        except psycopg.errors.UndefinedTable:
            self.samples.fail(f"{kind}: table not created yet")
            return
        except psycopg.Error as exc:
            self.samples.fail(f"{kind}: {type(exc).__name__}")
            return
        self.samples.add(kind, at - self.started, time.monotonic() - at)

    def _writer(self, n: int) -> None:
        with self._connect(f"writer-{n}") as conn:
            i = 0
            while not self.stop.wait(0.010):
                i += 1
                entity = 1 + (i * 7919 + n * 104729) % 2000
                if i % 2:
                    self._timed(
                        conn,
                        KINDS[0],
                        "UPDATE dna_schema.entities SET updated_at = now() WHERE id = %s",
                        (entity,),
                    )
                else:
                    self._timed(
                        conn,
                        KINDS[1],
                        "INSERT INTO dna_schema.interests (entity_id, topic) VALUES (%s, %s)",
                        (entity, f"bench-{n}-{i}"),
                    )

    def _old_tooling(self) -> None:
        with self._connect("old-tooling") as conn:
            i = 0
            while not self.stop.wait(0.050):
                i += 1
                self._timed(
                    conn,
                    KINDS[2],
                    "INSERT INTO public.migrations (migration_name) VALUES (%s)",
                    (f"bench_old_tooling_{time.time_ns()}_{i}",),
                )

    def _reader(self) -> None:
        with self._connect("reader") as conn:
            while not self.stop.wait(0.010):
                self._timed(
                    conn,
                    KINDS[3],
                    "SELECT id, name FROM dna.entity ORDER BY created_at DESC LIMIT 10",
                    (),
                )


def hold(dsn: str, sql: str, seconds: float, done: threading.Event) -> None:
    """A session that opens a transaction, takes its lock with `sql`, and sits on it."""
    with psycopg.connect(dsn, application_name="bench-blocker") as conn:
        conn.execute(sql).fetchall()
        time.sleep(seconds)
        conn.commit()
    done.set()


@dataclass
class ApplyRun:
    code: int
    seconds: float
    stdout: str
    stderr: str

    def said(self) -> str:
        waits = [line for line in self.stderr.splitlines() if line.startswith("waiting:")]
        error = [line for line in self.stderr.splitlines() if line.startswith("error:")]
        parts = [
            f"exit {self.code} after {self.seconds:.2f} s",
            f"{len(waits)} lock wait(s) retried",
        ]
        if self.code == 0 and "matches the desired state" in self.stdout:
            parts.append("converged")
        if error:
            parts.append(error[0][:400])
        return "; ".join(masked(p) for p in parts)


@dataclass
class Phase:
    name: str
    samples: Samples
    apply: ApplyRun | None = None
    blocker: str = ""


def migrations(base: Path, name: str, versions: list[int]) -> Path:
    directory = base / name
    directory.mkdir()
    for path in sorted(BOOTSTRAP_SQL.glob("*.sql")):
        shutil.copy(path, directory / path.name)
    for version in versions:
        (directory / f"{version}_bench_lock_fixture.sql").write_text(
            f"-- {version}: a fixture of bench/stall_bench.py (an ALTER that needs "
            "ACCESS EXCLUSIVE on dna.entity, or a hostile lock on a legacy table)\n\n"
            + FIXTURES[version]
        )
    return directory


def run_phase(
    emu: Emulation,
    name: str,
    seconds: float,
    args: argparse.Namespace,
    env: dict[str, str],
    *,
    apply: list[str] | None = None,
    block: str | None = None,
) -> Phase:
    done = threading.Event()
    result: list[ApplyRun] = []
    with Workload(emu.owner_dsn, args.writers, args.readers) as workload:
        clock = workload.started
        if block is not None:
            time.sleep(max(0.0, clock + BLOCK_AT - time.monotonic()))
            threading.Thread(
                target=hold, args=(emu.owner_dsn, block, BLOCK_FOR, done), daemon=True
            ).start()
        if apply is not None:
            time.sleep(max(0.0, clock + APPLY_AT - time.monotonic()))
            started = time.monotonic()
            out = subprocess.run(
                [CLI, *apply], capture_output=True, text=True, env=env, timeout=120, check=False
            )
            result.append(
                ApplyRun(out.returncode, time.monotonic() - started, out.stdout, out.stderr)
            )
        time.sleep(max(0.0, clock + seconds - time.monotonic()))
    if block is not None:
        done.wait(BLOCK_FOR + 5)
    return Phase(name, workload.samples, result[0] if result else None, block or "")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(phases: list[Phase], baseline: Phase, args: argparse.Namespace) -> None:
    base_p50 = {
        kind: statistics.median(s for _, s in baseline.samples.latencies.get(kind, [(0, 0)]))
        for kind in KINDS
    }
    print(
        f"workload: {args.writers} writer(s) of the legacy tables (every ~10 ms), the old tooling "
        f"(every ~50 ms), {args.readers} reader(s) of dna.entity (every ~10 ms); phases of "
        f"{args.seconds:g} s; the blocking session from {BLOCK_AT:g} s for {BLOCK_FOR:g} s, "
        f"`apply` from {APPLY_AT:g} s; {machine()}"
    )
    print()
    print("| phase | operation | count | p50 ms | p99 ms | max ms (at s) | worst added stall ms |")
    print("|---|---|---:|---:|---:|---:|---:|")
    worst: dict[str, float] = {}
    for phase in phases:
        for kind in KINDS:
            timed = phase.samples.latencies.get(kind, [])
            if not timed:
                print(f"| {phase.name} | {kind} | 0 | | | | |")
                continue
            values = [s for _, s in timed]
            at, top = max(timed, key=lambda t: t[1])
            added = top - base_p50[kind]
            worst[phase.name] = max(worst.get(phase.name, 0.0), added)
            print(
                f"| {phase.name} | {kind} | {len(values)} | {statistics.median(values) * 1000:.1f} "
                f"| {percentile(values, 0.99) * 1000:.1f} | {top * 1000:.0f} ({at:.1f}) "
                f"| {added * 1000:.0f} |"
            )
    print()
    print("| phase | blocking session | `apply` | failed operations | worst added stall | goal |")
    print("|---|---|---|---|---:|---|")
    for phase in phases:
        failures = "; ".join(f"{k}: {v}" for k, v in sorted(phase.samples.failures.items()))
        stall = worst.get(phase.name, 0.0)
        control = phase.name.startswith("E")
        goal = (
            "control (no goal)"
            if control
            else ("< 1 s: met" if stall < 1.0 else "< 1 s: NOT met")
            if phase.apply
            else "baseline"
        )
        print(
            f"| {phase.name} | {f'`{phase.blocker}` for {BLOCK_FOR:g} s' if phase.blocker else '-'} "
            f"| {phase.apply.said() if phase.apply else '-'} | {failures or 'none'} "
            f"| {stall * 1000:.0f} ms | {goal} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="length of each phase")
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--lock-timeout", default="0.2", help="apply's --lock-timeout (B, C, D)")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="stall-bench-"))
    env = child_env(base / "pycache")
    phases: list[Phase] = []
    try:
        with Emulation(base / "state") as emu:
            # Warm the bytecode cache, so that `apply`'s start-up is the same in every phase.
            subprocess.run([CLI, "--help"], capture_output=True, env=env, check=False)
            lock = ["--lock-timeout", args.lock_timeout]
            apply = ["apply", "--auto-approve", *emu.target(), "--migrations"]
            phases.append(
                run_phase(
                    emu,
                    "B: apply converges the legacy database",
                    args.seconds,
                    args,
                    env,
                    apply=[*lock, *apply, str(migrations(base, "b", []))],
                    block="SELECT count(*) FROM public.migrations",
                )
            )
            baseline = run_phase(emu, "A: workload alone", args.seconds, args, env)
            phases.insert(0, baseline)
            entity_lock = "SELECT * FROM dna.entity LIMIT 1"
            phases.append(
                run_phase(
                    emu,
                    "C: apply 900 outlasts the lock",
                    args.seconds,
                    args,
                    env,
                    apply=[*lock, *apply, str(migrations(base, "c", [900]))],
                    block=entity_lock,
                )
            )
            phases.append(
                run_phase(
                    emu,
                    "D: apply 901, --lock-budget 2",
                    args.seconds,
                    args,
                    env,
                    apply=[
                        *lock,
                        "--lock-budget",
                        "2",
                        *apply,
                        str(migrations(base, "d", [900, 901])),
                    ],
                    block=entity_lock,
                )
            )
            for version, name in (
                (903, "F: apply 903 locks legacy rows (FOR UPDATE in a function)"),
                (904, "G: apply 904 locks a legacy table through a view"),
            ):
                phases.append(
                    run_phase(
                        emu,
                        name,
                        args.seconds,
                        args,
                        env,
                        apply=[*lock, *apply, str(migrations(base, f"h{version}", [900, version]))],
                    )
                )
            phases.append(
                run_phase(
                    emu,
                    "E: control, apply 902 with --lock-timeout 30",
                    args.seconds,
                    args,
                    env,
                    apply=["--lock-timeout", "30", *apply, str(migrations(base, "e", [900, 902]))],
                    block=entity_lock,
                )
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    report(phases, baseline, args)


if __name__ == "__main__":
    main()
