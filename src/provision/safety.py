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
from dataclasses import dataclass

from sqlalchemy import Connection, text

from provision.errors import ScopeViolation

_FINGERPRINT_SQL = text("""
WITH outside AS (
    SELECT oid, nspname FROM pg_namespace
    WHERE nspname <> ALL(CAST(:managed AS text[]))
      AND nspname !~ '^pg_' AND nspname <> 'information_schema'
)
SELECT 'schema' AS kind, n.nspname AS schema, n.nspname AS object,
       md5(concat_ws('|', pg_get_userbyid(s.nspowner), CAST(s.nspacl AS text))) AS digest
FROM outside n JOIN pg_namespace s ON s.oid = n.oid
UNION ALL
SELECT 'relation', n.nspname, n.nspname || '.' || c.relname,
       md5(concat_ws('|', c.relkind, pg_get_userbyid(c.relowner), CAST(c.relacl AS text),
           c.relfilenode, CAST(c.reloptions AS text), c.relrowsecurity,
           (SELECT string_agg(concat_ws(':', a.attname, format_type(a.atttypid, a.atttypmod),
                                        a.attnotnull, pg_get_expr(d.adbin, d.adrelid),
                                        a.attidentity, a.attgenerated, CAST(a.attacl AS text)),
                              ',' ORDER BY a.attnum)
              FROM pg_attribute a
              LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)))
FROM pg_class c JOIN outside n ON n.oid = c.relnamespace
UNION ALL
SELECT 'constraint', n.nspname, n.nspname || '.' || c.relname || '.' || k.conname,
       md5(pg_get_constraintdef(k.oid))
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN outside n ON n.oid = c.relnamespace
UNION ALL
SELECT 'trigger', n.nspname, n.nspname || '.' || c.relname || '.' || t.tgname,
       md5(concat_ws('|', pg_get_triggerdef(t.oid), t.tgenabled))
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN outside n ON n.oid = c.relnamespace
WHERE NOT t.tgisinternal
UNION ALL
SELECT 'rule', n.nspname, n.nspname || '.' || c.relname || '.' || r.rulename,
       md5(pg_get_ruledef(r.oid))
FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN outside n ON n.oid = c.relnamespace
UNION ALL
SELECT 'policy', n.nspname, n.nspname || '.' || c.relname || '.' || p.polname,
       md5(concat_ws('|', p.polcmd, p.polpermissive, CAST(p.polroles AS text),
                     pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)))
FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN outside n ON n.oid = c.relnamespace
UNION ALL
SELECT 'function', n.nspname,
       n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
       md5(concat_ws('|', pg_get_userbyid(p.proowner), CAST(p.proacl AS text), p.prosrc,
                     p.prosecdef, CAST(p.proconfig AS text)))
FROM pg_proc p JOIN outside n ON n.oid = p.pronamespace
UNION ALL
SELECT 'extension', '', e.extname,
       md5(concat_ws('|', e.extversion, e.extnamespace, pg_get_userbyid(e.extowner)))
FROM pg_extension e
UNION ALL
SELECT 'event trigger', '', evtname,
       md5(concat_ws('|', evtevent, evtfoid, evtenabled, CAST(evttags AS text)))
FROM pg_event_trigger
UNION ALL
SELECT 'setting', '', coalesce(r.rolname, 'every role'), md5(CAST(s.setconfig AS text))
FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole
WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
UNION ALL
SELECT 'database', '', d.datname, md5(concat_ws('|', pg_get_userbyid(d.datdba), CAST(d.datacl AS text)))
FROM pg_database d WHERE d.datname = current_database()
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


@dataclass(frozen=True)
class Snapshot:
    """Digest of every object outside the managed schemas, by (kind, qualified name), and the
    row counters of the tables there."""

    objects: Mapping[tuple[str, str], str]
    schemas: frozenset[str]
    rows: Mapping[str, tuple[int, int, int]]


@dataclass(frozen=True)
class RowChange:
    table: str
    inserted: int
    updated: int
    deleted: int


def snapshot(conn: Connection, managed: Iterable[str]) -> Snapshot:
    """Two set-based reads: the fingerprint and the row counters."""
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
    return Snapshot(
        objects,
        frozenset(r.object for r in rows if r.kind == "schema"),
        {t: (i, u, d) for t, i, u, d in counters.rows},
    )


def changed_rows(before: Snapshot, after: Snapshot) -> list[RowChange]:
    """Rows changed outside the managed schemas between the two snapshots (by any path)."""
    changes = []
    for table in sorted(after.rows):
        old, new = before.rows.get(table, (0, 0, 0)), after.rows[table]
        delta = tuple(n - o for n, o in zip(new, old, strict=True))
        if any(delta):
            changes.append(RowChange(table, *delta))
    return changes


# The order a reader needs: whole schemas and extensions first, then tables, then the rest.
_PRIORITY = {"schema": 0, "extension": 1, "database": 2, "relation": 3}


def violations(before: Snapshot, after: Snapshot) -> list[str]:
    """What changed outside the managed scope, one line per object (empty: nothing). A
    dropped schema is one line, not one per object that went with it."""
    found = []
    dropped_schemas = before.schemas - after.schemas
    keys = sorted(
        before.objects.keys() | after.objects.keys(), key=lambda k: (_PRIORITY.get(k[0], 9), k)
    )
    for key in keys:
        kind, name = key
        old, new = before.objects.get(key), after.objects.get(key)
        if old == new:
            continue
        schema = name if kind == "schema" else name.split(".", 1)[0]
        if old is None:
            if kind not in ("extension", "event trigger", "setting", "database") and (
                schema not in before.schemas
            ):
                continue  # inside a schema this migration created: its own scope
            found.append(f"{kind} {name} created")
        elif new is None:
            if kind == "schema":
                inside = sum(
                    1 for k, n in before.objects if k != "schema" and n.split(".", 1)[0] == name
                )
                found.append(f"schema {name} dropped, with the {inside} object(s) in it")
            elif schema not in dropped_schemas or kind in ("extension", "event trigger"):
                found.append(f"{kind} {name} dropped")
        else:
            found.append(f"{kind} {name} altered")
    for change in changed_rows(before, after):
        if change.table.split(".", 1)[0] not in before.schemas:
            continue  # a table of a schema this migration created
        counts = [
            f"{n} {what}"
            for n, what in (
                (change.inserted, "inserted"),
                (change.updated, "updated"),
                (change.deleted, "deleted"),
            )
            if n
        ]
        found.append(f"rows of {change.table}: {', '.join(counts)}")
    return found
