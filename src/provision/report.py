"""`inspect`: the seed's hand-written "Database State Analysis", computed.

`build_report(desired, catalog)` is pure: what the catalog shows (schemas, tables and owners,
the version table, extensions, the role facts that decide ownership changes) and every
concern's findings, as typed, frozen data. Rendering it is `provision.render`'s job.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any

from provision.catalog import Access, Catalog
from provision.concerns import all_findings
from provision.desired import DesiredState
from provision.findings import Finding


class SchemaStatus(StrEnum):
    EXPECTED = "expected"  # one of the new layout's schemas
    LEGACY = "legacy"  # an old schema the live services still use
    OTHER = "other"


@dataclass(frozen=True)
class TableRow:
    name: str
    kind: str
    owner: str


@dataclass(frozen=True)
class SchemaRow:
    name: str
    owner: str
    status: SchemaStatus
    tables: tuple[TableRow, ...]


@dataclass(frozen=True)
class ExpectedSchema:
    name: str
    present: bool
    owner: str | None
    legacy: str | None


@dataclass(frozen=True)
class VersionTableReport:
    name: str
    exists: bool
    owner: str | None
    columns: tuple[str, ...]
    expected_columns: tuple[str, ...]
    missing_columns: tuple[str, ...]
    readable: bool
    legacy_rows: tuple[str | None, ...]
    recorded_versions: tuple[str, ...]


@dataclass(frozen=True)
class ExtensionRow:
    name: str
    installed_version: str | None
    available_version: str | None
    owner: str | None


@dataclass(frozen=True)
class RolesReport:
    admin: str
    owner: str
    admin_is_superuser: bool
    owner_exists: bool
    admin_can_set_role_owner: bool
    admin_can_grant_owner: bool
    admin_can_set_role_group: bool
    owner_inherits_group: bool
    cloudsqlsuperuser_members: tuple[str, ...]


@dataclass(frozen=True)
class Report:
    database: str
    connected_as: str
    server_version: int
    schemas: tuple[SchemaRow, ...]
    expected_schemas: tuple[ExpectedSchema, ...]
    migrations_table: VersionTableReport
    extensions: tuple[ExtensionRow, ...]
    roles: RolesReport
    findings: tuple[Finding, ...]
    # Who can do what: role x schema (usage, read, write, create, owner), inherited included.
    privileges: tuple[Access, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_report(desired: DesiredState, catalog: Catalog) -> Report:
    """Compare the desired state with the catalog: what the seed's analysis did by hand."""
    expected = set(desired.schema_names)
    legacy = {s.legacy for s in desired.layout.schemas if s.legacy}
    legacy |= set(desired.layout.protected_schemas)

    def status(name: str) -> SchemaStatus:
        if name in expected:
            return SchemaStatus.EXPECTED
        return SchemaStatus.LEGACY if name in legacy else SchemaStatus.OTHER

    schemas = tuple(
        SchemaRow(
            s.name,
            s.owner,
            status(s.name),
            tuple(
                TableRow(r.name, r.kind, r.owner) for r in catalog.relations_in(s.name) if r.ownable
            ),
        )
        for s in sorted(
            catalog.schemas.values(),
            key=lambda s: (status(s.name) != SchemaStatus.LEGACY, s.name),
        )
    )
    info, vt, facts = catalog.migrations, desired.version_table, catalog.roles
    admin, owner = facts.roles.get(desired.admin), facts.roles.get(desired.owner)
    return Report(
        database=catalog.database,
        connected_as=facts.current_user,
        server_version=facts.server_version_num,
        schemas=schemas,
        expected_schemas=tuple(
            ExpectedSchema(
                s.name,
                s.name in catalog.schemas,
                catalog.schemas[s.name].owner if s.name in catalog.schemas else None,
                s.legacy,
            )
            for s in desired.layout.schemas
        ),
        migrations_table=VersionTableReport(
            name=vt.qualified,
            exists=info.exists,
            owner=info.owner,
            columns=info.columns,
            expected_columns=tuple(c.name for c in vt.expected_columns),
            missing_columns=tuple(c for c in vt.required_names if c not in info.columns)
            if info.exists
            else (),
            readable=info.readable,
            legacy_rows=tuple(r.migration_name for r in info.records if r.version is None),
            recorded_versions=tuple(sorted(info.recorded_versions)),
        ),
        extensions=tuple(
            ExtensionRow(e.name, e.installed_version, e.default_version, e.owner)
            for e in sorted(catalog.extensions.values(), key=lambda e: e.name)
        ),
        roles=RolesReport(
            admin=desired.admin,
            owner=desired.owner,
            admin_is_superuser=admin is not None and admin.superuser,
            owner_exists=owner is not None and owner.exists,
            admin_can_set_role_owner=facts.admin_can_set_owner,
            admin_can_grant_owner=facts.admin_can_grant_owner,
            admin_can_set_role_group=facts.admin_can_set_group,
            owner_inherits_group=facts.owner_inherits_group,
            cloudsqlsuperuser_members=facts.superuser_group_members,
        ),
        findings=tuple(all_findings(desired, catalog)),
        privileges=catalog.access,
    )


def _names_any(text: str, names: Collection[str]) -> bool:
    """Does `text` name one of `names` as a whole identifier (`dna` in `dna.entity`, never in
    `dna_schema`)?"""
    return any(re.search(rf"(?<![\w$]){re.escape(n)}(?![\w$])", text) for n in names)


def narrow(report: Report, *, roles: Collection[str] = (), schemas: Collection[str] = ()) -> Report:
    """`inspect --role NAME --schema NAME`: the report about those roles and schemas only
    (either empty: no filter on it). Schemas, their tables and the expected schemas keep the
    named schemas; the who-can-do-what matrix keeps the named roles and schemas; findings are
    kept when their message or details name one of them as an identifier. The version table,
    extensions and the role facts are short and always shown."""

    def keep(finding: Finding) -> bool:
        text = " ".join((finding.message, *finding.details))
        return (not roles or _names_any(text, roles)) and (not schemas or _names_any(text, schemas))

    return replace(
        report,
        schemas=tuple(s for s in report.schemas if not schemas or s.name in schemas),
        expected_schemas=tuple(
            s for s in report.expected_schemas if not schemas or s.name in schemas
        ),
        privileges=tuple(
            a
            for a in report.privileges
            if (not roles or a.role in roles) and (not schemas or a.schema in schemas)
        ),
        findings=tuple(f for f in report.findings if keep(f)),
    )
