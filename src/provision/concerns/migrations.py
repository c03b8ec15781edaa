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

from provision.actions import Action, ActionKind, Context, Session, Sql
from provision.catalog import Catalog, MigrationRecord
from provision.desired import DesiredState, Table
from provision.errors import ChecksumMismatch, PermissionProblem, ProvisionError, VersionClash
from provision.findings import Finding, Severity
from provision.hints import command
from provision.migrations import (
    Migration,
    check_no_transaction,
    check_protected,
    index_names,
    version_number,
)
from provision.sql import ident


def _renamed(desired: DesiredState, catalog: Catalog) -> list[Table]:
    """Tables that exist only under their legacy name."""
    return [
        t
        for t in desired.layout.tables
        if t.legacy
        and (t.schema, t.name) not in catalog.relations
        and t.legacy in catalog.relations
    ]


def _recorded_numbers(catalog: Catalog) -> frozenset[int]:
    if catalog.migrations.exists and not catalog.migrations.records_known:
        return frozenset()
    return frozenset(catalog.migrations.recorded())


def _lost(what: list[str], desired: DesiredState) -> str:
    return (
        f"{', '.join(what)} existed once: the migration that creates "
        f"{'it' if len(what) == 1 else 'them'} is recorded in {desired.version_table.qualified}, "
        "so apply will not run it again. Restore from a backup, or add a new migration that "
        "recreates what was dropped"
    )


def _name_findings(desired: DesiredState, catalog: Catalog) -> list[Finding]:
    found = []
    recorded = _recorded_numbers(catalog)
    schemas = desired.layout.schemas
    missing = [s for s in schemas if s.name not in catalog.schemas]
    lost_schemas = [s.name for s in missing if version_number(s.migration) in recorded]
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
                remedy=_lost(lost_schemas, desired) if lost_schemas else None,
            )
        )
    renamed = _renamed(desired, catalog)
    lost_renamed = [t.qualified for t in renamed if version_number(t.migration) in recorded]
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
                remedy=_lost(lost_renamed, desired) if lost_renamed else None,
            )
        )
    missing_tables = [
        t
        for t in desired.layout.tables
        if t.schema in catalog.schemas
        and (t.schema, t.name) not in catalog.relations
        and t not in renamed
    ]
    lost_tables = [t.qualified for t in missing_tables if version_number(t.migration) in recorded]
    if missing_tables:
        found.append(
            Finding(
                "table-missing",
                Severity.HIGH,
                "expected tables are missing: " + ", ".join(t.qualified for t in missing_tables),
                "code that uses them fails",
                tuple(t.qualified for t in missing_tables),
                remedy=_lost(lost_tables, desired) if lost_tables else None,
            )
        )
    return found


