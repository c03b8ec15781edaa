"""Evidence of use: usage counters, locks held right now, dependants, and write grants.

The reads are set-based, one query each for every declared table (`read_facts`); the
judgement is pure (`judge`): did anything use the table since its observe window started,
and did a counter reset (`pg_stat_reset`, a crash or restart, a restore that re-created the
table) make the counters worthless? A reset restarts the window: counters that went back to
zero never pass as "no use".

Counters are PostgreSQL's cumulative statistics (`pg_stat_user_tables`): a backend publishes
its counts when its transaction ends and it goes idle (within about a second, at most ten
while it stays idle), so a transaction open right now is seen through its locks instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

COUNTERS = ("seq_scan", "idx_scan", "n_tup_ins", "n_tup_upd", "n_tup_del")
_COUNTER_WORDS = {
    "seq_scan": "sequential scan(s)",
    "idx_scan": "index scan(s)",
    "n_tup_ins": "row(s) inserted",
    "n_tup_upd": "row(s) updated",
    "n_tup_del": "row(s) deleted",
}


@dataclass(frozen=True)
class Usage:
    """One reading of a table's counters (a stored snapshot or the one taken now)."""

    taken_at: datetime
    relid: int
    stats_reset: datetime | None
    postmaster_start: datetime
    seq_scan: int
    idx_scan: int
    n_tup_ins: int
    n_tup_upd: int
    n_tup_del: int
    last_seq_scan: datetime | None
    last_idx_scan: datetime | None

    def counters(self) -> tuple[int, ...]:
        return tuple(int(getattr(self, c)) for c in COUNTERS)

    def to_dict(self) -> dict[str, Any]:
        return {
            k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in self.__dict__.items()
        }


@dataclass(frozen=True)
class Dependant:
    """Something outside the table that reaches it. `blocks`: proven by the catalog (pg_depend,
    pg_constraint) or a schema-qualified mention; an unqualified mention only warns."""

    kind: str
    what: str
    blocks: bool
    why: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Grant:
    """One write privilege on the table (or one of its columns), by its grantor."""

    grantee: str  # PUBLIC for everyone
    grantor: str
    privilege: str
    grantable: bool
    column: str | None = None
    admin_acts_for_grantor: bool = True

    def key(self) -> tuple[str, str, str, str]:
        return (self.privilege, self.column or "", self.grantee, self.grantor)

    def to_dict(self) -> dict[str, Any]:
        return {
            "grantee": self.grantee,
            "grantor": self.grantor,
            "privilege": self.privilege,
            "grantable": self.grantable,
            "column": self.column,
        }


@dataclass(frozen=True)
class Holder:
    """Another session holding a lock on the table right now (in use, whatever the counters)."""

    pid: int
    user: str
    application: str
    mode: str

    def describe(self) -> str:
        return f"pid {self.pid} ({self.user}, application {self.application or '-'}, {self.mode})"


@dataclass(frozen=True)
class TableFacts:
    name: str
    exists: bool
    now: datetime
    usage: Usage | None = None
    dependants: tuple[Dependant, ...] = ()
    grants: tuple[Grant, ...] = ()
    acl: tuple[str, ...] = ()  # the effective ACL, every item (compared by unfreeze)
    holders: tuple[Holder, ...] = ()
    trigger: str | None = None  # our freeze trigger's tgenabled ('A' always), None: absent
    owner: str = ""


@dataclass
class Judgement:
    """What the evidence says about one table since its window started."""

    window_started_at: datetime
    window_reason: str
    restart: str | None = None  # why the window restarts with the reading taken now
    uses: list[str] = field(default_factory=list)  # the use the latest interval showed
    last_use: str | None = None  # the latest use known, by what
    intervals: int = 0  # snapshots after the window's first (0: no evidence yet)


