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

from provision.catalog import (
    SUPERUSER_GROUP,
    Catalog,
    MigrationRecord,
    OwnedObject,
    layout_objects,
)
from provision.errors import ChecksumMismatch, PermissionProblem, ProvisionError
from provision.layout import Layout
from provision.migrations import Migration
from provision.sql import ident


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
        f"{owner} run: GRANT {ident(owner)} TO {ident(admin)}",
    )


def _handoff_actions(
    layout: Layout, route: Route | None, objects: list[OwnedObject]
) -> list[Action]:
    if not objects:
        return []
    owner, admin = layout.owner, layout.admin
    foreign = [
        f"{o.kind} {o.qualified} (owner {o.owner})"
        for o in objects
        if o.owner not in (admin, SUPERUSER_GROUP)
    ]
    if foreign:
        raise PermissionProblem(
            f"cannot hand to {owner} objects owned by neither {admin} nor {SUPERUSER_GROUP}: {', '.join(foreign)}",
            hint=f"have their owner run ALTER ... OWNER TO {ident(owner)}, or drop them if they are leftovers",
        )
    assert route is not None
    names = ", ".join(o.qualified for o in objects)
    to_owner = tuple(Sql(f"ALTER {o.sql} OWNER TO {ident(owner)}") for o in objects)
    if route.name != RouteName.TWO_STEP:
        return [
            Action(
                "handoff",
                Session.ADMIN,
                f"{admin} hands {names} to {owner} ({route.reason})",
                to_owner,
            )
        ]
    # Two sessions, two transactions: an interruption between them leaves objects with
    # cloudsqlsuperuser, from where the next run's step 2 takes them.
    to_group = tuple(
        Sql(f"ALTER {o.sql} OWNER TO {SUPERUSER_GROUP}") for o in objects if o.owner == admin
    )
    actions = []
    if to_group:
        actions.append(
            Action(
                "handoff-to-group",
                Session.ADMIN,
                f"step 1 of 2: {admin} hands {names} to {SUPERUSER_GROUP} ({admin} cannot SET ROLE {owner})",
                to_group,
            )
        )
    actions.append(
        Action(
            "handoff-to-owner",
            Session.OWNER,
            f"step 2 of 2: {owner} takes {names} from {SUPERUSER_GROUP}",
            to_owner,
        )
    )
    return actions


def _objects_to_hand_over(layout: Layout, catalog: Catalog) -> list[OwnedObject]:
    return [
        o
        for o in layout_objects(layout, catalog, with_version_table=True)
        if o.owner != layout.owner
    ]


# -- the migrations table -----------------------------------------------------------------------

_COLUMN_TYPES = {
    "version": "varchar(50)",
    "description": "text",
    "executed_at": "timestamptz DEFAULT CURRENT_TIMESTAMP",
    "checksum": "varchar(64)",
    "execution_time_ms": "integer",
}


def _adopt_actions(layout: Layout, catalog: Catalog) -> list[Action]:
    mt, info = layout.migrations_table, catalog.migrations
    table = mt.ident
    statements: list[Sql] = []
    reasons: list[str] = []
    sequence = info.sequence
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
        sequence = ident(mt.schema, f"{mt.name}_id_seq")  # what `serial` names it
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
            if {"migration_name", "applied_at"} <= set(info.columns):
                # Once, when the columns arrive. Rows that legacy tooling inserts later keep NULL
                # descriptions (and get executed_at from its default): they are not drift.
                statements.append(
                    Sql(
                        f"UPDATE {table} SET description = migration_name, executed_at = applied_at "
                        "WHERE version IS NULL"
                    )
                )
                reasons.append(
                    "backfill legacy rows (description, executed_at) without giving them a version"
                )
    index = f"{mt.name}_version_key"
    if (mt.schema, index) not in catalog.relations:
        statements.append(
            Sql(f"CREATE UNIQUE INDEX IF NOT EXISTS {ident(index)} ON {table} (version)")
        )
        reasons.append("each version recorded at most once")
    # The admin (postgres) owned the table and its legacy tooling appended to it: once the owner
    # owns it, the admin keeps reading and appending only if granted to.
    handed_over = not info.exists or info.owner != layout.owner
    if handed_over or not (info.readable and info.insertable):
        statements.append(Sql(f"GRANT SELECT, INSERT ON {table} TO {ident(layout.admin)}"))
    if sequence and (handed_over or not info.sequence_usable):
        statements.append(Sql(f"GRANT USAGE ON SEQUENCE {sequence} TO {ident(layout.admin)}"))
    if handed_over or not (info.readable and info.insertable and info.sequence_usable):
        reasons.append(
            f"{layout.admin} keeps reading and appending to the version table once {layout.owner} owns it"
        )
    if not statements:
        return []
    return [Action("adopt-migrations-table", Session.OWNER, "; ".join(reasons), tuple(statements))]


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


