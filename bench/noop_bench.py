"""Issue 9, speed: a no-op `apply` and `plan` against alembic doing the same no-op, and `plan`
with 300 migration files against 2.

    .venv/bin/python bench/noop_bench.py [--runs 21] [--warmup 2] [--as-is]

Starts its own emulation (legacy-nucleus-v12) through `nucleus-provision local up`, converges
it once with `apply`, brings the alembic peer (bench/alembic_peer: two revisions in schema
`bench_alembic`, its version table there too) to head on the same database, then times whole
processes in alternation (A B A B ..., after warm-ups):

1. `nucleus-provision apply --dsn .. --owner-dsn ..` against `alembic upgrade head`;
2. `nucleus-provision plan --dsn .. --owner-dsn ..` against `alembic current`;
3. `plan --migrations DIR` with the 2 real files against 300 files (the 2 real ones and 298
   trivial ones, all applied once beforehand, so that both plans are no-ops).

The desired state is prod's by default, as users run `--dsn .. --owner-dsn ..` (privileges,
the app login): prod declares pgaudit, which the emulated server cannot load, so each of our
runs does the whole no-op and exits 3 (manual) for that one finding; `--declaration local` uses the
local environment's (`--env local` as well, exit 0), as the figures before issue 21 did.

Goals (issues 9 and 21): 1 and 2 at most 1.0x (ratio of the wall-clock medians); 3 at most +10 ms.
Wall clock is what the goal names; CPU time (user + system, the kernel's accounting of each
finished process) is printed beside it because it is far less disturbed by a busy machine.

By default bytecode is cached for both tools (PYTHONPYCACHEPREFIX in the run's temporary
directory, filled by the warm-ups), as an installed wheel has it; `--as-is` passes the
environment unchanged (with PYTHONDONTWRITEBYTECODE=1 an editable install compiles its own
modules from source at every start). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import math
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from issue9_support import (
    ALEMBIC,
    BOOTSTRAP_SQL,
    CLI,
    ROOT,
    Emulation,
    Pair,
    alternate,
    check,
    child_env,
    machine,
    run,
)

from provision.exitcodes import ExitCode

PEER = ROOT / "bench" / "alembic_peer"
IMPORT_LINE = re.compile(r"import time:\s+(?P<self>\d+) \|\s+\d+ \|\s*(?P<module>\S+)")
TRIVIAL = """-- {version}_noop_{version}: a trivial migration of the 300-file benchmark (bench/noop_bench.py).
--
-- Already applied when the benchmark times `plan`: it is read and checksummed, never parsed.

