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

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence

from provision.actions import APP_VERIFIER_SLOT, Action, ActionKind, Context, Session, Sql
from provision.catalog import (
    SUPERUSER_GROUP,
    AccessPath,
    Beyond,
    Catalog,
    ChainEdge,
    Membership,
    Reached,
)
from provision.catalog import runtime_roles as catalog_runtime_roles
from provision.desired import DesiredState, MemberKind, Privileges
from provision.findings import Finding, Item, Severity
from provision.hints import command
from provision.sql import ident

PUBLIC = "PUBLIC"
# Cloud SQL's own superuser: what the Admin API does inside the database, it does as this role.
CLOUD_SQL_ADMIN = "cloudsqladmin"
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


def _iam_role(role: str) -> bool:
    """cloudsqliamuser, cloudsqliamserviceaccount, cloudsqliamgroup: every IAM identity of a
    kind is a member, so a grant to one reaches them all."""
    return role.startswith("cloudsqliam")


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


GRANT_OPTION = "GRANT OPTION FOR "


def actual_grants(desired: DesiredState, catalog: Catalog) -> set[Key]:
    """Grants in scope, less each owner's own. Within the new schemas every grantee counts,
    Cloud SQL's roles included: a grant to cloudsqliamuser, cloudsqliamserviceaccount or
    cloudsqliamgroup reaches every IAM identity of that kind. Column grants (kind `column`,
    name `table.column`) and grant options (privilege `GRANT OPTION FOR X`) are privileges of
    their own, which the declaration never gives."""
    facts = catalog.privileges
    found: set[Key] = set()
    vt = desired.version_table
    runtime = set(catalog_runtime_roles(desired))
    for g in facts.grants:
        if g.schema == vt.schema and g.name is not None:
            # The version table (and its sequence) is the owner's after adoption; only what
            # reaches the runtime roles is judged there (postgres keeps what adoption gave it).
            if not (g.grantee == PUBLIC or g.grantee in runtime or _iam_role(g.grantee)):
                continue
        if g.schema == "public" and g.name is None:
            # Schema public: only PUBLIC's CREATE is in scope (PostgreSQL 15+ default: none).
            if g.grantee == PUBLIC and g.privilege == "CREATE":
                found.add((g.kind, g.schema, g.name, g.grantee, g.privilege))
            continue
        owner = facts.owners.get((g.schema, g.name))
        if g.grantee == owner:
            continue
        found.add((g.kind, g.schema, g.name, g.grantee, g.privilege))
        if g.grantable:
            found.add((g.kind, g.schema, g.name, g.grantee, GRANT_OPTION + g.privilege))
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


def public_executes_new_functions(desired: DesiredState, catalog: Catalog) -> bool:
    """Whether a function the owner creates later is executable by PUBLIC (PostgreSQL's
    default). It must not be: a function in the new schemas is code others run later, and
    whoever may execute it should be declared. Only the owner's default for every schema can
    take PUBLIC's EXECUTE away (a per-schema default only adds to it)."""
    if not catalog.privileges.role(desired.owner).exists:
        return False
    rows = [
        d
        for d in catalog.privileges.defaults
        if d.role == desired.owner and d.schema is None and d.objtype == "f"
    ]
    return not rows or any(d.grantee == "PUBLIC" and d.privilege == "EXECUTE" for d in rows)


_REVOKE_PUBLIC_EXECUTE = (
    "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC"
)


def desired_members(desired: DesiredState) -> set[tuple[str, str]]:
    return {
        (m.group, m.role)
        for m in desired.privileges.members
        if desired.privileges.manage_iam or m.kind != MemberKind.IAM
    }


def _in_scope(desired: DesiredState, m: Membership) -> bool:
    """A membership the declaration rules: not Cloud SQL's roles', not an IAM identity's when
    IAM identities are out of scope (read from the catalog for every member, declared or not),
    and not the admin's ADMIN-only membership (PostgreSQL 16 gives a role's creator one, which
    inherits nothing): the admin counts as a member only through one that inherits."""
    return (
        not _system(m.member)
        and not _platform_membership(m.group)
        and not (not desired.privileges.manage_iam and m.member_iam)
        and (m.member != desired.admin or m.inherit_option)
    )


