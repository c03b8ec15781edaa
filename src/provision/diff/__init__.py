"""`diff`: is the live staging database laid out like the live prod database, right now?

Compares two live databases, read-only on both sides: schemas, tables and columns,
constraints, indexes, sequences, views, functions, triggers, policies, extensions and their
versions, owners, privileges and default privileges, memberships of the managed roles, and
the migration records. Three pieces, as the rest of the project:

- `snapshot.read_snapshot`: the one reader, a fixed number of set-based catalog queries;
- `compare.compare`: a pure function from two snapshots to `Difference`s;
- `render`: text (grouped by object), markdown (like the seed's analysis), JSON.

`run` is the entry point for the CLI and the demo: two engines in, a `Result` out.
"""

from __future__ import annotations

import gc
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from provision.diff.compare import CATEGORIES, Difference, Options, compare, parse_role_map
from provision.diff.snapshot import read_snapshot
from provision.errors import ConfigError
from provision.lockfile import load
from provision.model import Snapshot

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from provision.db import Target
    from provision.desired import DesiredState

__all__ = [
    "CATEGORIES",
    "Defaults",
    "Difference",
    "Options",
    "Result",
    "Side",
    "compare",
    "defaults",
    "parse_role_map",
    "read_snapshot",
    "run",
    "LockSide",
    "run_targets",
    "schema_scope",
]


@dataclass(frozen=True)
class Defaults:
    """What `diff` takes from the layout when the user does not say otherwise."""

    managed_schemas: tuple[str, ...]  # the new layout's schemas and the version table's
    legacy_schemas: tuple[str, ...]
    migrations_table: tuple[str, str]

    @property
    def schemas(self) -> tuple[str, ...]:
        return self.managed_schemas + self.legacy_schemas


def defaults(desired: DesiredState) -> Defaults:
    """What `diff` compares when the user does not say otherwise: the desired state's managed
    schemas (the lock's), its legacy ones and its version table. The caller (the CLI, the demo)
    hands the desired state in, so that diff never reaches up for it.

    Roles are not taken from it: they differ per environment, and every role that owns or is
    granted something compared is a managed role anyway (see `compare`)."""
    vt = desired.version_table
    managed = tuple(dict.fromkeys((*desired.schema_names, vt.schema)))
    return Defaults(managed, tuple(desired.layout.protected_schemas), (vt.schema, vt.name))


@dataclass(frozen=True)
class Side:
    """One database to compare: an admin engine and how to name it (never with a password)."""

    engine: Engine
    description: str


@dataclass(frozen=True)
class LockSide:
    """A schema lock as one side (`--from-lock` / `--to-lock`): what the migrations make."""

    path: Path

    @property
    def description(self) -> str:
        return f"lock {self.path}"

    def snapshot(self) -> Snapshot:
        lock = load(self.path)
        if lock is None:
            raise ConfigError(
                f"{self.path} is not a file",
                hint="name a schema lock, e.g. bootstrap_sql/schema.lock",
            )
        return lock.snapshot


# What a lock does not hold (per environment, or not made by the migrations): never compared
# with a lock side.
NOT_IN_LOCK = frozenset({"extensions", "memberships", "legacy-migrations"})


@dataclass(frozen=True)
class Result:
    left: str
    right: str
    schemas: tuple[str, ...]
    ignored: tuple[str, ...]
    differences: tuple[Difference, ...]
    queries: tuple[int, int] = field(default=(0, 0), compare=False)  # catalog queries per side

    @property
    def identical(self) -> bool:
        return not self.differences


def schema_scope(
    settings: Defaults, include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()
) -> tuple[str, ...]:
    """The schemas to compare: `include` (default: managed + legacy) minus `exclude`."""
    chosen = include or settings.schemas
    return tuple(s for s in dict.fromkeys(chosen) if s not in set(exclude))


def run(
    left: Side | LockSide,
    right: Side | LockSide,
    settings: Defaults,
    options: Options | None = None,
    schemas: tuple[str, ...] | None = None,
) -> Result:
    """Snapshot both sides (concurrently: each waits mostly on its own server) and compare.

    A lock side holds the managed schemas only: the comparison is narrowed to them, leaves out
    what a lock does not hold (`NOT_IN_LOCK`), and the database's own owner and grants."""
    from provision import db  # here: `diff --help` must not load SQLAlchemy

    scope = schemas if schemas is not None else settings.schemas
    options = options or Options()
    locks = [side.snapshot() for side in (left, right) if isinstance(side, LockSide)]
    if locks:
        scope = tuple(s for s in scope if s in locks[0].schemas_in_scope)
        options = replace(options, ignore=options.ignore | NOT_IN_LOCK)

    def read(side: Side | LockSide) -> Snapshot:
        if isinstance(side, LockSide):
            return _narrowed(side.snapshot(), scope)
        with db.connect(side.engine, side.description) as conn:
            return read_snapshot(conn, scope, settings.migrations_table)

    # Snapshots of 10,000 tables are hundreds of thousands of small tuples, none in a cycle:
    # the cyclic collector would only walk them again and again (a third of the time).
    collecting = gc.isenabled()
    gc.disable()
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            left_future, right_future = pool.submit(read, left), pool.submit(read, right)
            left_snapshot, right_snapshot = left_future.result(), right_future.result()
        if isinstance(left, LockSide):
            left_snapshot = replace(left_snapshot, database_owned=right_snapshot.database_owned)
        if isinstance(right, LockSide):
            right_snapshot = replace(right_snapshot, database_owned=left_snapshot.database_owned)
        differences = compare(left_snapshot, right_snapshot, options)
    finally:
        if collecting:
            gc.enable()
    return Result(
        left.description,
        right.description,
        tuple(scope),
        tuple(sorted(options.ignore)),
        tuple(differences),
        (left_snapshot.queries, right_snapshot.queries),
    )


def _narrowed(snapshot: Snapshot, scope: tuple[str, ...]) -> Snapshot:
    """A lock's snapshot within the schemas compared."""
    keep = set(scope)
    return replace(
        snapshot,
        schemas_in_scope=tuple(s for s in snapshot.schemas_in_scope if s in keep),
        schemas={k: v for k, v in snapshot.schemas.items() if k in keep},
        relations={k: v for k, v in snapshot.relations.items() if k[0] in keep},
        columns={k: v for k, v in snapshot.columns.items() if k[0] in keep},
        constraints={k: v for k, v in snapshot.constraints.items() if k[0] in keep},
        indexes={k: v for k, v in snapshot.indexes.items() if k[0] in keep},
        functions={k: v for k, v in snapshot.functions.items() if k[0] in keep},
        triggers={k: v for k, v in snapshot.triggers.items() if k[0] in keep},
        rules={k: v for k, v in snapshot.rules.items() if k[0] in keep},
        policies={k: v for k, v in snapshot.policies.items() if k[0] in keep},
        types={k: v for k, v in snapshot.types.items() if k[0] in keep},
        default_privileges={
            k: v for k, v in snapshot.default_privileges.items() if k[1] in keep or not k[1]
        },
    )


def run_targets(
    left: Target | LockSide,
    right: Target | LockSide,
    settings: Defaults,
    options: Options | None = None,
    schemas: tuple[str, ...] | None = None,
) -> Result:
    """`run` over two `db.Target`s (their admin sessions) or locks, disposing the targets
    afterwards."""

    def side(t: Target | LockSide) -> Side | LockSide:
        return t if isinstance(t, LockSide) else Side(t.admin, t.description)

    try:
        return run(side(left), side(right), settings, options, schemas)
    finally:
        for t in (left, right):
            if not isinstance(t, LockSide):
                t.dispose()