def _record_sql(layout: Layout, migration: Migration, catalog: Catalog) -> Sql:
    table = layout.migrations_table.ident
    params = {
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
            f"UPDATE {table} SET version = :version, description = :description, executed_at = now(), "
            "checksum = :checksum, execution_time_ms = :execution_time_ms WHERE id = :id",
            {**params, "id": claimed.id},
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
    table = layout.migrations_table.ident
    changed = []
    for migration in migrations:
        record = recorded.get(migration.version)
        if record is None:
            reason = f"{migration.filename} is not recorded"
            if _claiming_row(catalog, migration) is not None:
                reason += " (a legacy row names it, but the catalog decides: it runs idempotently and is then recorded)"
            # Pinned for the migration: a role-level search_path (e.g. one naming a legacy schema)
            # must not decide where unqualified names go, and DDL must not queue behind live traffic forever.
            scope = "true" if migration.transactional else "false"
            statements = (
                Sql(
                    f"SELECT set_config('search_path', 'public', {scope}), "
                    f"set_config('lock_timeout', '10s', {scope})"
                ),
            )
            statements += tuple(Sql(s.sql) for s in migration.statements)
            if not migration.transactional:
                statements += (Sql("RESET search_path"), Sql("RESET lock_timeout"))
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
                (Sql(f"CREATE EXTENSION IF NOT EXISTS {ident(name)}"),),
            )
        )

    grants = []
    if not facts.owner_can_create_schemas:
        grants.append(
            Sql(f"GRANT CREATE ON DATABASE {ident(catalog.database)} TO {ident(layout.owner)}")
        )
    if not facts.owner_can_create_in_migrations_schema:
        grants.append(
            Sql(
                f"GRANT CREATE ON SCHEMA {ident(layout.migrations_table.schema)} TO {ident(layout.owner)}"
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

    info = catalog.migrations
    if info.exists and not info.records_known:
        raise PermissionProblem(
            f"{layout.admin} cannot read {layout.migrations_table.qualified}, so which migrations ran is unknown",
            hint=f"give the run a session logged in as {layout.owner} (--owner-dsn, or users.owner with --env): "
            f"it reads the records and grants {layout.admin} SELECT again",
        )
    objects = _objects_to_hand_over(layout, catalog)
    pending_migrations = [m for m in migrations if m.version not in info.recorded_versions]
    adopt = _adopt_actions(layout, catalog)
    migrate = _migration_actions(layout, catalog, migrations, frozenset(accept_changed))
    owner_work = bool(objects or adopt or migrate)
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
                (Sql(f"GRANT {ident(layout.owner)} TO {ident(layout.admin)}"),),
            )
        )
    actions += _handoff_actions(layout, route, objects)
    actions += adopt
    actions += migrate
    owner_via_set_role = (
        not owner_session
        and route is not None
        and route.name in (RouteName.DIRECT, RouteName.GRANT)
    )
    return Plan(
        tuple(actions), route, owner_via_set_role, tuple(m.version for m in pending_migrations)
    )
