"""The proof that a migration changed nothing outside the managed scope, taken by the database.

The static guard rail (`provision.migrations.check_protected`) reads a file's text; a view,
a function, a trigger or a rule created and fired in the same file walks around it, and
`nucleus` legitimately holds DML on the legacy tables (the old services use it), so the
database itself would not refuse. So each transactional migration runs, and then, in the
same transaction and before its COMMIT, two set-based reads prove what it did:

- rows: PostgreSQL's per-transaction table statistics (`pg_stat_xact_user_tables`) count
  every row inserted, updated or deleted, whatever path did it (views, functions, triggers,
  rules). Since PostgreSQL 15 they may also hold counts of this backend's earlier
  transactions that were not flushed yet, so they are read before the migration and after
  it, and the difference is what the migration did. Outside the managed schemas it must be
  zero (the version table's record is written after the proof);
- structure: one fingerprint of everything outside the managed schemas (schemas with their
  owners and ACLs; relations with kind, owner, ACL, storage (a TRUNCATE or a rewrite gives a
  table new storage), options and columns; constraints, indexes, triggers, rules, policies,
  functions; extensions; event triggers; database and role settings), read before the
  migration and again after it. Schemas the migration created itself are in its scope.

Any difference rolls the transaction back with a message naming each object. The pure part
(`violations`) compares two snapshots; `snapshot` is the read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import Connection, text

from provision.errors import ScopeViolation

_FINGERPRINT_SQL = text("""
WITH outside AS (
    SELECT oid, nspname FROM pg_namespace
    WHERE nspname <> ALL(CAST(:managed AS text[]))
      AND nspname !~ '^pg_' AND nspname <> 'information_schema'
),
managed AS (
    SELECT oid FROM pg_namespace WHERE nspname = ANY(CAST(:managed AS text[]))
)
SELECT 'schema' AS kind, n.nspname AS schema, n.nspname AS object,
       md5(concat_ws('|', pg_get_userbyid(s.nspowner), CAST(s.nspacl AS text))) AS digest
FROM outside n JOIN pg_namespace s ON s.oid = n.oid
UNION ALL
SELECT 'relation', n.nspname, n.nspname || '.' || c.relname,
       md5(concat_ws('|', c.relkind, pg_get_userbyid(c.relowner), CAST(c.relacl AS text),
           c.relfilenode, CAST(c.reloptions AS text), c.relrowsecurity, c.relforcerowsecurity,
           c.relhassubclass, c.relispartition, c.relpersistence, c.relreplident,
           pg_get_expr(c.relpartbound, c.oid),
           (SELECT string_agg(concat_ws(':', a.attname, format_type(a.atttypid, a.atttypmod),
                                        a.attnotnull, pg_get_expr(d.adbin, d.adrelid),
                                        a.attidentity, a.attgenerated, CAST(a.attacl AS text),
                                        a.attcollation, a.attstattarget,
                                        CAST(a.attoptions AS text)),
                              ',' ORDER BY a.attnum)
              FROM pg_attribute a
              LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)))
FROM pg_class c JOIN outside n ON n.oid = c.relnamespace
UNION ALL
SELECT 'constraint', n.nspname, n.nspname || '.' || c.relname || '.' || k.conname,
       md5(concat_ws('|', pg_get_constraintdef(k.oid), k.convalidated))
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN outside n ON n.oid = c.relnamespace
UNION ALL
-- Domain constraints (a CHECK calling a function) and foreign keys *to* a relation outside
-- from a managed table (they block deletes of the referenced legacy rows).
SELECT 'constraint', n.nspname, n.nspname || '.' || k.conname || ' ' || CAST(k.oid AS text),
       md5(concat_ws('|', pg_get_constraintdef(k.oid), k.convalidated))
FROM pg_constraint k
JOIN pg_class f ON f.oid = k.confrelid JOIN outside n ON n.oid = f.relnamespace
WHERE k.conrelid NOT IN (SELECT c.oid FROM pg_class c JOIN outside o ON o.oid = c.relnamespace)
UNION ALL
SELECT 'domain constraint', n.nspname, n.nspname || '.' || t.typname || '.' || k.conname,
       md5(concat_ws('|', pg_get_constraintdef(k.oid), k.convalidated))