def _platform_membership(group: str) -> bool:
    """Memberships Cloud SQL makes itself and that are not ours to judge here: every IAM
    identity is a member of its cloudsqliam* role; cloudsqlsuperuser has its own finding
    (`login-is-superuser-group`). Any other role a runtime login or group is a member of
    (the owner, pg_write_all_data, ...) must be declared."""
    return group.startswith("cloudsqliam") or group == SUPERUSER_GROUP


def actual_members(desired: DesiredState, catalog: Catalog) -> set[tuple[str, str]]:
    """Memberships of the managed groups in scope (`_in_scope`)."""
    return {(m.group, m.member) for m in catalog.privileges.memberships if _in_scope(desired, m)}


def _stuck_grantors(desired: DesiredState, catalog: Catalog) -> dict[tuple[str, str], list[str]]:
    """Undeclared memberships the admin cannot revoke, with who granted them: a REVOKE by the
    admin removes only its own grants (or, with GRANTED BY, those of a role whose privileges it
    has); PostgreSQL ignores anyone else's with a warning, so such a REVOKE is never planned."""
    want = desired_members(desired)
    stuck: dict[tuple[str, str], list[str]] = defaultdict(list)
    for m in catalog.privileges.memberships:
        pair = (m.group, m.member)
        if pair not in want and _in_scope(desired, m) and not m.admin_acts_for_grantor:
            stuck[pair].append(m.grantor or "an unknown role")
    return stuck


def _grantor_route(desired: DesiredState, group: str, member: str, grantors: list[str]) -> str:
    routes = []
    for grantor in sorted(set(grantors)):
        if grantor == CLOUD_SQL_ADMIN:
            routes.append(
                f"{member} in {group} was granted by {CLOUD_SQL_ADMIN}, i.e. through the Cloud SQL "
                f"Admin API (a user's database roles, as `gcloud sql users assign-roles` sets "
                f"them): remove {group} from {member}'s database roles the same way"
            )
        else:
            routes.append(
                f"{member} in {group} was granted by {grantor}, whose grants {desired.admin} "
                f"cannot revoke: as {grantor}, run REVOKE {ident(group)} FROM {ident(member)}"
            )
    return "; ".join(routes) + ", or declare the membership (users.*.member_of, iam_members)"


# -- effective access -------------------------------------------------------------------------


def _path_text(path: AccessPath) -> str:
    if path.owner:
        return f"inherits the owner {path.grantee}"
    on = f"column {path.column} " if path.column else ""
    return f"{on}granted to {path.grantee} by {path.grantor}"


def _beyond_text(beyond: Beyond) -> str:
    text = f"{beyond.privilege} on {beyond.object}"
    if beyond.via:
        text += " (" + "; ".join(_path_text(p) for p in beyond.via) + ")"
    return text


# catalog._BEYOND_SQL's name for default privileges: "future tables of ROLE in schema S" or
# "... in every schema" (ROLE and S quoted identifiers)
_FUTURE = re.compile(
    r'^future (tables|sequences) of ("(?:[^"]|"")*"|\S+) in (?:every schema|schema (.+))$'
)


