"""The one reader of the live catalog.

A handful of set-based queries (never one query per object) turn `pg_catalog` into plain,
frozen data: schemas and relations with their owners, extensions installed and available,
the role facts that decide how ownership can change hands, and the rows of the version
table. This module only reads: every concern (`provision.concerns`) is a pure function of
this snapshot and the desired state.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

from sqlalchemy import Connection, text

from provision.desired import DesiredState, VersionTable
from provision.diff.snapshot import read_objects
from provision.migrations import version_number
from provision.model import Snapshot

SUPERUSER_GROUP = "cloudsqlsuperuser"

RELATION_KINDS = {
    "r": "table",
    "p": "table",
    "v": "view",
    "m": "materialized view",
    "f": "foreign table",
    "S": "sequence",
    "i": "index",
    "I": "index",
}
# Kinds whose owner is their own: indexes and sequences owned by a column follow their table.
OWNABLE_KINDS = {"table", "view", "materialized view", "foreign table", "sequence"}


@dataclass(frozen=True)
class Relation:
    schema: str
    name: str
    kind: str
    owner: str
    follows_table: bool = False  # an index, or a sequence owned by a table column (serial/identity)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def ownable(self) -> bool:
        """Has an owner of its own (ALTER ... OWNER applies to it directly)."""
        return self.kind in OWNABLE_KINDS and not self.follows_table


@dataclass(frozen=True)
class SchemaInfo:
    name: str
    owner: str
    owner_can_create: bool = (
        True  # the desired owner may CREATE in it (needed to own objects there)
    )


@dataclass(frozen=True)
class Extension:
    name: str
    default_version: str | None  # what the server could install; None if not available
    installed_version: str | None
    owner: str | None = None


@dataclass(frozen=True)
class Role:
    name: str
    exists: bool
    superuser: bool = False
    login: bool = False
    createrole: bool = False
    member_of: tuple[str, ...] = ()


@dataclass(frozen=True)
class RoleFacts:
    """The memberships that decide ownership changes (shared/docs/cloudsql.md, section 2)."""

    current_user: str
    server_version_num: int
    roles: dict[str, Role]
    superuser_group_members: tuple[str, ...]
    admin_can_set_owner: (
        bool  # `SET ROLE owner` allowed for admin (PG16: SET option; older: membership)
    )
    admin_can_grant_owner: (
        bool  # admin may `GRANT owner TO admin` (PG16: ADMIN OPTION; older: CREATEROLE)
    )
    admin_can_set_group: bool  # admin may hand objects to cloudsqlsuperuser
    owner_inherits_group: bool  # owner acts as owner of what cloudsqlsuperuser owns
    owner_can_create_schemas: bool = True  # CREATE on the database (migrations create schemas)
    owner_can_create_in_migrations_schema: bool = (
        True  # a new owner needs CREATE on the table's schema
    )

    @property
    def server_major(self) -> int:
        return self.server_version_num // 10000


@dataclass(frozen=True)
class MigrationRecord:
    id: int
    migration_name: str | None
    applied_at: datetime | None
    version: str | None = None
    description: str | None = None
    executed_at: datetime | None = None
    checksum: str | None = None
    execution_time_ms: int | None = None


@dataclass(frozen=True)
class MigrationsTableInfo:
    exists: bool
    owner: str | None = None
    columns: tuple[str, ...] = ()
    readable: bool = False  # the admin session may SELECT
    insertable: bool = False  # the admin session may INSERT (as the legacy tooling did)
    sequence: str | None = None  # the id column's sequence, quoted and qualified
    sequence_usable: bool = False
    records: tuple[MigrationRecord, ...] = ()
    records_known: bool = False  # read by the admin, or through the owner session

    @property
    def recorded_versions(self) -> frozenset[str]:
        """Versions recorded by this tool. Legacy rows (no version) never count, whatever their name."""
        return frozenset(r.version for r in self.records if r.version is not None)

    def recorded(self) -> dict[int, MigrationRecord]:
        """This tool's records by version number (`001` and `1` are one version)."""
        found = {}
        for record in self.records:
            number = version_number(record.version)
            if number is not None:
                found[number] = record
        return found


@dataclass(frozen=True)
class Grant:
    """One privilege of one grantee on one object (aclexplode), `PUBLIC` for everyone."""

    kind: str  # schema | table | sequence
    schema: str
    name: str | None  # None for a schema
    grantee: str
    privilege: str
    grantable: bool = False


@dataclass(frozen=True)
class DefaultGrant:
    """One default privilege: what objects `role` creates later (in `schema`) get."""

    role: str
    schema: str | None  # None: in every schema
    objtype: str  # r tables, S sequences, f functions, T types, n schemas
    grantee: str
    privilege: str


@dataclass(frozen=True)
class Membership:
    group: str
    member: str
    admin_option: bool = False
    inherit_option: bool = True
    grantor: str | None = None
    # The member is a Cloud SQL IAM user or group (a member of cloudsqliam*), read for every
    # member, declared or not: an IAM identity nobody declared is still one.
    member_iam: bool = False
    # The run's admin may act for the grantor (it is the grantor, or has its privileges), so
    # `REVOKE ... GRANTED BY grantor` removes the membership; PostgreSQL ignores, with a
    # warning, a REVOKE of a grant made by anyone else.
    admin_acts_for_grantor: bool = True


@dataclass(frozen=True)
class RoleState:
    """What the privileges concern needs to know about one role."""

    name: str
    exists: bool
    login: bool = False
    in_superuser_group: bool = False  # a member of cloudsqlsuperuser (the database's owner)
    iam: bool = False  # a Cloud SQL IAM user or group (member of cloudsqliam*)
    admin_holds_admin: bool = False  # the run's admin may grant membership in it
    # CREATEDB, CREATEROLE, REPLICATION, BYPASSRLS, SUPERUSER where set
    attributes: tuple[str, ...] = ()


