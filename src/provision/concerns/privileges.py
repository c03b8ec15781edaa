"""Privileges: groups, the app login, memberships, grants and default privileges, declared in
privileges.toml and environments.toml, authoritative within the new schemas.

Routes on Cloud SQL with PostgreSQL 16 (shared/docs/cloudsql.md, sections 2 and 6), chosen
like the ownership routes and explained where none exists:

- groups (`nucleus_readwrite`, `nucleus_readonly`) are created by the admin (`postgres`, a
  CREATEROLE role): PostgreSQL 16 gives the creator ADMIN OPTION on what it creates, so the
  admin can grant them to any login, built-in or IAM. A group that exists but that the admin
  holds no ADMIN OPTION on (created by someone else) is explained, with the grant that fixes
  it;
- the app login (`users.app`, `nucleus_app`) is created in the database by the admin, with a
  SCRAM-SHA-256 verifier computed on the client from the password in its secret (the server
  log never sees the password), and never through the Cloud SQL API, which would make it a
  member of `cloudsqlsuperuser`, the database's owner: a login that could create schemas and
  take objects over. If it already exists, only its memberships are managed. Its alternate
  (`users.app.alternate`, `nucleus_app_b`), with which it alternates at each `rotate`, is
  created beside it without a password, in the same groups;
- IAM identities are created by the stacks (Cloud SQL IAM users are not members of
  `cloudsqlsuperuser` and start with no privileges); here they only join their group;
- grants on the new schemas, their tables and sequences, and default privileges for what the
  owner creates later, are made by the owner session (it owns the objects; default
  privileges FOR ROLE owner need the owner).

Within the new schemas the declaration is the whole truth: a privilege or a membership it
does not give is revoked (PUBLIC included, and PUBLIC may not CREATE in schema public).
Cloud SQL's own roles (`cloudsql*`, `pg_*`) and the legacy schemas are never changed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from provision.actions import Action, ActionKind, Session, Sql
from provision.catalog import SUPERUSER_GROUP, Catalog
from provision.desired import DesiredState, MemberKind, Privileges
from provision.findings import Finding, Severity
from provision.sql import ident

PUBLIC = "PUBLIC"
# The placeholder the executor fills with the app login's SCRAM verifier; never printed.
APP_VERIFIER_SLOT = "app_password_verifier"
_OBJTYPE = {"table": "r", "sequence": "S"}
_ON = {"r": "TABLES", "S": "SEQUENCES"}

_IAM_USERS_CDKTF = (
    "IAM database users are created through the Cloud SQL API: `npx cdktf deploy <env>` "
    "creates them from iam_members (google_sql_user of type CLOUD_IAM_SERVICE_ACCOUNT, "
    "CLOUD_IAM_GROUP or CLOUD_IAM_USER)"
)
_IAM_USERS_LOCAL = (
    "IAM database users are created through the Cloud SQL API: in the emulation, "
    "`nucleus-provision local up` creates them from iam_members on the running instance "
    "(keeping its data)"
)


def _system(role: str) -> bool:
    return role.startswith(("cloudsql", "pg_"))


def _grantee(role: str) -> str:
    return PUBLIC if role == PUBLIC else ident(role)


# -- the sets compared ------------------------------------------------------------------------

Key = tuple[str, str, str | None, str, str]  # kind, schema, name, grantee, privilege


def _objects(desired: DesiredState, catalog: Catalog) -> list[tuple[str, str, str | None]]:
    """(kind, schema, name) of every existing object in scope."""
    managed = set(desired.schema_names)
    found: list[tuple[str, str, str | None]] = [
        ("schema", s, None) for s in desired.schema_names if s in catalog.schemas
    ]
    found += sorted(
        ("sequence" if r.kind == "sequence" else "table", r.schema, r.name)
        for r in catalog.relations.values()
        if r.schema in managed
        and r.kind in ("table", "view", "materialized view", "foreign table", "sequence")
    )
    return found


def desired_grants(desired: DesiredState, catalog: Catalog) -> set[Key]:
    wanted: set[Key] = set()
    for kind, schema, name in _objects(desired, catalog):
        for group in desired.privileges.groups:
            privileges = {
                "schema": group.schema,
                "table": group.tables,
                "sequence": group.sequences,
            }[kind]
            wanted |= {(kind, schema, name, group.name, p) for p in privileges}
    return wanted


def actual_grants(desired: DesiredState, catalog: Catalog) -> set[Key]:
    """Grants in scope, less each owner's own and those of Cloud SQL's roles."""
    facts = catalog.privileges
    found: set[Key] = set()
    for g in facts.grants:
        if g.schema == "public" and g.name is None:
            # Schema public: only PUBLIC's CREATE is in scope (PostgreSQL 15+ default: none).
            if g.grantee == PUBLIC and g.privilege == "CREATE":
                found.add((g.kind, g.schema, g.name, g.grantee, g.privilege))
            continue
        owner = facts.owners.get((g.schema, g.name))
        if g.grantee == owner or _system(g.grantee):
            continue
        found.add((g.kind, g.schema, g.name, g.grantee, g.privilege))
    return found


def _default_key(schema: str, objtype: str, grantee: str, privilege: str) -> tuple[str, ...]:
    return (schema, objtype, grantee, privilege)


def desired_defaults(desired: DesiredState, catalog: Catalog) -> set[tuple[str, ...]]:
    wanted: set[tuple[str, ...]] = set()
    for schema in desired.schema_names:
        if schema not in catalog.schemas:
            continue
        for group in desired.privileges.groups:
            wanted |= {_default_key(schema, "r", group.name, p) for p in group.tables}
            wanted |= {_default_key(schema, "S", group.name, p) for p in group.sequences}
    return wanted


def actual_defaults(desired: DesiredState, catalog: Catalog) -> set[tuple[str, ...]]:
    """Default privileges of the owner for tables and sequences, in the new schemas (and in
    every schema: `schema` '*'), less the owner's own and Cloud SQL's roles'."""
    found: set[tuple[str, ...]] = set()
    managed = set(desired.schema_names)
    for d in catalog.privileges.defaults:
        if d.role != desired.owner or d.objtype not in _ON or d.grantee == desired.owner:
            continue
        if _system(d.grantee) or (d.schema is not None and d.schema not in managed):
            continue
        found.add(_default_key(d.schema or "*", d.objtype, d.grantee, d.privilege))
    return found


