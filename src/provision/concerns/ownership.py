"""Ownership: every object of the new layout (and the adopted version table) belongs to the
owner role, `nucleus`; the legacy schemas keep their owners.

Handing an object from `postgres` to `nucleus` is where Cloud SQL's rules bite
(shared/docs/cloudsql.md, section 2): `ALTER ... OWNER TO nucleus` needs the executing role
to own the object *and* to be able to `SET ROLE nucleus`. On PostgreSQL 16 a role created
through the Cloud SQL API grants `postgres` no ADMIN OPTION, so `postgres` can neither
SET ROLE to it nor grant itself the membership. `choose_route` picks what works, and says why:

- `direct`: the admin may already SET ROLE owner;
- `grant-then-direct`: the admin holds ADMIN OPTION on the owner (PostgreSQL 15 or older, or
  a role the admin created itself): it grants itself the owner, then hands over directly;
- `two-step-via-cloudsqlsuperuser`: both are members of `cloudsqlsuperuser`: the admin hands
  the object to that group, and a session logged in as the owner (an owner of the object
  through its membership, and able to SET ROLE to itself) takes it;
- none: a PermissionProblem naming the missing membership and the fix.

The same route decides how owner work (adoption, migrations) runs when the run has no
session logged in as the owner: after `SET ROLE owner` on the admin session (`direct`,
`grant-then-direct`), or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from provision.actions import Action, ActionKind, Context, Session, Sql
from provision.catalog import SUPERUSER_GROUP, Catalog
from provision.desired import DesiredState
from provision.errors import PermissionProblem, ProvisionError
from provision.findings import Finding, Item, Severity
from provision.sql import ident


class RouteName(StrEnum):
    DIRECT = "direct"
    GRANT = "grant-then-direct"
    TWO_STEP = "two-step-via-cloudsqlsuperuser"


@dataclass(frozen=True)
class Route:
    name: RouteName
    reason: str

    @property
    def via_set_role(self) -> bool:
        """Owner work can run on the admin session after SET ROLE owner."""
        return self.name in (RouteName.DIRECT, RouteName.GRANT)


@dataclass(frozen=True)
class OwnedObject:
    """A schema, or a relation with an owner of its own, that must belong to the owner."""

    kind: str  # "schema", "table", "view", "materialized view", "foreign table", "sequence"
    schema: str
    name: str | None
    owner: str

    @property
    def qualified(self) -> str:
        return self.schema if self.name is None else f"{self.schema}.{self.name}"

    @property
    def sql(self) -> str:
        """As in `ALTER <sql> OWNER TO ...`: e.g. `TABLE dna."values"`."""
        name = ident(self.schema) if self.name is None else ident(self.schema, self.name)
        return f"{self.kind.upper()} {name}"


def layout_objects(
    desired: DesiredState, catalog: Catalog, *, with_version_table: bool = False
) -> list[OwnedObject]:
    """Every existing object of the new layout (schemas first), and optionally the version
    table: whatever is in the new schemas, not only the tables the layout names, since a
    migration may create more."""
    objects = [
        OwnedObject("schema", s.name, None, catalog.schemas[s.name].owner)
        for s in desired.layout.schemas
        if s.name in catalog.schemas
    ]
    layout_schemas = set(desired.schema_names)
    vt = (desired.version_table.schema, desired.version_table.name)
    objects += [
        OwnedObject(r.kind, r.schema, r.name, r.owner)
        for key, r in sorted(catalog.relations.items())
        if r.ownable and (key[0] in layout_schemas or (with_version_table and key == vt))
    ]
    return objects


def findings(desired: DesiredState, catalog: Catalog) -> list[Finding]:
    found = []
    owner = catalog.roles.roles.get(desired.owner)
    if owner is None or not owner.exists:
        found.append(
            Finding(
                "owner-role-missing",
                Severity.CRITICAL,
                f"role {desired.owner} does not exist",
                "the new layout has no owner",
                (desired.owner,),
                items=(Item(f"role {desired.owner}", "exists", None),),
            )
        )
    wrong = [
        f"{o.kind} {o.qualified} is owned by {o.owner}"
        for o in layout_objects(desired, catalog)
        if o.owner != desired.owner
    ]
    if wrong:
        found.append(
            Finding(
                "layout-owner-mismatch",
                Severity.HIGH,
                f"{len(wrong)} object(s) of the new layout are not owned by {desired.owner}",
                f"{desired.owner} cannot alter them; migrations would fail with permission denied",
                tuple(wrong),
                items=tuple(
                    Item(f"{o.kind} {o.qualified}", f"owner {desired.owner}", f"owner {o.owner}")
                    for o in layout_objects(desired, catalog)
                    if o.owner != desired.owner
                ),
            )
        )
    return found


def require_owner_role(desired: DesiredState, catalog: Catalog) -> None:
    """Nothing can be handed to (or created as) an owner that does not exist."""
    owner = catalog.roles.roles.get(desired.owner)
    if owner is None or not owner.exists:
        raise ProvisionError(
            f"role {desired.owner} does not exist, so nothing can be handed to it",
            hint="create it through Cloud SQL (Terraform google_sql_user, or `gcloud sql users "
            f"create {desired.owner} --instance=INSTANCE`), then run again",
        )


def choose_route(desired: DesiredState, catalog: Catalog, owner_session: bool) -> Route:
    """How objects owned by the admin can become the owner's, or a PermissionProblem saying
    why not."""
    facts, admin, owner = catalog.roles, desired.admin, desired.owner
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
            f"{admin} cannot SET ROLE {owner} (PostgreSQL {facts.server_major}: no ADMIN OPTION "
            f"on a user created through the Cloud SQL API), but both are members of "
            f"{SUPERUSER_GROUP}: {admin} hands objects to {SUPERUSER_GROUP}, then the session "
            f"logged in as {owner} takes them",
        )
    if facts.admin_can_set_group and facts.owner_inherits_group:
        raise PermissionProblem(
            f"handing objects to {owner} needs a session logged in as {owner}: {admin} cannot "
            f"SET ROLE {owner} and holds no ADMIN OPTION on it",
            hint=f"pass --owner-dsn postgresql://{owner}:PASSWORD@HOST:PORT/DB (or configure "
            "users.owner for --env)",
        )
    missing = []
    if not facts.owner_inherits_group:
        missing.append(f"{owner} is not a member of {SUPERUSER_GROUP}")
    if not facts.admin_can_set_group:
        missing.append(f"{admin} cannot SET ROLE {SUPERUSER_GROUP}")
    raise PermissionProblem(
        f"no way to hand objects from {admin} to {owner}: {admin} cannot SET ROLE {owner}, holds "
        f"no ADMIN OPTION on it, and {'; '.join(missing)}",
        hint=f"create {owner} through the Cloud SQL API (Terraform google_sql_user or `gcloud sql "
        f"users create {owner} --instance=INSTANCE`) so it joins {SUPERUSER_GROUP}, or have a role "
        f"with ADMIN OPTION on {owner} run: GRANT {ident(owner)} TO {ident(admin)}",
    )


def objects_to_hand_over(desired: DesiredState, catalog: Catalog) -> list[OwnedObject]:
    return [
        o
        for o in layout_objects(desired, catalog, with_version_table=True)
        if o.owner != desired.owner
    ]


def create_privileges(desired: DesiredState, catalog: Catalog) -> list[Action]:
    """An owner created with SQL (not through the API) is no member of cloudsqlsuperuser, the
    database's owner: to own schemas and the version table it needs CREATE granted."""
    facts, owner = catalog.roles, desired.owner
    grants = []
    if not facts.owner_can_create_schemas:
        grants.append(Sql(f"GRANT CREATE ON DATABASE {ident(catalog.database)} TO {ident(owner)}"))
    if not facts.owner_can_create_in_migrations_schema:
        grants.append(
            Sql(f"GRANT CREATE ON SCHEMA {ident(desired.version_table.schema)} TO {ident(owner)}")
        )
    if not grants:
        return []
    return [
        Action(
            ActionKind.GRANT_PRIVILEGES,
            Session.ADMIN,
            f"{owner} is not a member of {SUPERUSER_GROUP} (a role created with SQL), so it "
            f"needs CREATE to own schemas and {desired.version_table.qualified}",
            tuple(grants),
        )
    ]