@dataclass(frozen=True)
class AccessPath:
    """How a role has a privilege: an ACL entry on the object (or on one of its columns) whose
    grantee is PUBLIC or a role it inherits from, with its grantor; or the owner it inherits."""

    grantee: str
    grantor: str | None = None
    column: str | None = None
    owner: bool = False


@dataclass(frozen=True)
class Beyond:
    """A privilege a runtime role has, by the database's own has_*_privilege, that the
    declaration never gives it (see catalog._BEYOND_SQL)."""

    role: str
    object: str  # "table dna_schema.entities", "sequence ...", "function ...",
    # "large object 16401", "future tables of postgres in schema dna_schema", "schema ...",
    # "database ..."
    privilege: str
    via: tuple[AccessPath, ...] = ()


@dataclass(frozen=True)
class ChainEdge:
    """A membership on the way to a reached role: `member` in it, granted by `grantor`."""

    member: str
    grantor: str
    admin_acts_for_grantor: bool


@dataclass(frozen=True)
class Reached:
    """A role a runtime role is a member of only through another role (pg_has_role MEMBER)."""

    role: str
    reached: str
    via: tuple[ChainEdge, ...]
    admin_holds_admin: bool  # the admin may revoke memberships in `reached`


@dataclass(frozen=True)
class PrivilegeFacts:
    grants: tuple[Grant, ...] = ()
    defaults: tuple[DefaultGrant, ...] = ()
    memberships: tuple[Membership, ...] = ()
    roles: dict[str, RoleState] = field(default_factory=dict)
    owners: dict[tuple[str, str | None], str] = field(default_factory=dict)
    # What the runtime roles can do, by any path, where the declaration gives them nothing,
    # by the database's own has_*_privilege; and the roles they reach through another role.
    beyond: tuple[Beyond, ...] = ()
    reached: tuple[Reached, ...] = ()

    def role(self, name: str) -> RoleState:
        return self.roles.get(name) or RoleState(name, exists=False)


@dataclass(frozen=True)
class Access:
    """What one role can do in one schema, with everything it inherits (has_*_privilege)."""

    role: str
    schema: str
    usage: bool
    read: bool | None  # SELECT on every table; None when the schema has no table
    write: bool | None  # INSERT, UPDATE and DELETE on every table
    create: bool
    owner: bool


@dataclass(frozen=True)
class Code:
    """A function, procedure or trigger of the new schemas: code that runs later, for whoever
    calls it (or writes the trigger's table)."""

    kind: str  # "function", "procedure" or "trigger"
    name: str  # schema.name(args), or schema.table.trigger
    owner: str
    security_definer: bool
    public_execute: bool
    names_protected: tuple[str, ...]  # protected schemas its body names
    owner_reaches_protected: bool  # its owner may use a protected schema


@dataclass(frozen=True)
class Catalog:
    database: str
    roles: RoleFacts
    schemas: dict[str, SchemaInfo]
    relations: dict[tuple[str, str], Relation]
    extensions: dict[str, Extension]
    migrations: MigrationsTableInfo
    # Indexes a failed CREATE INDEX CONCURRENTLY left behind (indisvalid = false).
    invalid_indexes: frozenset[tuple[str, str]] = frozenset()
    privileges: PrivilegeFacts = field(default_factory=PrivilegeFacts)
    # Who can do what, per role and schema: read for `inspect` only (read_access).
    access: tuple[Access, ...] = ()
    code: tuple[Code, ...] = ()
    # Roles named like a new schema: `"$user"`, first in the default search_path, makes that
    # schema the first place their sessions' unqualified names resolve.
    shadowed: tuple[str, ...] = ()
    # Every object of the schemas the lock covers, in diff's model (None without a lock).
    objects: Snapshot | None = None

    def relations_in(self, schema: str) -> list[Relation]:
        return sorted(
            (r for (s, _), r in self.relations.items() if s == schema), key=lambda r: r.name
        )


_ROLES_SQL = text("""
WITH wanted(name) AS (SELECT unnest(CAST(:names AS text[]))),
     pairs(member, role, privilege) AS (
         SELECT * FROM unnest(CAST(:members AS text[]), CAST(:targets AS text[]), CAST(:privileges AS text[])))
SELECT current_user AS current_user,
       current_setting('server_version_num')::int AS version,
       current_database() AS database,
       (SELECT json_agg(json_build_object(
                 'name', w.name, 'exists', r.oid IS NOT NULL, 'superuser', coalesce(r.rolsuper, false),
                 'login', coalesce(r.rolcanlogin, false), 'createrole', coalesce(r.rolcreaterole, false),
                 'member_of', ARRAY(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                                    WHERE m.member = r.oid ORDER BY 1)))
          FROM wanted w LEFT JOIN pg_roles r ON r.rolname = w.name) AS roles,
       ARRAY(SELECT u.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                                JOIN pg_roles u ON u.oid = m.member
             WHERE g.rolname = :group ORDER BY 1) AS group_members,
       (SELECT json_agg(
                 CASE WHEN to_regrole(quote_ident(p.member)) IS NULL OR to_regrole(quote_ident(p.role)) IS NULL THEN false
                      WHEN p.privilege = 'GRANT' AND current_setting('server_version_num')::int < 160000
                          THEN (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = p.member)
                      WHEN p.privilege = 'GRANT' THEN pg_has_role(p.member, p.role, 'MEMBER WITH ADMIN OPTION')
                      WHEN p.privilege = 'SET' AND current_setting('server_version_num')::int < 160000
                          THEN pg_has_role(p.member, p.role, 'MEMBER')
                      ELSE pg_has_role(p.member, p.role, p.privilege) END)
          FROM pairs p) AS capabilities,
       CASE WHEN to_regrole(quote_ident(:owner)) IS NOT NULL
            THEN has_database_privilege(:owner, current_database(), 'CREATE') END AS owner_create_db,
       CASE WHEN to_regrole(quote_ident(:owner)) IS NOT NULL
            THEN has_schema_privilege(:owner, :mschema, 'CREATE') END AS owner_create_mschema
""")