def reset_reason(before: Usage, after: Usage) -> str | None:
    """Why `after`'s counters cannot be compared with `before`'s (None: they can)."""
    if after.postmaster_start != before.postmaster_start:
        return (
            f"the server restarted at {after.postmaster_start:%Y-%m-%d %H:%M:%S%z} (counters lost)"
        )
    if after.stats_reset != before.stats_reset:
        return f"the database's statistics were reset at {after.stats_reset} (pg_stat_reset)"
    if after.relid != before.relid:
        return "the table was re-created (a restore?): its counters started again"
    lower = [
        c for c, b, a in zip(COUNTERS, before.counters(), after.counters(), strict=True) if a < b
    ]
    if lower:
        return f"{', '.join(lower)} went down (the table's counters were reset)"
    return None


@dataclass(frozen=True)
class OwnRead:
    """Scans of the table by the tool itself (the archive's COPY, its check of the live table),
    counted in the tool's own transaction (`pg_stat_xact_user_tables`) and recorded beside
    it: discounted from the evidence, so that archiving a frozen table is not a use."""

    at: datetime
    seq_scan: int
    idx_scan: int


def used_between(before: Usage, after: Usage, own: Sequence[OwnRead] = ()) -> list[str]:
    """The use between two comparable readings, in words (empty: none), less the tool's own
    reads recorded between them."""
    mine = [o for o in own if before.taken_at < o.at <= after.taken_at]
    discount = {
        "seq_scan": sum(o.seq_scan for o in mine),
        "idx_scan": sum(o.idx_scan for o in mine),
    }
    found = [
        f"{a - b - discount.get(c, 0)} {_COUNTER_WORDS[c]}"
        for c, b, a in zip(COUNTERS, before.counters(), after.counters(), strict=True)
        if a - b > discount.get(c, 0)
    ]
    if mine:
        return found  # the last scan's time is then most likely the tool's own
    for what, at in (("sequential scan", after.last_seq_scan), ("index scan", after.last_idx_scan)):
        if at is not None and at > before.taken_at and not any(what in f for f in found):
            found.append(f"{what} at {at:%Y-%m-%d %H:%M:%S%z}")
    return found


def judge(
    window_started_at: datetime | None,
    window_reason: str,
    history: Sequence[Usage],
    now: Usage | None,
    own: Sequence[OwnRead] = (),
) -> Judgement:
    """Walk the readings since the window started (stored ones, then `now`): a reset or a
    use restarts the window at the reading that showed it."""
    readings = list(history) + ([now] if now is not None else [])
    if not readings:
        return Judgement(window_started_at or datetime.min, "no reading yet")
    start = readings[0]
    judgement = Judgement(
        window_started_at if window_started_at is not None else start.taken_at, window_reason
    )
    last_use: str | None = None
    for before, after in zip(readings, readings[1:], strict=False):
        reason = reset_reason(start, after) or reset_reason(before, after)
        if reason:
            start = after
            judgement.window_started_at, judgement.window_reason = after.taken_at, reason
            judgement.uses = []
            judgement.intervals = 0
            continue
        uses = used_between(before, after, own)
        judgement.intervals += 1
        judgement.uses = uses
        if uses:
            last_use = (
                f"between {before.taken_at:%Y-%m-%d %H:%M:%S%z} and "
                f"{after.taken_at:%Y-%m-%d %H:%M:%S%z}: {', '.join(uses)}"
            )
            judgement.uses = uses
            start = after
            judgement.window_started_at = after.taken_at
            judgement.window_reason = f"used: {', '.join(uses)}"
            judgement.intervals = 0
    latest = readings[-1]
    scans = [
        (at, what)
        for at, what in (
            (latest.last_seq_scan, "sequential scan"),
            (latest.last_idx_scan, "index scan"),
        )
        if at is not None
    ]
    if scans:
        at, what = max(scans)
        scan = f"{what} at {at:%Y-%m-%d %H:%M:%S%z}"
        last_use = f"{last_use}; last {scan}" if last_use else f"last {scan}"
    judgement.last_use = last_use
    if now is not None and history and reset_reason(history[-1], now):
        judgement.restart = reset_reason(history[-1], now)
    return judgement