def handoff_actions(
    desired: DesiredState, route: Route | None, objects: list[OwnedObject]
) -> list[Action]:
    """The statements that hand `objects` to the owner by `route` (and the membership grant
    the `grant-then-direct` route needs first)."""
    owner, admin = desired.owner, desired.admin
    planned = []
    if route is not None and route.name == RouteName.GRANT:
        planned.append(
            Action(
                ActionKind.GRANT_MEMBERSHIP,
                Session.ADMIN,
                route.reason,
                (Sql(f"GRANT {ident(owner)} TO {ident(admin)}"),),
            )
        )
    if not objects:
        return planned
    foreign = [
        f"{o.kind} {o.qualified} (owner {o.owner})"
        for o in objects
        if o.owner not in (admin, SUPERUSER_GROUP)
    ]
    if foreign:
        raise PermissionProblem(
            f"cannot hand to {owner} objects owned by neither {admin} nor {SUPERUSER_GROUP}: "
            + ", ".join(foreign),
            hint=f"have their owner run ALTER ... OWNER TO {ident(owner)}, or drop them if they "
            "are leftovers",
        )
    assert route is not None, "a route is chosen whenever objects change hands"
    names = ", ".join(o.qualified for o in objects)
    to_owner = tuple(Sql(f"ALTER {o.sql} OWNER TO {ident(owner)}") for o in objects)
    if route.name != RouteName.TWO_STEP:
        return planned + [
            Action(
                ActionKind.HANDOFF,
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
    if to_group:
        planned.append(
            Action(
                ActionKind.HANDOFF_TO_GROUP,
                Session.ADMIN,
                f"step 1 of 2: {admin} hands {names} to {SUPERUSER_GROUP} ({admin} cannot "
                f"SET ROLE {owner})",
                to_group,
            )
        )
    planned.append(
        Action(
            ActionKind.HANDOFF_TO_OWNER,
            Session.OWNER,
            f"step 2 of 2: {owner} takes {names} from {SUPERUSER_GROUP}",
            to_owner,
        )
    )
    return planned


def route_for(desired: DesiredState, catalog: Catalog, context: Context) -> Route | None:
    """The route, when anything changes hands, or owner work must run without an owner
    session; None otherwise."""
    require_owner_role(desired, catalog)
    needs = bool(objects_to_hand_over(desired, catalog)) or (
        context.owner_work and not context.owner_session
    )
    return choose_route(desired, catalog, context.owner_session) if needs else None


def actions(desired: DesiredState, catalog: Catalog, context: Context) -> list[Action]:
    """CREATE for an owner made with SQL, then the hand-off by the route."""
    chosen = route_for(desired, catalog, context)
    objects = objects_to_hand_over(desired, catalog)
    return create_privileges(desired, catalog) + handoff_actions(desired, chosen, objects)