_RELATIONS_SQL = text("""
SELECT n.nspname AS schema, NULL AS name, 'n' AS kind, pg_get_userbyid(n.nspowner) AS owner,
       CAST(NULL AS json) AS version_table,
       CASE WHEN to_regrole(quote_ident(:owner)) IS NOT NULL
            THEN has_schema_privilege(:owner, n.oid, 'CREATE') END AS flag
FROM pg_namespace n
WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
UNION ALL
SELECT n.nspname, c.relname, 'x', pg_get_userbyid(c.relowner), NULL, true
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT i.indisvalid AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
UNION ALL
SELECT n.nspname, c.relname, CAST(c.relkind AS text), pg_get_userbyid(c.relowner),
       CASE WHEN n.nspname = :mschema AND c.relname = :mtable THEN json_build_object(
            'columns', ARRAY(SELECT a.attname FROM pg_attribute a
                             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum),
            'select', has_table_privilege(c.oid, 'SELECT'),
            'insert', has_table_privilege(c.oid, 'INSERT'),
            'sequence', (SELECT json_build_object('name', quote_ident(sn.nspname) || '.' || quote_ident(s.relname),
                                                  'usage', has_sequence_privilege(s.oid, 'USAGE'))
                         FROM pg_depend d JOIN pg_class s ON s.oid = d.objid
                              JOIN pg_namespace sn ON sn.oid = s.relnamespace
                         WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
                           AND d.refobjid = c.oid AND s.relkind = 'S' AND d.deptype IN ('a', 'i')
                         LIMIT 1)) END,
       c.relkind IN ('i', 'I') OR (c.relkind = 'S' AND EXISTS (
           -- LIMIT 1: looked up by index per sequence, not a hash of all of pg_depend
           SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
              AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') LIMIT 1))
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE (c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
       -- indexes only where the layout names one (the version table's); the rest follow their tables
       OR (c.relkind IN ('i', 'I') AND n.nspname = :mschema))
  AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
  -- plan and verify read the schemas the layout knows; inspect (no list) reads every one
  AND (CAST(:only AS text[]) IS NULL OR n.nspname = ANY(CAST(:only AS text[])))
""")

# Every privilege in the new schemas (and on schema public, where PUBLIC must not CREATE), one
# row per (object, grantee, privilege): one query, however many objects.
_GRANTS_SQL = text("""
WITH vt AS (
    -- the version table and its id's sequence: its grants to runtime roles, PUBLIC and
    -- cloudsqliam* are judged too (actual_grants)
    SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = :mschema AND c.relname = :mtable
    UNION ALL
    SELECT d.objid FROM pg_depend d JOIN pg_class c ON c.oid = d.refobjid
         JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = :mschema AND c.relname = :mtable AND d.classid = 'pg_class'::regclass
      AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))
SELECT 'schema' AS kind, n.nspname AS schema, NULL AS name, pg_get_userbyid(n.nspowner) AS owner,
       CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END AS grantee,
       a.privilege_type AS privilege, a.is_grantable AS grantable
FROM pg_namespace n
CROSS JOIN LATERAL aclexplode(coalesce(n.nspacl, acldefault(CAST('n' AS "char"), n.nspowner))) a
WHERE n.nspname = ANY(CAST(:managed AS text[])) OR n.nspname = 'public'
UNION ALL
SELECT CASE WHEN c.relkind = 'S' THEN 'sequence' ELSE 'table' END, n.nspname, c.relname,
       pg_get_userbyid(c.relowner),
       CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
       a.privilege_type, a.is_grantable
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL aclexplode(coalesce(c.relacl, acldefault(
    CAST(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END AS "char"), c.relowner))) a
WHERE (n.nspname = ANY(CAST(:managed AS text[])) OR c.oid IN (SELECT oid FROM vt))
  AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
UNION ALL
SELECT 'column', n.nspname, c.relname || '.' || at.attname, pg_get_userbyid(c.relowner),
       CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
       a.privilege_type, a.is_grantable
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
-- each table's columns by index (OFFSET 0: not pulled up into a scan of all of pg_attribute)
CROSS JOIN LATERAL (
    SELECT x.attname, x.attacl FROM pg_attribute x
    WHERE x.attrelid = c.oid AND x.attacl IS NOT NULL AND x.attnum > 0 AND NOT x.attisdropped
    OFFSET 0) at
CROSS JOIN LATERAL aclexplode(at.attacl) a
WHERE (n.nspname = ANY(CAST(:managed AS text[])) OR c.oid IN (SELECT oid FROM vt))
  AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
""")