def _access_remedy(desired: DesiredState, role: str, rows: list[Beyond]) -> str:
    """The statements that take each path away, each run by the grantor that made the grant
    (a REVOKE by anyone else does nothing): this tool never changes a grant outside the new
    schemas, since a live service may rely on it; a person decides."""
    by_grantor: dict[str, list[str]] = defaultdict(list)
    other: list[str] = []
    for b in rows:
        kind, _, name = b.object.partition(" ")
        if b.object.startswith("large object "):
            kind, name = "large object", b.object.removeprefix("large object ")
        future = _FUTURE.match(b.object)
        paths = [p for p in b.via if not p.owner and p.grantor]
        for path in paths:
            column = f" ({ident(path.column)})" if path.column else ""
            statement = (
                f"REVOKE {b.privilege}{column} ON {kind.upper()} {name} FROM "
                f"{_grantee(path.grantee)}"
            )
            if future:
                objects, role, schema = future.group(1, 2, 3)
                where = f" IN SCHEMA {schema}" if schema else ""
                statement = (
                    f"ALTER DEFAULT PRIVILEGES FOR ROLE {role}{where} REVOKE {b.privilege} "
                    f"ON {objects.upper()} FROM {_grantee(path.grantee)}"
                )
            if statement not in by_grantor[path.grantor or ""]:
                by_grantor[path.grantor or ""].append(statement)
        if not paths:
            other.append(f"{b.privilege} on {b.object}")
    parts = [
        f"as {grantor} (or a role that may act for it): " + "; ".join(statements)
        for grantor, statements in sorted(by_grantor.items())
    ]
    if other:
        parts.append(
            f"{', '.join(other)}: through a membership (see the membership findings) or a grant "
            f"to PUBLIC or a cloudsqliam* role; find it with has_table_privilege({role!r}, "
            "'<table>', '<privilege>') and revoke it as its grantor"
        )
    return (
        "outside the new schemas this tool changes no grant (a live service may rely on it): "
        "if the access is not wanted, " + "; ".join(parts)
    )


def _chain_edges(desired: DesiredState, reached: Reached) -> list[ChainEdge]:
    """The edges that cause the reach: from a Cloud SQL IAM role (cloudsqliam*), which every IAM
    identity of its kind is a member of. A runtime role's own memberships (and so its groups')
    are judged by the membership findings, and an edge out of a role reached that way (the
    owner's own membership in cloudsqlsuperuser) is a consequence, not a cause."""
    return [e for e in reached.via if _iam_role(e.member)]


def _declared_groups_of(desired: DesiredState, role: str) -> set[str]:
    return {m.group for m in desired.privileges.members if m.role == role}


def _chains(desired: DesiredState, catalog: Catalog) -> list[tuple[Reached, bool]]:
    """Roles a runtime role reaches through another role that the declaration does not give,
    and whether apply can cut every edge (the admin may act for each grantor and holds ADMIN
    OPTION on the reached role). Cloud SQL's own memberships (cloudsqliam*) are not judged."""
    out = []
    for reached in catalog.privileges.reached:
        if reached.reached in _declared_groups_of(desired, reached.role):
            continue
        if reached.reached.startswith("cloudsqliam"):
            continue
        edges = _chain_edges(desired, reached)
        if not edges:
            continue
        fixable = reached.admin_holds_admin and all(e.admin_acts_for_grantor for e in edges)
        out.append((reached, fixable))
    return out


def _chain_statements(desired: DesiredState, catalog: Catalog) -> list[Sql]:
    statements: list[Sql] = []
    for reached, _ in _chains(desired, catalog):
        if not reached.admin_holds_admin:
            continue
        for e in _chain_edges(desired, reached):
            if not e.admin_acts_for_grantor:
                continue
            sql = Sql(
                f"REVOKE {ident(reached.reached)} FROM {ident(e.member)}"
                + (f" GRANTED BY {ident(e.grantor)}" if e.grantor != desired.admin else "")
            )
            if sql not in statements:
                statements.append(sql)
    return statements


# -- findings ---------------------------------------------------------------------------------


def _naming(details: Sequence[str], shown: int = 3) -> str:
    """`: the first few objects` for a message: verify's one line per difference names what
    differs, not only how many."""
    if not details:
        return ""
    more = f" and {len(details) - shown} more" if len(details) > shown else ""
    return ": " + "; ".join(details[:shown]) + more


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