def desired_members(desired: DesiredState) -> set[tuple[str, str]]:
    return {
        (m.group, m.role)
        for m in desired.privileges.members
        if desired.privileges.manage_iam or m.kind != MemberKind.IAM
    }


def actual_members(desired: DesiredState, catalog: Catalog) -> set[tuple[str, str]]:
    """Memberships of the managed groups, less Cloud SQL's roles', IAM users' when IAM
    identities are out of scope, and the admin's ADMIN-only membership (PostgreSQL 16 gives a
    role's creator one, which inherits nothing): the admin counts as a member only through a
    membership that inherits the group's privileges."""
    facts = catalog.privileges
    iam_out = not desired.privileges.manage_iam
    return {
        (m.group, m.member)
        for m in facts.memberships
        if not _system(m.member)
        and not (iam_out and facts.role(m.member).iam)
        and (m.member != desired.admin or m.inherit_option)
    }


# -- findings ---------------------------------------------------------------------------------


def _describe(keys: Iterable[Key]) -> tuple[str, ...]:
    grouped: dict[tuple[str, str], list[str]] = defaultdict(list)
    for kind, schema, name, grantee, privilege in sorted(keys, key=str):
        where = schema if name is None else f"{schema}.{name}"
        grouped[(grantee, privilege)].append(f"{kind} {where}")
    return tuple(
        f"{grantee}: {privilege} on {', '.join(objects[:6])}"
        + (f" and {len(objects) - 6} more" if len(objects) > 6 else "")
        for (grantee, privilege), objects in sorted(grouped.items())
    )