# Roles, memberships of the managed groups and default privileges, in one query.
_ROLE_FACTS_SQL = text("""
WITH wanted(name) AS (SELECT unnest(CAST(:names AS text[])))
SELECT
  (SELECT coalesce(json_agg(json_build_object(
       'name', w.name, 'exists', r.oid IS NOT NULL, 'login', coalesce(r.rolcanlogin, false),
       'attributes', ARRAY(SELECT a FROM (VALUES
           ('CREATEDB', r.rolcreatedb), ('CREATEROLE', r.rolcreaterole),
           ('REPLICATION', r.rolreplication), ('BYPASSRLS', r.rolbypassrls),
           ('SUPERUSER', r.rolsuper)) AS x(a, f) WHERE f),
       'superuser_group', r.oid IS NOT NULL AND EXISTS (
           SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
           WHERE m.member = r.oid AND g.rolname = 'cloudsqlsuperuser'),
       'iam', r.oid IS NOT NULL AND EXISTS (
           SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
           WHERE m.member = r.oid AND g.rolname LIKE 'cloudsqliam%'),
       'admin_holds_admin', r.oid IS NOT NULL
           AND pg_has_role(:admin, r.oid, 'USAGE WITH ADMIN OPTION'))), '[]')
   FROM wanted w LEFT JOIN pg_roles r ON r.rolname = w.name) AS roles,
  (SELECT coalesce(json_agg(json_build_object(
       'group', g.rolname, 'member', u.rolname, 'admin', m.admin_option,
       'inherit', m.inherit_option, 'grantor', pg_get_userbyid(m.grantor),
       'iam', EXISTS (SELECT 1 FROM pg_auth_members i JOIN pg_roles c ON c.oid = i.roleid
                      WHERE i.member = u.oid AND c.rolname LIKE 'cloudsqliam%'),
       'acts_for_grantor', pg_has_role(:admin, m.grantor, 'USAGE'))), '[]')
   FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member
   -- the groups' members, and every membership of the runtime roles (the app login, the
   -- declared IAM identities and the groups themselves), whatever role it is in
   WHERE g.rolname = ANY(CAST(:groups AS text[])) OR u.rolname = ANY(CAST(:runtime AS text[])))
   AS memberships,
  (SELECT coalesce(json_agg(json_build_object(
       'role', pg_get_userbyid(d.defaclrole), 'schema', n.nspname, 'objtype', d.defaclobjtype,
       'grantee', CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
       'privilege', a.privilege_type)), '[]')
   FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace
   CROSS JOIN LATERAL aclexplode(d.defaclacl) a) AS defaults
""")

_CODE_SQL = text("""
WITH managed AS (
    SELECT oid, nspname FROM pg_namespace WHERE nspname = ANY(CAST(:managed AS text[]))
),
fn AS (
    SELECT p.oid, CASE p.prokind WHEN 'p' THEN 'procedure' ELSE 'function' END AS kind,
           n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid)
           || ')' AS name
    FROM pg_proc p JOIN managed n ON n.oid = p.pronamespace
    WHERE NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = CAST('pg_proc' AS regclass)
                        AND e.objid = p.oid AND e.deptype = 'e')
    UNION ALL
    SELECT t.tgfoid, 'trigger', n.nspname || '.' || c.relname || '.' || t.tgname
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN managed n ON n.oid = c.relnamespace
    WHERE NOT t.tgisinternal
)
SELECT fn.kind, fn.name, pg_get_userbyid(p.proowner) AS owner, p.prosecdef AS definer,
       fn.kind <> 'trigger' AND (p.proacl IS NULL OR EXISTS (
           SELECT 1 FROM aclexplode(p.proacl) a
           WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')) AS public_execute,
       ARRAY(SELECT s FROM unnest(CAST(:protected AS text[])) s
             WHERE position(s IN coalesce(p.prosrc, '')) > 0 ORDER BY s) AS names_protected,
       EXISTS (SELECT 1 FROM pg_namespace l WHERE l.nspname = ANY(CAST(:protected AS text[]))
                 AND has_schema_privilege(p.proowner, l.oid, 'USAGE')) AS owner_reaches
FROM fn JOIN pg_proc p ON p.oid = fn.oid
ORDER BY fn.kind, fn.name
""")

_SHADOWED_SQL = text("""
SELECT rolname FROM pg_roles WHERE rolname = ANY(CAST(:managed AS text[])) ORDER BY 1
""")

_EXTENSIONS_SQL = text("""
SELECT coalesce(a.name, e.extname) AS name, a.default_version, e.extversion, pg_get_userbyid(e.extowner) AS owner
FROM pg_available_extensions a FULL JOIN pg_extension e ON e.extname = a.name
WHERE a.name = ANY(CAST(:wanted AS text[])) OR e.extname IS NOT NULL
""")


def _records_sql(table: VersionTable, columns: tuple[str, ...]) -> str:
    select = ", ".join(c if c in columns else f"NULL AS {c}" for c in table.column_names)
    return f"SELECT {select} FROM {table.ident} ORDER BY id"  # noqa: S608 - names come from the desired state


def read_records(
    conn: Connection, table: VersionTable, columns: tuple[str, ...]
) -> tuple[MigrationRecord, ...]:
    """The version table's rows; columns the table lacks yet read as NULL."""
    rows = conn.execute(text(_records_sql(table, columns))).mappings()
    return tuple(
        MigrationRecord(
            id=r["id"],
            migration_name=r["migration_name"],
            applied_at=r["applied_at"],
            # varchar in the table, but a legacy tool may have written numbers: compare as text.
            version=None if r["version"] is None else str(r["version"]),
            description=r["description"],
            executed_at=r["executed_at"],
            checksum=None if r["checksum"] is None else str(r["checksum"]),
            execution_time_ms=r["execution_time_ms"],
        )
        for r in rows
    )