def _items(keys: Iterable[Key], *, missing: bool) -> tuple[Item, ...]:
    """One item per object and grantee: the privileges declared and those granted."""
    grouped: dict[tuple[str, str], list[str]] = defaultdict(list)
    for kind, schema, name, grantee, privilege in keys:
        where = schema if name is None else f"{schema}.{name}"
        grouped[(f"{kind} {where}", grantee)].append(privilege)
    return tuple(
        Item(
            obj,
            f"{', '.join(sorted(privileges))} to {grantee}" if missing else None,
            None if missing else f"{', '.join(sorted(privileges))} to {grantee}",
        )
        for (obj, grantee), privileges in sorted(grouped.items())
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
                items=tuple(
                    Item(f"role {g}", "exists (NOLOGIN group)", None) for g in missing_groups
                ),
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
                items=(Item(f"role {p.app_login}", "exists (LOGIN)", None),),
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
                items=(Item(f"role {p.app_alternate}", "exists (LOGIN)", None),),
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
                    items=tuple(
                        Item(f"role {r}", "exists (IAM database user)", None) for r in absent
                    ),
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
                f"delete {in_group[0]} --instance=INSTANCE`) and run `{command('apply')}`, which creates the "
                "login in SQL from its secret",
            )
        )
    for login, fixable in _logins_with_attributes(desired, catalog):
        attributes = ", ".join(catalog.privileges.role(login).attributes)
        found.append(
            Finding(
                "login-has-role-attributes",
                Severity.HIGH,
                f"runtime login {login} has {attributes}",
                "it can do more than any declared group gives it (create databases or roles, "
                "bypass row security): not a least-privilege login",
                (f"{login}: {attributes}",),
                remedy=None
                if fixable
                else f"{desired.admin} cannot change {login} (it holds no ADMIN OPTION on it, or "
                "only a superuser may remove REPLICATION, BYPASSRLS or SUPERUSER): have its "
                f"creator (for a user made through the Cloud SQL API, cloudsqladmin: recreate "
                f"the user there) run ALTER ROLE {ident(login)} NOCREATEDB NOCREATEROLE "
                "NOREPLICATION NOBYPASSRLS",
            )
        )
    for group, fixable in _groups_not_nologin(desired, catalog):
        state = facts.role(group)
        extra = (["LOGIN"] if state.login else []) + list(state.attributes)
        found.append(
            Finding(
                "group-is-not-a-plain-group",
                Severity.HIGH,
                f"declared group {group} exists with {', '.join(extra)}",
                "a group is NOLOGIN with no attributes: with LOGIN (and perhaps a password) "
                "someone can log in with every privilege of its members' work",
                (f"{group}: {', '.join(extra)}",),
                remedy=None
                if fixable
                else f"{desired.admin} cannot change {group} (it holds no ADMIN OPTION on it, or "
                "only a superuser may remove REPLICATION, BYPASSRLS or SUPERUSER): if it is a "
                "user created through the Cloud SQL API, delete it there (`gcloud sql users "
                f"delete {group} --instance=INSTANCE`) and run `{command('apply')}`, which creates the group; "
                f"otherwise have its creator run ALTER ROLE {ident(group)} NOLOGIN "
                "NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD NULL",
            )
        )
    no_admin = _groups_without_admin(desired, catalog)
    want_m, have_m = desired_members(desired), actual_members(desired, catalog)
    granted = {(g, r) for g, r in want_m if facts.role(r).exists or r in _app_logins(p)}
    stuck = _stuck_grantors(desired, catalog)
    for code, pairs, verb in (
        ("membership-missing", granted - have_m, "is not a member of"),
        ("membership-unexpected", have_m - want_m - set(stuck), "is an undeclared member of"),
    ):
        if pairs:
            blocked = sorted({g for g, _ in pairs} & no_admin)
            found.append(
                Finding(
                    code,
                    Severity.HIGH,
                    f"{len(pairs)} membership(s) differ from the declaration"
                    + _naming([f"{r} {verb} {g}" for g, r in sorted(pairs)]),
                    "logins have other privileges than declared",
                    tuple(f"{r} {verb} {g}" for g, r in sorted(pairs)),
                    remedy=_admin_remedy(desired, blocked) if blocked else None,
                    items=tuple(
                        Item(
                            f"role {r}",
                            f"member of {g}" if code == "membership-missing" else None,
                            None if code == "membership-missing" else f"member of {g}",
                        )
                        for g, r in sorted(pairs)
                    ),
                )
            )
    for (group, member), grantors in sorted(stuck.items()):
        found.append(
            Finding(
                "membership-granted-by-another-role",
                Severity.HIGH,
                f"{member} is an undeclared member of {group}, granted by "
                f"{', '.join(sorted(set(grantors)))}",
                "a login has privileges the declaration does not give it",
                (f"{member} in {group} (grantor {', '.join(sorted(set(grantors)))})",),
                remedy=_grantor_route(desired, group, member, grantors),
            )
        )
    by_role: dict[str, list[Beyond]] = defaultdict(list)
    for beyond in facts.beyond:
        by_role[beyond.role].append(beyond)
    for role, rows in sorted(by_role.items()):
        shown = [f"{b.privilege} on {b.object}" for b in rows]
        found.append(
            Finding(
                "access-unexpected",
                Severity.HIGH,
                f"{role} can do what the declaration never gives it: "
                + ", ".join(shown[:5])
                + (f" and {len(shown) - 5} more" if len(shown) > 5 else ""),
                "a runtime login (or a group) could read or change legacy rows, another "
                "service's data or the structure",
                tuple(_beyond_text(b) for b in rows),
                remedy=_access_remedy(desired, role, rows),
            )
        )
    for reached, fixable in _chains(desired, catalog):
        edges = _chain_edges(desired, reached)
        found.append(
            Finding(
                "membership-chain",
                Severity.HIGH,
                f"{reached.role} is a member of {reached.reached} through "
                + ", ".join(sorted({e.member for e in edges})),
                "a runtime login (or a group) has every privilege of a role the declaration "
                "never gives it",
                tuple(
                    f"{reached.role} reaches {reached.reached}: {e.member} in "
                    f"{reached.reached}, granted by {e.grantor}"
                    for e in edges
                ),
                remedy=None
                if fixable
                else "; ".join(
                    _grantor_route(desired, reached.reached, e.member, [e.grantor])
                    for e in edges
                    if not (e.admin_acts_for_grantor and reached.admin_holds_admin)
                ),
            )
        )
    want, have = desired_grants(desired, catalog), actual_grants(desired, catalog)
    if want - have:
        found.append(
            Finding(
                "privilege-missing",
                Severity.HIGH,
                f"{len(want - have)} declared privilege(s) are not granted"
                + _naming(_describe(want - have)),
                "members of the groups get permission denied",
                _describe(want - have),
                items=_items(want - have, missing=True),
            )
        )
    if have - want:
        found.append(
            Finding(
                "privilege-unexpected",
                Severity.HIGH,
                f"{len(have - want)} privilege(s) in the new schemas are not declared"
                + _naming(_describe(have - want)),
                "someone can do more than the declaration allows",
                _describe(have - want),
                items=_items(have - want, missing=False),
            )
        )
    if public_executes_new_functions(desired, catalog) and any(
        schema in catalog.schemas for schema in desired.schema_names
    ):
        # Reported once a new schema exists (before, the legacy state's report is the seed's
        # five problems); `default_actions` revokes it before the first migration runs anyway.
        found.append(
            Finding(
                "default-privileges-missing",
                Severity.HIGH,
                f"functions {desired.owner} creates are executable by PUBLIC by default",
                "code in the new schemas could be run by any login, undeclared",
                ("PUBLIC: EXECUTE on functions revoked by default",),
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
                    items=tuple(
                        Item(
                            f"default privileges of {desired.owner} on "
                            f"{_ON[objtype].lower()} in "
                            f"{'every schema' if schema == '*' else 'schema ' + schema}",
                            f"{priv} to {grantee}" if what == "missing" else None,
                            None if what == "missing" else f"{priv} to {grantee}",
                        )
                        for schema, objtype, grantee, priv in sorted(keys)
                    ),
                )
            )
    return found


