"""The shape of the house, read from the code's own imports: no circle, and production code
that never reaches into the emulation."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "provision"
PRODUCTION_CONNECTION_CODE = ("cloudsql", "credentials", "config", "db")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the provision modules it imports, anywhere in its body (a function-level
    import counts: hiding a circle inside a function does not remove it)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.add(node.module)
                targets.update(f"{node.module}.{a.name}" for a in node.names)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_package_has_no_import_circle() -> None:
    graph = import_graph()
    assert len(graph) > 20  # the walk found the package
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_production_connection_code_never_imports_the_emulation() -> None:
    graph = import_graph()
    for name in PRODUCTION_CONNECTION_CODE:
        leaks = {m for m in graph[f"provision.{name}"] if m.startswith("provision.local")}
        assert not leaks, (name, leaks)


def test_the_engine_core_does_no_io() -> None:
    """Concerns, planner, findings, desired state: pure, no connection or emulation imports."""
    graph = import_graph()
    pure = [m for m in graph if m.startswith("provision.concerns")]
    pure += ["provision.planner", "provision.findings", "provision.desired", "provision.report"]
    for name in pure:
        shell = graph[name] & {"provision.db", "provision.cloudsql", "provision.executor"}
        assert not shell and not any(m.startswith("provision.local") for m in graph[name]), name


# What `nucleus-provision --help` and a usage error may load: click, the standard library and
# the flat list of errors. Everything else is imported inside the command that needs it.
CLI_LIGHT_IMPORTS = {
    "click",
    "provision.errors",
    "provision.exitcodes",
    "provision.hints",
    "__future__",
}


def test_the_cli_imports_nothing_heavy_at_its_top() -> None:
    """cli.py's module-level imports (outside `if TYPE_CHECKING:`) are click, the standard
    library and provision.errors; tests/system/test_cli_startup.py checks what really loads."""
    tree = ast.parse((PACKAGE / "cli.py").read_text())
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    heavy = {
        name
        for name in found
        if name not in CLI_LIGHT_IMPORTS and name.split(".")[0] not in sys.stdlib_module_names
    }
    assert not heavy, heavy


def test_the_cli_lock_defaults_are_the_lock_policy_defaults() -> None:
    """cli.py spells LockPolicy's defaults so that building its options loads nothing."""
    from provision import cli
    from provision.locks import DEFAULT_POLICY

    assert (cli.DEFAULT_LOCK_TIMEOUT, cli.DEFAULT_LOCK_BUDGET) == (
        DEFAULT_POLICY.timeout,
        DEFAULT_POLICY.budget,
    )
    params = {p.name: p.default for p in cli.cli.params}
    assert (params["lock_timeout"], params["lock_budget"]) == (
        DEFAULT_POLICY.timeout,
        DEFAULT_POLICY.budget,
    )


def test_every_concern_has_one_shape_and_only_the_planner_and_report_reach_them():
    """One registry of concerns of one signature: a new concern is its module, a registry line
    and its tests; the executor and the renderer import none of them."""
    import inspect as introspect

    from provision.concerns import REGISTRY

    for concern in REGISTRY:
        assert list(introspect.signature(concern.findings).parameters) == ["desired", "catalog"]
        assert list(introspect.signature(concern.actions).parameters) == [
            "desired",
            "catalog",
            "context",
        ], concern.__name__
    graph = import_graph()
    for name in ("provision.executor", "provision.render", "provision.commands"):
        reached = {m for m in graph[name] if m.startswith("provision.concerns")}
        assert not reached, (name, reached)