def findings(desired: DesiredState, catalog: Catalog) -> list[Finding]:
    p, facts = desired.privileges, catalog.privileges
    found: list[Finding] = []
    missing_groups = [g for g in p.group_names if not facts.role(g).exists]
    if missing_groups:
        found.append(
            Finding(
                "role-missing",
                Severity.HIGH,
                f"group role(s) {', '.join(missing_groups)} do not exist",
                "no login can be given the declared privileges",
                tuple(missing_groups),
            )
        )
    if p.app_login and not facts.role(p.app_login).exists:
        found.append(
            Finding(
                "role-missing",
                Severity.HIGH,
                f"login {p.app_login} does not exist",
                "services that log in with its password fail",
                (p.app_login,),
            )
        )
    if p.app_alternate and not facts.role(p.app_alternate).exists:
        found.append(
            Finding(
                "role-missing",
                Severity.HIGH,
                f"login {p.app_alternate} (the app login's alternate) does not exist",
                "the app login's password cannot be rotated without downtime",
                (p.app_alternate,),
            )
        )
    if p.manage_iam:
        absent = sorted(
            {m.role for m in p.members if m.kind == MemberKind.IAM}
            - {r for r, s in facts.roles.items() if s.exists}
        )
        if absent:
            found.append(
                Finding(
                    "role-missing",
                    Severity.HIGH,
                    f"IAM database user(s) {', '.join(absent)} do not exist",
                    "those identities cannot log in",
                    tuple(absent),
                    remedy=_IAM_USERS_LOCAL if p.iam_users_from_local_up else _IAM_USERS_CDKTF,
                )
            )
    # The logins services use; the admin and the owner are cloudsqlsuperuser members by design.
    runtime = [m.role for m in p.members if m.role not in (desired.admin, desired.owner)]
    in_group = sorted({r for r in runtime if facts.role(r).in_superuser_group})
    if in_group:
        found.append(
            Finding(
                "login-is-superuser-group",
                Severity.HIGH,
                f"{', '.join(in_group)} is a member of {SUPERUSER_GROUP}, which owns the database",
                "it can create schemas and take objects over: not a least-privilege login",
                tuple(in_group),
                remedy=f"{desired.admin} cannot revoke {SUPERUSER_GROUP} (it holds no ADMIN "
                "OPTION on it): delete the user through the Cloud SQL API (`gcloud sql users "
                f"delete {in_group[0]} --instance=INSTANCE`) and run apply, which creates the "
                "login in SQL from its secret",
            )
        )
    no_admin = _groups_without_admin(desired, catalog)
    want_m, have_m = desired_members(desired), actual_members(desired, catalog)
    granted = {(g, r) for g, r in want_m if facts.role(r).exists or r in _app_logins(p)}
    for code, pairs, verb in (
        ("membership-missing", granted - have_m, "is not a member of"),
        ("membership-unexpected", have_m - want_m, "is an undeclared member of"),
    ):
        if pairs:
            stuck = sorted({g for g, _ in pairs} & no_admin)
            found.append(
                Finding(
                    code,
                    Severity.HIGH,
                    f"{len(pairs)} membership(s) differ from the declaration",
                    "logins have other privileges than declared",
                    tuple(f"{r} {verb} {g}" for g, r in sorted(pairs)),
                    remedy=_admin_remedy(desired, stuck) if stuck else None,
                )
            )
    want, have = desired_grants(desired, catalog), actual_grants(desired, catalog)
    if want - have:
        found.append(
            Finding(
                "privilege-missing",
                Severity.HIGH,
                f"{len(want - have)} declared privilege(s) are not granted",
                "members of the groups get permission denied",
                _describe(want - have),
            )
        )
    if have - want:
        found.append(
            Finding(
                "privilege-unexpected",
                Severity.HIGH,
                f"{len(have - want)} privilege(s) in the new schemas are not declared",
                "someone can do more than the declaration allows",
                _describe(have - want),
            )
        )
    want_d, have_d = desired_defaults(desired, catalog), actual_defaults(desired, catalog)
    for code, keys, what in (
        ("default-privileges-missing", want_d - have_d, "missing"),
        ("default-privileges-unexpected", have_d - want_d, "not declared"),
    ):
        if keys:
            found.append(
                Finding(
                    code,
                    Severity.HIGH,
                    f"{len(keys)} default privilege(s) of {desired.owner} are {what}",
                    "tables a later migration creates get other privileges than declared",
                    tuple(
                        f"{grantee}: {priv} on {_ON[objtype].lower()} in {schema}"
                        for schema, objtype, grantee, priv in sorted(keys)
                    ),
                )
            )
    return found


