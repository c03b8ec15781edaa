"""What the issue-9 benchmarks share: an emulation started and stopped through the CLI, whole
processes timed from outside (wall clock and the kernel's CPU accounting of each finished
process), and medians.

Only the CLI (`nucleus-provision local up/down`) is used to reach the emulation, so these
scripts do not depend on how `provision.local` is laid out inside.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv the bench runs from (.venv/bin)
CLI = str(BIN / "nucleus-provision")
ALEMBIC = str(BIN / "alembic")
BOOTSTRAP_SQL = ROOT / "bootstrap_sql"

_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")


def masked(text: str) -> str:
    """Text with any DSN's password replaced by ***."""
    return _PASSWORD.sub(r"\1***@", text)


class Emulation:
    """`nucleus-provision local up` in a state directory of its own; `local down` on exit."""

    def __init__(self, state_dir: Path, scenario: str = "legacy-nucleus-v12") -> None:
        self.state_dir, self.scenario = state_dir, scenario
        self.info: dict[str, object] = {}

    def __enter__(self) -> Emulation:
        out = subprocess.run(
            [CLI, "local", "up", "--scenario", self.scenario, "--state-dir", str(self.state_dir)],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            sys.exit(f"local up failed: {masked(out.stderr.strip())}")
        self.info = json.loads(out.stdout)
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(
            [CLI, "local", "down", "--state-dir", str(self.state_dir)],
            capture_output=True,
            check=False,
        )

    @property
    def admin_dsn(self) -> str:
        return str(self.info["admin_dsn"])

    @property
    def owner_dsn(self) -> str:
        return str(self.info["owner_dsn"])

    def target(self) -> list[str]:
        """The target options of `plan`/`apply`: the `local` environment's desired state (the
        emulated server cannot load pgaudit, which prod declares), reached at the DSNs."""
        return ["--env", "local", "--dsn", self.admin_dsn, "--owner-dsn", self.owner_dsn]


def child_env(pycache: Path | None) -> dict[str, str]:
    """The environment of the child processes. With `pycache`, bytecode is written to and read
    from that directory, as an installed wheel has it (the workplace sets
    PYTHONDONTWRITEBYTECODE, so an editable install compiles its own modules at every start);
    without it, the environment is passed as it is."""
    env = dict(os.environ)
    # The app login's password (users.app): apply creates the login with it. One per bench
    # run, never printed.
    env.setdefault("NUCLEUS_APP_PASSWORD", secrets.token_urlsafe(24))
    env.setdefault("NUCLEUS_PROVISION_CONFIG", str(ROOT / "environments.toml"))
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


@dataclass(frozen=True)
class Run:
    wall: float  # seconds, start to reaped
    cpu: float  # user + system seconds of the process (kernel accounting)
    peak_mib: float  # largest resident set of the process
    code: int


def run(
    command: Sequence[str],
    env: dict[str, str] | None = None,
    *,
    stdout: Path | None = None,
    stderr: Path | None = None,
    cwd: Path | None = None,
) -> Run:
    """One whole process, its output to files (or thrown away)."""
    out = open(stdout, "ab") if stdout else subprocess.DEVNULL  # noqa: SIM115
    err = open(stderr, "ab") if stderr else subprocess.DEVNULL  # noqa: SIM115
    try:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        for handle in (out, err):
            if handle is not subprocess.DEVNULL:
                handle.close()
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode)


def check(result: Run, expected: int, what: str, stderr: Path | None = None) -> Run:
    if result.code != expected:
        detail = masked(stderr.read_text()[-2000:]) if stderr and stderr.exists() else ""
        sys.exit(f"{what}: exit {result.code}, expected {expected}\n{detail}")
    return result


@dataclass(frozen=True)
class Pair:
    """Two commands timed in turn (A B A B ...), after warm-ups."""

    a: list[Run]
    b: list[Run]

    def median(self, side: str, figure: str) -> float:
        return statistics.median(getattr(r, figure) for r in getattr(self, side))

    def ratio(self, figure: str) -> float:
        """The ratio of the medians, A / B."""
        return self.median("a", figure) / self.median("b", figure)

    def pairwise(self, figure: str) -> float:
        """The median of the run-by-run ratios (robust to the machine's speed drifting)."""
        return statistics.median(getattr(x, figure) / getattr(y, figure) for x, y in self.rows())

    def interval(self, figure: str, *, ratio: bool) -> tuple[float, float] | None:
        """A 95% confidence interval of the median run-by-run ratio (or difference, A - B),
        distribution-free (order statistics): how far the machine's noise leaves the figure
        undecided. None when there are too few runs for one (fewer than 6)."""
        values = sorted(
            getattr(x, figure) / getattr(y, figure)
            if ratio
            else getattr(x, figure) - getattr(y, figure)
            for x, y in self.rows()
        )
        n, below, k = len(values), 0.0, 0
        for i in range(n + 1):
            below += math.comb(n, i) / 2**n
            if below > 0.025:
                break
            k = i + 1
        return None if k == 0 else (values[k - 1], values[n - k])  # None: under 6 runs

    def rows(self) -> list[tuple[Run, Run]]:
        return list(zip(self.a, self.b, strict=True))

    def spread(self, side: str, figure: str) -> str:
        values = [getattr(r, figure) for r in getattr(self, side)]
        return f"{min(values) * 1000:.0f}-{max(values) * 1000:.0f}"


def alternate(
    a: Sequence[str],
    b: Sequence[str],
    *,
    runs: int,
    warmup: int,
    env: dict[str, str],
    expect: tuple[int, int] = (0, 0),
    errors: Path,
) -> Pair:
    """Time A and B in alternation: `warmup` uncounted pairs, then `runs` counted ones."""
    results: tuple[list[Run], list[Run]] = ([], [])
    for n in range(warmup + runs):
        for side, command, code in ((0, a, expect[0]), (1, b, expect[1])):
            result = check(
                run(command, env, stderr=errors), code, masked(" ".join(command)), errors
            )
            if n >= warmup:
                results[side].append(result)
    return Pair(*results)


def machine() -> str:
    """How busy the machine was: the figures of a shared machine depend on it."""
    one, five, _ = os.getloadavg()
    return f"{os.cpu_count()} CPUs, load average {one:.1f} (1 min) / {five:.1f} (5 min) at the end"