def _app_logins(p: Privileges) -> tuple[str, ...]:
    """The logins apply creates (so their memberships are planned before they exist)."""
    return tuple(login for login in (p.app_login, p.app_alternate) if login)


# What the admin (CREATEROLE, ADMIN OPTION on the groups it created) may take away itself.
_ADMIN_REMOVABLE = frozenset({"CREATEDB", "CREATEROLE"})


def _groups_not_nologin(desired: DesiredState, catalog: Catalog) -> list[tuple[str, bool]]:
    """Declared groups that exist with LOGIN or role attributes, and whether apply can fix it."""
    out = []
    for group in desired.privileges.group_names:
        state = catalog.privileges.role(group)
        if state.exists and (state.login or state.attributes):
            fixable = state.admin_holds_admin and set(state.attributes) <= _ADMIN_REMOVABLE
            out.append((group, fixable))
    return out


def _runtime_logins(desired: DesiredState) -> list[str]:
    """The logins services use (the app login, declared IAM identities); the admin and the
    owner are cloudsqlsuperuser members with attributes by design."""
    p = desired.privileges
    return sorted({m.role for m in p.members} - set(p.group_names) - {desired.admin, desired.owner})


def _logins_with_attributes(desired: DesiredState, catalog: Catalog) -> list[tuple[str, bool]]:
    """Runtime logins with CREATEDB, CREATEROLE, REPLICATION, BYPASSRLS or SUPERUSER (a
    privilege no grant shows and no has_*_privilege asks), and whether apply can remove it."""
    out = []
    for login in _runtime_logins(desired):
        state = catalog.privileges.role(login)
        if state.exists and state.attributes:
            fixable = state.admin_holds_admin and set(state.attributes) <= _ADMIN_REMOVABLE
            out.append((login, fixable))
    return out