FROM pg_constraint k JOIN pg_type t ON t.oid = k.contypid JOIN outside n ON n.oid = t.typnamespace
UNION ALL
-- Internal triggers too: a foreign key from a managed table puts RI triggers on the legacy one.
SELECT 'trigger', n.nspname, n.nspname || '.' || c.relname || '.' || t.tgname,
       md5(concat_ws('|', pg_get_triggerdef(t.oid), t.tgenabled))
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN outside n ON n.oid = c.relnamespace
UNION ALL
SELECT 'rule', n.nspname, n.nspname || '.' || c.relname || '.' || r.rulename,
       md5(concat_ws('|', pg_get_ruledef(r.oid), r.ev_enabled))
FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN outside n ON n.oid = c.relnamespace
UNION ALL
SELECT 'policy', n.nspname, n.nspname || '.' || c.relname || '.' || p.polname,
       md5(concat_ws('|', p.polcmd, p.polpermissive, CAST(p.polroles AS text),
                     pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)))
FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN outside n ON n.oid = c.relnamespace
UNION ALL
SELECT 'statistics', n.nspname, n.nspname || '.' || x.stxname,
       md5(concat_ws('|', x.stxrelid, pg_get_userbyid(x.stxowner), CAST(x.stxkind AS text),
                     CAST(x.stxkeys AS text)))
FROM pg_statistic_ext x JOIN pg_class c ON c.oid = x.stxrelid
JOIN pg_namespace n ON n.oid = x.stxnamespace
WHERE x.stxnamespace IN (SELECT oid FROM outside) OR c.relnamespace IN (SELECT oid FROM outside)
UNION ALL
SELECT 'function', n.nspname,
       n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
       md5(concat_ws('|', pg_get_userbyid(p.proowner), CAST(p.proacl AS text), p.prosrc,
                     p.probin, p.prosecdef, CAST(p.proconfig AS text), p.prokind, p.provolatile,
                     p.proisstrict, p.proleakproof, p.proparallel, p.prolang, p.prorettype,
                     p.procost, p.prorows, p.prosupport))
FROM pg_proc p JOIN outside n ON n.oid = p.pronamespace
UNION ALL
-- Types and domains (a relation's row type is the relation's), with enum labels.
SELECT 'type', n.nspname, n.nspname || '.' || t.typname,
       md5(concat_ws('|', t.typtype, pg_get_userbyid(t.typowner), CAST(t.typacl AS text),
                     t.typbasetype, t.typtypmod, t.typnotnull, t.typdefault, t.typcollation,
                     t.typinput, t.typoutput, t.typreceive, t.typsend, t.typanalyze,
                     (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                        FROM pg_enum e WHERE e.enumtypid = t.oid)))
FROM pg_type t JOIN outside n ON n.oid = t.typnamespace
LEFT JOIN pg_class c ON c.oid = t.typrelid
WHERE c.oid IS NULL OR c.relkind = 'c'
UNION ALL
-- An operator, a cast or a collation outside the managed schemas changes what legacy queries
-- mean (a public.= on varchar matches every row).
SELECT 'operator', n.nspname,
       n.nspname || '.' || o.oprname || '(' || format_type(o.oprleft, NULL) || ','
       || format_type(o.oprright, NULL) || ')',
       md5(concat_ws('|', pg_get_userbyid(o.oprowner), o.oprcode, o.oprrest, o.oprjoin,
                     o.oprcom, o.oprnegate, o.oprcanmerge, o.oprcanhash, o.oprresult))
FROM pg_operator o JOIN outside n ON n.oid = o.oprnamespace
UNION ALL
SELECT 'operator class', n.nspname, n.nspname || '.' || c.opcname || ' ' || CAST(c.opcmethod AS text),
       md5(concat_ws('|', pg_get_userbyid(c.opcowner), c.opcfamily, c.opcintype, c.opcdefault))
FROM pg_opclass c JOIN outside n ON n.oid = c.opcnamespace
UNION ALL
SELECT 'operator family', n.nspname, n.nspname || '.' || f.opfname || ' ' || CAST(f.opfmethod AS text),
       md5(concat_ws('|', pg_get_userbyid(f.opfowner),
           (SELECT string_agg(concat_ws(':', a.amoplefttype, a.amoprighttype, a.amopstrategy,
                                        a.amopopr), ',' ORDER BY a.oid)
              FROM pg_amop a WHERE a.amopfamily = f.oid),
           (SELECT string_agg(concat_ws(':', p.amproclefttype, p.amprocrighttype, p.amprocnum,
                                        p.amproc), ',' ORDER BY p.oid)
              FROM pg_amproc p WHERE p.amprocfamily = f.oid)))
