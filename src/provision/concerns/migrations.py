"""Migrations: the files of `bootstrap_sql/` and the objects they create.

Findings compare the layout's schemas and tables with the catalog (the seed's "schema name
mismatch" and "table name mismatch", tables missing, objects that exist although no
recorded migration created them: a hand-run or half-run file). Actions run each file that
is not recorded, as the owner (so everything it creates belongs to the owner), in its own
transaction together with its record.

What counts as "recorded" is this tool's `version` column only: a legacy row never counts as
one of our versions, whatever its name (`001_add_dna_profiles` is not `001`). A legacy row
that *claims* one of our files ran (`001_init_schemas`, written by hand) does not stop the
file from running (the catalog is the truth; every file converges from any prefix of
itself), and becomes its record afterwards. A file changed after it was applied stops the
plan, unless accepted with `--accept-changed` (Flyway's `repair`).
"""

from __future__ import annotations

from collections.abc import Iterable

from provision.actions import Action, ActionKind, Session, Sql
from provision.catalog import Catalog, MigrationRecord
from provision.desired import DesiredState, Table
from provision.errors import ChecksumMismatch, PermissionProblem, ProvisionError
from provision.findings import Finding, Severity
from provision.migrations import Migration


def _renamed(desired: DesiredState, catalog: Catalog) -> list[Table]:
    """Tables that exist only under their legacy name."""
    return [
        t
        for t in desired.layout.tables
        if t.legacy
        and (t.schema, t.name) not in catalog.relations
        and t.legacy in catalog.relations
    ]


def _name_findings(desired: DesiredState, catalog: Catalog) -> list[Finding]:
    found = []
    schemas = desired.layout.schemas
    missing = [s for s in schemas if s.name not in catalog.schemas]
    if missing:
        legacy_present = [s.legacy for s in missing if s.legacy in catalog.schemas]
        message = (
            f"{len(missing)} of {len(schemas)} schemas the code expects are missing: "
            + ", ".join(s.name for s in missing)
        )
        if legacy_present:
            message += f"; the database has the old names instead ({', '.join(legacy_present)})"
        found.append(
            Finding(
                "schema-name-mismatch",
                Severity.CRITICAL,
                message,
                "SQLAlchemy models that use the new schema names fail",
                tuple(
                    f"{s.name}: missing"
                    + (f" (legacy {s.legacy} exists)" if s.legacy in catalog.schemas else "")
                    for s in missing
                ),
            )
        )
    renamed = _renamed(desired, catalog)
    if renamed:
        found.append(
            Finding(
                "table-name-mismatch",
                Severity.CRITICAL,
                "tables exist only under their old names: "
                + ", ".join(
                    f"{t.legacy[0]}.{t.legacy[1]} (expected {t.qualified})"
                    for t in renamed
                    if t.legacy
                ),
                "foreign keys to the new table names fail",
                tuple(t.qualified for t in renamed),
            )
        )
    missing_tables = [
        t
        for t in desired.layout.tables
        if t.schema in catalog.schemas
        and (t.schema, t.name) not in catalog.relations
        and t not in renamed
    ]
    if missing_tables:
        found.append(
            Finding(
                "table-missing",
                Severity.HIGH,
                "expected tables are missing: " + ", ".join(t.qualified for t in missing_tables),
                "code that uses them fails",
                tuple(t.qualified for t in missing_tables),
            )
        )
    return found


def _unrecorded_findings(desired: DesiredState, catalog: Catalog) -> list[Finding]:
    info = catalog.migrations
    if info.exists and not info.records_known:
        return []  # which migrations ran is unknown; the version table's finding says so
    recorded = info.recorded_versions
    unexplained = [
        f"schema {s.name} (migration {s.migration})"
        for s in desired.layout.schemas
        if s.name in catalog.schemas and s.migration not in recorded
    ]
    unexplained += [
        f"table {t.qualified} (migration {t.migration})"
        for t in desired.layout.tables
        if (t.schema, t.name) in catalog.relations and t.migration not in recorded
    ]
    if not unexplained:
        return []
    return [
        Finding(
            "unrecorded-objects",
            Severity.HIGH,
            f"{len(unexplained)} object(s) of the new layout exist but no recorded migration "
            "created them (a migration was run by hand or half run)",
            "the next run must converge from a partial state",
            tuple(unexplained),
        )
    ]


def findings(desired: DesiredState, catalog: Catalog) -> list[Finding]:
    return _name_findings(desired, catalog) + _unrecorded_findings(desired, catalog)


def pending(desired: DesiredState, catalog: Catalog) -> tuple[str, ...]:
    """Versions of the files not recorded yet, in order."""
    recorded = catalog.migrations.recorded_versions
    return tuple(m.version for m in desired.migrations if m.version not in recorded)