def _app_logins(p: Privileges) -> tuple[str, ...]:
    """The logins apply creates (so their memberships are planned before they exist)."""
    return tuple(login for login in (p.app_login, p.app_alternate) if login)


def _groups_without_admin(desired: DesiredState, catalog: Catalog) -> set[str]:
    facts = catalog.privileges
    return {
        g
        for g in desired.privileges.group_names
        if facts.role(g).exists and not facts.role(g).admin_holds_admin
    }


def _admin_remedy(desired: DesiredState, groups: list[str]) -> str:
    return (
        f"{desired.admin} holds no ADMIN OPTION on {', '.join(groups)} (created by another "
        f"role), so it cannot change who is a member: have its creator run "
        + "; ".join(f"GRANT {ident(g)} TO {ident(desired.admin)} WITH ADMIN OPTION" for g in groups)
    )


# -- actions ----------------------------------------------------------------------------------


def _by_statement(keys: set[Key]) -> dict[tuple[str, str, str], list[tuple[str, str | None]]]:
    """Batch grants: one statement per (kind, grantee, privileges) over all its objects."""
    per_object: dict[tuple[str, str, str | None, str], set[str]] = defaultdict(set)
    for kind, schema, name, grantee, privilege in keys:
        per_object[(kind, schema, name, grantee)].add(privilege)
    batches: dict[tuple[str, str, str], list[tuple[str, str | None]]] = defaultdict(list)
    for (kind, schema, name, grantee), privileges in sorted(per_object.items(), key=str):
        batches[(kind, grantee, ", ".join(sorted(privileges)))].append((schema, name))
    return batches


def _object_sql(verb: str, keys: set[Key]) -> list[Sql]:
    statements = []
    for (kind, grantee, privileges), objects in sorted(_by_statement(keys).items()):
        on = "SCHEMA" if kind == "schema" else "SEQUENCE" if kind == "sequence" else "TABLE"
        names = ", ".join(ident(s) if n is None else ident(s, n) for s, n in objects)
        to = "TO" if verb == "GRANT" else "FROM"
        statements.append(Sql(f"{verb} {privileges} ON {on} {names} {to} {_grantee(grantee)}"))
    return statements


def _default_sql(owner: str, verb: str, keys: set[tuple[str, ...]]) -> list[Sql]:
    grouped: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for schema, objtype, grantee, privilege in keys:
        grouped[(schema, objtype, grantee)].add(privilege)
    statements = []
    for (schema, objtype, grantee), privileges in sorted(grouped.items()):
        where = "" if schema == "*" else f" IN SCHEMA {ident(schema)}"
        to = "TO" if verb == "GRANT" else "FROM"
        statements.append(
            Sql(
                f"ALTER DEFAULT PRIVILEGES FOR ROLE {ident(owner)}{where} {verb} "
                f"{', '.join(sorted(privileges))} ON {_ON[objtype]} {to} {_grantee(grantee)}"
            )
        )
    return statements