def read_catalog(
    conn: Connection,
    desired: DesiredState,
    records_conn: Callable[[], Connection] | None = None,
    *,
    every_schema: bool = False,
) -> Catalog:
    """Snapshot everything the desired state cares about, in at most four queries.

    `records_conn` opens (or returns) the owner session, used only to read the version table's
    rows when the admin may not."""
    group = SUPERUSER_GROUP
    admin, owner, mt = desired.admin, desired.owner, desired.version_table
    pairs = [
        (admin, owner, "SET"),
        (admin, owner, "GRANT"),
        (admin, group, "SET"),
        (owner, group, "USAGE"),
    ]
    row = (
        conn.execute(
            _ROLES_SQL,
            {
                "names": [admin, owner, group],
                "members": [p[0] for p in pairs],
                "targets": [p[1] for p in pairs],
                "privileges": [p[2] for p in pairs],
                "group": group,
                "owner": owner,
                "mschema": mt.schema,
            },
        )
        .mappings()
        .one()
    )
    set_owner, grant_owner, set_group, owner_usage = row["capabilities"]
    roles = RoleFacts(
        current_user=row["current_user"],
        server_version_num=row["version"],
        roles={
            r["name"]: Role(
                r["name"],
                r["exists"],
                r["superuser"],
                r["login"],
                r["createrole"],
                tuple(r["member_of"] or ()),
            )
            for r in row["roles"]
        },
        superuser_group_members=tuple(row["group_members"]),
        admin_can_set_owner=set_owner,
        admin_can_grant_owner=grant_owner,
        admin_can_set_group=set_group,
        owner_inherits_group=owner_usage,
        owner_can_create_schemas=bool(row["owner_create_db"]),
        owner_can_create_in_migrations_schema=bool(row["owner_create_mschema"]),
    )

    schemas: dict[str, SchemaInfo] = {}
    relations: dict[tuple[str, str], Relation] = {}
    migrations = MigrationsTableInfo(exists=False)
    invalid: set[tuple[str, str]] = set()
    relation_rows = conn.execute(
        _RELATIONS_SQL,
        {
            "mschema": mt.schema,
            "mtable": mt.name,
            "owner": owner,
            # The relations the concerns look at: the new schemas, the legacy ones, the version
            # table's; a database's other schemas (thousands of tables of other services) cost
            # `plan` and `verify` nothing. `inspect` lists every schema's tables.
            "only": None
            if every_schema
            else sorted(
                {*desired.schema_names, *desired.layout.protected_schemas, mt.schema}
                | {s.legacy for s in desired.layout.schemas if s.legacy}
            ),
        },
    ).mappings()
    for r in relation_rows:
        # `flag`: for a schema, whether the owner may CREATE in it; for a relation, whether it
        # follows a table (an index, or a sequence owned by a column).
        if r["kind"] == "n":
            schemas[r["schema"]] = SchemaInfo(r["schema"], r["owner"], r["flag"] is True)
            continue
        if r["kind"] == "x":
            invalid.add((r["schema"], r["name"]))
            continue
        relations[(r["schema"], r["name"])] = Relation(
            r["schema"],
            r["name"],
            RELATION_KINDS[r["kind"]],
            r["owner"],
            bool(r["flag"]),
        )
        if r["version_table"] is not None:
            vt, seq = r["version_table"], r["version_table"]["sequence"] or {}
            migrations = MigrationsTableInfo(
                exists=True,
                owner=r["owner"],
                columns=tuple(vt["columns"]),
                readable=vt["select"],
                insertable=vt["insert"],
                sequence=seq.get("name"),
                sequence_usable=bool(seq.get("usage")),
            )

    extensions = {
        r["name"]: Extension(r["name"], r["default_version"], r["extversion"], r["owner"])
        for r in conn.execute(
            _EXTENSIONS_SQL, {"wanted": list(desired.layout.extensions)}
        ).mappings()
    }

    privileges = read_privileges(conn, desired)
    code = tuple(
        Code(
            r.kind,
            r.name,
            r.owner,
            r.definer,
            r.public_execute,
            tuple(r.names_protected),
            r.owner_reaches,
        )
        for r in conn.execute(
            _CODE_SQL,
            {
                "managed": list(desired.schema_names),
                "protected": list(desired.layout.protected_schemas),
            },
        )
    )

    if migrations.exists:
        # Once nucleus owns the table, the admin reads it only if granted; until then the owner
        # session (when there is one) reads the records, so a run never mistakes "unreadable"
        # for "nothing recorded".
        reader = conn if migrations.readable else (records_conn() if records_conn else None)
        if reader is not None:
            migrations = replace(
                migrations,
                records=read_records(reader, mt, migrations.columns),
                records_known=True,
            )
    objects = None
    if desired.expected is not None:
        # Last: it pins search_path to pg_catalog for the rest of this read transaction.
        objects = read_objects(
            conn, desired.expected.snapshot.schemas_in_scope, (mt.schema, mt.name)
        )
    return Catalog(
        row["database"],
        roles,
        schemas,
        relations,
        extensions,
        migrations,
        frozenset(invalid),
        privileges,
        code=code,
        shadowed=tuple(
            conn.execute(_SHADOWED_SQL, {"managed": list(desired.schema_names)}).scalars().all()
        ),
        objects=objects,
    )