SELECT {number};
"""


def migrations_dirs(base: Path, count: int) -> tuple[Path, Path]:
    """A directory with the 2 real files, and one with them and `count - 2` trivial ones."""
    two, many = base / "m2", base / "m300"
    for directory in (two, many):
        directory.mkdir()
        for path in sorted(BOOTSTRAP_SQL.glob("*.sql")):
            shutil.copy(path, directory / path.name)
    for number in range(3, count + 1):
        version = f"{number:03d}"
        (many / f"{version}_noop_{version}.sql").write_text(
            TRIVIAL.format(version=version, number=number)
        )
    return two, many


def import_times(
    command: list[str], env: dict[str, str], log: Path, expected: int = 0
) -> dict[str, int]:
    """Self time (microseconds) of each module imported by one run, from `-X importtime`."""
    log.unlink(missing_ok=True)
    check(
        run([sys.executable, "-X", "importtime", *command], env, stderr=log), expected, "importtime"
    )
    found = {}
    for line in log.read_text().splitlines():
        match = IMPORT_LINE.match(line)
        if match:
            found[match["module"]] = int(match["self"])
    return found


def explain_imports(
    a: list[str], b: list[str], env: dict[str, str], base: Path, rounds: int, a_exit: int = 0
) -> list[str]:
    """Where a no-op's difference goes: imports, summed by top-level package, for the modules
    only one of the two tools loads (median of `rounds` runs each)."""
    runs = {
        side: [import_times(command, env, base / "importtime.log", expected) for _ in range(rounds)]
        for side, command, expected in (("A", a, a_exit), ("B", b, 0))
    }

    def median(side: str, module: str) -> float:
        return statistics.median(r.get(module, 0) for r in runs[side]) / 1000

    lines = []
    total = {side: statistics.median(sum(r.values()) for r in runs[side]) / 1000 for side in runs}
    lines.append(
        f"all imports (self times summed, importtime's own overhead included): "
        f"A {total['A']:.0f} ms, B {total['B']:.0f} ms"
    )
    for side, other in (("A", "B"), ("B", "A")):
        only = set(runs[side][0]) - set(runs[other][0])
        packages: dict[str, float] = {}
        for module in only:
            root = module.split(".")[0]
            packages[root] = packages.get(root, 0.0) + median(side, module)
        top = sorted(packages.items(), key=lambda item: -item[1])[:8]
        lines.append(
            f"only {side} imports ({sum(packages.values()):.0f} ms): "
            + ", ".join(f"{name} {ms:.0f} ms" for name, ms in top)
        )
    return lines


def load_times(directories: list[Path], rounds: int = 31) -> list[float]:
    """In-process median time of reading a migrations directory (what a no-op `plan` does with
    each file: name, bytes, UTF-8, checksum, header)."""
    from provision.migrations import load_migrations

    results = []
    for directory in directories:
        samples = []
        for _ in range(rounds):
            started = time.perf_counter()
            load_migrations(directory)
            samples.append(time.perf_counter() - started)
        results.append(statistics.median(samples))
    return results


def verdict(met: bool, interval: tuple[float, float] | None, bound: float) -> str:
    """Met or not by the issue's figure (medians), and whether the machine's noise decides it:
    the 95% interval of the run-by-run figure lies wholly on one side of the bound, or not."""
    if interval is None:
        decided = "too few runs for an interval"
    elif interval[1] <= bound or interval[0] > bound:
        decided = "the 95% interval agrees"
    else:
        decided = "within the noise: the 95% interval straddles the bound"
    return f"{'met' if met else 'NOT met'} ({decided})"


def row(label: str, pair: Pair, goal: str, met: bool, *, ratio: bool = True) -> str:
    interval = pair.interval("wall", ratio=ratio)
    low, high = interval or (math.nan, math.nan)
    if ratio:
        bound, shown = 1.0, f"{low:.2f}x-{high:.2f}x"
        middle = f"{pair.pairwise('wall'):.2f}x"
    else:
        bound, shown = 0.010, f"{low * 1000:+.0f} to {high * 1000:+.0f} ms"
        middle = f"{statistics.median(x.wall - y.wall for x, y in pair.rows()) * 1000:+.0f} ms"
    return (
        f"| {label} | {pair.median('a', 'wall') * 1000:.0f} ({pair.spread('a', 'wall')}) "
        f"| {pair.median('b', 'wall') * 1000:.0f} ({pair.spread('b', 'wall')}) "
        f"| {pair.ratio('wall'):.2f}x | {middle} ({shown}) "
        f"| {pair.median('a', 'cpu') * 1000:.0f} / {pair.median('b', 'cpu') * 1000:.0f} "
        f"= {pair.ratio('cpu'):.2f}x | {goal}: {verdict(met, interval, bound)} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21, help="counted runs of each command")
    parser.add_argument("--warmup", type=int, default=2, help="uncounted runs first")
    parser.add_argument("--files", type=int, default=300, help="migration files of step 3")
    parser.add_argument(
        "--as-is", action="store_true", help="do not cache bytecode (the environment unchanged)"
    )
    parser.add_argument(
        "--declaration",
        choices=["prod", "local"],
        default="prod",
        help="whose desired state: prod's, as users run `--dsn .. --owner-dsn ..` (the "
        "default; exit 3, for the one thing the emulated server lacks: pgaudit), or the local "
        "environment's (`--env local` too; exit 0)",
    )
    args = parser.parse_args()
    # prod declares pgaudit, which the emulated server cannot load: every prod run does the
    # whole no-op (connect, locks, catalog, plan) and then exits 3 (only a person can fix
    # it) for that one finding.
    ours = ExitCode.OK if args.declaration == "local" else ExitCode.MANUAL

    base = Path(tempfile.mkdtemp(prefix="noop-bench-"))
    env = child_env(None if args.as_is else base / "pycache")
    errors = base / "stderr.log"
    try:
        with Emulation(base / "state") as emu:
            target = (
                emu.target()
                if args.declaration == "local"
                else ["--dsn", emu.admin_dsn, "--owner-dsn", emu.owner_dsn]
            )
            check(
                run([CLI, "apply", "--auto-approve", *target], env, stderr=errors),
                ours,
                "first apply",
                errors,
            )
            alembic_env = dict(
                env,
                BENCH_ALEMBIC_URL=emu.admin_dsn.replace("postgresql://", "postgresql+pg8000://", 1),
            )
            with psycopg.connect(emu.admin_dsn, autocommit=True) as conn:
                # The schema of the peer's tables and version table, created once, as a deploy
                # would (alembic creates its version table, not the schema it lives in).
                conn.execute("CREATE SCHEMA IF NOT EXISTS bench_alembic")
            alembic = [ALEMBIC, "-c", str(PEER / "alembic.ini")]
            check(
                run([*alembic, "upgrade", "head"], alembic_env, stderr=errors),
                0,
                "alembic upgrade head",
                errors,
            )

            def pair(a: list[str], b: list[str], expect: tuple[int, int] = (ours, 0)) -> Pair:
                return alternate(
                    a,
                    b,
                    runs=args.runs,
                    warmup=args.warmup,
                    env=alembic_env,
                    expect=expect,
                    errors=errors,
                )

            applies = pair([CLI, "apply", "--auto-approve", *target], [*alembic, "upgrade", "head"])
            plans = pair([CLI, "plan", *target], [*alembic, "current"])

            two, many = migrations_dirs(base, args.files)
            check(
                run(
                    [CLI, "apply", "--auto-approve", *target, "--migrations", str(many)],
                    env,
                    stderr=errors,
                ),
                ours,
                f"apply of the {args.files} files",
                errors,
            )
            files = pair(
                [CLI, "plan", *target, "--migrations", str(many)],
                [CLI, "plan", *target, "--migrations", str(two)],
                expect=(ours, ours),
            )
            explained = explain_imports(
                [CLI, "apply", "--auto-approve", *target],
                [*alembic, "upgrade", "head"],
                alembic_env,
                base,
                5,
                ours,
            )
            loading = load_times([two, many])
    finally:
        shutil.rmtree(base, ignore_errors=True)

    extra_wall = files.median("a", "wall") - files.median("b", "wall")
    extra_cpu = files.median("a", "cpu") - files.median("b", "cpu")
    mode = "environment as is" if args.as_is else "bytecode cached for both tools"
    print(
        f"{args.runs} counted runs of each command in turn after {args.warmup} warm-up(s); {mode}; "
        f"{args.declaration}'s declaration; {machine()}"
    )
    print()
    print(
        "| A against B | A wall ms, median (min-max) | B wall ms, median (min-max) "
        "| ratio of medians | median of run-by-run ratios (95% interval; for the files: of the "
        "differences) | CPU ms A / B | goal |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    print(
        row(
            "no-op `apply` / `alembic upgrade head`",
            applies,
            "<= 1.0x",
            applies.ratio("wall") <= 1.0,
        )
    )
    print(row("no-op `plan` / `alembic current`", plans, "<= 1.0x", plans.ratio("wall") <= 1.0))
    print(
        row(
            f"`plan`, {args.files} files / 2 files",
            files,
            f"<= +10 ms ({extra_wall * 1000:+.0f} ms wall, {extra_cpu * 1000:+.0f} ms CPU)",
            extra_wall <= 0.010,
            ratio=False,
        )
    )
    print()
    print("Where the time goes (A = no-op `apply`, B = `alembic upgrade head`; `-X importtime`,")
    print("median of 5 runs each):")
    print()
    for line in explained:
        print(f"- {line}")
    print(
        f"- reading the migrations directory in-process (median of 31): 2 files "
        f"{loading[0] * 1000:.1f} ms, {args.files} files {loading[1] * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
