"""One plain function per CLI verb (as alembic's command.py): `fn(target, ...)`.

They return data and raise ProvisionError; printing and exit codes belong to the CLI.
"""

from __future__ import annotations

from pathlib import Path

from provision import db, executor
from provision.analysis import Report, analyze
from provision.catalog import read_catalog
from provision.layout import NUCLEUS, Layout
from provision.migrations import load_migrations
from provision.planner import Plan


def inspect(target: db.Target, layout: Layout = NUCLEUS) -> Report:
    """Read the catalog (read-only) and compare it with the expected layout."""
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
    migrations = load_migrations(migrations_dir)
    try:
        with db.connect(target.admin, target.description) as conn:
            return executor.plan_for(
                conn,
                layout,
                migrations,
                owner_session=target.owner is not None,
                accept_changed=accept_changed,
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
    migrations = load_migrations(migrations_dir)
    try:
        return executor.apply(
            target, layout, migrations, listener=listener, accept_changed=accept_changed
        )
    finally:
        target.dispose()


def verify(
    target: db.Target, layout: Layout = NUCLEUS, migrations_dir: Path | None = None
) -> list[str]:
    """The differences between the live database and the desired state (empty: it matches)."""
    migrations = load_migrations(migrations_dir)
    try:
        with db.connect(target.admin, target.description) as conn:
            catalog, plan = executor.plan_for(conn, layout, migrations, owner_session=True)
            return executor.differences(layout, catalog, plan)
    finally:
        target.dispose()
