"""How the package is cut: `pip install .` (no extras) is enough for inspect, plan, apply and
verify; the local emulation and the stacks are extras; the emulation is a plug-in that the
production connection code never imports; and `src/provision` has no import cycle.

The lean install is simulated without pip: the CLI runs in a subprocess in which every
installed distribution that `nucleus-provision`'s core requirements do not pull in (pgserver,
platformdirs, cdktf and its providers, the test tools...) cannot be imported, computed from
the installed metadata so that it follows pyproject.toml.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from helpers import Run, assert_clean_error

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
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
    applied = lean("apply", *legacy_db.targets, block=block)
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


# -- the import graph -------------------------------------------------------------------------


def _imports() -> dict[str, set[str]]:
    """Module -> the modules of src/provision it imports, wherever the import statement is
    (inside functions and TYPE_CHECKING blocks too: those must not hide a cycle either)."""
    modules = {}
    for path in (SRC / "provision").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph`, or None."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        for imported in sorted(graph[module]):
            if found := visit(imported, [*path, module]):
                return found
        done.add(module)
        return None

    for module in sorted(graph):
        if found := visit(module, []):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_src_provision_has_no_import_cycle():
    assert _cycle(_imports()) is None


def test_the_production_connection_code_never_imports_the_emulation():
    graph = _imports()
    for module in ("provision.cloudsql", "provision.credentials", "provision.config"):
        assert not [m for m in graph[module] if m.startswith("provision.local")], module
