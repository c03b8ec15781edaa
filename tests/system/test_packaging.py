"""How the package is cut: `pip install .` (no extras) is enough for inspect, plan, apply and
verify; the local emulation and the stacks are extras, and without them `local`, `demo` and
`--env local` say in one line how to install them. (The import graph: tests/unit/test_house.py.)

The lean install is simulated without pip: the CLI runs in a subprocess in which every
installed distribution that `nucleus-provision`'s core requirements do not pull in (pgserver,
platformdirs, cdktf and its providers, the test tools...) cannot be imported, computed from
the installed metadata so that it follows pyproject.toml.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from helpers import Run, assert_clean_error

ROOT = Path(__file__).resolve().parents[2]
EMULATION_HINT = "pip install 'nucleus-provision[emulation]'"


def _lean_distributions() -> set[str]:
    """nucleus-provision and everything its requirements without extras need, transitively."""
    seen: set[tuple[str, str]] = set()
    todo = [Requirement("nucleus-provision")]
    while todo:
        wanted = todo.pop()
        name = canonicalize_name(wanted.name)
        # A requirement such as google-api-core[grpc] brings that extra's requirements too.
        extras = {"", *wanted.extras} - {extra for n, extra in seen if n == name}
        if not extras:
            continue
        seen |= {(name, extra) for extra in extras}
        try:
            requirements = distribution(name).requires or []
        except PackageNotFoundError:  # e.g. a dependency for another platform
            continue
        for line in requirements:
            requirement = Requirement(line)
            marker = requirement.marker
            if marker is None or any(marker.evaluate({"extra": extra}) for extra in extras):
                todo.append(requirement)
    return {name for name, _extra in seen}


def _missing_in_a_lean_install() -> list[str]:
    """Top-level modules that only distributions outside the lean install provide."""
    lean = _lean_distributions()
    return sorted(
        module
        for module, dists in packages_distributions().items()
        if not any(canonicalize_name(d) in lean for d in dists)
    )


MISSING = _missing_in_a_lean_install()


def lean(*args: str, block: tuple[str, ...] = (), code: str | None = None) -> Run:
    """`nucleus-provision ARGS` (or `code`) where the modules of MISSING and `block` cannot
    be imported, as in `pip install .` without extras."""
    prelude = (
        "import sys\n"
        f"for name in {[*MISSING, *block]!r}:\n"
        "    sys.modules.setdefault(name, None)  # importing it raises ImportError\n"
    )
    body = code or "from provision.cli import main\nmain(sys.argv[1:])\n"
    proc = subprocess.run(
        [sys.executable, "-c", prelude + body, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def test_the_extras_are_what_a_lean_install_leaves_out():
    for module in ("pgserver", "platformdirs", "cdktf", "cdktf_cdktf_provider_google", "pytest"):
        assert module in MISSING
    # What production needs stays, including what the Connector itself depends on.
    for module in (
        "click",
        "pydantic",
        "sqlalchemy",
        "pg8000",
        "pglast",
        "aiohttp",
        "cryptography",
    ):
        assert module not in MISSING


def test_the_production_connection_code_imports_without_the_extras():
    run = lean(
        code="import provision.cloudsql, provision.credentials, provision.config\n"
        "import google.cloud.sql.connector, google.cloud.secretmanager\n"
        "assert not [m for m in sys.modules if m.startswith('provision.local')]\n"
    )
    assert run.code == 0, run.err


def test_inspect_plan_apply_verify_work_without_the_extras(legacy_db):
    # provision.local is blocked too: the engine never needs the emulation's code.
    block = ("provision.local",)
    assert lean("--help", block=block).code == 0
    assert lean("plan", *legacy_db.targets, block=block).code == 2
    applied = lean("apply", "--auto-approve", *legacy_db.targets, block=block)
    assert applied.code == 0, applied.err
    assert lean("verify", *legacy_db.targets, block=block).code == 0
    inspected = lean("inspect", "--dsn", legacy_db.admin_dsn, "--format", "json", block=block)
    assert inspected.code == 0, inspected.err
    assert inspected.json["connected_as"] == "postgres"


def test_local_up_without_the_emulation_extra_says_how_to_install_it(tmp_path):
    run = lean("local", "up", "--state-dir", str(tmp_path / "state"))
    assert_clean_error(run, "the local Cloud SQL emulation is not installed", EMULATION_HINT)
    assert not (tmp_path / "state").exists()


def test_env_local_without_the_emulation_extra_says_how_to_install_it():
    run = lean("inspect", "--env", "local")
    assert_clean_error(
        run, "connector 'local' of environment 'local' cannot be loaded", EMULATION_HINT
    )