def _claiming_row(catalog: Catalog, migration: Migration) -> MigrationRecord | None:
    """A legacy row (no version) whose name says this migration ran: a claim, never proof."""
    return next(
        (
            r
            for r in catalog.migrations.records
            if r.version is None and r.migration_name == migration.name
        ),
        None,
    )


def _record_sql(desired: DesiredState, catalog: Catalog, migration: Migration) -> Sql:
    table = desired.version_table.ident
    params: dict[str, object] = {
        "version": migration.version,
        "name": migration.name,
        "description": migration.description,
        "checksum": migration.checksum,
    }
    claimed = _claiming_row(catalog, migration)
    if claimed is not None:
        # A hand-written legacy row claims this migration ran. The catalog decided what to run;
        # now that it has run, that row becomes the record (its legacy columns stay untouched).
        return Sql(
            f"UPDATE {table} SET version = :version, description = :description, "
            "executed_at = now(), checksum = :checksum, execution_time_ms = :execution_time_ms "
            "WHERE id = :id",
            {**params, "id": claimed.id},
        )
    return Sql(
        f"INSERT INTO {table} (migration_name, applied_at, version, description, executed_at, "
        "checksum, execution_time_ms) VALUES (:name, now(), :version, :description, now(), "
        ":checksum, :execution_time_ms)",
        params,
    )


def _run(desired: DesiredState, catalog: Catalog, migration: Migration) -> Action:
    reason = f"{migration.filename} is not recorded"
    if _claiming_row(catalog, migration) is not None:
        reason += (
            " (a legacy row names it, but the catalog decides: it runs idempotently and is "
            "then recorded)"
        )
    # Pinned for the migration: a role-level search_path (e.g. one naming a legacy schema)
    # must not decide where unqualified names go, and DDL must not queue behind live traffic
    # forever.
    scope = "true" if migration.transactional else "false"
    statements: tuple[Sql, ...] = (
        Sql(
            f"SELECT set_config('search_path', 'public', {scope}), "
            f"set_config('lock_timeout', '10s', {scope})"
        ),
    )
    statements += tuple(Sql(s.sql) for s in migration.statements)
    if not migration.transactional:
        statements += (Sql("RESET search_path"), Sql("RESET lock_timeout"))
    return Action(
        ActionKind.MIGRATE,
        Session.OWNER,
        reason,
        statements + (_record_sql(desired, catalog, migration),),
        migration=migration,
        transactional=migration.transactional,
    )


def actions(
    desired: DesiredState, catalog: Catalog, *, accept_changed: Iterable[str] = ()
) -> list[Action]:
    accepted = frozenset(accept_changed)
    unknown = accepted - {m.version for m in desired.migrations}
    if unknown:
        raise ProvisionError(
            f"--accept-changed names unknown version(s): {', '.join(sorted(unknown))}",
            hint=f"versions in bootstrap_sql/: {', '.join(m.version for m in desired.migrations)}",
        )
    info = catalog.migrations
    if info.exists and not info.records_known:
        raise PermissionProblem(
            f"{desired.admin} cannot read {desired.version_table.qualified}, so which migrations "
            "ran is unknown",
            hint=f"give the run a session logged in as {desired.owner} (--owner-dsn, or users.owner "
            f"with --env): it reads the records and grants {desired.admin} SELECT again",
        )
    recorded = {r.version: r for r in info.records if r.version is not None}
    planned = []
    changed = []
    for migration in desired.migrations:
        record = recorded.get(migration.version)
        if record is None:
            planned.append(_run(desired, catalog, migration))
        elif record.checksum != migration.checksum:
            if migration.version in accepted:
                planned.append(
                    Action(
                        ActionKind.ACCEPT_CHANGED,
                        Session.OWNER,
                        f"{migration.filename} changed after it was applied; accepted by "
                        f"--accept-changed {migration.version} (its SQL is not run again)",
                        (
                            Sql(
                                f"UPDATE {desired.version_table.ident} SET checksum = :checksum "
                                "WHERE version = :version",
                                {"checksum": migration.checksum, "version": migration.version},
                            ),
                        ),
                    )
                )
            else:
                changed.append((migration, record))
    if changed:
        migration, record = changed[0]
        was = record.checksum[:12] if record.checksum else "none"
        raise ChecksumMismatch(
            f"{', '.join(m.filename for m, _ in changed)} changed after it was applied "
            f"(recorded checksum {was}..., file {migration.checksum[:12]}...)",
            hint="restore the applied file and put the change in a new migration, or accept the "
            f"edited file deliberately with --accept-changed {migration.version} (like Flyway's "
            "repair)",
        )
    return planned
