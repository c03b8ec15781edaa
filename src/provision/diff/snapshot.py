"""The one reader of `diff`: a fixed number of set-based catalog queries per database.

`read_snapshot` runs, in one REPEATABLE READ, READ ONLY transaction with bounded
`statement_timeout` and `lock_timeout` (a read never hangs behind someone's ALTER), one query
per kind of object (the database, schemas, relations, columns, constraints, indexes,
functions, triggers, policies, default privileges, extensions, memberships, enum and domain
types), all sent as the scalar subqueries of one statement (one round trip), plus one for the
rows of the version table: 3 statements (with the search_path pin) whatever the number of
objects. Each query
returns its rows as one JSON document, parsed in C by `json`, rather than rows decoded one by
one in Python by the driver (at 10,000 tables, a second per side). It returns frozen, typed
data; comparing two snapshots is `compare.compare`, a pure function.

`search_path` is pinned to `pg_catalog` for the transaction, so that every name the server
prints (`pg_get_indexdef`, `pg_get_viewdef`, `format_type`, ...) is schema-qualified the same
way on both sides. ACLs are read as `aclitem` text with `acldefault()` standing in for a NULL
ACL (a NULL and an explicit default grant the same thing); `parse_acl` turns them into
(grantee, privilege, grantable) triples, leaving the grantor out on purpose: an ownership
hand-off rewrites it and it grants nothing by itself. Objects that belong to an extension
(pgvector's hundreds of functions) are left out: the extension and its version stand for them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from provision.model import (
    Acl,
    Column,
    Constraint,
    DefaultPrivilege,
    Extension,
    Function,
    Grant,
    Index,
    Membership,
    MigrationRecord,
    Owned,
    Policy,
    Relation,
    Rule,
    Snapshot,
    Trigger,
    TypeDef,
    parse_acl,
)
from provision.sql import ident

# The model is provision.model's; named here too for the readers that think of it as diff's.
__all__ = [
    "Acl",
    "Column",
    "Constraint",
    "DefaultPrivilege",
    "Extension",
    "Function",
    "Grant",
    "Index",
    "Membership",
    "MigrationRecord",
    "Owned",
    "Policy",
    "Relation",
    "Rule",
    "Snapshot",
    "Trigger",
    "TypeDef",
    "parse_acl",
    "read_objects",
    "read_snapshot",
]

STATEMENT_TIMEOUT_MS = 60_000
LOCK_TIMEOUT_MS = 5_000

if TYPE_CHECKING:
    from sqlalchemy import Connection

# Every query returns one row, one column: a JSON array of its rows, each a JSON array in the
# field order of the NamedTuple it becomes. `:schemas` is the list of schemas in scope. An object
# is an extension's member when pg_depend says so (deptype 'e'); such objects are compared
# through their extension.

_META_SQL = """
SELECT json_build_array(
    current_database(), current_user, current_setting('server_version_num')::int,
    pg_get_userbyid(d.datdba), CAST(coalesce(d.datacl, acldefault('d', d.datdba)) AS text[]),
    (SELECT has_table_privilege(c.oid, 'SELECT') FROM pg_class c
       JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = :mschema AND c.relname = :mtable AND c.relkind IN ('r', 'p')))
FROM pg_database d WHERE d.datname = current_database()
"""

_SCHEMAS_SQL = """
SELECT coalesce(json_agg(json_build_array(
    n.nspname, pg_get_userbyid(n.nspowner),
    CAST(coalesce(n.nspacl, acldefault('n', n.nspowner)) AS text[]))), '[]')
