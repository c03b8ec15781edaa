"""The planner: a pure function from (desired layout, catalog snapshot, migration files) to an
ordered list of actions. No database, no I/O: tested on plain data.

Each action runs in one transaction in one session (the admin session as `postgres`, or the
owner session as `nucleus`) and carries its SQL and a one-line reason. Order:

1. extensions (`vector`), as the admin: only cloudsqlsuperuser members may create it;
2. ownership hand-off of what the admin owns but the owner should (the old migrations
   table, objects a hand-run of 001 created as `postgres`), by a route that works under
   Cloud SQL's rules (shared/docs/cloudsql.md, section 2), chosen and explained here;
3. adoption of `public.migrations` in place, as the owner: add the expected columns,
   backfill legacy rows, let the admin read it;
4. each pending migration, as the owner, with its record, in its own transaction;
   a legacy row never counts as one of our versions; an edited applied file stops the plan.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from sqlalchemy.dialects import postgresql

from provision.catalog import SUPERUSER_GROUP, Catalog
from provision.errors import ChecksumMismatch, PermissionProblem, ProvisionError
from provision.layout import Layout
from provision.migrations import Migration

_quote = postgresql.dialect().identifier_preparer.quote


def ident(*parts: str) -> str:
    """A (qualified) identifier, quoted only where PostgreSQL needs it (`dna."values"`)."""
    return ".".join(_quote(p) for p in parts)


class Session(StrEnum):
    ADMIN = "admin"
    OWNER = "owner"


@dataclass(frozen=True)
class Sql:
    text: str
    params: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Action:
    kind: str
    session: Session
    reason: str
    statements: tuple[Sql, ...]
    migration: Migration | None = None
    transactional: bool = True


class RouteName(StrEnum):
    DIRECT = "direct"
    GRANT = "grant-then-direct"
    TWO_STEP = "two-step-via-cloudsqlsuperuser"


@dataclass(frozen=True)
class Route:
    name: RouteName
    reason: str


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    route: Route | None
    owner_via_set_role: bool  # the owner session is the admin session after SET ROLE owner
    pending: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.actions

    def needs(self, session: Session) -> bool:
        return any(a.session == session for a in self.actions)


# -- ownership routes ---------------------------------------------------------------------------


def choose_route(layout: Layout, catalog: Catalog, owner_session: bool) -> Route:
    """How objects owned by the admin can become the owner's, or a PermissionProblem saying why not."""
    facts, admin, owner = catalog.roles, layout.admin, layout.owner
    if facts.admin_can_set_owner:
        return Route(
            RouteName.DIRECT,
            f"{admin} may SET ROLE {owner}, so it can ALTER ... OWNER TO {owner} itself",
        )
    if facts.admin_can_grant_owner:
        return Route(
            RouteName.GRANT,
            f"{admin} holds ADMIN OPTION on {owner} (PostgreSQL 15 or older, or a role "
            f"{admin} created): it grants itself {owner}, then hands objects over",
        )
    if facts.admin_can_set_group and facts.owner_inherits_group and owner_session:
        return Route(
            RouteName.TWO_STEP,
            f"{admin} cannot SET ROLE {owner} (PostgreSQL {facts.server_major}: no ADMIN OPTION on a user "
            f"created through the Cloud SQL API), but both are members of {SUPERUSER_GROUP}: {admin} hands "
            f"objects to {SUPERUSER_GROUP}, then the session logged in as {owner} takes them",
        )
    if facts.admin_can_set_group and facts.owner_inherits_group:
        raise PermissionProblem(
            f"handing objects to {owner} needs a session logged in as {owner}: {admin} cannot SET ROLE {owner} "
            f"and holds no ADMIN OPTION on it",
            hint=f"pass --owner-dsn postgresql://{owner}:PASSWORD@HOST:PORT/DB (or configure users.owner for --env)",
        )
    missing = []
    if not facts.owner_inherits_group:
        missing.append(f"{owner} is not a member of {SUPERUSER_GROUP}")
    if not facts.admin_can_set_group:
        missing.append(f"{admin} cannot SET ROLE {SUPERUSER_GROUP}")
    raise PermissionProblem(
        f"no way to hand objects from {admin} to {owner}: {admin} cannot SET ROLE {owner}, holds no ADMIN OPTION "
        f"on it, and {'; '.join(missing)}",
        hint=f"create {owner} through the Cloud SQL API (Terraform google_sql_user or `gcloud sql users create "
        f"{owner} --instance=INSTANCE`) so it joins {SUPERUSER_GROUP}, or have a role with ADMIN OPTION on "
        f"{owner} run: GRANT {_quote(owner)} TO {_quote(admin)}",
    )