FROM pg_opfamily f JOIN outside n ON n.oid = f.opfnamespace
UNION ALL
SELECT 'cast', '', format_type(k.castsource, NULL) || ' AS ' || format_type(k.casttarget, NULL),
       md5(concat_ws('|', k.castfunc, k.castcontext, k.castmethod))
FROM pg_cast k
UNION ALL
SELECT 'collation', n.nspname, n.nspname || '.' || c.collname || ' ' || CAST(c.collencoding AS text),
       md5(concat_ws('|', pg_get_userbyid(c.collowner), c.collprovider, c.collisdeterministic,
                     c.collcollate, c.collctype, c.colliculocale, c.collicurules))
FROM pg_collation c JOIN outside n ON n.oid = c.collnamespace
UNION ALL
SELECT 'conversion', n.nspname, n.nspname || '.' || c.conname,
       md5(concat_ws('|', pg_get_userbyid(c.conowner), c.conforencoding, c.contoencoding,
                     c.conproc, c.condefault))
FROM pg_conversion c JOIN outside n ON n.oid = c.connamespace
UNION ALL
SELECT 'text search configuration', n.nspname, n.nspname || '.' || c.cfgname,
       md5(concat_ws('|', pg_get_userbyid(c.cfgowner), c.cfgparser,
           (SELECT string_agg(concat_ws(':', m.maptokentype, m.mapseqno, m.mapdict), ','
                              ORDER BY m.maptokentype, m.mapseqno)
              FROM pg_ts_config_map m WHERE m.mapcfg = c.oid)))
FROM pg_ts_config c JOIN outside n ON n.oid = c.cfgnamespace
UNION ALL
SELECT 'text search dictionary', n.nspname, n.nspname || '.' || d.dictname,
       md5(concat_ws('|', pg_get_userbyid(d.dictowner), d.dicttemplate, d.dictinitoption))
FROM pg_ts_dict d JOIN outside n ON n.oid = d.dictnamespace
UNION ALL
SELECT 'text search parser', n.nspname, n.nspname || '.' || p.prsname,
       md5(concat_ws('|', p.prsstart, p.prstoken, p.prsend, p.prsheadline, p.prslextype))
FROM pg_ts_parser p JOIN outside n ON n.oid = p.prsnamespace
UNION ALL
SELECT 'text search template', n.nspname, n.nspname || '.' || t.tmplname,
       md5(concat_ws('|', t.tmplinit, t.tmpllexize))
FROM pg_ts_template t JOIN outside n ON n.oid = t.tmplnamespace
UNION ALL
-- Comments on anything outside the managed schemas' contents (built-in objects' comments
-- are left out, except schemas': `public` is owned by the database's owner).
SELECT 'comment', coalesce(i.schema, ''), i.type || ' ' || i.identity, md5(d.description)
FROM pg_description d, LATERAL pg_identify_object(d.classoid, d.objoid, d.objsubid) i
WHERE (d.objoid >= 16384 OR d.classoid = CAST('pg_namespace' AS regclass))
  AND coalesce(i.schema, '') <> ALL(CAST(:managed AS text[]))
  AND NOT (i.type = 'schema' AND i.identity = ANY(CAST(:managed AS text[])))
UNION ALL
SELECT 'default privileges', coalesce(n.nspname, ''),
       pg_get_userbyid(a.defaclrole) || ' in ' || coalesce(n.nspname, 'every schema') || ' on '
       || CAST(a.defaclobjtype AS text),
       md5(CAST(a.defaclacl AS text))
FROM pg_default_acl a LEFT JOIN pg_namespace n ON n.oid = a.defaclnamespace
WHERE a.defaclnamespace NOT IN (SELECT oid FROM managed)
UNION ALL
SELECT 'extension', '', e.extname,
       md5(concat_ws('|', e.extversion, e.extnamespace, pg_get_userbyid(e.extowner),
                     CAST(e.extconfig AS text)))
FROM pg_extension e
UNION ALL
SELECT 'event trigger', '', evtname,
       md5(concat_ws('|', evtevent, evtfoid, evtenabled, CAST(evttags AS text)))