def _groups_without_admin(desired: DesiredState, catalog: Catalog) -> set[str]:
    facts = catalog.privileges
    return {
        g
        for g in desired.privileges.group_names
        if facts.role(g).exists and not facts.role(g).admin_holds_admin
    }


def _admin_remedy(desired: DesiredState, groups: list[str]) -> str:
    # INHERIT FALSE, SET FALSE: the admin gets the right to manage the group's members and
    # none of its privileges; a membership that inherits would itself be undeclared.
    return (
        f"{desired.admin} holds no ADMIN OPTION on {', '.join(groups)} (created by another "
        f"role), so it cannot change who is a member: have its creator run "
        + "; ".join(
            f"GRANT {ident(g)} TO {ident(desired.admin)} WITH ADMIN TRUE, INHERIT FALSE, SET FALSE"
            for g in groups
        )
    )


# -- actions ----------------------------------------------------------------------------------


def _by_statement(keys: set[Key]) -> dict[tuple[str, str, str], list[tuple[str, str | None]]]:
    """Batch grants: one statement per (kind, grantee, privileges) over all its objects; grant
    options and column privileges in statements of their own."""
    per_object: dict[tuple[str, str, str | None, str, bool], set[str]] = defaultdict(set)
    for kind, schema, name, grantee, privilege in keys:
        option = privilege.startswith(GRANT_OPTION)
        privilege = privilege.removeprefix(GRANT_OPTION)
        if kind == "column" and name is not None:
            # Per column: `SELECT (email)` on its table.
            table, _, column = name.partition(".")
            kind, name, privilege = "table", table, f"{privilege} ({ident(column)})"
        per_object[(kind, schema, name, grantee, option)].add(privilege)
    batches: dict[tuple[str, str, str], list[tuple[str, str | None]]] = defaultdict(list)
    for (kind, schema, name, grantee, option), privileges in sorted(per_object.items(), key=str):
        shown = ", ".join(sorted(privileges))
        batches[(kind, grantee, (GRANT_OPTION if option else "") + shown)].append((schema, name))
    return batches


