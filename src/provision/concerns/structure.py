"""Structure: every column, index, constraint, type, view, function, trigger, rule and policy of the
managed schemas, against the checked-in expected schema (`bootstrap_sql/schema.lock`).

The comparison is diff's (`provision.diff.compare`), live database on the left, the lock on
the right, so `verify` sees exactly what `diff` would see against a freshly converged copy.
What other concerns own is left to them, so that one fact has one finding: owners
(`ownership`), privileges, default privileges and memberships (`privileges`, authoritative
and per environment), extensions (`extension`, per environment), migration records
(`migrations`). In schema `public` only the version table is ours.

Each kind of difference has its own finding code (`column-missing`, `column-type-changed`,
`index-missing`, `constraint-changed`, ...), naming every object. While migrations are
pending, what they will create is not reported missing (the plan runs them, and apply checks
against the lock afterwards). `apply` repairs what is safe to repair without a migration (an
invalid index is rebuilt CONCURRENTLY); for anything else the remedy is a new migration,
because an applied migration never runs again and the lock is derived from the migrations.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

from provision.actions import Action, ActionKind, Context, Session, Sql
from provision.catalog import Catalog, runtime_roles
from provision.desired import DesiredState
from provision.diff.compare import Difference, Options, compare
from provision.findings import Finding, Item, Severity
from provision.hints import command
from provision.lockfile import LOCK_NAME, REFRESH, stale
from provision.model import Owned, Snapshot
from provision.sql import ident

# Categories of diff another concern owns (see the docstring).
OWNED_ELSEWHERE = frozenset(
    {
        "owners",
        "privileges",
        "default-privileges",
        "memberships",
        "extensions",
        "migrations",
        "legacy-migrations",
    }
)

_CHANGED = {
    "relation-kind": "relation-kind-changed",
    "table-definition": "table-storage-changed",
    "row-security": "row-security-changed",
    "column-position": "column-order-changed",
    "table-options": "table-options-changed",
    "index-validity": "index-invalid",
}
# Differences kinds that name an object present on one side only.
_PRESENCE = {
    "schema": "schema",
    "table": "table",
    "partitioned table": "table",
    "foreign table": "table",
    "view": "view",
    "materialized view": "view",
    "sequence": "sequence",
    "column": "column",
    "constraint": "constraint",
    "index": "index",
    "function": "function",
    "trigger": "trigger",
    "rule": "rule",
    "policy": "policy",
    "type": "type",
}


def code(difference: Difference) -> str:
    """The finding code of one difference (live on the left, the lock on the right)."""
    kind = difference.kind
    if kind in _PRESENCE:
        return f"{_PRESENCE[kind]}-{'missing' if difference.left is None else 'unexpected'}"
    if kind in _CHANGED:
        return _CHANGED[kind]
    return f"{kind.removesuffix('-definition')}-changed"


def _only_version_table(snapshot: Snapshot) -> Snapshot:
    """The snapshot with schema `public` narrowed to the version table and what belongs to it
    (its sequence, columns, constraints, indexes): the rest of public is not ours."""
    schema, table = snapshot.migrations_table.split(".", 1)

    def ours(key_schema: str, key_table: str) -> bool:
        return key_schema != schema or key_table == table

    return replace(
        snapshot,
        database_owned=Owned(""),
        schemas={k: v for k, v in snapshot.schemas.items() if k != schema},
        relations={
            k: r
            for k, r in snapshot.relations.items()
            if ours(*k) or (r.owned_by is not None and ours(r.owned_by[0], r.owned_by[1]))
        },
        columns={k: v for k, v in snapshot.columns.items() if ours(k[0], k[1])},
        constraints={k: v for k, v in snapshot.constraints.items() if ours(k[0], k[1])},
        indexes={k: v for k, v in snapshot.indexes.items() if ours(v.schema, v.table)},
        triggers={k: v for k, v in snapshot.triggers.items() if ours(k[0], k[1])},
        rules={k: v for k, v in snapshot.rules.items() if ours(k[0], k[1])},
        policies={k: v for k, v in snapshot.policies.items() if ours(k[0], k[1])},
        functions={k: v for k, v in snapshot.functions.items() if k[0] != schema},
        types={k: v for k, v in snapshot.types.items() if k[0] != schema},
    )


def _pending(desired: DesiredState, catalog: Catalog) -> bool:
    recorded = catalog.migrations.recorded()
    return any(m.number not in recorded for m in desired.migrations)


def _stale(desired: DesiredState) -> list[str]:
    """The files only: the structure compared here does not depend on the declaration (owners
    and privileges are other concerns'), which differs per environment (its owner); `make
    test` checks the declaration the checked-in lock was made with."""
    lock = desired.expected
    return [] if lock is None else stale(lock, desired.migrations, "")


def differences(desired: DesiredState, catalog: Catalog) -> list[Difference]:
    """The live database against the lock, less what other concerns own; none without a lock,
    with a stale one (its own finding), or, for what is missing, while migrations are pending."""
    lock, live = desired.expected, catalog.objects
    if lock is None or live is None or _stale(desired):
        return []
    found = compare(
        _only_version_table(live),
        _only_version_table(lock.snapshot),
        Options(ignore=OWNED_ELSEWHERE),
    )
    if _pending(desired, catalog):
        # The pending migrations create what is missing; apply compares again once they ran.
        found = [d for d in found if d.left is not None]
    return found


def _stray_schemas(desired: DesiredState, catalog: Catalog) -> list[str]:
    """Schemas owned by the owner or a runtime role (the app login, a group, a declared IAM
    identity) that are neither managed nor legacy: the owner can create schemas (it is a
    member of cloudsqlsuperuser, which owns the database), and what it makes by hand there
    escapes the lock. Schemas of other owners are other services'."""
    ours = {desired.owner, *runtime_roles(desired)}
    known = {*desired.schema_names, *desired.layout.protected_schemas, desired.version_table.schema}
    return sorted(
        name for name, info in catalog.schemas.items() if info.owner in ours and name not in known
    )


def _value(value: object) -> str:
    if value is None:
        return "none"
    return ", ".join(value) if isinstance(value, list) else str(value)


def _remedy(desired: DesiredState, codes: str, objects: list[str]) -> str:
    return (
        f"the migrations of bootstrap_sql/ (and so {LOCK_NAME}) expect otherwise, and an applied "
        "migration never runs again: add a new migration bootstrap_sql/NNN_restore_<what>.sql "
        f"that brings {objects[0]}{' and the others listed' if len(objects) > 1 else ''} back "
        f"to what the lock says, then `{REFRESH}` and `{command('apply')}`; if the live "
        f"state is the one wanted, write the migration that makes it so and refresh the lock "
        f"({codes})"
    )


def findings(desired: DesiredState, catalog: Catalog) -> list[Finding]:
    out: list[Finding] = []
    problems = _stale(desired)
    if problems:
        out.append(
            Finding(
                "lock-stale",
                Severity.HIGH,
                f"{LOCK_NAME} does not match the migrations: " + "; ".join(problems),
                "the structure of the managed schemas is not checked until it matches",
                tuple(problems),
                remedy=f"run `{REFRESH}` and commit {LOCK_NAME} with the migrations (an applied "
                "migration's file must never be deleted or edited: restore it from version "
                "control if that is what happened)",
            )
        )
    stray = _stray_schemas(desired, catalog)
    if stray:
        out.append(
            Finding(
                "schema-unexpected",
                Severity.HIGH,
                f"schema-unexpected: {', '.join(stray)} (no migration makes it, owned by a role "
                "this tool manages)",
                "objects outside the expected schema, with the owner's rights over the new "
                "layout: nothing checks them and the lock does not know them",
                tuple(f"schema {name}: owner {catalog.schemas[name].owner}" for name in stray),
                remedy="if it is wanted, add a migration that creates it (CREATE SCHEMA IF NOT "
                f"EXISTS) and what it holds, then `{REFRESH}` and `nucleus-provision apply`; if "
                "not, its owner drops it once nothing uses it (this tool never drops a schema)",
            )
        )
    grouped: dict[str, list[Difference]] = defaultdict(list)
    for d in differences(desired, catalog):
        grouped[code(d)].append(d)
    for name, diffs in sorted(grouped.items()):
        objects = [d.object for d in diffs]
        details = tuple(
            f"{d.object}: live {_value(d.left)}, expected {_value(d.right)}" for d in diffs
        )
        shown = ", ".join(objects[:5]) + (
            f" and {len(objects) - 5} more" if len(objects) > 5 else ""
        )
        out.append(
            Finding(
                name,
                Severity.HIGH,
                f"{name.replace('-', ' ')}: {shown}",
                "the database differs from what the migrations make (schema.lock)",
                details,
                remedy=None if name == "index-invalid" else _remedy(desired, name, objects),
                items=tuple(
                    Item(
                        f"{d.kind} {d.object}",
                        None if d.right is None else _value(d.right),
                        None if d.left is None else _value(d.left),
                    )
                    for d in diffs
                ),
            )
        )
    return out


def actions(desired: DesiredState, catalog: Catalog, context: Context) -> list[Action]:
    """An invalid index (a failed CREATE INDEX CONCURRENTLY or REINDEX) that the lock expects
    valid is rebuilt CONCURRENTLY, as the owner, outside a transaction: live reads and writes
    never wait on it. Everything else needs a migration (see `findings`)."""
    planned = []
    for d in differences(desired, catalog):
        if code(d) != "index-invalid":
            continue
        schema, name = d.object.removeprefix("index ").split(".", 1)
        planned.append(
            Action(
                ActionKind.REBUILD_INDEX,
                Session.OWNER,
                f"index {schema}.{name} is invalid (a concurrent build or reindex failed); "
                "REINDEX CONCURRENTLY builds it again without blocking reads or writes",
                (Sql(f"REINDEX INDEX CONCURRENTLY {ident(schema, name)}"),),
                transactional=False,
                indexes=((schema, name),),
            )
        )
    return planned