FROM pg_event_trigger
UNION ALL
SELECT 'publication', '', p.pubname,
       md5(concat_ws('|', pg_get_userbyid(p.pubowner), p.puballtables, p.pubinsert,
           p.pubupdate, p.pubdelete, p.pubtruncate, p.pubviaroot,
           (SELECT string_agg(CAST(r.prrelid AS text), ',' ORDER BY r.prrelid)
              FROM pg_publication_rel r WHERE r.prpubid = p.oid),
           (SELECT string_agg(CAST(s.pnnspid AS text), ',' ORDER BY s.pnnspid)
              FROM pg_publication_namespace s WHERE s.pnpubid = p.oid)))
FROM pg_publication p
UNION ALL
SELECT 'large object', '', CAST(m.oid AS text),
       md5(concat_ws('|', pg_get_userbyid(m.lomowner), CAST(m.lomacl AS text)))
FROM pg_largeobject_metadata m
UNION ALL
SELECT 'foreign server', '', s.srvname,
       md5(concat_ws('|', pg_get_userbyid(s.srvowner), s.srvfdw, CAST(s.srvacl AS text),
                     CAST(s.srvoptions AS text)))
FROM pg_foreign_server s
UNION ALL
SELECT 'language', '', l.lanname,
       md5(concat_ws('|', pg_get_userbyid(l.lanowner), l.lanpltrusted, CAST(l.lanacl AS text)))
FROM pg_language l
UNION ALL
SELECT 'setting', '', coalesce(r.rolname, 'every role') || ' in ' || coalesce(d.datname, 'every database'),
       md5(CAST(s.setconfig AS text))
FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole
LEFT JOIN pg_database d ON d.oid = s.setdatabase
UNION ALL
-- Roles are global: attributes, settings and memberships (passwords are not readable here;
-- the row counters of pg_authid show a changed one, see _CATALOG_ROWS_SQL).
SELECT 'role', '', r.rolname,
       md5(concat_ws('|', r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb,
                     r.rolcanlogin, r.rolreplication, r.rolbypassrls, r.rolconnlimit,
                     r.rolvaliduntil, CAST(r.rolconfig AS text),
                     (SELECT string_agg(concat_ws(':', pg_get_userbyid(m.roleid),
                                                  pg_get_userbyid(m.grantor), m.admin_option,
                                                  m.inherit_option, m.set_option),
                                        ',' ORDER BY m.roleid, m.grantor)
                        FROM pg_auth_members m WHERE m.member = r.oid),
                     shobj_description(r.oid, 'pg_authid')))
FROM pg_roles r
UNION ALL
SELECT 'database', '', d.datname,
       md5(concat_ws('|', pg_get_userbyid(d.datdba), CAST(d.datacl AS text), d.datconnlimit,
                     d.datallowconn, d.datistemplate, d.dattablespace,
                     shobj_description(d.oid, 'pg_database')))
FROM pg_database d
""")

# Global catalogs whose rows no migration of the managed schemas has a reason to change,
# counted per transaction like the user tables: they show what no catalog view can (a
# password in pg_authid, which even `postgres` may not read on Cloud SQL), and a change to
# another database's row. A legitimate migration writes none of them; pg_shdepend (owners
# and grants of new objects) and pg_description (comments, checked in the fingerprint) are
# left out for that reason.
_GLOBAL_CATALOGS = {
    "pg_authid": "roles (attributes or a password)",
    "pg_auth_members": "role memberships",
    "pg_db_role_setting": "settings per role or database",
    "pg_database": "databases",
    "pg_shdescription": "comments on roles or databases",
    "pg_shseclabel": "security labels on roles or databases",
    "pg_seclabel": "security labels",
    "pg_tablespace": "tablespaces",
    "pg_parameter_acl": "privileges on settings",
    "pg_largeobject": "large objects' contents",
    "pg_largeobject_metadata": "large objects",
    "pg_publication": "publications",
    "pg_publication_rel": "publications' tables",
    "pg_publication_namespace": "publications' schemas",
    "pg_subscription": "subscriptions",
    "pg_subscription_rel": "subscriptions' tables",
    "pg_replication_origin": "replication origins",
    "pg_cast": "casts",
    "pg_transform": "transforms",
    "pg_language": "procedural languages",
    "pg_am": "access methods",
    "pg_foreign_data_wrapper": "foreign-data wrappers",
    "pg_foreign_server": "foreign servers",
    "pg_user_mapping": "user mappings",
    "pg_event_trigger": "event triggers",
    "pg_extension": "extensions",
}

_CATALOG_ROWS_SQL = text("""
SELECT coalesce(json_agg(json_build_array(relname, n_tup_ins, n_tup_upd, n_tup_del)
                         ORDER BY relname), '[]') AS rows