def _unrecorded_findings(desired: DesiredState, catalog: Catalog) -> list[Finding]:
    info = catalog.migrations
    if info.exists and not info.records_known:
        return []  # which migrations ran is unknown; the version table's finding says so
    recorded = _recorded_numbers(catalog)
    unexplained = [
        f"schema {s.name} (migration {s.migration})"
        for s in desired.layout.schemas
        if s.name in catalog.schemas and version_number(s.migration) not in recorded
    ]
    unexplained += [
        f"table {t.qualified} (migration {t.migration})"
        for t in desired.layout.tables
        if (t.schema, t.name) in catalog.relations and version_number(t.migration) not in recorded
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


def _file_missing_findings(desired: DesiredState, catalog: Catalog) -> list[Finding]:
    """Versions recorded as applied whose file is gone from the directory: the history the
    lock and every other environment are built from has lost a step."""
    files = {m.number for m in desired.migrations}
    lost = sorted(
        (number, record)
        for number, record in catalog.migrations.recorded().items()
        if number not in files
    )
    if not lost:
        return []
    names = [r.migration_name or r.version or str(n) for n, r in lost]
    return [
        Finding(
            "migration-file-missing",
            Severity.HIGH,
            f"applied migration(s) with no file in the migrations directory: {', '.join(names)}",
            "a fresh environment would not get what they made; the lock no longer describes "
            "this database",
            tuple(f"version {r.version} ({r.migration_name}) is recorded" for _, r in lost),
            remedy="restore the file(s) from version control (`git log --diff-filter=D --name-only "
            "-- bootstrap_sql/` finds the commit that deleted them): an applied migration stays "
            "in the directory for good; to undo what it did, add a new migration",
        )
    ]


def findings(desired: DesiredState, catalog: Catalog) -> list[Finding]:
    return (
        _name_findings(desired, catalog)
        + _unrecorded_findings(desired, catalog)
        + _file_missing_findings(desired, catalog)
    )


def pending(desired: DesiredState, catalog: Catalog) -> tuple[str, ...]:
    """Versions of the files not recorded yet, in order."""
    recorded = catalog.migrations.recorded()
    return tuple(m.version for m in desired.migrations if m.number not in recorded)


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
    # The file is parsed here, when it is about to run: its parse tree feeds the guard rail
    # (a friendly early refusal; the database proves the rest when it runs).
    vt = desired.version_table
    check_protected(
        migration, desired.layout.protected_schemas, (vt.schema, vt.name), desired.schema_names
    )
    check_no_transaction(migration, desired.schema_names)
    reason = f"{migration.filename} is not recorded"
    if _claiming_row(catalog, migration) is not None:
        reason += (
            " (a legacy row names it, but the catalog decides: it runs idempotently and is "
            "then recorded)"
        )
    # Pinned for the migration: a role-level search_path (e.g. one naming a legacy schema)
    # must not decide where unqualified names go.
    scope = "true" if migration.transactional else "false"
    statements: tuple[Sql, ...] = (Sql(f"SELECT set_config('search_path', 'public', {scope})"),)
    indexes = index_names(migration) if not migration.transactional else ()
    # A CREATE INDEX CONCURRENTLY that failed left an invalid index, which IF NOT EXISTS would
    # then skip: it is dropped first, so the rerun builds it again.
    statements += tuple(
        Sql(f"DROP INDEX CONCURRENTLY IF EXISTS {ident(schema, name)}")
        for schema, name in indexes
        if (schema, name) in catalog.invalid_indexes
    )
    statements += tuple(Sql(s.sql) for s in migration.statements)
    if not migration.transactional:
        statements += (Sql("RESET search_path"),)
    return Action(
        ActionKind.MIGRATE,
        Session.OWNER,
        reason,
        statements,
        migration=migration,
        transactional=migration.transactional,
        record=_record_sql(desired, catalog, migration),
        indexes=indexes,
    )


def _slug(name: str | None) -> str | None:
    """A migration name without its version (`001_init_schemas` -> `init_schemas`)."""
    if name is None or "_" not in name:
        return None
    return name.split("_", 1)[1]


def actions(desired: DesiredState, catalog: Catalog, context: Context) -> list[Action]:
    accept_changed = context.accept_changed
    accepted = {version_number(v) for v in accept_changed}
    unknown = accepted - {m.number for m in desired.migrations}
    if unknown:
        shown = ", ".join(v for v in accept_changed if version_number(v) in unknown)
        raise ProvisionError(
            f"--accept-changed names unknown version(s): {shown}",
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
    recorded = info.recorded()
    planned = []
    changed = []
    for migration in desired.migrations:
        record = recorded.get(migration.number)
        if record is None:
            planned.append(_run(desired, catalog, migration))
            continue
        if record.checksum == migration.checksum:
            continue  # the same file, perhaps renumbered as written (`001_x` -> `1_x`)
        if _slug(record.migration_name) != migration.slug:
            # Two branches both added this version: another file ran under it. Accepting
            # the checksum would silently skip this file's SQL, so it is never offered.
            raise VersionClash(
                f"{migration.filename}: version {migration.number} is recorded for another "
                f"migration ({record.migration_name}); two files claim one version",
                hint="renumber this file to the next free version (after "
                f"{max(recorded)}), then run again; --accept-changed does not apply to a clash",
            )
        if migration.number in accepted:
            planned.append(
                Action(
                    ActionKind.ACCEPT_CHANGED,
                    Session.OWNER,
                    f"{migration.filename} changed after it was applied; accepted by "
                    f"--accept-changed {migration.version} (its SQL is not run again)",
                    (
                        Sql(
                            f"UPDATE {desired.version_table.ident} SET checksum = :checksum "
                            "WHERE id = :id",
                            {"checksum": migration.checksum, "id": record.id},
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
            "edited file deliberately with "
            f"`{command(f'apply --accept-changed {migration.version}')}` (like Flyway's repair)",
        )
    return planned