FROM pg_namespace n WHERE n.nspname = ANY(CAST(:schemas AS text[]))
"""

_RELATIONS_SQL = """
SELECT coalesce(json_agg(json_build_array(
    n.nspname, c.relname,
    CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'partitioned table' WHEN 'v' THEN 'view'
                   WHEN 'm' THEN 'materialized view' WHEN 'f' THEN 'foreign table'
                   ELSE 'sequence' END,
    pg_get_userbyid(c.relowner),
    CAST(coalesce(c.relacl, acldefault(CAST(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END AS "char"), c.relowner)) AS text[]),
    CASE c.relpersistence WHEN 'u' THEN 'unlogged' WHEN 't' THEN 'temporary' ELSE 'permanent' END,
    c.relrowsecurity, c.relforcerowsecurity,
    CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END,
    CASE WHEN c.relispartition THEN
        (SELECT pn.nspname || '.' || p.relname FROM pg_inherits i
           JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = p.relnamespace
         WHERE i.inhrelid = c.oid) || ' ' || pg_get_expr(c.relpartbound, c.oid) END,
    CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid, true) END,
    CASE WHEN c.relkind = 'S' THEN
        format_type(s.seqtypid, NULL) || ' start ' || s.seqstart || ' increment ' || s.seqincrement
        || ' minimum ' || s.seqmin || ' maximum ' || s.seqmax || ' cache ' || s.seqcache
        || CASE WHEN s.seqcycle THEN ' cycle' ELSE '' END END,
    CASE WHEN c.relkind = 'S' THEN owned.by END,
    ARRAY(SELECT o FROM unnest(c.reloptions) o ORDER BY o),
    CASE WHEN c.relkind NOT IN ('r', 'p') THEN 'default'
         WHEN c.relreplident = 'n' THEN 'nothing' WHEN c.relreplident = 'f' THEN 'full'
         WHEN c.relreplident = 'i' THEN 'index ' || coalesce((
             SELECT ri.relname FROM pg_index x JOIN pg_class ri ON ri.oid = x.indexrelid
             WHERE x.indrelid = c.oid AND x.indisreplident), '?')
         ELSE 'default' END)), '[]')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     LEFT JOIN pg_sequence s ON s.seqrelid = c.oid
     -- The column a sequence belongs to, looked up by index for the sequences in scope only
     -- (a join over every pg_depend row cost 0.3 s beside another schema's 10,000 tables).
     LEFT JOIN LATERAL (
        SELECT json_build_array(tn.nspname, t.relname, a.attname) AS by
        FROM pg_depend d JOIN pg_class t ON t.oid = d.refobjid
             JOIN pg_namespace tn ON tn.oid = t.relnamespace
             JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
        WHERE c.relkind = 'S' AND d.classid = 'pg_class'::regclass AND d.objid = c.oid
          AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
        ORDER BY d.refobjid, d.refobjsubid LIMIT 1) owned ON true
WHERE n.nspname = ANY(CAST(:schemas AS text[])) AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
"""

_COLUMNS_SQL = """
SELECT coalesce(json_agg(json_build_array(
    c.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
    CASE WHEN a.attgenerated = '' AND a.atthasdef THEN pg_get_expr(ad.adbin, ad.adrelid) END,
    CASE a.attidentity WHEN 'a' THEN 'always' WHEN 'd' THEN 'by default' END,
    CASE WHEN a.attgenerated <> '' THEN pg_get_expr(ad.adbin, ad.adrelid) END,
    CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation
         THEN (SELECT co.collname FROM pg_collation co WHERE co.oid = a.attcollation) END,
    CAST(a.attacl AS text[]),
    (SELECT count(*) FROM pg_attribute b WHERE b.attrelid = a.attrelid AND b.attnum > 0
       AND b.attnum <= a.attnum AND NOT b.attisdropped),
    CASE WHEN a.attstorage <> t.typstorage THEN CASE a.attstorage WHEN 'p' THEN 'plain'
         WHEN 'e' THEN 'external' WHEN 'm' THEN 'main' ELSE 'extended' END END,
    -- -1 (PostgreSQL 16) or NULL (17): the default target
    CASE WHEN a.attstattarget >= 0 THEN a.attstattarget END)), '[]')
FROM (SELECT c.oid, c.relname, n.nspname
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = ANY(CAST(:schemas AS text[])) AND c.relkind IN ('r', 'p', 'f')) c
     -- LATERAL: each table's columns by index, never a scan of every schema's pg_attribute
     -- (the planner hashed all of it: 0.35 s beside 10,000 tables of another schema)
     CROSS JOIN LATERAL (
        SELECT a.* FROM pg_attribute a
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        OFFSET 0) a  -- OFFSET 0: not pulled up into one big join
     JOIN pg_type t ON t.oid = a.atttypid
     LEFT JOIN LATERAL (
        SELECT d.adbin, d.adrelid FROM pg_attrdef d
        WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum OFFSET 0) ad ON true
"""

_CONSTRAINTS_SQL = """
SELECT coalesce(json_agg(json_build_array(
    n.nspname, c.relname, k.conname,
    CASE k.contype WHEN 'p' THEN 'primary key' WHEN 'f' THEN 'foreign key' WHEN 'u' THEN 'unique'
                   WHEN 'c' THEN 'check' WHEN 'x' THEN 'exclusion' WHEN 't' THEN 'trigger'
                   ELSE k.contype::text END,
    pg_get_constraintdef(k.oid, true), k.convalidated)), '[]')
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
     JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(CAST(:schemas AS text[])) AND k.contype <> 'n'
"""

# An index that implements a constraint (primary key, unique, exclusion) is deparsed by
# pg_get_constraintdef already, storage parameters and tablespace included: its definition is
# not read twice (pg_get_indexdef is the costliest call of the snapshot).
_INDEXES_SQL = """
SELECT coalesce(json_agg(json_build_array(
    t.nspname, t.relname, c.relname,
    CASE WHEN k.oid IS NULL THEN pg_get_indexdef(i.indexrelid)
         ELSE 'implements constraint ' || k.conname END,
    i.indisvalid)), '[]')
FROM (SELECT t.oid, t.relname, n.nspname
      FROM pg_class t JOIN pg_namespace n ON n.oid = t.relnamespace
      WHERE n.nspname = ANY(CAST(:schemas AS text[])) AND t.relkind IN ('r', 'p', 'm')) t
     -- LATERAL, as the columns': each table's indexes by index
     CROSS JOIN LATERAL (SELECT * FROM pg_index x WHERE x.indrelid = t.oid OFFSET 0) i
     JOIN pg_class c ON c.oid = i.indexrelid
     LEFT JOIN LATERAL (
        SELECT k.oid, k.conname FROM pg_constraint k
        WHERE k.conrelid = i.indrelid AND k.conindid = i.indexrelid
          AND k.contype IN ('p', 'u', 'x') OFFSET 0) k ON true
"""

_FUNCTIONS_SQL = """
SELECT coalesce(json_agg(json_build_array(
    n.nspname, p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
    CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' WHEN 'w' THEN 'window'
                   ELSE 'function' END,
    pg_get_userbyid(p.proowner), CAST(coalesce(p.proacl, acldefault('f', p.proowner)) AS text[]),
    CASE WHEN p.prokind IN ('f', 'p', 'w') THEN pg_get_functiondef(p.oid) END)), '[]')
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = ANY(CAST(:schemas AS text[]))
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
"""

_TRIGGERS_SQL = """
SELECT coalesce(json_agg(json_build_array(
    n.nspname, c.relname, g.tgname, pg_get_triggerdef(g.oid, true),
    CASE g.tgenabled WHEN 'D' THEN 'disabled' WHEN 'R' THEN 'replica' WHEN 'A' THEN 'always'
                     ELSE 'enabled' END)), '[]')
FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid
     JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(CAST(:schemas AS text[])) AND NOT g.tgisinternal
"""

_RULES_SQL = """
SELECT coalesce(json_agg(json_build_array(
    n.nspname, c.relname, r.rulename, pg_get_ruledef(r.oid, true),
    CASE r.ev_enabled WHEN 'D' THEN 'disabled' WHEN 'R' THEN 'replica' WHEN 'A' THEN 'always'
                      ELSE 'enabled' END)), '[]')
FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
     JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(CAST(:schemas AS text[])) AND r.rulename <> '_RETURN'
"""

_POLICIES_SQL = """
SELECT coalesce(json_agg(json_build_array(
    n.nspname, c.relname, p.polname,
    CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                  WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
    p.polpermissive,
    ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(r) END FROM unnest(p.polroles) r),
    pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid))), '[]')
FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
     JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(CAST(:schemas AS text[]))
"""

_DEFAULT_PRIVILEGES_SQL = """
SELECT coalesce(json_agg(json_build_array(
    pg_get_userbyid(d.defaclrole), coalesce(n.nspname, ''),
    CASE d.defaclobjtype WHEN 'r' THEN 'tables' WHEN 'S' THEN 'sequences' WHEN 'f' THEN 'functions'
                         WHEN 'T' THEN 'types' WHEN 'n' THEN 'schemas' ELSE d.defaclobjtype::text END,
    CAST(d.defaclacl AS text[]))), '[]')
FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace
WHERE d.defaclnamespace = 0 OR n.nspname = ANY(CAST(:schemas AS text[]))
"""

# Enums and domains (a table's row type, arrays and an extension's types are left out).
_TYPES_SQL = """
SELECT coalesce(json_agg(json_build_array(
    n.nspname, t.typname, CASE t.typtype WHEN 'e' THEN 'enum' ELSE 'domain' END,
    CASE WHEN t.typtype = 'e' THEN (
        SELECT string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder)
        FROM pg_enum e WHERE e.enumtypid = t.oid)
    ELSE format_type(t.typbasetype, t.typtypmod)
         || CASE WHEN t.typnotnull THEN ' NOT NULL' ELSE '' END
         || coalesce(' DEFAULT ' || t.typdefault, '')
         || coalesce((SELECT ' ' || string_agg(pg_get_constraintdef(k.oid, true), ' ' ORDER BY k.conname)
                      FROM pg_constraint k WHERE k.contypid = t.oid), '') END,
    pg_get_userbyid(t.typowner))), '[]')
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname = ANY(CAST(:schemas AS text[])) AND t.typtype IN ('e', 'd')
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid AND d.deptype = 'e')
"""

_EXTENSIONS_SQL = """
SELECT coalesce(json_agg(json_build_array(
    e.extname, e.extversion, n.nspname, pg_get_userbyid(e.extowner))), '[]')
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
"""

# inherit_option and set_option exist from PostgreSQL 16 on; to_jsonb reads them where they
# exist; on older servers membership implies SET, and INHERIT follows the member's rolinherit.
_MEMBERSHIPS_SQL = """
SELECT coalesce(json_agg(json_build_array(
    g.rolname, u.rolname, m.admin_option,
    coalesce((to_jsonb(m) ->> 'inherit_option')::boolean, u.rolinherit),
    coalesce((to_jsonb(m) ->> 'set_option')::boolean, true))), '[]')
FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member
"""


def _records_sql(schema: str, table: str) -> str:
    # to_jsonb reads whichever columns the table has: the legacy shape has no version or
    # checksum, the adopted one has both.
    return (
        "SELECT coalesce(json_agg(json_build_array(r ->> 'version', r ->> 'checksum',"  # noqa: S608 - a quoted identifier
        f" r ->> 'migration_name')), '[]') FROM (SELECT to_jsonb(m) AS r FROM {ident(schema, table)} m) x"
    )


def _acl(value: list[str] | None) -> Acl:
    return tuple(value) if value else ()


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
    from sqlalchemy import text  # here, not at the top: `diff --help` must not load SQLAlchemy

    # The first statement of the transaction: pg8000 has sent BEGIN already.
    conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
    conn.execute(
        text(
            "SELECT set_config('statement_timeout', :st, true), set_config('lock_timeout', :lt, true)"
        ),
        {"st": str(statement_timeout_ms), "lt": str(lock_timeout_ms)},
    )
    try:
        return read_objects(conn, schemas, migrations_table)
    finally:
        conn.rollback()


# The per-kind queries above, as the columns of one SELECT (their order is read_objects').
_ALL_KINDS_SQL = "SELECT " + ",\n".join(
    f"({sql.strip()}\n)"
    for sql in (
        _META_SQL,
        _SCHEMAS_SQL,
        _RELATIONS_SQL,
        _COLUMNS_SQL,
        _CONSTRAINTS_SQL,
        _INDEXES_SQL,
        _FUNCTIONS_SQL,
        _TRIGGERS_SQL,
        _RULES_SQL,
        _POLICIES_SQL,
        _DEFAULT_PRIVILEGES_SQL,
        _TYPES_SQL,
        _EXTENSIONS_SQL,
        _MEMBERSHIPS_SQL,
    )
)


def read_objects(
    conn: Connection, schemas: Iterable[str], migrations_table: tuple[str, str]
) -> Snapshot:
    """The queries of `read_snapshot` inside the caller's transaction, whose bounds (timeouts,
    isolation) are the caller's: the engine's catalog read calls it under its own lock policy.
    `search_path` is pinned to pg_catalog for the rest of the transaction."""
    from sqlalchemy import text  # here, not at the top: `diff --help` must not load SQLAlchemy

    scope = sorted(set(schemas))
    mschema, mtable = migrations_table
    queries = 0

    def run(sql: str, **params: Any) -> Any:
        nonlocal queries
        queries += 1
        value = conn.execute(text(sql), params).scalar_one()
        return json.loads(value) if isinstance(value, str) else value

    conn.execute(text("SELECT set_config('search_path', 'pg_catalog', true)"))
    queries += 1  # the one statement below: a catalog query per kind, one round trip
    # Every kind in one statement, one round trip (a no-op run pays for each): each query is a
    # scalar subquery of the one SELECT, its rows still one JSON document. The statement
    # timeout bounds their sum now: about 1 s at 10,000 tables (docs/benchmarks.md), 60 s.
    row = conn.execute(
        text(_ALL_KINDS_SQL), {"schemas": scope, "mschema": mschema, "mtable": mtable}
    ).one()
    (
        meta,
        schema_rows,
        relation_rows,
        column_rows,
        constraint_rows,
        index_rows,
        function_rows,
        trigger_rows,
        rule_rows,
        policy_rows,
        default_rows,
        type_rows,
        extension_rows,
        membership_rows,
    ) = (json.loads(value) if isinstance(value, str) else value for value in row)
    database, user, version, db_owner, db_acl, readable = meta
    # None: the table exists but may not be read; (): there is no such table.
    records: tuple[MigrationRecord, ...] | None = None if readable is False else ()
    if readable:
        records = tuple(
            sorted(
                (MigrationRecord(*r) for r in run(_records_sql(mschema, mtable))),
                key=lambda m: (m.version or "", m.migration_name or "", m.checksum or ""),
            )
        )

    return Snapshot(
        database=database,
        current_user=user,
        server_version_num=version,
        schemas_in_scope=tuple(scope),
        database_owned=Owned(db_owner, _acl(db_acl)),
        schemas={r[0]: Owned(r[1], _acl(r[2])) for r in schema_rows},
        relations={
            (r[0], r[1]): Relation(
                r[0],
                r[1],
                r[2],
                Owned(r[3], _acl(r[4])),
                r[5],
                r[6],
                r[7],
                r[8],
                r[9],
                r[10],
                r[11],
                (r[12][0], r[12][1], r[12][2]) if r[12] else None,
                tuple(r[13] or ()),
                r[14],
            )
            for r in relation_rows
        },
        columns={
            (r[0], r[1], r[2]): Column(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                r[6],
                r[7],
                r[8],
                _acl(r[9]),
                r[10],
                r[11],
                r[12],
            )
            for r in column_rows
        },
        constraints={(r[0], r[1], r[2]): Constraint(*r) for r in constraint_rows},
        indexes={(r[0], r[2]): Index(*r) for r in index_rows},
        functions={
            (r[0], r[1]): Function(r[0], r[1], r[2], Owned(r[3], _acl(r[4])), r[5])
            for r in function_rows
        },
        triggers={(r[0], r[1], r[2]): Trigger(*r) for r in trigger_rows},
        rules={(r[0], r[1], r[2]): Rule(*r) for r in rule_rows},
        policies={
            (r[0], r[1], r[2]): Policy(r[0], r[1], r[2], r[3], r[4], frozenset(r[5]), r[6], r[7])
            for r in policy_rows
        },
        default_privileges={
            (r[0], r[1], r[2]): DefaultPrivilege(r[0], r[1], r[2], _acl(r[3])) for r in default_rows
        },
        extensions={r[0]: Extension(*r) for r in extension_rows},
        memberships=tuple(sorted(Membership(*r) for r in membership_rows)),
        migrations_table=f"{mschema}.{mtable}",
        migration_records=records,
        types={(r[0], r[1]): TypeDef(*r) for r in type_rows},
        queries=queries,
    )