def window_left(judgement: Judgement, observe: timedelta, now: datetime) -> timedelta:
    return max(timedelta(0), judgement.window_started_at + observe - now)


# -- the reads ---------------------------------------------------------------------------------

USAGE_SQL = """
SELECT s.schemaname || '.' || s.relname AS name, now() AS taken_at, s.relid,
       d.stats_reset, pg_postmaster_start_time() AS postmaster_start,
       s.seq_scan, coalesce(s.idx_scan, 0) AS idx_scan, s.n_tup_ins, s.n_tup_upd, s.n_tup_del,
       s.last_seq_scan, s.last_idx_scan
FROM pg_stat_user_tables s
JOIN pg_stat_database d ON d.datname = current_database()
WHERE s.schemaname || '.' || s.relname = ANY(CAST(:names AS text[]))
"""

# Objects outside each table that reach it. Proven by the catalog: views and materialized
# views (their rewrite rule depends on the table), rules of other tables, foreign keys into
# it, functions with a SQL-standard body (BEGIN ATOMIC / RETURN) and policies of other tables
# that read it, column defaults of other tables drawing from its sequences. Function bodies
# kept as text (PL/pgSQL, SQL in quotes) are not in pg_depend: a mention of `schema.table`
# blocks, of the bare table name warns.
DEPENDANTS_SQL = r"""
WITH t AS (
    SELECT c.oid, c.relname, n.nspname, n.nspname || '.' || c.relname AS name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname || '.' || c.relname = ANY(CAST(:names AS text[]))
),
declared AS (SELECT oid FROM t)
SELECT t.name, CASE v.relkind WHEN 'm' THEN 'materialized view' WHEN 'v' THEN 'view'
                              ELSE 'rule' END AS kind,
       CASE WHEN v.relkind IN ('v', 'm') THEN CAST(CAST(v.oid AS regclass) AS text)
            ELSE CAST(CAST(v.oid AS regclass) AS text) || ' rule ' || r.rulename END AS what,
       true AS blocks, 'reads it (pg_depend)' AS why
FROM t
JOIN pg_depend d ON d.refobjid = t.oid AND d.refclassid = CAST('pg_class' AS regclass)
                AND d.classid = CAST('pg_rewrite' AS regclass)
JOIN pg_rewrite r ON r.oid = d.objid
JOIN pg_class v ON v.oid = r.ev_class
WHERE v.oid <> t.oid
UNION
SELECT t.name, 'foreign key', CAST(CAST(k.conrelid AS regclass) AS text) || ' ' || k.conname,
       k.conrelid NOT IN (SELECT oid FROM declared),
       CASE WHEN k.conrelid IN (SELECT oid FROM declared)
            THEN 'references it from a table retired with it'
            ELSE 'references it' END
FROM t JOIN pg_constraint k ON k.confrelid = t.oid AND k.contype = 'f' AND k.conrelid <> t.oid
UNION
SELECT t.name, 'function', CAST(CAST(p.oid AS regprocedure) AS text), true,
       'its SQL-standard body reads it (pg_depend)'
FROM t
JOIN pg_depend d ON d.refobjid = t.oid AND d.refclassid = CAST('pg_class' AS regclass)
                AND d.classid = CAST('pg_proc' AS regclass)
JOIN pg_proc p ON p.oid = d.objid
UNION
SELECT t.name, 'policy', CAST(CAST(pol.polrelid AS regclass) AS text) || ' ' || pol.polname, true,
       'its expression reads it (pg_depend)'
FROM t
JOIN pg_depend d ON d.refobjid = t.oid AND d.refclassid = CAST('pg_class' AS regclass)
                AND d.classid = CAST('pg_policy' AS regclass)
JOIN pg_policy pol ON pol.oid = d.objid
WHERE pol.polrelid <> t.oid
UNION
SELECT t.name, 'column default',
       CAST(CAST(ad.adrelid AS regclass) AS text) || '.' || a.attname, true,
       'draws from its sequence ' || CAST(CAST(s.oid AS regclass) AS text)
FROM t
JOIN pg_depend o ON o.refobjid = t.oid AND o.refclassid = CAST('pg_class' AS regclass)
                AND o.classid = CAST('pg_class' AS regclass) AND o.deptype IN ('a', 'i')
JOIN pg_class s ON s.oid = o.objid AND s.relkind = 'S'
JOIN pg_depend d ON d.refobjid = s.oid AND d.classid = CAST('pg_attrdef' AS regclass)
JOIN pg_attrdef ad ON ad.oid = d.objid
JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
WHERE ad.adrelid <> t.oid
UNION
SELECT t.name,
       CASE WHEN EXISTS (SELECT FROM pg_trigger g WHERE g.tgfoid = p.oid)
            THEN 'trigger function' ELSE 'function' END,
       CAST(CAST(p.oid AS regprocedure) AS text)
       || coalesce(' (trigger ' || (SELECT string_agg(g.tgname || ' on '
                                      || CAST(CAST(g.tgrelid AS regclass) AS text), ', ')
                                    FROM pg_trigger g WHERE g.tgfoid = p.oid) || ')', ''),
       p.prosrc ~* ('\m' || t.nspname || '\s*\.\s*"?' || t.relname || '\M'),
       CASE WHEN p.prosrc ~* ('\m' || t.nspname || '\s*\.\s*"?' || t.relname || '\M')
            THEN 'its body names ' || t.name
            ELSE 'its body mentions ' || t.relname || ' (text only: check it)' END
FROM t, pg_proc p JOIN pg_namespace pn ON pn.oid = p.pronamespace
WHERE pn.nspname NOT IN ('pg_catalog', 'information_schema', :own)
  AND p.prolang <> (SELECT oid FROM pg_language WHERE lanname = 'c')
  AND p.prosrc ~* ('\m' || t.relname || '\M')
  AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.objid = p.oid
                  AND e.classid = CAST('pg_proc' AS regclass) AND e.deptype = 'e')
ORDER BY 1, 2, 3
"""