def _object_sql(verb: str, keys: set[Key]) -> list[Sql]:
    statements = []
    batches = sorted(_by_statement(keys).items())
    if verb == "REVOKE":
        # Grant options first: `REVOKE DELETE ... FROM postgres` fails while postgres still
        # holds the option and has granted DELETE on with it (dependent privileges exist);
        # taken back with CASCADE first, the option takes those grants with it (whatever their
        # grantor: all come from the owner's grant) and the privilege itself goes next.
        batches.sort(key=lambda batch: not batch[0][2].startswith(GRANT_OPTION))
    for (kind, grantee, privileges), objects in batches:
        on = "SCHEMA" if kind == "schema" else "SEQUENCE" if kind == "sequence" else "TABLE"
        names = ", ".join(ident(s) if n is None else ident(s, n) for s, n in objects)
        to = "TO" if verb == "GRANT" else "FROM"
        # CASCADE: a grant option taken back takes back what was granted with it (the
        # declaration is authoritative in the new schemas); without it PostgreSQL refuses.
        cascade = " CASCADE" if verb == "REVOKE" and privileges.startswith(GRANT_OPTION) else ""
        statements.append(
            Sql(f"{verb} {privileges} ON {on} {names} {to} {_grantee(grantee)}{cascade}")
        )
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
    plain = [g for g, fixable in _groups_not_nologin(desired, catalog) if fixable]
    if plain:
        planned.append(
            Action(
                ActionKind.CREATE_ROLES,
                Session.ADMIN,
                f"declared group(s) {', '.join(plain)} exist with LOGIN or role attributes; a "
                "group is NOLOGIN, with no password and no attributes",
                tuple(
                    Sql(f"ALTER ROLE {ident(g)} NOLOGIN NOCREATEDB NOCREATEROLE PASSWORD NULL")
                    for g in plain
                ),
            )
        )
    stripped = [login for login, fixable in _logins_with_attributes(desired, catalog) if fixable]
    if stripped:
        planned.append(
            Action(
                ActionKind.CREATE_ROLES,
                Session.ADMIN,
                f"runtime login(s) {', '.join(stripped)} have CREATEDB or CREATEROLE, which no "
                f"declared group gives; {desired.admin} holds ADMIN OPTION on them",
                tuple(Sql(f"ALTER ROLE {ident(r)} NOCREATEDB NOCREATEROLE") for r in stripped),
            )
        )
    no_admin = _groups_without_admin(desired, catalog)
    want, have = desired_members(desired), actual_members(desired, catalog)
    grants = sorted(
        (g, r)
        for g, r in want - have
        if g not in no_admin and (facts.role(r).exists or r in _app_logins(p))
    )
    stuck = _stuck_grantors(desired, catalog)
    revokes = sorted((g, r) for g, r in have - want if g not in no_admin and (g, r) not in stuck)
    statements = [Sql(f"GRANT {ident(g)} TO {ident(r)}") for g, r in grants]
    # One REVOKE per grant, GRANTED BY its grantor (PostgreSQL 16 keeps one row per grantor):
    # a plain REVOKE by the admin would leave another grantor's row in place.
    revoked = {(g, r) for g, r in revokes}
    statements += [
        Sql(
            f"REVOKE {ident(m.group)} FROM {ident(m.member)}"
            + (
                f" GRANTED BY {ident(m.grantor)}"
                if m.grantor and m.grantor != desired.admin
                else ""
            )
        )
        for m in sorted(facts.memberships, key=lambda m: (m.group, m.member, m.grantor or ""))
        if (m.group, m.member) in revoked and _in_scope(desired, m)
    ]
    chains = _chain_statements(desired, catalog)
    statements += chains
    if statements:
        reason = []
        if chains:
            reason.append(
                "reached through another role, not declared: "
                + ", ".join(
                    f"{r.role} in {r.reached}"
                    for r, fixable in _chains(desired, catalog)
                    if fixable
                )
            )
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
    if public_executes_new_functions(desired, catalog):
        statements.append(Sql(_REVOKE_PUBLIC_EXECUTE.format(owner=ident(desired.owner))))
    if not statements:
        return []
    return [
        Action(
            ActionKind.DEFAULT_PRIVILEGES,
            Session.OWNER,
            f"every table and sequence {desired.owner} creates later in the new schemas gets "
            "exactly the declared grants, with no new GRANT statement, and no function it "
            "creates is executable by PUBLIC",
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


def actions(desired: DesiredState, catalog: Catalog, context: Context) -> list[Action]:
    """Roles and memberships, default privileges, grants: three phases (see each)."""
    return (
        role_actions(desired, catalog)
        + default_actions(desired, catalog)
        + grant_actions(desired, catalog)
    )