FROM pg_stat_xact_sys_tables
WHERE schemaname = 'pg_catalog' AND relname = ANY(CAST(:catalogs AS text[]))
  AND n_tup_ins + n_tup_upd + n_tup_del > 0
""")

_ROWS_SQL = text("""
SELECT current_setting('track_counts') AS track_counts,
       coalesce(json_agg(json_build_array(schemaname || '.' || relname, n_tup_ins, n_tup_upd,
                                          n_tup_del) ORDER BY schemaname, relname), '[]') AS rows
FROM pg_stat_xact_user_tables
WHERE schemaname <> ALL(CAST(:managed AS text[])) AND schemaname !~ '^pg_'
  AND n_tup_ins + n_tup_upd + n_tup_del > 0
""")

# Sequences are not transactional: a nextval or setval is seen by every session at once and a
# ROLLBACK does not undo it. So their values are read on a second session, before and after
# the other session's transaction. pg_sequences shows NULL both for a sequence never called
# and for one this session may not read (it needs SELECT or USAGE).
_SEQUENCES_SQL = text("""
SELECT schemaname || '.' || sequencename AS name, last_value
FROM pg_sequences
WHERE schemaname <> ALL(CAST(:excluded AS text[])) AND schemaname !~ '^pg_'
  AND schemaname <> 'information_schema'
""")


def sequence_values(conn: Connection, exclude_schemas: Iterable[str]) -> dict[str, int | None]:
    """Every sequence's current value outside `exclude_schemas` (and the system schemas), by
    qualified name, in one set-based read: None when it was never called, or when this
    session may not read it. Meant for a second session, before and after a transaction of
    another one: a sequence's value changes outside transactions."""
    rows = conn.execute(_SEQUENCES_SQL, {"excluded": list(exclude_schemas)}).all()
    return {r.name: r.last_value for r in rows}


_GONE = object()  # a sequence present on one side only: differs from every value, None too


def changed_sequences(
    before: Mapping[str, int | None], after: Mapping[str, int | None]
) -> list[str]:
    """The sequences whose value differs between two `sequence_values` reads, created or
    dropped ones included, sorted by name."""
    return sorted(
        name
        for name in before.keys() | after.keys()
        if before.get(name, _GONE) != after.get(name, _GONE)
    )


_DEFINERS_SQL = text("""
SELECT n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE p.prosecdef AND n.nspname = ANY(CAST(:managed AS text[]))
""")


# Views and rules of the managed schemas that use relations outside them: PostgreSQL checks
# a view's or rule's relations with the rights of its relation's owner (`nucleus`, with DML on
# the legacy tables), not of whoever queries it, so through default privileges a managed
# login could read or write legacy rows through it. A view with security_invoker is checked
# with the querier's rights (its other rules are not).
_OWNER_RIGHTS_SQL = text("""
SELECT DISTINCT n.nspname || '.' || c.relname || CASE WHEN r.rulename = '_RETURN' THEN ''
       ELSE ' (rule ' || r.rulename || ')' END
FROM pg_rewrite r
JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_depend d ON d.classid = CAST('pg_rewrite' AS regclass) AND d.objid = r.oid
                AND d.refclassid = CAST('pg_class' AS regclass)
JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = t.relnamespace
WHERE n.nspname = ANY(CAST(:managed AS text[]))
  AND tn.nspname <> ALL(CAST(:managed AS text[]))
  AND tn.nspname !~ '^pg_' AND tn.nspname <> 'information_schema'
  AND NOT (r.rulename = '_RETURN' AND c.relkind = 'v' AND EXISTS (
      SELECT 1 FROM pg_options_to_table(c.reloptions) o
      WHERE o.option_name = 'security_invoker'
        AND lower(o.option_value) IN ('t', 'tr', 'tru', 'true', 'y', 'ye', 'yes', 'on', '1')))
""")