_ACCESS_SQL = text("""
SELECT r.name AS role, n.nspname AS schema,
       has_schema_privilege(r.name, n.oid, 'USAGE') AS usage,
       bool_and(has_table_privilege(r.name, c.oid, 'SELECT')) AS read,
       -- (a list of privileges would mean "any of them": each is asked on its own)
       bool_and(has_table_privilege(r.name, c.oid, 'INSERT')
                AND has_table_privilege(r.name, c.oid, 'UPDATE')
                AND has_table_privilege(r.name, c.oid, 'DELETE')) AS write,
       has_schema_privilege(r.name, n.oid, 'CREATE') AS "create",
       r.name <> 'public' AND pg_has_role(r.name, n.nspowner, 'USAGE') AS owner
FROM unnest(CAST(:roles AS text[])) AS r(name)
CROSS JOIN pg_namespace n
LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'p')
WHERE n.nspname = ANY(CAST(:schemas AS text[]))
  AND (r.name = 'public' OR to_regrole(quote_ident(r.name)) IS NOT NULL)
GROUP BY r.name, n.nspname, n.oid, n.nspowner
ORDER BY r.name, n.nspname
""")


def read_access(conn: Connection, desired: DesiredState, schemas: list[str]) -> tuple[Access, ...]:
    """The matrix of `inspect`: every declared role, the owner, the admin and PUBLIC, against
    the new schemas and the legacy ones (reported, never changed). One query."""
    p = desired.privileges
    roles = [*p.group_names, *sorted({m.role for m in p.members}), desired.owner, desired.admin]
    rows = conn.execute(
        _ACCESS_SQL, {"roles": [*dict.fromkeys(roles), "public"], "schemas": schemas}
    ).mappings()
    return tuple(
        Access(
            "PUBLIC" if r["role"] == "public" else r["role"],
            r["schema"],
            r["usage"],
            r["read"],
            r["write"],
            r["create"],
            bool(r["owner"]),
        )
        for r in rows
    )