def _handoff_actions(
    layout: Layout, catalog: Catalog, route: Route | None, objects: list[tuple[str, str, str]]
) -> list[Action]:
    """objects: (kind for ALTER, qualified name, current owner)."""
    if not objects:
        return []
    owner, admin = layout.owner, layout.admin
    foreign = [
        f"{kind} {name} (owner {current})"
        for kind, name, current in objects
        if current not in (admin, SUPERUSER_GROUP)
    ]
    if foreign:
        raise PermissionProblem(
            f"cannot hand to {owner} objects owned by neither {admin} nor {SUPERUSER_GROUP}: {', '.join(foreign)}",
            hint=f"have their owner run ALTER ... OWNER TO {_quote(owner)}, or drop them if they are leftovers",
        )
    assert route is not None
    names = ", ".join(name for _, name, _ in objects)
    if route.name == RouteName.TWO_STEP:
        first = [
            Sql(f"ALTER {kind} {name} OWNER TO {SUPERUSER_GROUP}")
            for kind, name, current in objects
            if current == admin
        ]
        second = [Sql(f"ALTER {kind} {name} OWNER TO {_quote(owner)}") for kind, name, _ in objects]
        actions = []
        if first:
            actions.append(
                Action(
                    "handoff-to-group",
                    Session.ADMIN,
                    f"step 1 of 2: {admin} hands {names} to {SUPERUSER_GROUP} ({admin} cannot SET ROLE {owner})",
                    tuple(first),
                )
            )
        actions.append(
            Action(
                "handoff-to-owner",
                Session.OWNER,
                f"step 2 of 2: {owner} takes {names} from {SUPERUSER_GROUP}",
                tuple(second),
            )
        )
        return actions
    statements = [Sql(f"ALTER {kind} {name} OWNER TO {_quote(owner)}") for kind, name, _ in objects]
    return [
        Action(
            "handoff",
            Session.ADMIN,
            f"{admin} hands {names} to {owner} ({route.reason})",
            tuple(statements),
        )
    ]


def _objects_to_hand_over(layout: Layout, catalog: Catalog) -> list[tuple[str, str, str]]:
    objects: list[tuple[str, str, str]] = []
    for schema in layout.schemas:
        info = catalog.schemas.get(schema.name)
        if info is not None and info.owner != layout.owner:
            objects.append(("SCHEMA", ident(schema.name), info.owner))
    kinds = {
        "table": "TABLE",
        "view": "VIEW",
        "materialized view": "MATERIALIZED VIEW",
        "foreign table": "FOREIGN TABLE",
        "sequence": "SEQUENCE",
    }
    layout_schemas = set(layout.schema_names)
    mt = layout.migrations_table
    for (schema, name), rel in sorted(catalog.relations.items()):
        in_scope = schema in layout_schemas or (schema, name) == (mt.schema, mt.name)
        if in_scope and rel.ownable and rel.owner != layout.owner:
            objects.append((kinds[rel.kind], ident(schema, name), rel.owner))
    return objects


# -- the migrations table -----------------------------------------------------------------------

_COLUMN_TYPES = {
    "version": "varchar(50)",
    "description": "text",
    "executed_at": "timestamptz",
    "checksum": "varchar(64)",
    "execution_time_ms": "integer",
}