@dataclass(frozen=True)
class Snapshot:
    """Digest of every object outside the managed schemas, by (kind, qualified name), the
    schema each is in ('' for global objects), and the row counters of the tables there and
    of the global catalogs."""

    objects: Mapping[tuple[str, str], str]
    schemas: frozenset[str]
    rows: Mapping[str, tuple[int, int, int]]
    where: Mapping[tuple[str, str], str] = field(default_factory=dict)
    catalogs: Mapping[str, tuple[int, int, int]] = field(default_factory=dict)
    # SECURITY DEFINER functions in the managed schemas: code that runs later with its
    # owner's rights (the owner's DML on the legacy tables, for `nucleus`) for whoever calls it.
    definers: frozenset[str] = frozenset()
    # Views and rules of the managed schemas using relations outside them with their owner's
    # rights (`_OWNER_RIGHTS_SQL`).
    owner_rights: frozenset[str] = frozenset()


@dataclass(frozen=True)
class RowChange:
    table: str
    inserted: int
    updated: int
    deleted: int


def snapshot(conn: Connection, managed: Iterable[str]) -> Snapshot:
    """Three set-based reads: the fingerprint, the row counters of the tables outside the
    managed schemas, and those of the global catalogs."""
    managed = list(managed)
    rows = conn.execute(_FINGERPRINT_SQL, {"managed": managed}).all()
    objects = {(r.kind, r.object): r.digest or "" for r in rows}
    counters = conn.execute(_ROWS_SQL, {"managed": managed}).one()
    if counters.track_counts != "on":
        # Without the statistics nothing can be proven: refuse rather than assume.
        raise ScopeViolation(
            "track_counts is off on this server, so what a migration changed cannot be proven",
            hint="turn the track_counts flag on (it is on by default on Cloud SQL)",
        )
    catalogs = conn.execute(_CATALOG_ROWS_SQL, {"catalogs": list(_GLOBAL_CATALOGS)}).scalar_one()
    definers = conn.execute(_DEFINERS_SQL, {"managed": managed}).scalars().all()
    owner_rights = conn.execute(_OWNER_RIGHTS_SQL, {"managed": managed}).scalars().all()
    return Snapshot(
        objects,
        frozenset(r.object for r in rows if r.kind == "schema"),
        {t: (i, u, d) for t, i, u, d in counters.rows},
        {(r.kind, r.object): r.schema for r in rows},
        {t: (i, u, d) for t, i, u, d in catalogs},
        frozenset(definers),
        frozenset(owner_rights),
    )


def _delta(
    before: Mapping[str, tuple[int, int, int]], after: Mapping[str, tuple[int, int, int]]
) -> list[RowChange]:
    changes = []
    for table in sorted(after):
        old, new = before.get(table, (0, 0, 0)), after[table]
        delta = tuple(n - o for n, o in zip(new, old, strict=True))
        if any(delta):
            changes.append(RowChange(table, *delta))
    return changes


def changed_rows(before: Snapshot, after: Snapshot) -> list[RowChange]:
    """Rows changed outside the managed schemas between the two snapshots (by any path)."""
    return _delta(before.rows, after.rows)


def _counts(change: RowChange) -> str:
    return ", ".join(
        f"{n} {what}"
        for n, what in (
            (change.inserted, "inserted"),
            (change.updated, "updated"),
            (change.deleted, "deleted"),
        )
        if n
    )


# The order a reader needs: whole schemas and extensions first, then tables, then the rest.
_PRIORITY = {"schema": 0, "extension": 1, "database": 2, "role": 3, "relation": 4}


