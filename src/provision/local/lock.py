"""`nucleus-provision lock`: derive the expected schema (`bootstrap_sql/schema.lock`).

A development-time step, on the emulation (so it needs the `emulation` extra): a scratch
database created as Cloud SQL's API creates one, on a PostgreSQL 16 + pgvector set up like
Cloud SQL, converged by the real `apply` one migration at a time (so the lock knows which
migration first made each schema and table), with the privileges declaration applied; then
read with diff's reader over the managed schemas and `public` (the version table). Nothing of
an environment's identities goes in: memberships are per environment and left out, and IAM
identities are not managed on the scratch database.
"""

from __future__ import annotations

import secrets
import tempfile
from dataclasses import replace
from pathlib import Path

from provision import db, executor
from provision.desired import DesiredState
from provision.diff.snapshot import read_snapshot
from provision.local import scenarios
from provision.local.instance import (
    ADMIN_USER,
    BOOTSTRAP_SUPERUSER,
    OWNER_USER,
    LocalInstance,
    connect_as,
)
from provision.local.server import Server
from provision.lockfile import Lock, render

SCRATCH_DATABASE = "nucleus_lock"


def _managed_scope(desired: DesiredState) -> tuple[str, ...]:
    vt = desired.version_table
    return tuple(dict.fromkeys((*desired.schema_names, vt.schema)))


def build(instance: LocalInstance, desired: DesiredState, database: str = SCRATCH_DATABASE) -> Lock:
    """The lock of `desired`'s migrations and declaration, made in a new database `database`
    of a running emulation (dropped first if a previous run left it)."""
    admin = connect_as(instance, BOOTSTRAP_SUPERUSER, instance.database)
    try:
        admin.run(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        admin.close()
    scenarios.load(instance, "empty", database=database)

    def target_of() -> db.Target:
        """A fresh target per apply (apply disposes it)."""
        return db.Target(
            admin=db.engine_for_dsn(instance.dsn(ADMIN_USER, database)),
            owner=db.engine_for_dsn(instance.dsn(OWNER_USER, database)),
            description=f"scratch database {database}",
            app_password=lambda: secrets.token_urlsafe(24),
        )

    # No lock and no tables of one (the lock is what this makes), no IAM identities.
    base = replace(
        desired,
        expected=None,
        layout=replace(desired.layout, tables=()),
        privileges=replace(desired.privileges, manage_iam=False),
    )
    scope = _managed_scope(desired)
    vt = desired.version_table
    created: dict[str, str] = {}
    snapshot = None
    # One apply per migration prefix: what appears after migration N was made by N.
    steps = [desired.migrations[: n + 1] for n in range(len(desired.migrations))] or [()]
    for migrations in steps:
        target = target_of()
        # The schemas of the migrations run so far: a later one's schema is not expected yet.
        ran = {m.version for m in migrations}
        step = replace(
            base,
            migrations=tuple(migrations),
            layout=replace(
                base.layout,
                schemas=tuple(s for s in base.layout.schemas if s.migration in ran),
            ),
        )
        try:
            executor.apply(target, step)
            with db.connect(target.admin, target.description) as conn:
                snapshot = read_snapshot(conn, scope, (vt.schema, vt.name))
        finally:
            target.dispose()
        version = migrations[-1].version if migrations else ""
        for name in snapshot.schemas:
            created.setdefault(name, version)
        for schema, name in snapshot.relations:
            created.setdefault(f"{schema}.{name}", version)
    assert snapshot is not None
    # `public` and the version table exist before any migration: no migration made them.
    created = {k: v for k, v in created.items() if k.split(".", 1)[0] in desired.schema_names}
    return Lock(
        snapshot,
        {m.filename: m.checksum for m in desired.migrations},
        created,
        desired.declaration,
    )


def generate(desired: DesiredState) -> str:
    """The lock's text, made on a scratch emulation started and stopped here."""
    with tempfile.TemporaryDirectory(prefix="nucleus-lock-") as state:
        server = Server(Path(state))
        instance = server.start("empty")
        try:
            return render(build(instance, desired))
        finally:
            server.stop()