def _adopt_actions(layout: Layout, catalog: Catalog) -> list[Action]:
    mt, info = layout.migrations_table, catalog.migrations
    table = ident(mt.schema, mt.name)
    statements: list[Sql] = []
    reasons: list[str] = []
    if not info.exists:
        statements.append(
            Sql(
                f"CREATE TABLE {table} (id serial PRIMARY KEY, migration_name varchar(255) NOT NULL UNIQUE, "
                "applied_at timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP, "
                + ", ".join(f"{c} {_COLUMN_TYPES[c]}" for c in _COLUMN_TYPES)
                + ")"
            )
        )
        reasons.append(
            f"{mt.qualified} does not exist: create it with the legacy and the expected columns, "
            "so every environment has the production shape"
        )
        columns_after = set(mt.legacy_columns) | set(_COLUMN_TYPES)
    else:
        missing = [c for c in _COLUMN_TYPES if c not in info.columns]
        if missing:
            statements.append(
                Sql(
                    f"ALTER TABLE {table} "
                    + ", ".join(f"ADD COLUMN IF NOT EXISTS {c} {_COLUMN_TYPES[c]}" for c in missing)
                )
            )
            reasons.append(
                f"adopt {mt.qualified} in place: add {', '.join(missing)}; legacy columns and rows stay"
            )
        columns_after = set(info.columns) | set(missing)
    index = f"{mt.name}_version_key"
    if (mt.schema, index) not in catalog.relations:
        statements.append(
            Sql(f"CREATE UNIQUE INDEX IF NOT EXISTS {_quote(index)} ON {table} (version)")
        )
        reasons.append("each version recorded at most once")
    legacy_unfilled = [r for r in info.records if r.version is None and r.description is None]
    needs_backfill = info.exists and ("description" not in info.columns or legacy_unfilled)
    if needs_backfill and {"migration_name", "applied_at"} <= columns_after:
        statements.append(
            Sql(
                f"UPDATE {table} SET description = migration_name, executed_at = applied_at "
                "WHERE version IS NULL AND description IS NULL"
            )
        )
        reasons.append(
            "backfill legacy rows (description, executed_at) without giving them a version"
        )
    # Once the owner owns the table the admin has no privilege on it unless granted one.
    admin_reads = (
        info.exists
        and info.owner == layout.owner
        and any(
            entry.startswith(f"{layout.admin}=") and "r" in entry.split("=", 1)[1].split("/")[0]
            for entry in info.acl
        )
    )
    if not admin_reads:
        statements.append(Sql(f"GRANT SELECT ON {table} TO {_quote(layout.admin)}"))
        reasons.append(
            f"{layout.admin} keeps reading the version table once {layout.owner} owns it (inspect, verify)"
        )
    if not statements:
        return []
    return [Action("adopt-migrations-table", Session.OWNER, "; ".join(reasons), tuple(statements))]


def _record_sql(layout: Layout, migration: Migration, catalog: Catalog) -> Sql:
    table = ident(layout.migrations_table.schema, layout.migrations_table.name)
    params = {
        "version": migration.version,
        "name": migration.name,
        "description": migration.description,
        "checksum": migration.checksum,
    }
    claimed = [
        r
        for r in catalog.migrations.records
        if r.version is None and r.migration_name == migration.name
    ]
    if claimed:
        # A hand-written legacy row claims this migration ran. The catalog decided what to run;
        # now that it has run, that row becomes the record (its legacy columns stay untouched).
        return Sql(
            f"UPDATE {table} SET version = :version, description = :description, executed_at = now(), "
            "checksum = :checksum, execution_time_ms = :execution_time_ms WHERE id = :id",
            {**params, "id": claimed[0].id},
        )
    return Sql(
        f"INSERT INTO {table} (migration_name, applied_at, version, description, executed_at, checksum, "
        "execution_time_ms) VALUES (:name, now(), :version, :description, now(), :checksum, :execution_time_ms)",
        params,
    )


def _migration_actions(
    layout: Layout,
    catalog: Catalog,
    migrations: Iterable[Migration],
    accept_changed: frozenset[str],
) -> list[Action]:
    recorded = {r.version: r for r in catalog.migrations.records if r.version is not None}
    actions = []
    table = ident(layout.migrations_table.schema, layout.migrations_table.name)
    changed = []
    for migration in migrations:
        record = recorded.get(migration.version)
        if record is None:
            claimed = any(
                r.migration_name == migration.name and r.version is None
                for r in catalog.migrations.records
            )
            reason = f"{migration.filename} is not recorded"
            if claimed:
                reason += " (a legacy row names it, but the catalog decides: it runs idempotently and is then recorded)"
            statements = (Sql("SET LOCAL lock_timeout = '10s'"),) if migration.transactional else ()
            statements += tuple(Sql(s.sql) for s in migration.statements)
            actions.append(
                Action(
                    "migrate",
                    Session.OWNER,
                    reason,
                    statements + (_record_sql(layout, migration, catalog),),
                    migration=migration,
                    transactional=migration.transactional,
                )
            )
        elif record.checksum != migration.checksum:
            if migration.version in accept_changed:
                actions.append(
                    Action(
                        "accept-changed",
                        Session.OWNER,
                        f"{migration.filename} changed after it was applied; accepted by --accept-changed "
                        f"{migration.version} (its SQL is not run again)",
                        (
                            Sql(
                                f"UPDATE {table} SET checksum = :checksum WHERE version = :version",
                                {"checksum": migration.checksum, "version": migration.version},
                            ),
                        ),
                    )
                )
            else:
                changed.append(migration)
    if changed:
        m = changed[0]
        raise ChecksumMismatch(
            f"{', '.join(c.filename for c in changed)} changed after it was applied "
            f"(recorded checksum {recorded[m.version].checksum[:12] if recorded[m.version].checksum else 'none'}..., "
            f"file {m.checksum[:12]}...)",
            hint="restore the applied file and put the change in a new migration, or accept the edited file "
            f"deliberately with --accept-changed {m.version} (like Flyway's repair)",
        )
    return actions


