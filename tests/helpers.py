"""Running the real CLI in a subprocess, as users and CI do."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def json(self):
        return json.loads(self.out)


def cli(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> Run:
    proc = subprocess.run(
        [sys.executable, "-m", "provision", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "provision", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def assert_clean_error(run: Run, *fragments: str, secrets: tuple[str, ...] = ()) -> None:
    """One clear error line (plus an optional hint), exit 1, no traceback, and none of `secrets`."""
    assert run.code == 1, (run.code, run.out, run.err)
    for secret in secrets:
        assert secret not in run.out + run.err
    assert "Traceback" not in run.err and "Traceback" not in run.out
    first = run.err.strip().splitlines()[0]
    assert first.startswith("error: "), run.err
    for fragment in fragments:
        assert fragment in run.err, (fragment, run.err)
