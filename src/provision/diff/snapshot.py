"""The one reader of `diff`: a fixed number of set-based catalog queries per database.

`read_snapshot` runs, in one REPEATABLE READ, READ ONLY transaction with bounded
`statement_timeout` and `lock_timeout` (a read never hangs behind someone's ALTER), one query
per kind of object (roles, schemas, relations, columns, constraints, indexes, functions,
triggers, policies, default privileges, extensions, memberships) plus at most one for the
rows of the version table: 13 queries whatever the number of objects. It returns frozen,
typed data; comparing two snapshots is `compare.compare`, a pure function.

`search_path` is pinned to `pg_catalog` for the transaction, so that every name the server
prints (`pg_get_indexdef`, `pg_get_viewdef`, `format_type`, ...) is schema-qualified the same
way on both sides. ACLs are read with `acldefault()` standing in for a NULL ACL (a NULL and an
explicit default grant the same thing) and exploded by `aclexplode()` into (grantee,
privilege, grantable) triples; the grantor is left out on purpose: an ownership hand-off
rewrites it and it grants nothing by itself. Objects that belong to an extension (pgvector's
hundreds of functions) are left out: the extension and its version stand for them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, RowMapping, text

from provision.sql import ident

# A privilege entry: (grantee, privilege, grantable). PUBLIC is spelled "PUBLIC".
Grant = tuple[str, str, bool]

STATEMENT_TIMEOUT_MS = 60_000
LOCK_TIMEOUT_MS = 5_000


@dataclass(frozen=True)
class Owned:
    """Owner and privileges of an object (a schema, relation, function or the database)."""

    owner: str
    grants: frozenset[Grant] = frozenset()


@dataclass(frozen=True)
class Relation:
    schema: str
    name: str
    kind: str  # table, partitioned table, view, materialized view, sequence, foreign table
    owned: Owned
    owned_by: tuple[str, str, str] | None = (
        None  # a sequence's (schema, table, column): serial/identity
    )
    persistence: str = "permanent"
    partition_key: str | None = None
    partition_of: str | None = None  # "parent FOR VALUES ..."
    row_security: bool = False
    force_row_security: bool = False
    definition: str | None = None  # views and materialized views
    sequence: tuple[tuple[str, str], ...] | None = None  # (attribute, value) of a sequence


@dataclass(frozen=True)
class Column:
    schema: str
    table: str
    name: str
    type: str
    not_null: bool
    default: str | None
    identity: str | None  # "always", "by default"
    generated: str | None  # the expression of a stored generated column
    collation: str | None
    grants: frozenset[Grant] = frozenset()  # column-level privileges only


@dataclass(frozen=True)
class Constraint:
    schema: str
    table: str
    name: str
    type: str  # primary key, foreign key, unique, check, exclusion, trigger
    definition: str
    validated: bool


@dataclass(frozen=True)
class Index:
    schema: str
    table: str
    name: str
    definition: str
    valid: bool


@dataclass(frozen=True)
class Function:
    schema: str
    signature: str  # name(identity arguments)
    kind: str  # function, procedure, aggregate, window
    owned: Owned
    definition: str | None  # pg_get_functiondef; None for aggregates


@dataclass(frozen=True)
class Trigger:
    schema: str
    table: str
    name: str
    definition: str
    enabled: str


@dataclass(frozen=True)
class Policy:
    schema: str
    table: str
    name: str
    command: str
    permissive: bool
    roles: frozenset[str]
    using: str | None
    with_check: str | None


@dataclass(frozen=True)
class DefaultPrivilege:
    role: str
    schema: str | None  # None: for the role's objects in every schema
    object_type: str  # tables, sequences, functions, types, schemas
    grants: frozenset[Grant]


@dataclass(frozen=True)
class Extension:
    name: str
    version: str
    schema: str
    owner: str


@dataclass(frozen=True)
class Membership:
    role: str  # the group
    member: str
    admin: bool
    inherit: bool
    set: bool


@dataclass(frozen=True)
class MigrationRecord:
    version: str | None  # None: a row of the old tooling (migration_name only)
    checksum: str | None
    migration_name: str | None


@dataclass(frozen=True)
class Snapshot:
    database: str
    current_user: str
    server_version_num: int
    schemas_in_scope: tuple[str, ...]
    database_owned: Owned
    schemas: Mapping[str, Owned]
    relations: Mapping[tuple[str, str], Relation]
    columns: Mapping[tuple[str, str, str], Column]
    constraints: Mapping[tuple[str, str, str], Constraint]
    indexes: Mapping[tuple[str, str], Index]
    functions: Mapping[tuple[str, str], Function]
    triggers: Mapping[tuple[str, str, str], Trigger]
    policies: Mapping[tuple[str, str, str], Policy]
    default_privileges: Mapping[tuple[str, str | None, str], DefaultPrivilege]
    extensions: Mapping[str, Extension]
    memberships: tuple[Membership, ...]
    migrations_table: str  # schema.name of the version table
    # None: the table exists but this session may not read it; () when it does not exist.
    migration_records: tuple[MigrationRecord, ...] | None
    queries: int = field(default=0, compare=False)


# `:schemas` is the list of schemas in scope. An object is an extension's member when pg_depend
# says so (deptype 'e'); such objects are compared through their extension.
_META_SQL = """
SELECT current_database() AS database, current_user AS current_user,
       current_setting('server_version_num')::int AS version,
       pg_get_userbyid(d.datdba) AS owner, coalesce((SELECT json_agg(json_build_array(
                 CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
                 a.privilege_type, a.is_grantable))
             FROM aclexplode(coalesce(d.datacl, acldefault(CAST('d' AS "char"), d.datdba))) a), '[]') AS grants