# Write privileges on the table and its columns, effective ACL (NULL means the owner's
# defaults), with whether this session may act for the grantor (REVOKE ... GRANTED BY needs
# the grantor's privileges; anyone else's grant is reported, never revoked).
GRANTS_SQL = """
WITH t AS (
    SELECT c.oid, n.nspname || '.' || c.relname AS name, c.relowner,
           coalesce(c.relacl, acldefault('r', c.relowner)) AS acl
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname || '.' || c.relname = ANY(CAST(:names AS text[]))
)
SELECT t.name, NULL AS column_name,
       CASE x.grantee WHEN 0 THEN 'PUBLIC' ELSE pg_get_userbyid(x.grantee) END AS grantee,
       pg_get_userbyid(x.grantor) AS grantor, x.privilege_type, x.is_grantable,
       pg_has_role(current_user, x.grantor, 'USAGE') AS acts
FROM t, LATERAL aclexplode(t.acl) x
WHERE x.privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE')
UNION ALL
SELECT t.name, a.attname,
       CASE x.grantee WHEN 0 THEN 'PUBLIC' ELSE pg_get_userbyid(x.grantee) END,
       pg_get_userbyid(x.grantor), x.privilege_type, x.is_grantable,
       pg_has_role(current_user, x.grantor, 'USAGE')
FROM t JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
   AND a.attacl IS NOT NULL, LATERAL aclexplode(a.attacl) x
WHERE x.privilege_type IN ('INSERT', 'UPDATE')
"""

