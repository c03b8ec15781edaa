"""`inspect`: the seed's hand-written "Database State Analysis", computed.

`analyze(layout, catalog)` is pure: it compares the expected layout with a catalog snapshot
and returns a report (plain data) whose findings carry a stable `code`, a `severity` and a
human `message`. Rendering to text, markdown or JSON is separate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum

from provision.catalog import SUPERUSER_GROUP, Catalog, layout_objects
from provision.layout import Layout


class Severity(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


@dataclass(frozen=True)
class Finding:
    code: str
    severity: Severity
    message: str
    impact: str = ""
    details: tuple[str, ...] = ()


@dataclass(frozen=True)
class Report:
    database: str
    connected_as: str
    server_version: int
    schemas: list[dict[str, object]]
    expected_schemas: list[dict[str, object]]
    migrations_table: dict[str, object]
    extensions: list[dict[str, object]]
    roles: dict[str, object]
    findings: list[Finding] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _schema_findings(layout: Layout, catalog: Catalog) -> list[Finding]:
    findings = []
    missing = [s for s in layout.schemas if s.name not in catalog.schemas]
    if missing:
        details = tuple(
            f"{s.name}: missing"
            + (f" (legacy {s.legacy} exists)" if s.legacy in catalog.schemas else "")
            for s in missing
        )
        legacy_present = [s.legacy for s in missing if s.legacy in catalog.schemas]
        message = (
            f"{len(missing)} of {len(layout.schemas)} schemas the code expects are missing: "
            + ", ".join(s.name for s in missing)
        )
        if legacy_present:
            message += f"; the database has the old names instead ({', '.join(legacy_present)})"
        findings.append(
            Finding(
                "schema-name-mismatch",
                Severity.CRITICAL,
                message,
                "SQLAlchemy models that use the new schema names fail",
                details,
            )
        )

    renamed = [
        t
        for t in layout.tables
        if t.legacy
        and (t.schema, t.name) not in catalog.relations
        and t.legacy in catalog.relations
    ]
    if renamed:
        findings.append(
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
        for t in layout.tables
        if t.schema in catalog.schemas
        and (t.schema, t.name) not in catalog.relations
        and t not in renamed
    ]
    if missing_tables:
        findings.append(
            Finding(
                "table-missing",
                Severity.HIGH,
                "expected tables are missing: " + ", ".join(t.qualified for t in missing_tables),
                "code that uses them fails",
                tuple(t.qualified for t in missing_tables),
            )
        )
    return findings


def _migrations_findings(layout: Layout, catalog: Catalog) -> list[Finding]:
    mt, info = layout.migrations_table, catalog.migrations
    findings = []
    if not info.exists:
        findings.append(
            Finding(
                "migrations-table-shape",
                Severity.HIGH,
                f"{mt.qualified} does not exist",
                "migrations cannot be tracked",
            )
        )
        return findings
    missing = [c for c in mt.required_columns if c not in info.columns]
    if missing:
        findings.append(
            Finding(
                "migrations-table-shape",
                Severity.HIGH,
                f"{mt.qualified} has columns {', '.join(info.columns)}; expected {', '.join(mt.expected_columns)} "
                f"(missing: {', '.join(missing)})",
                "cannot track new migrations",
                tuple(missing),
            )
        )
    if info.owner != layout.owner:
        findings.append(
            Finding(
                "migrations-table-owner",
                Severity.HIGH,
                f"{mt.qualified} is owned by {info.owner}, not {layout.owner}",
                f"{layout.owner} cannot alter the table structure",
            )
        )
    if not info.readable:
        findings.append(
            Finding(
                "migrations-table-unreadable",
                Severity.MEDIUM,
                f"{catalog.roles.current_user} cannot read {mt.qualified}, so recorded migrations are unknown",
                "inspect cannot tell which migrations ran",
            )
        )
    return findings


def _extension_findings(layout: Layout, catalog: Catalog) -> list[Finding]:
    findings = []
    for name in layout.extensions:
        ext = catalog.extensions.get(name)
        if ext is None or ext.default_version is None and ext.installed_version is None:
            findings.append(
                Finding(
                    "extension-missing",
                    Severity.CRITICAL,
                    f"extension {name} is not installed and not available on this server",
                    "it cannot be created",
                    (name,),
                )
            )
        elif ext.installed_version is None:
            findings.append(
                Finding(
                    "extension-missing",
                    Severity.MEDIUM,
                    f"extension {name} is not installed (version {ext.default_version} is available)",
                    "embeddings (memory schema) cannot be stored",
                    (name,),
                )
            )
    return findings


def _ownership_and_record_findings(layout: Layout, catalog: Catalog) -> list[Finding]:
    findings = []
    owner = catalog.roles.roles.get(layout.owner)
    if owner is None or not owner.exists:
        findings.append(
            Finding(
                "owner-role-missing",
                Severity.CRITICAL,
                f"role {layout.owner} does not exist",
                "the new layout has no owner",
                (layout.owner,),
            )
        )
    wrong = [
        f"{o.kind} {o.qualified} is owned by {o.owner}"
        for o in layout_objects(layout, catalog)
        if o.owner != layout.owner
    ]
    if wrong:
        findings.append(
            Finding(
                "layout-owner-mismatch",
                Severity.HIGH,
                f"{len(wrong)} object(s) of the new layout are not owned by {layout.owner}",
                f"{layout.owner} cannot alter them; migrations would fail with permission denied",
                tuple(wrong),
            )
        )
    if catalog.migrations.records_known or not catalog.migrations.exists:
        recorded = catalog.migrations.recorded_versions
        unexplained = [
            f"schema {s.name} (migration {s.migration})"
            for s in layout.schemas
            if s.name in catalog.schemas and s.migration not in recorded
        ]
        unexplained += [
            f"table {t.qualified} (migration {t.migration})"
            for t in layout.tables
            if (t.schema, t.name) in catalog.relations and t.migration not in recorded
        ]
        if unexplained:
            findings.append(
                Finding(
                    "unrecorded-objects",
                    Severity.HIGH,
                    f"{len(unexplained)} object(s) of the new layout exist but no recorded migration created them "
                    "(a migration was run by hand or half run)",
                    "the next run must converge from a partial state",
                    tuple(unexplained),
                )
            )
    return findings


def analyze(layout: Layout, catalog: Catalog) -> Report:
    """Compare the expected layout with the catalog: what the seed's analysis did by hand."""
    expected = {s.name for s in layout.schemas}
    legacy = {s.legacy for s in layout.schemas if s.legacy} | set(layout.protected_schemas)

    def status(name: str) -> str:
        return "expected" if name in expected else "legacy" if name in legacy else "other"

    schemas = [
        {
            "name": s.name,
            "owner": s.owner,
            "status": status(s.name),
            "tables": [
                {"name": r.name, "kind": r.kind, "owner": r.owner}
                for r in catalog.relations_in(s.name)
                if r.ownable
            ],
        }
        for s in sorted(
            catalog.schemas.values(), key=lambda s: (status(s.name) != "legacy", s.name)
        )
    ]
    info, mt = catalog.migrations, layout.migrations_table
    roles = catalog.roles
    report = Report(
        database=catalog.database,
        connected_as=roles.current_user,
        server_version=roles.server_version_num,
        schemas=schemas,
        expected_schemas=[
            {
                "name": s.name,
                "present": s.name in catalog.schemas,
                "owner": catalog.schemas[s.name].owner if s.name in catalog.schemas else None,
                "legacy": s.legacy,
            }
            for s in layout.schemas
        ],
        migrations_table={
            "name": mt.qualified,
            "exists": info.exists,
            "owner": info.owner,
            "columns": list(info.columns),
            "expected_columns": list(mt.expected_columns),
            "missing_columns": [c for c in mt.required_columns if c not in info.columns]
            if info.exists
            else [],
            "readable": info.readable,
            "legacy_rows": [r.migration_name for r in info.records if r.version is None],
            "recorded_versions": sorted(info.recorded_versions),
        },
        extensions=[
            {
                "name": e.name,
                "installed_version": e.installed_version,
                "available_version": e.default_version,
                "owner": e.owner,
            }
            for e in sorted(catalog.extensions.values(), key=lambda e: e.name)
        ],
        roles={
            "admin": layout.admin,
            "owner": layout.owner,
            "admin_is_superuser": roles.roles.get(layout.admin, None) is not None
            and roles.roles[layout.admin].superuser,
            "owner_exists": roles.roles[layout.owner].exists
            if layout.owner in roles.roles
            else False,
            "admin_can_set_role_owner": roles.admin_can_set_owner,
            "admin_can_grant_owner": roles.admin_can_grant_owner,
            "admin_can_set_role_group": roles.admin_can_set_group,
            "owner_inherits_group": roles.owner_inherits_group,
            f"{SUPERUSER_GROUP}_members": list(roles.superuser_group_members),
        },
        findings=(
            _schema_findings(layout, catalog)
            + _migrations_findings(layout, catalog)
            + _extension_findings(layout, catalog)
            + _ownership_and_record_findings(layout, catalog)
        ),
    )
    return report