def violations(before: Snapshot, after: Snapshot) -> list[str]:
    """What changed outside the managed scope, one line per object (empty: nothing). A
    schema created or dropped is one line, not one per object that came or went with it:
    no schema but the managed ones may be created (a schema named after a login captures
    that login's unqualified names through `"$user"` in the default search path)."""
    found = []
    dropped_schemas = before.schemas - after.schemas
    created_schemas = after.schemas - before.schemas
    keys = sorted(
        before.objects.keys() | after.objects.keys(), key=lambda k: (_PRIORITY.get(k[0], 9), k)
    )
    for key in keys:
        kind, name = key
        old, new = before.objects.get(key), after.objects.get(key)
        if old == new:
            continue
        schema = after.where.get(key, before.where.get(key, ""))
        if old is None:
            if kind != "schema" and schema in created_schemas:
                continue  # inside a schema created here, which is itself reported
            found.append(f"{kind} {name} created")
        elif new is None:
            if kind == "schema":
                inside = sum(
                    1 for k in before.objects if k[0] != "schema" and before.where.get(k) == name
                )
                found.append(f"schema {name} dropped, with the {inside} object(s) in it")
            elif schema not in dropped_schemas or not schema:
                found.append(f"{kind} {name} dropped")
        else:
            found.append(f"{kind} {name} altered")
    for change in changed_rows(before, after):
        if change.table.split(".", 1)[0] in created_schemas:
            continue  # a table of a schema created here, which is itself reported
        found.append(f"rows of {change.table}: {_counts(change)}")
    for name in sorted(after.definers - before.definers):
        found.append(
            f"function {name} is SECURITY DEFINER (it would run with its owner's rights, "
            "legacy tables included, for whoever calls it)"
        )
    for name in sorted(after.owner_rights - before.owner_rights):
        found.append(
            f"{name} uses relations outside the managed schemas with its owner's rights, for "
            "whoever queries it (make a view WITH (security_invoker = true); no rules)"
        )
    for change in _delta(before.catalogs, after.catalogs):
        what = _GLOBAL_CATALOGS.get(change.table, change.table)
        found.append(f"{what} changed ({change.table}: {_counts(change)})")
    return found


# -- sequences: not transactional, so proven by what this session did to them ----------------
#
# A nextval or setval on a sequence outside the managed schemas is not undone by ROLLBACK,
# and a live service advances the same sequences concurrently, so comparing values cannot
# tell who moved one forward. What can: the session's own memory of the sequences it used.
# `DISCARD SEQUENCES` clears it when the migration's transaction starts; afterwards currval()
# is defined exactly for the sequences this session called nextval (or setval with is_called)
# on. A setval moving a sequence back (the harmful direction: the services would draw ids
# again) is seen from a second session: a value lower than before, or reset to "never
# called", is never a service's doing.
_USED_SEQUENCES_DO = """
DO $nucleus_provision$
DECLARE
    s record;
    used text[] := '{}';
BEGIN
    FOR s IN
        SELECT c.oid, n.nspname || '.' || c.relname AS name
        FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'S'
          AND n.nspname <> ALL(pg_catalog.string_to_array(
                  pg_catalog.current_setting('nucleus_provision.scope'), ','))
          AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
          -- CASE: has_sequence_privilege raises on a relation that is not a sequence, and
          -- the planner may test it before relkind.
          AND CASE WHEN c.relkind = 'S'
                   THEN pg_catalog.has_sequence_privilege(c.oid, 'SELECT,USAGE') END
    LOOP
        BEGIN
            PERFORM pg_catalog.currval(s.oid);
            used := used || s.name;
        EXCEPTION WHEN object_not_in_prerequisite_state THEN
            NULL;  -- never used by this session since DISCARD SEQUENCES
        END;
    END LOOP;
    PERFORM pg_catalog.set_config('nucleus_provision.sequences_used',
                                  pg_catalog.array_to_string(used, E'\\n'), true);
END
$nucleus_provision$
"""


def forget_sequences(conn: Connection) -> None:
    """Start of a migration's transaction: this session has used no sequence yet."""
    conn.exec_driver_sql("DISCARD SEQUENCES")


def used_sequences(conn: Connection, managed: Iterable[str]) -> list[str]:
    """The sequences outside the managed schemas this session advanced (or set) since
    `forget_sequences`; read in the migration's transaction, before its proof's COMMIT."""
    conn.execute(
        text("SELECT pg_catalog.set_config('nucleus_provision.scope', :scope, true)"),
        {"scope": ",".join(managed)},
    )
    conn.exec_driver_sql(_USED_SEQUENCES_DO)
    used = conn.execute(
        text("SELECT pg_catalog.current_setting('nucleus_provision.sequences_used')")
    ).scalar_one()
    return sorted(name for name in str(used).split("\n") if name)


def rewound_sequences(
    before: Mapping[str, int | None], after: Mapping[str, int | None]
) -> list[str]:
    """Sequences moved back between two `sequence_values` reads: lower than before, or reset
    to never called. Services only ever move a sequence forward (a CYCLE sequence wrapping
    around is the one exception, and it would be named)."""
    found = []
    for name in sorted(before.keys() & after.keys()):
        old, new = before[name], after[name]
        if old is not None and (new is None or new < old):
            found.append(name)
    return found