# Effective access the declaration never gives a runtime role, asked of the database itself
# (has_*_privilege and pg_has_role: memberships, PUBLIC, grants to cloudsqliam*, column grants
# and grant options all count), over every schema but the managed ones, where the grants and
# memberships are authoritative (privileges concern) and the version table, whose grants are
# too. One statement for all roles and objects:
# - a table, view or sequence of a legacy schema: any privilege (a grant there is one USAGE
#   away from being used, and what the live services use is what this tool protects);
# - any other schema's (another service's, `public`'s): a privilege the role can use, i.e.
#   with USAGE on the schema too;
# - CREATE in any schema, and on the database.
# Privileges are asked only where an ACL (the relation's or a column's) names PUBLIC or a role
# the login inherits from, or it inherits the owner: 10,000 tables another service keeps cost
# a scan of pg_class and no privilege call. `via` names each path: the grantee, its grantor,
# the column of a column grant; or `owner:ROLE`.
_BEYOND_SQL = text("""
WITH r AS MATERIALIZED (
         SELECT rolname AS name, oid FROM pg_roles WHERE rolname = ANY(CAST(:roles AS text[]))),
     heirs AS MATERIALIZED (
         -- what each role inherits privileges from: itself, its groups (through any chain), PUBLIC
         SELECT r.name, a.oid FROM r JOIN pg_roles a ON pg_has_role(r.oid, a.oid, 'USAGE')
         UNION ALL SELECT r.name, 0 FROM r),
     spaces AS MATERIALIZED (
         SELECT n.oid, n.nspname, n.nspname = ANY(CAST(:legacy AS text[])) AS protected
         FROM pg_namespace n
         WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
           AND NOT n.nspname = ANY(CAST(:managed AS text[]))),
     vt AS MATERIALIZED (
         -- the version table and the sequence of its id: authoritative grants, not asked here
         SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = :mschema AND c.relname = :mtable
         UNION ALL
         SELECT d.objid FROM pg_depend d JOIN pg_class c ON c.oid = d.refobjid
              JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = :mschema AND c.relname = :mtable AND d.classid = 'pg_class'::regclass
           AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')),
     reach AS MATERIALIZED (
         -- (role, schema) pairs first: a schema no runtime role may use costs one call per
         -- role, not one per table
         SELECT r.name, r.oid, s.oid AS nsp, s.nspname
         FROM r CROSS JOIN spaces s
         WHERE s.protected OR has_schema_privilege(r.oid, s.oid, 'USAGE')),
     candidates AS MATERIALIZED (
         SELECT r.name AS role, r.oid AS roid, c.oid, c.relkind, c.relowner, c.relacl,
                quote_ident(r.nspname) || '.' || quote_ident(c.relname) AS object
         FROM reach r JOIN pg_class c ON c.relnamespace = r.nsp
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
           AND c.oid NOT IN (SELECT oid FROM vt)
           AND (c.relowner IN (SELECT h.oid FROM heirs h WHERE h.name = r.name)
                OR EXISTS (SELECT 1 FROM aclexplode(c.relacl) a
                           JOIN heirs h ON h.name = r.name AND h.oid = a.grantee)
                OR (c.relkind <> 'S' AND EXISTS (
                    SELECT 1 FROM pg_attribute at CROSS JOIN LATERAL aclexplode(at.attacl) a
                    JOIN heirs h ON h.name = r.name AND h.oid = a.grantee
                    WHERE at.attrelid = c.oid AND at.attnum > 0 AND at.attacl IS NOT NULL)))),
     found AS (
         SELECT cd.*, p.privilege
         FROM candidates cd
         CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE',
                                 'REFERENCES', 'TRIGGER']) AS p(privilege)
         WHERE cd.relkind <> 'S'
           -- a privilege granted on one column is a way in too (has_any_column_privilege)
           AND CASE WHEN p.privilege IN ('SELECT', 'INSERT', 'UPDATE', 'REFERENCES')
                    THEN has_any_column_privilege(cd.roid, cd.oid, p.privilege)
                    ELSE has_table_privilege(cd.roid, cd.oid, p.privilege) END
         UNION ALL
         SELECT cd.*, p.privilege
         FROM candidates cd CROSS JOIN unnest(ARRAY['USAGE', 'SELECT', 'UPDATE']) AS p(privilege)
         WHERE cd.relkind = 'S' AND has_sequence_privilege(cd.roid, cd.oid, p.privilege))
SELECT f.role, CASE WHEN f.relkind = 'S' THEN 'sequence ' ELSE 'table ' END || f.object AS object,
       f.privilege,
       ARRAY(SELECT DISTINCT x FROM (
           SELECT 'owner:' || pg_get_userbyid(f.relowner) AS x
           WHERE f.relowner IN (SELECT h.oid FROM heirs h WHERE h.name = f.role)
           UNION ALL
           SELECT json_build_array(CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                        ELSE pg_get_userbyid(a.grantee) END,
                                   pg_get_userbyid(a.grantor), a.col)::text
           FROM (SELECT e.grantee, e.grantor, e.privilege_type, NULL AS col
                 FROM aclexplode(f.relacl) e
                 UNION ALL
                 SELECT e.grantee, e.grantor, e.privilege_type, at.attname
                 FROM pg_attribute at CROSS JOIN LATERAL aclexplode(at.attacl) e
                 WHERE at.attrelid = f.oid AND at.attnum > 0 AND at.attacl IS NOT NULL) a
           JOIN heirs h ON h.name = f.role AND h.oid = a.grantee
           WHERE a.privilege_type = f.privilege) v ORDER BY 1) AS via
FROM found f
-- an extension's own relations (pg_stat_statements' view, granted to PUBLIC by the extension)
-- stand with their extension (LIMIT 1: looked up per row found, not an anti-join of pg_depend)
WHERE NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                    AND d.objid = f.oid AND d.deptype = 'e' LIMIT 1)
UNION ALL
-- a SECURITY DEFINER function the role may call runs with its owner's rights: a way to do
-- whatever the owner may (`DELETE FROM dna_schema.entities` in a function of postgres). Every
-- function is executable by PUBLIC unless revoked, so EXECUTE alone is no finding: only one
-- whose owner's rights the role does not already have. The new schemas' functions are judged
-- by the code concern, an extension's stand with their extension; a trigger or event trigger
-- function cannot be called, only fired.
SELECT rc.name, 'function ' || quote_ident(rc.nspname) || '.' || quote_ident(p.proname) || '('
           || pg_get_function_identity_arguments(p.oid) || ')', 'EXECUTE',
       ARRAY(SELECT DISTINCT json_build_array(
                    CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
                    pg_get_userbyid(a.grantor), NULL)::text
             FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
             JOIN heirs h ON h.name = rc.name AND h.oid = a.grantee
             WHERE a.privilege_type = 'EXECUTE' ORDER BY 1)
FROM reach rc JOIN pg_proc p ON p.pronamespace = rc.nsp
WHERE p.prosecdef
  AND p.prorettype NOT IN ('trigger'::regtype, 'event_trigger'::regtype)
  AND NOT pg_has_role(rc.oid, p.proowner, 'USAGE')
  AND has_function_privilege(rc.oid, p.oid, 'EXECUTE')
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                    AND d.objid = p.oid AND d.deptype = 'e' LIMIT 1)
UNION ALL
-- a large object (no schema, no has_*_privilege before PostgreSQL 17): read or written by
-- whom its ACL names (PUBLIC, a role the login inherits) or by a group owning it; one the
-- login itself created (lo_create needs no privilege) is its own
SELECT r.name, 'large object ' || l.oid, p.privilege,
       ARRAY(SELECT DISTINCT x FROM (
           SELECT 'owner:' || pg_get_userbyid(l.lomowner) AS x
           WHERE l.lomowner IN (SELECT h.oid FROM heirs h WHERE h.name = r.name)
           UNION ALL
           SELECT json_build_array(CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                        ELSE pg_get_userbyid(a.grantee) END,
                                   pg_get_userbyid(a.grantor), NULL)::text
           FROM aclexplode(l.lomacl) a JOIN heirs h ON h.name = r.name AND h.oid = a.grantee
           WHERE a.privilege_type = p.privilege) v ORDER BY 1)
FROM r CROSS JOIN pg_largeobject_metadata l CROSS JOIN unnest(ARRAY['SELECT', 'UPDATE']) AS p(privilege)
WHERE l.lomowner <> r.oid
  AND (l.lomowner IN (SELECT h.oid FROM heirs h WHERE h.name = r.name)
       OR EXISTS (SELECT 1 FROM aclexplode(l.lomacl) a
                  JOIN heirs h ON h.name = r.name AND h.oid = a.grantee
                  WHERE a.privilege_type = p.privilege))
UNION ALL
-- default privileges outside the new schemas, and any role's but the owner's for every schema
-- (the owner's the privileges concern judges): what the next table or sequence that role
-- creates there will grant, e.g. a legacy service's next table, writable by PUBLIC
SELECT h.name, 'future ' || CASE d.defaclobjtype WHEN 'r' THEN 'tables' ELSE 'sequences' END
           || ' of ' || quote_ident(pg_get_userbyid(d.defaclrole))
           || CASE WHEN d.defaclnamespace = 0 THEN ' in every schema'
                   ELSE ' in schema ' || quote_ident(n.nspname) END,
       a.privilege_type,
       array_agg(DISTINCT json_build_array(CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                                ELSE pg_get_userbyid(a.grantee) END,
                                           pg_get_userbyid(a.grantor), NULL)::text)
FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace
CROSS JOIN LATERAL aclexplode(d.defaclacl) a
JOIN heirs h ON h.oid = a.grantee
WHERE d.defaclobjtype IN ('r', 'S')
  AND CASE WHEN d.defaclnamespace = 0 THEN pg_get_userbyid(d.defaclrole) <> :owner
           ELSE NOT n.nspname = ANY(CAST(:managed AS text[])) END
  AND NOT pg_has_role(h.name, d.defaclrole, 'USAGE')
GROUP BY 1, 2, 3
UNION ALL
SELECT r.name, 'schema ' || quote_ident(n.nspname), 'CREATE', ARRAY[]::text[]
FROM r CROSS JOIN pg_namespace n
WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
  AND has_schema_privilege(r.oid, n.oid, 'CREATE')
UNION ALL
SELECT r.name, 'database ' || quote_ident(current_database()), 'CREATE', ARRAY[]::text[]
FROM r WHERE has_database_privilege(r.oid, current_database(), 'CREATE')
ORDER BY 1, 2, 3
""")