def make_plan(
    layout: Layout,
    catalog: Catalog,
    migrations: list[Migration],
    *,
    owner_session: bool,
    accept_changed: Iterable[str] = (),
) -> Plan:
    """The ordered actions that bring the catalog to the layout; empty when it already matches."""
    facts = catalog.roles
    owner_role = facts.roles.get(layout.owner)
    if owner_role is None or not owner_role.exists:
        raise ProvisionError(
            f"role {layout.owner} does not exist, so nothing can be handed to it",
            hint=f"create it through Cloud SQL (Terraform google_sql_user, or `gcloud sql users create {layout.owner} "
            "--instance=INSTANCE`), then run again",
        )
    unknown = set(accept_changed) - {m.version for m in migrations}
    if unknown:
        raise ProvisionError(
            f"--accept-changed names unknown version(s): {', '.join(sorted(unknown))}",
            hint=f"versions in bootstrap_sql/: {', '.join(m.version for m in migrations)}",
        )

    actions: list[Action] = []
    for name in layout.extensions:
        ext = catalog.extensions.get(name)
        if ext is not None and ext.installed_version is not None:
            continue
        if ext is None or ext.default_version is None:
            raise ProvisionError(
                f"extension {name} is not available on this server",
                hint="use a Cloud SQL for PostgreSQL version that ships it (pgvector: PostgreSQL 11+)",
            )
        actions.append(
            Action(
                "create-extension",
                Session.ADMIN,
                f"extension {name} is missing; version {ext.default_version} is available and "
                f"{layout.admin}, a member of {SUPERUSER_GROUP}, may create it",
                (Sql(f"CREATE EXTENSION IF NOT EXISTS {_quote(name)}"),),
            )
        )

    grants = []
    if not facts.owner_can_create_schemas:
        grants.append(
            Sql(f"GRANT CREATE ON DATABASE {_quote(catalog.database)} TO {_quote(layout.owner)}")
        )
    if not facts.owner_can_create_in_migrations_schema:
        grants.append(
            Sql(
                f"GRANT CREATE ON SCHEMA {_quote(layout.migrations_table.schema)} TO {_quote(layout.owner)}"
            )
        )
    if grants:
        actions.append(
            Action(
                "grant-privileges",
                Session.ADMIN,
                f"{layout.owner} is not a member of {SUPERUSER_GROUP} (a role created with SQL), so it "
                f"needs CREATE to own schemas and {layout.migrations_table.qualified}",
                tuple(grants),
            )
        )

    objects = _objects_to_hand_over(layout, catalog)
    pending_migrations = [
        m for m in migrations if m.version not in catalog.migrations.recorded_versions
    ]
    adopt = _adopt_actions(layout, catalog)
    owner_work = bool(objects or adopt or pending_migrations)
    route = (
        choose_route(layout, catalog, owner_session)
        if (objects or (owner_work and not owner_session))
        else None
    )
    if route is not None and route.name == RouteName.GRANT:
        actions.append(
            Action(
                "grant-membership",
                Session.ADMIN,
                route.reason,
                (Sql(f"GRANT {_quote(layout.owner)} TO {_quote(layout.admin)}"),),
            )
        )
    actions += _handoff_actions(layout, catalog, route, objects)
    actions += adopt
    actions += _migration_actions(layout, catalog, migrations, frozenset(accept_changed))
    owner_via_set_role = (
        not owner_session
        and route is not None
        and route.name in (RouteName.DIRECT, RouteName.GRANT)
    )
    return Plan(
        tuple(actions), route, owner_via_set_role, tuple(m.version for m in pending_migrations)
    )
