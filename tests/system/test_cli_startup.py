"""`--help` and usage errors answer before anything heavy is loaded (issue 21).

Proven structurally, never by a clock: each command runs in a fresh interpreter under
`python -X importtime`, which lists every module that process imported, and none of the
heavy ones may be among them. A timed assertion would pass or fail with the machine's load;
this one fails exactly when someone moves an import back to the top of cli.py (or into a
module cli.py imports at its top).
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

# The packages a command needs and `--help` does not: the engine and driver, the config
# models, the Connector and Google's libraries, retries, the SQL parser, and our own modules
# beyond the CLI and its errors.
HEAVY = ("sqlalchemy", "pg8000", "pydantic", "pydantic_core", "google", "tenacity", "pglast")
OUR_LIGHT_MODULES = {
    "provision",
    "provision.cli",
    "provision.errors",
    "provision.exitcodes",  # the exit-code table of every --help: an IntEnum, stdlib only
    "provision.hints",
    "provision.__main__",
}
IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(?P<module>\S+)\s*$")


def imported_modules(*args: str) -> tuple[int, str, set[str]]:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "provision", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    modules = {m["module"] for line in proc.stderr.splitlines() if (m := IMPORTED.match(line))}
    return proc.returncode, proc.stdout + proc.stderr, modules


def heavy_in(modules: set[str]) -> list[str]:
    return sorted(
        m
        for m in modules
        if m.split(".")[0] in HEAVY or (m.startswith("provision") and m not in OUR_LIGHT_MODULES)
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["-h"],
        ["--version"],
        ["inspect", "--help"],
        ["plan", "--help"],
        ["apply", "--help"],
        ["verify", "--help"],
        ["diff", "--help"],
        ["move", "--help"],
        ["move", "run", "--help"],
        ["move", "verify", "--help"],
        ["local", "up", "--help"],
        ["demo", "--help"],
    ],
    ids=" ".join,
)
def test_help_loads_only_the_cli(args: list[str]) -> None:
    code, output, modules = imported_modules(*args)
    assert code == 0, output
    assert "provision.cli" in modules  # the probe sees our imports at all
    assert not heavy_in(modules), heavy_in(modules)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no-such-command"], "No such command"),
        (["plan", "--format", "xml"], "Invalid value"),
        (["apply", "--no-such-option"], "No such option"),
        (["--lock-timeout", "0", "plan"], "Invalid value"),
        (["move", "run", "--batch-size", "0"], "Invalid value"),
        (["plan"], "give --dsn URL or --env NAME"),
        (
            ["apply", "--env", "prod", "--owner-dsn", "postgresql://n:pw@127.0.0.1/db"],
            "--owner-dsn goes",
        ),
        (["move", "status"], "give --dsn URL or --env NAME"),
        (["local", "up", "--scenario", "nope"], "Invalid value"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_usage_errors_load_only_the_cli(args: list[str], message: str) -> None:
    code, output, modules = imported_modules(*args)
    assert code == 1, output  # bad usage exits 1, never click's 2 (2 means "changes pending")
    assert message in output, output
    assert "Traceback" not in output
    assert not heavy_in(modules), heavy_in(modules)


def test_the_probe_sees_a_heavy_import() -> None:
    """The check above can fail: a command that runs loads the engine, and the probe says so."""
    code, output, modules = imported_modules(
        "--connect-timeout", "0.5", "plan", "--dsn", "postgresql://postgres:pw@127.0.0.1:1/db"
    )
    assert code == 1, output
    assert "cannot connect" in output, output
    assert {"sqlalchemy", "pg8000", "provision.commands"} <= set(heavy_in(modules))