# Roles a runtime role reaches only through another role (not a membership of its own, which
# the memberships' findings judge): `GRANT nucleus TO cloudsqliamserviceaccount` makes every
# IAM service account a member of the owner. Each row names the edges into the reached role
# from what the runtime role is already a member of, with their grantors.
_REACHED_SQL = text("""
WITH r AS (SELECT rolname AS name, oid FROM pg_roles WHERE rolname = ANY(CAST(:roles AS text[])))
SELECT r.name AS role, a.rolname AS reached,
       pg_has_role(:admin, a.oid, 'USAGE WITH ADMIN OPTION') AS admin_holds_admin,
       ARRAY(SELECT json_build_array(pg_get_userbyid(m.member), pg_get_userbyid(m.grantor),
                                     pg_has_role(:admin, m.grantor, 'USAGE'))::text
             FROM pg_auth_members m
             WHERE m.roleid = a.oid AND m.member <> r.oid AND pg_has_role(r.oid, m.member, 'MEMBER')
             ORDER BY 1) AS via
FROM r JOIN pg_roles a ON a.oid <> r.oid AND pg_has_role(r.oid, a.oid, 'MEMBER')
WHERE NOT EXISTS (SELECT 1 FROM pg_auth_members d WHERE d.member = r.oid AND d.roleid = a.oid)
ORDER BY 1, 2
""")


def _path(value: str) -> AccessPath:
    if value.startswith("owner:"):
        return AccessPath(value.removeprefix("owner:"), owner=True)
    grantee, grantor, column = json.loads(value)
    return AccessPath(grantee, grantor, column)


def runtime_roles(desired: DesiredState) -> list[str]:
    """The roles whose every membership is read: the declared groups and the logins services
    and people use (the app login, the declared IAM identities); not the admin and the owner,
    Cloud SQL built-in users by design."""
    p = desired.privileges
    logins = {m.role for m in p.members} | ({p.app_login} if p.app_login else set())
    return sorted((set(p.group_names) | logins) - {desired.admin, desired.owner})


def read_privileges(conn: Connection, desired: DesiredState) -> PrivilegeFacts:
    """Grants in the new schemas, the declared roles, the managed groups' memberships and
    default privileges: two queries."""
    p = desired.privileges
    names = sorted({*p.group_names, *(m.role for m in p.members), desired.owner, desired.admin})
    grants: list[Grant] = []
    owners: dict[tuple[str, str | None], str] = {}
    mt = desired.version_table
    for r in conn.execute(
        _GRANTS_SQL,
        {"managed": list(desired.schema_names), "mschema": mt.schema, "mtable": mt.name},
    ).mappings():
        owners[(r["schema"], r["name"])] = r["owner"]
        grants.append(
            Grant(r["kind"], r["schema"], r["name"], r["grantee"], r["privilege"], r["grantable"])
        )
    facts = (
        conn.execute(
            _ROLE_FACTS_SQL,
            {
                "names": names,
                "groups": list(p.group_names),
                "runtime": runtime_roles(desired),
                "admin": desired.admin,
            },
        )
        .mappings()
        .one()
    )
    watched = [
        r
        for r in runtime_roles(desired)
        if p.manage_iam or r not in {m.role for m in p.members if m.kind.value == "iam"}
    ]
    beyond = tuple(
        Beyond(row.role, row.object, row.privilege, tuple(_path(v) for v in row.via))
        for row in conn.execute(
            _BEYOND_SQL,
            {
                "roles": watched,
                "legacy": list(desired.layout.protected_schemas),
                "managed": list(desired.schema_names),
                "mschema": mt.schema,
                "mtable": mt.name,
                "owner": desired.owner,
            },
        )
    )
    reached = tuple(
        Reached(
            row.role,
            row.reached,
            tuple(ChainEdge(*json.loads(v)) for v in row.via),
            row.admin_holds_admin,
        )
        for row in conn.execute(_REACHED_SQL, {"roles": watched, "admin": desired.admin})
    )
    return PrivilegeFacts(
        beyond=beyond,
        reached=reached,
        grants=tuple(grants),
        defaults=tuple(
            DefaultGrant(d["role"], d["schema"], d["objtype"], d["grantee"], d["privilege"])
            for d in facts["defaults"]
        ),
        memberships=tuple(
            Membership(
                m["group"],
                m["member"],
                m["admin"],
                m["inherit"],
                m["grantor"],
                m["iam"],
                m["acts_for_grantor"],
            )
            for m in facts["memberships"]
        ),
        roles={
            r["name"]: RoleState(
                r["name"],
                r["exists"],
                r["login"],
                r["superuser_group"],
                r["iam"],
                r["admin_holds_admin"],
                tuple(r["attributes"] or ()),
            )
            for r in facts["roles"]
        },
        owners=owners,
    )
