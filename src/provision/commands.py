"""One plain function per CLI verb (as alembic's command.py): `fn(target, ...)`.

They return data and raise ProvisionError; printing and exit codes belong to the CLI.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from provision import db, executor
from provision.analysis import Report, analyze
from provision.catalog import read_catalog
from provision.errors import PermissionProblem
from provision.layout import NUCLEUS, Layout
from provision.migrations import load_migrations
from provision.planner import Plan


@contextmanager
def _explain_missing_owner(target: db.Target) -> Iterator[None]:
    """When a step needs the owner session and the environment had no credentials for it, say where we looked."""
    try:
        yield
    except PermissionProblem as exc:
        if target.owner is None and target.owner_unavailable:
            exc.hint = f"{exc.hint}. No owner session: {target.owner_unavailable}"
        raise


def _for_target(layout: Layout, target: db.Target) -> Layout:
    """The layout as seen from this target: an IAM login is the admin of its run."""
    return layout.with_owner(layout.owner, admin=target.admin_role) if target.admin_role else layout


def inspect(target: db.Target, layout: Layout = NUCLEUS) -> Report:
    """Read the catalog (read-only) and compare it with the expected layout."""
    layout = _for_target(layout, target)
    try:
        with db.connect(target.admin, target.description) as conn:
            return analyze(layout, read_catalog(conn, layout))
    finally:
        target.dispose()


def plan(
    target: db.Target,
    layout: Layout = NUCLEUS,
    migrations_dir: Path | None = None,
    accept_changed: tuple[str, ...] = (),
) -> Plan:
    """What `apply` would run now (read-only)."""
    layout = _for_target(layout, target)
    migrations = load_migrations(migrations_dir)
    try:
        with _explain_missing_owner(target):
            return executor.read_and_plan(
                target, layout, migrations, accept_changed=accept_changed
            )[1]
    finally:
        target.dispose()


def apply(
    target: db.Target,
    layout: Layout = NUCLEUS,
    migrations_dir: Path | None = None,
    listener: executor.Listener = lambda e: None,
    accept_changed: tuple[str, ...] = (),
) -> executor.ApplyResult:
    """Run the plan under the advisory lock, then check the result."""
    layout = _for_target(layout, target)
    migrations = load_migrations(migrations_dir)
    try:
        with _explain_missing_owner(target):
            return executor.apply(
                target, layout, migrations, listener=listener, accept_changed=accept_changed
            )
    finally:
        target.dispose()


def verify(
    target: db.Target, layout: Layout = NUCLEUS, migrations_dir: Path | None = None
) -> list[str]:
    """The differences between the live database and the desired state (empty: it matches)."""
    layout = _for_target(layout, target)
    migrations = load_migrations(migrations_dir)
    try:
        catalog, plan = executor.read_and_plan(
            target, layout, migrations, assume_owner_session=True
        )
        return executor.differences(layout, catalog, plan)
    finally:
        target.dispose()