# Everything of the table's and columns' ACLs, as text lines: what unfreeze must give back.
ACL_SQL = """
SELECT n.nspname || '.' || c.relname AS name, pg_get_userbyid(c.relowner) AS owner,
       ARRAY(SELECT concat_ws(' ', coalesce(a.attname, '(table)'),
                              CASE x.grantee WHEN 0 THEN 'PUBLIC' ELSE pg_get_userbyid(x.grantee) END,
                              x.privilege_type, 'by', pg_get_userbyid(x.grantor),
                              CASE WHEN x.is_grantable THEN 'grantable' END)
             FROM (SELECT NULL::name AS attname, coalesce(c.relacl, acldefault('r', c.relowner)) AS acl
                   UNION ALL
                   SELECT a.attname, a.attacl FROM pg_attribute a
                   WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                     AND a.attacl IS NOT NULL) a,
                  LATERAL aclexplode(a.acl) x
             ORDER BY 1) AS acl,
       (SELECT t.tgenabled FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = :trigger)
           AS trigger
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname || '.' || c.relname = ANY(CAST(:names AS text[])) AND c.relkind IN ('r', 'p')
"""

# Other sessions holding a lock on the table now: in use, whatever the counters say yet.
HOLDERS_SQL = """
SELECT n.nspname || '.' || c.relname AS name, l.pid, coalesce(a.usename, '?') AS usename,
       coalesce(a.application_name, '') AS application_name, l.mode
FROM pg_locks l
JOIN pg_class c ON c.oid = l.relation
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'relation' AND l.pid <> pg_backend_pid() AND l.granted
  AND n.nspname || '.' || c.relname = ANY(CAST(:names AS text[]))
ORDER BY 1, 2
"""


def read_facts(
    conn: Any, names: Iterable[str], own_schema: str, trigger: str
) -> dict[str, TableFacts]:
    """The facts of every named table, in five set-based reads on `conn` (a SQLAlchemy
    connection, inside the caller's read-only transaction)."""
    from sqlalchemy import text

    names = list(names)
    params = {"names": names}
    # regclass and regprocedure print names qualified only outside the search path: with
    # pg_catalog alone on it, every name in the evidence is schema-qualified.
    conn.execute(text("SELECT set_config('search_path', 'pg_catalog', true)"))
    now = conn.execute(text("SELECT now()")).scalar_one()
    acl_rows = {r.name: r for r in conn.execute(text(ACL_SQL), {**params, "trigger": trigger})}
    usage = {
        r.name: Usage(
            r.taken_at,
            int(r.relid),
            r.stats_reset,
            r.postmaster_start,
            int(r.seq_scan),
            int(r.idx_scan),
            int(r.n_tup_ins),
            int(r.n_tup_upd),
            int(r.n_tup_del),
            r.last_seq_scan,
            r.last_idx_scan,
        )
        for r in conn.execute(text(USAGE_SQL), params)
    }
    deps: dict[str, list[Dependant]] = {n: [] for n in names}
    for r in conn.execute(text(DEPENDANTS_SQL), {**params, "own": own_schema}):
        deps[r.name].append(Dependant(r.kind, r.what, bool(r.blocks), r.why))
    grants: dict[str, list[Grant]] = {n: [] for n in names}
    for r in conn.execute(text(GRANTS_SQL), params):
        grants[r.name].append(
            Grant(
                r.grantee,
                r.grantor,
                r.privilege_type,
                bool(r.is_grantable),
                r.column_name,
                bool(r.acts),
            )
        )
    holders: dict[str, list[Holder]] = {n: [] for n in names}
    for r in conn.execute(text(HOLDERS_SQL), params):
        holders[r.name].append(Holder(int(r.pid), r.usename, r.application_name, r.mode))
    facts = {}
    for name in names:
        row = acl_rows.get(name)
        facts[name] = TableFacts(
            name,
            row is not None,
            now,
            usage.get(name),
            tuple(deps[name]),
            tuple(sorted(grants[name], key=Grant.key)),
            tuple(row.acl) if row is not None else (),
            tuple(holders[name]),
            row.trigger if row is not None else None,
            row.owner if row is not None else "",
        )
    return facts