FROM pg_database d WHERE d.datname = current_database()
"""

_SCHEMAS_SQL = """
SELECT n.nspname AS name, pg_get_userbyid(n.nspowner) AS owner, coalesce((SELECT json_agg(json_build_array(
                 CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
                 a.privilege_type, a.is_grantable))
             FROM aclexplode(coalesce(n.nspacl, acldefault(CAST('n' AS "char"), n.nspowner))) a), '[]') AS grants
FROM pg_namespace n WHERE n.nspname = ANY(CAST(:schemas AS text[]))
"""

_RELATIONS_SQL = """
SELECT n.nspname AS schema, c.relname AS name, c.relkind AS kind,
       pg_get_userbyid(c.relowner) AS owner, coalesce((SELECT json_agg(json_build_array(
                 CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
                 a.privilege_type, a.is_grantable))
             FROM aclexplode(coalesce(c.relacl, acldefault(CAST(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END AS "char"), c.relowner))) a), '[]') AS grants,
       c.relpersistence AS persistence, c.relrowsecurity AS rls, c.relforcerowsecurity AS force_rls,
       CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END AS partition_key,
       CASE WHEN c.relispartition THEN
           (SELECT quote_ident(pn.nspname) || '.' || quote_ident(p.relname) FROM pg_inherits i
              JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = p.relnamespace
            WHERE i.inhrelid = c.oid) || ' ' || pg_get_expr(c.relpartbound, c.oid) END AS partition_of,
       CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid, true) END AS definition,
       CASE WHEN c.relkind = 'S' THEN (
           SELECT json_build_object('type', format_type(s.seqtypid, NULL), 'start', s.seqstart::text,
                  'increment', s.seqincrement::text, 'minimum', s.seqmin::text,
                  'maximum', s.seqmax::text, 'cache', s.seqcache::text, 'cycle', s.seqcycle::text)
           FROM pg_sequence s WHERE s.seqrelid = c.oid) END AS sequence,
       CASE WHEN c.relkind = 'S' THEN (
           SELECT json_build_array(tn.nspname, t.relname, a.attname)
           FROM pg_depend d JOIN pg_class t ON t.oid = d.refobjid
                JOIN pg_namespace tn ON tn.oid = t.relnamespace
                JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
           WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
             AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') LIMIT 1) END AS owned_by
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(CAST(:schemas AS text[])) AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')"""

_COLUMNS_SQL = """
SELECT n.nspname AS schema, c.relname AS table, a.attname AS name,
       format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null,
       CASE WHEN a.attgenerated = '' THEN pg_get_expr(ad.adbin, ad.adrelid) END AS "default",
       CASE a.attidentity WHEN 'a' THEN 'always' WHEN 'd' THEN 'by default' END AS identity,
       CASE WHEN a.attgenerated <> '' THEN pg_get_expr(ad.adbin, ad.adrelid) END AS generated,
       CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation
            THEN (SELECT quote_ident(co.collname) FROM pg_collation co WHERE co.oid = a.attcollation) END
           AS collation,
       coalesce((SELECT json_agg(json_build_array(
                   CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(x.grantee) END,
                   x.privilege_type, x.is_grantable))
                 FROM aclexplode(a.attacl) x), '[]') AS grants
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
     JOIN pg_namespace n ON n.oid = c.relnamespace
     JOIN pg_type t ON t.oid = a.atttypid
     LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
WHERE n.nspname = ANY(CAST(:schemas AS text[])) AND c.relkind IN ('r', 'p', 'f')
  AND a.attnum > 0 AND NOT a.attisdropped
"""

_CONSTRAINTS_SQL = """
SELECT n.nspname AS schema, c.relname AS table, k.conname AS name, k.contype AS type,
       pg_get_constraintdef(k.oid, true) AS definition, k.convalidated AS validated
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
     JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(CAST(:schemas AS text[])) AND k.contype <> 'n'
"""

_INDEXES_SQL = """
SELECT n.nspname AS schema, t.relname AS table, c.relname AS name,
       pg_get_indexdef(i.indexrelid) AS definition, i.indisvalid AS valid
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
     JOIN pg_class t ON t.oid = i.indrelid
     JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(CAST(:schemas AS text[]))
"""

_FUNCTIONS_SQL = """
SELECT n.nspname AS schema, p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' AS signature,
       p.prokind AS kind, pg_get_userbyid(p.proowner) AS owner, coalesce((SELECT json_agg(json_build_array(
                 CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
                 a.privilege_type, a.is_grantable))
             FROM aclexplode(coalesce(p.proacl, acldefault(CAST('f' AS "char"), p.proowner))) a), '[]') AS grants,
       CASE WHEN p.prokind IN ('f', 'p', 'w') THEN pg_get_functiondef(p.oid) END AS definition
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = ANY(CAST(:schemas AS text[]))
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
      WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')"""

_TRIGGERS_SQL = """
SELECT n.nspname AS schema, c.relname AS table, g.tgname AS name,
       pg_get_triggerdef(g.oid, true) AS definition, g.tgenabled AS enabled
FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid
     JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(CAST(:schemas AS text[])) AND NOT g.tgisinternal
"""

_POLICIES_SQL = """
SELECT n.nspname AS schema, c.relname AS table, p.polname AS name, p.polcmd AS command,
       p.polpermissive AS permissive,
       ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(r) END FROM unnest(p.polroles) r)
           AS roles,
       pg_get_expr(p.polqual, p.polrelid) AS using, pg_get_expr(p.polwithcheck, p.polrelid) AS with_check
FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
     JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(CAST(:schemas AS text[]))
"""

_DEFAULT_PRIVILEGES_SQL = """
SELECT pg_get_userbyid(d.defaclrole) AS role, n.nspname AS schema, d.defaclobjtype AS type,
       coalesce((SELECT json_agg(json_build_array(
                   CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
                   a.privilege_type, a.is_grantable))
                 FROM aclexplode(d.defaclacl) a), '[]') AS grants
FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace
WHERE d.defaclnamespace = 0 OR n.nspname = ANY(CAST(:schemas AS text[]))
"""

_EXTENSIONS_SQL = """
SELECT e.extname AS name, e.extversion AS version, n.nspname AS schema,
       pg_get_userbyid(e.extowner) AS owner
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
"""

# inherit_option and set_option exist from PostgreSQL 16 on; to_jsonb reads them where they
# exist and leaves them out (membership implies both) on older servers.
_MEMBERSHIPS_SQL = """
SELECT g.rolname AS role, u.rolname AS member, m.admin_option AS admin,
       coalesce((to_jsonb(m) ->> 'inherit_option')::boolean, u.rolinherit) AS inherit,
       coalesce((to_jsonb(m) ->> 'set_option')::boolean, true) AS set
FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member
"""

_VERSION_TABLE_SQL = """
SELECT has_table_privilege(c.oid, 'SELECT') AS readable
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = :schema AND c.relname = :name AND c.relkind IN ('r', 'p')
"""

_RELKINDS = {
    "r": "table",
    "p": "partitioned table",
    "v": "view",
    "m": "materialized view",
    "f": "foreign table",
    "S": "sequence",
}
_CONTYPES = {
    "p": "primary key",
    "f": "foreign key",
    "u": "unique",
    "c": "check",
    "x": "exclusion",
    "t": "trigger",
}
_PROKINDS = {"f": "function", "p": "procedure", "a": "aggregate", "w": "window"}
_POLCMDS = {"*": "ALL", "r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE"}
_DEFACL_TYPES = {"r": "tables", "S": "sequences", "f": "functions", "T": "types", "n": "schemas"}
_TRIGGER_STATES = {"O": "enabled", "D": "disabled", "R": "replica", "A": "always"}
_PERSISTENCE = {"p": "permanent", "u": "unlogged", "t": "temporary"}


def _grants(raw: Iterable[list[Any]] | None) -> frozenset[Grant]:
    return frozenset((str(g), str(p), bool(o)) for g, p, o in raw or ())


def read_snapshot(
    conn: Connection,
    schemas: Iterable[str],
    migrations_table: tuple[str, str],
    *,
    statement_timeout_ms: int = STATEMENT_TIMEOUT_MS,
    lock_timeout_ms: int = LOCK_TIMEOUT_MS,
) -> Snapshot:
    """Read everything `diff` compares, in the given schemas, read-only.

    The transaction is rolled back at the end: nothing is ever written."""
    scope = sorted(set(schemas))
    queries = 0

    def run(sql: str, **params: Any) -> Sequence[RowMapping]:
        nonlocal queries
        queries += 1
        return conn.execute(text(sql), params).mappings().all()

    # The first statement of the transaction: pg8000 has sent BEGIN already.
    conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
    conn.execute(
        text(
            "SELECT set_config('statement_timeout', :st, true), set_config('lock_timeout', :lt, true),"
            " set_config('search_path', 'pg_catalog', true)"
        ),
        {"st": str(statement_timeout_ms), "lt": str(lock_timeout_ms)},
    )
    try:
        meta = run(_META_SQL)[0]
        schema_rows = run(_SCHEMAS_SQL, schemas=scope)
        relation_rows = run(_RELATIONS_SQL, schemas=scope)
        column_rows = run(_COLUMNS_SQL, schemas=scope)
        constraint_rows = run(_CONSTRAINTS_SQL, schemas=scope)
        index_rows = run(_INDEXES_SQL, schemas=scope)
        function_rows = run(_FUNCTIONS_SQL, schemas=scope)
        trigger_rows = run(_TRIGGERS_SQL, schemas=scope)
        policy_rows = run(_POLICIES_SQL, schemas=scope)
        default_rows = run(_DEFAULT_PRIVILEGES_SQL, schemas=scope)
        extension_rows = run(_EXTENSIONS_SQL)
        membership_rows = run(_MEMBERSHIPS_SQL)
        mschema, mname = migrations_table
        version_table = run(_VERSION_TABLE_SQL, schema=mschema, name=mname)
        records: tuple[MigrationRecord, ...] | None = ()
        if version_table:
            records = None
            if version_table[0]["readable"]:
                # to_jsonb reads whichever columns the table has: the legacy shape has no
                # version or checksum, the adopted one has both.
                rows = run(f"SELECT to_jsonb(m) AS row FROM {ident(mschema, mname)} m")  # noqa: S608 - quoted identifier
                records = tuple(
                    sorted(
                        (
                            MigrationRecord(
                                _str(r["row"].get("version")),
                                _str(r["row"].get("checksum")),
                                _str(r["row"].get("migration_name")),
                            )
                            for r in rows
                        ),
                        key=lambda m: (m.version or "", m.migration_name or "", m.checksum or ""),
                    )
                )
    finally:
        conn.rollback()

    return Snapshot(
        database=meta["database"],
        current_user=meta["current_user"],
        server_version_num=meta["version"],
        schemas_in_scope=tuple(scope),
        database_owned=Owned(meta["owner"], _grants(meta["grants"])),
        schemas={r["name"]: Owned(r["owner"], _grants(r["grants"])) for r in schema_rows},
        relations={
            (r["schema"], r["name"]): Relation(
                schema=r["schema"],
                name=r["name"],
                kind=_RELKINDS[r["kind"]],
                owned=Owned(r["owner"], _grants(r["grants"])),
                owned_by=tuple(r["owned_by"]) if r["owned_by"] else None,
                persistence=_PERSISTENCE.get(r["persistence"], r["persistence"]),
                partition_key=r["partition_key"],
                partition_of=r["partition_of"],
                row_security=bool(r["rls"]),
                force_row_security=bool(r["force_rls"]),
                definition=r["definition"],
                sequence=(
                    tuple(
                        sorted(
                            {
                                **r["sequence"],
                                "owned by": ".".join(r["owned_by"]) if r["owned_by"] else "none",
                            }.items()
                        )
                    )
                    if r["sequence"] is not None
                    else None
                ),
            )
            for r in relation_rows
        },
        columns={
            (r["schema"], r["table"], r["name"]): Column(
                r["schema"],
                r["table"],
                r["name"],
                r["type"],
                bool(r["not_null"]),
                r["default"],
                r["identity"],
                r["generated"],
                r["collation"],
                _grants(r["grants"]),
            )
            for r in column_rows
        },
        constraints={
            (r["schema"], r["table"], r["name"]): Constraint(
                r["schema"],
                r["table"],
                r["name"],
                _CONTYPES.get(r["type"], r["type"]),
                r["definition"],
                bool(r["validated"]),
            )
            for r in constraint_rows
        },
        indexes={
            (r["schema"], r["name"]): Index(
                r["schema"], r["table"], r["name"], r["definition"], bool(r["valid"])
            )
            for r in index_rows
        },
        functions={
            (r["schema"], r["signature"]): Function(
                r["schema"],
                r["signature"],
                _PROKINDS.get(r["kind"], r["kind"]),
                Owned(r["owner"], _grants(r["grants"])),
                r["definition"],
            )
            for r in function_rows
        },
        triggers={
            (r["schema"], r["table"], r["name"]): Trigger(
                r["schema"],
                r["table"],
                r["name"],
                r["definition"],
                _TRIGGER_STATES.get(r["enabled"], r["enabled"]),
            )
            for r in trigger_rows
        },
        policies={
            (r["schema"], r["table"], r["name"]): Policy(
                r["schema"],
                r["table"],
                r["name"],
                _POLCMDS.get(r["command"], r["command"]),
                bool(r["permissive"]),
                frozenset(r["roles"] or ()),
                r["using"],
                r["with_check"],
            )
            for r in policy_rows
        },
        default_privileges={
            (r["role"], r["schema"], _DEFACL_TYPES.get(r["type"], r["type"])): DefaultPrivilege(
                r["role"],
                r["schema"],
                _DEFACL_TYPES.get(r["type"], r["type"]),
                _grants(r["grants"]),
            )
            for r in default_rows
        },
        extensions={
            r["name"]: Extension(r["name"], r["version"], r["schema"], r["owner"])
            for r in extension_rows
        },
        memberships=tuple(
            sorted(
                (
                    Membership(
                        r["role"], r["member"], bool(r["admin"]), bool(r["inherit"]), bool(r["set"])
                    )
                    for r in membership_rows
                ),
                key=lambda m: (m.role, m.member),
            )
        ),
        migrations_table=f"{mschema}.{mname}",
        migration_records=records,
        queries=queries,
    )


def _str(value: object) -> str | None:
    return None if value is None else str(value)
