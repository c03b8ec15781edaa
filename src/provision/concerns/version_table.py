"""The version table, `public.migrations`: adopted in place, never replaced.

Production's table has the legacy columns `id, migration_name, applied_at`, belongs to
`postgres`, and old services still append to it. Adoption, run as the owner once the table
is its own: add the columns the code expects and Flyway's bookkeeping
(`desired.VersionTable`), backfill the legacy rows' description and time once (they never
get a version: a legacy row is never taken for one of our migrations), a unique index on
`version`, and SELECT/INSERT for the admin, its former owner, so the legacy tooling keeps
appending. Rows appended later keep NULL descriptions: they are not drift. On an empty
database the table is created in the same final shape, so every environment has
production's layout.
"""

from __future__ import annotations

from provision.actions import Action, ActionKind, Context, Session, Sql
from provision.catalog import Catalog
from provision.desired import DesiredState
from provision.findings import Finding, Severity
from provision.sql import ident


def findings(desired: DesiredState, catalog: Catalog) -> list[Finding]:
    vt, info = desired.version_table, catalog.migrations
    if not info.exists:
        return [
            Finding(
                "migrations-table-shape",
                Severity.HIGH,
                f"{vt.qualified} does not exist",
                "migrations cannot be tracked",
            )
        ]
    found = []
    missing = [c for c in vt.required_names if c not in info.columns]
    if missing:
        expected = ", ".join(c.name for c in vt.expected_columns)
        found.append(
            Finding(
                "migrations-table-shape",
                Severity.HIGH,
                f"{vt.qualified} has columns {', '.join(info.columns)}; expected {expected} "
                f"(missing: {', '.join(missing)})",
                "cannot track new migrations",
                tuple(missing),
            )
        )
    if info.owner != desired.owner:
        found.append(
            Finding(
                "migrations-table-owner",
                Severity.HIGH,
                f"{vt.qualified} is owned by {info.owner}, not {desired.owner}",
                f"{desired.owner} cannot alter the table structure",
            )
        )
    if not info.readable:
        found.append(
            Finding(
                "migrations-table-unreadable",
                Severity.MEDIUM,
                f"{catalog.roles.current_user} cannot read {vt.qualified}, so recorded "
                "migrations are unknown",
                "inspect cannot tell which migrations ran",
            )
        )
    return found


def actions(desired: DesiredState, catalog: Catalog, context: Context) -> list[Action]:
    vt, info = desired.version_table, catalog.migrations
    table = vt.ident
    statements: list[Sql] = []
    reasons: list[str] = []
    sequence = info.sequence
    if not info.exists:
        columns = ", ".join(f"{ident(c.name)} {c.definition}" for c in vt.columns)
        statements.append(Sql(f"CREATE TABLE {table} ({columns})"))
        reasons.append(
            f"{vt.qualified} does not exist: create it with the legacy and the expected "
            "columns, so every environment has the production shape"
        )
        sequence = ident(vt.schema, f"{vt.name}_id_seq")  # what `serial` names it
    else:
        missing = [c for c in vt.added_columns if c.name not in info.columns]
        if missing:
            added = ", ".join(
                f"ADD COLUMN IF NOT EXISTS {ident(c.name)} {c.definition}" for c in missing
            )
            statements.append(Sql(f"ALTER TABLE {table} {added}"))
            reasons.append(
                f"adopt {vt.qualified} in place: add {', '.join(c.name for c in missing)}; "
                "legacy columns and rows stay"
            )
            if {"migration_name", "applied_at"} <= set(info.columns):
                # Once, when the columns arrive. Rows that legacy tooling inserts later keep NULL
                # descriptions (and get executed_at from its default): they are not drift.
                statements.append(
                    Sql(
                        f"UPDATE {table} SET description = migration_name, "
                        "executed_at = applied_at WHERE version IS NULL"
                    )
                )
                reasons.append(
                    "backfill legacy rows (description, executed_at) without giving them a version"
                )
    if (vt.schema, vt.version_index) not in catalog.relations:
        statements.append(
            Sql(f"CREATE UNIQUE INDEX IF NOT EXISTS {ident(vt.version_index)} ON {table} (version)")
        )
        reasons.append("each version recorded at most once")
    # The admin (postgres) owned the table and its legacy tooling appended to it: once the
    # owner owns it, the admin keeps reading and appending only if granted to.
    admin = ident(desired.admin)
    handed_over = not info.exists or info.owner != desired.owner
    if handed_over or not (info.readable and info.insertable):
        statements.append(Sql(f"GRANT SELECT, INSERT ON {table} TO {admin}"))
    if sequence and (handed_over or not info.sequence_usable):
        statements.append(Sql(f"GRANT USAGE ON SEQUENCE {sequence} TO {admin}"))
    if handed_over or not (info.readable and info.insertable and info.sequence_usable):
        reasons.append(
            f"{desired.admin} keeps reading and appending to the version table once "
            f"{desired.owner} owns it"
        )
    if not statements:
        return []
    return [
        Action(ActionKind.ADOPT_VERSION_TABLE, Session.OWNER, "; ".join(reasons), tuple(statements))
    ]