def role_actions(desired: DesiredState, catalog: Catalog) -> list[Action]:
    """As the admin, before anything else: groups, the app login, memberships."""
    p, facts = desired.privileges, catalog.privileges
    planned: list[Action] = []
    create = [g for g in p.group_names if not facts.role(g).exists]
    if create:
        planned.append(
            Action(
                ActionKind.CREATE_ROLES,
                Session.ADMIN,
                f"declared group(s) {', '.join(create)} do not exist; {desired.admin} creates "
                "them (and so holds ADMIN OPTION on them, to grant them to any login)",
                tuple(Sql(f"CREATE ROLE {ident(g)} NOLOGIN") for g in create),
            )
        )
    if p.app_login and not facts.role(p.app_login).exists:
        planned.append(
            Action(
                ActionKind.CREATE_LOGIN,
                Session.ADMIN,
                f"login {p.app_login} does not exist; {desired.admin} creates it in SQL (not "
                f"through the Cloud SQL API, which would make it a member of {SUPERUSER_GROUP}) "
                "with a SCRAM-SHA-256 verifier of the password in its secret, computed here: "
                "the password itself never reaches the server or its log",
                (
                    Sql(
                        f"CREATE ROLE {ident(p.app_login)} LOGIN PASSWORD {{{APP_VERIFIER_SLOT}}}",
                        secret=True,
                    ),
                ),
            )
        )
    if p.app_alternate and not facts.role(p.app_alternate).exists:
        planned.append(
            Action(
                ActionKind.CREATE_LOGIN,
                Session.ADMIN,
                f"login {p.app_alternate} does not exist; {desired.admin} creates it in SQL, "
                f"without a password (nobody can log in as it until `rotate` gives it one), to "
                f"alternate with {p.app_login} at each rotation",
                (Sql(f"CREATE ROLE {ident(p.app_alternate)} LOGIN"),),
            )
        )
    no_admin = _groups_without_admin(desired, catalog)
    want, have = desired_members(desired), actual_members(desired, catalog)
    grants = sorted(
        (g, r)
        for g, r in want - have
        if g not in no_admin and (facts.role(r).exists or r in _app_logins(p))
    )
    revokes = sorted((g, r) for g, r in have - want if g not in no_admin)
    statements = [Sql(f"GRANT {ident(g)} TO {ident(r)}") for g, r in grants]
    statements += [Sql(f"REVOKE {ident(g)} FROM {ident(r)}") for g, r in revokes]
    if statements:
        reason = []
        if grants:
            reason.append("declared: " + ", ".join(f"{r} in {g}" for g, r in grants))
        if revokes:
            reason.append("not declared: " + ", ".join(f"{r} in {g}" for g, r in revokes))
        planned.append(
            Action(
                ActionKind.MEMBERSHIPS,
                Session.ADMIN,
                "; ".join(reason) + f" ({desired.admin} holds ADMIN OPTION on the groups)",
                tuple(statements),
            )
        )
    return planned


def default_actions(desired: DesiredState, catalog: Catalog) -> list[Action]:
    """As the owner, before the migrations run: what they create gets the groups' grants."""
    want, have = desired_defaults(desired, catalog), actual_defaults(desired, catalog)
    statements = _default_sql(desired.owner, "GRANT", want - have)
    statements += _default_sql(desired.owner, "REVOKE", have - want)
    if not statements:
        return []
    return [
        Action(
            ActionKind.DEFAULT_PRIVILEGES,
            Session.OWNER,
            f"every table and sequence {desired.owner} creates later in the new schemas gets "
            "exactly the declared grants, with no new GRANT statement",
            tuple(statements),
        )
    ]


def grant_actions(desired: DesiredState, catalog: Catalog) -> list[Action]:
    """As the owner, after the hand-off: grants and revokes on existing objects; and, as the
    admin (a member of the database's owner), PUBLIC's CREATE on schema public."""
    want, have = desired_grants(desired, catalog), actual_grants(desired, catalog)
    public_create = {k for k in have - want if k[1] == "public" and k[2] is None}
    owner_revokes = (have - want) - public_create
    statements = _object_sql("REVOKE", owner_revokes) + _object_sql("GRANT", want - have)
    planned = []
    if statements:
        planned.append(
            Action(
                ActionKind.GRANTS,
                Session.OWNER,
                f"{len(want - have)} declared privilege(s) missing, {len(owner_revokes)} not "
                "declared (the declaration is authoritative in the new schemas)",
                tuple(statements),
            )
        )
    if public_create:
        planned.append(
            Action(
                ActionKind.GRANTS,
                Session.ADMIN,
                "PUBLIC may CREATE in schema public (PostgreSQL 15+ refuses it by default)",
                (Sql("REVOKE CREATE ON SCHEMA public FROM PUBLIC"),),
            )
        )
    return planned


def planned_after_migrations(kind: ActionKind) -> bool:
    """Privilege actions the executor plans again once the migrations ran (their objects)."""
    return kind in (ActionKind.GRANTS, ActionKind.DEFAULT_PRIVILEGES)
