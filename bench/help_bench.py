"""Issue 21: `nucleus-provision --help` and a usage error against `alembic --help`.

    .venv/bin/python bench/help_bench.py [--runs 21] [--warmup 2]

Whole processes in alternation (A B A B ..., after warm-ups), bytecode cached for both tools
(as an installed wheel has it). Goal: `--help` and every usage error in <= 80 ms, which needs
nothing heavier than click to be loaded before a command runs (tests/system/test_cli_startup.py
proves that part without a clock). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from issue9_support import ALEMBIC, CLI, alternate, child_env, machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21, help="counted runs of each command")
    parser.add_argument("--warmup", type=int, default=2, help="uncounted runs first")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="help-bench-"))
    env = child_env(base / "pycache")
    errors = base / "stderr.log"
    try:
        pairs = [
            (
                "`nucleus-provision --help` / `alembic --help`",
                alternate(
                    [CLI, "--help"],
                    [ALEMBIC, "--help"],
                    runs=args.runs,
                    warmup=args.warmup,
                    env=env,
                    errors=errors,
                ),
            ),
            (
                "`nucleus-provision plan --format xml` (usage error, exit 1) / `alembic --help`",
                alternate(
                    [CLI, "plan", "--format", "xml"],
                    [ALEMBIC, "--help"],
                    runs=args.runs,
                    warmup=args.warmup,
                    env=env,
                    expect=(1, 0),
                    errors=errors,
                ),
            ),
        ]
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"{args.runs} counted runs each, in turn, after {args.warmup} warm-up(s); {machine()}")
    print()
    print(
        "| A against B | A wall ms, median (min-max) | B wall ms, median (min-max) | ratio of medians "
        "| CPU ms A / B | goal: A <= 80 ms |"
    )
    print("|---|---:|---:|---:|---:|---|")
    for label, pair in pairs:
        a_wall = pair.median("a", "wall") * 1000
        print(
            f"| {label} | {a_wall:.0f} ({pair.spread('a', 'wall')}) "
            f"| {pair.median('b', 'wall') * 1000:.0f} ({pair.spread('b', 'wall')}) "
            f"| {pair.ratio('wall'):.2f}x | {pair.median('a', 'cpu') * 1000:.0f} / "
            f"{pair.median('b', 'cpu') * 1000:.0f} | {'met' if a_wall <= 80 else 'NOT met'} |"
        )


if __name__ == "__main__":
    main()
