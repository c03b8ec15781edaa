"""The imperative shell of the moves: check, copy, catch up, cut over, report.

`run` first checks everything it can before writing anything (every legacy table moved or
listed as not moved; sources, targets, keys and columns as the files say; the functions the
fragments call are immutable; no trigger or rule on a target the file does not list; the
session's privileges; every mapping planned by the server), so a bad move file fails with
`FILE: what is wrong` and nothing copied. Then, under the move lock (one `move run` at a time
per database), for each move in file order:

1. **copy**: keyset batches computed in the server (`plan.copy_batch`): the rows, their
   provenance (`nucleus_move.written_<move>`) and the cursor commit together;
2. **catch up**: the legacy tables' per-range summaries tell which ranges changed since the
   last pass (none: nothing else is read); the changed ranges are compared with the
   provenance (`plan.diff`), and the keys that differ repaired (`plan.repair`): only rows the
   move wrote and that still hold what it wrote are updated or deleted, and a delete never
   reaches rows that reference the row; the rest are conflicts, reported with their keys.
   After `move cutover` a move writes nothing: legacy rows written since are reported.

Every statement that evaluates a move file's expressions or writes runs in
`Mover.proven`: its transaction commits only once the database proves that nothing but the
target's rows and the move's bookkeeping changed (row counters of every other table, the
fingerprint of every object, every sequence read on a second session). Reads run in READ
ONLY transactions. All of it with the run's bounded lock waits (`provision.locks`), naming
the blocker when they give up. The bookkeeping lives in the database, in the tool's schema
`nucleus_move`: a killed run resumes at its last committed batch.
"""

from __future__ import annotations

import dataclasses
import queue
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import Connection, Row, text
from sqlalchemy.exc import DBAPIError

from provision import db, safety
from provision.errors import (
    LockTimeout,
    MoveFailed,
    MoveFileError,
    PermissionProblem,
    ScopeViolation,
)
from provision.hints import command
from provision.locks import (
    DEFAULT_POLICY,
    Attempts,
    BlockerWatch,
    LockPolicy,
    holders,
    is_lock_timeout,
)
from provision.move import plan, throttle
from provision.move.declare import Declaration, Move
from provision.move.plan import SCHEMA, ForeignKey, TargetInfo
from provision.sql import ident, server_message

# pg_advisory_lock key of `move run` ("nucm"): one run at a time per database.
MOVE_KEY = 0x6E75636D
# A batch is a short transaction; a statement that runs longer than this is a defect.
BATCH_STATEMENT_TIMEOUT_MS = 60_000
DEFAULT_BATCH_SIZE = 50_000
# More changed ranges than this in a pass: one comparison of everything is cheaper.
MAX_RANGES = 64
T = TypeVar("T")


class EventKind(StrEnum):
    WAITING = "waiting"  # another run holds the move lock, or a lock wait is retried
    START = "start"  # a move begins (copy or catch-up)
    BATCH = "batch"  # a copy batch committed
    COPIED = "copied"  # the copy reached the end of the source
    DIFF = "diff"  # a catch-up comparison found `rows` keys that differ
    REPAIR = "repair"  # a repair batch committed
    SYNCED = "synced"  # the move's target equals the mapped source as of the comparison
    SKIPPED = "skipped"  # rows a rule keeps out, with the reason
    UNCHANGED = "unchanged"  # no legacy range changed since the last pass: nothing read
    CONFLICT = "conflict"  # target rows the move did not touch (a service's, or changed)
    CUTOVER = "cutover"  # after cut-over: legacy rows written since, reported, not copied
    NOTE = "note"


@dataclass(frozen=True)
class Event:
    kind: EventKind
    move: str = ""
    rows: int = 0  # rows of this event (a batch's rows, a diff's keys, ...)
    done: int = 0  # rows copied so far (copy), or keys repaired so far (catch-up)
    total: int | None = None  # rows expected in all (copy), or keys to repair
    rate: float = 0.0  # rows per second in this run
    cursor: int | None = None
    message: str = ""
    counts: dict[str, int] | None = None  # a catch-up's outcome, by action
    keys: tuple[str, ...] = ()  # the keys of conflicts, or of legacy rows after cut-over

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"event": self.kind.value, "move": self.move}
        for name in ("rows", "done", "total", "cursor", "message", "counts"):
            value = getattr(self, name)
            if value not in (None, ""):
                data[name] = value
        if self.keys:
            data["keys"] = list(self.keys)
        if self.rate:
            data["rows_per_s"] = round(self.rate, 1)
            if self.total is not None and self.total >= self.done:
                data["eta_s"] = round((self.total - self.done) / self.rate, 1)
        return data


Listener = Callable[[Event], None]


@dataclass(frozen=True)
class Options:
    batch_size: int = DEFAULT_BATCH_SIZE
    rate: float | None = None  # rows per second, at most
    follow: bool = False
    interval: float = 5.0  # between catch-up passes with follow
    policy: LockPolicy = DEFAULT_POLICY
    # Adaptive batch size and pauses (`provision.move.throttle`); batch_size is the first size.
    limits: throttle.Limits = throttle.Limits()


DEFAULT_OPTIONS = Options()


@dataclass
class MoveStatus:
    name: str
    source: str
    target: str
    phase: str  # not started | copying | catching-up | synced
    copied: int = 0
    pending: int | None = None
    lag_s: float | None = None  # since the comparison the target last equalled
    passes: int = 0
    last_error: str | None = None
    skipped: list[tuple[str, int]] = field(default_factory=list)
    behind: int | None = None  # legacy ranges changed since the last pass (None: never passed)
    conflicts: dict[str, int] = field(default_factory=dict)  # by kind
    cutover_at: str | None = None
    control: str | None = None  # paused | cancelled (`move pause|cancel`)

    def to_dict(self) -> dict[str, Any]:
        return {
            "behind_ranges": self.behind,
            "conflicts": self.conflicts,
            "cutover_at": self.cutover_at,
            "control": self.control,
            "name": self.name,
            "source": self.source,
            "target": self.target,
            "phase": self.phase,
            "copied": self.copied,
            "pending": self.pending,
            "lag_s": None if self.lag_s is None else round(self.lag_s, 1),
            "passes": self.passes,
            "last_error": self.last_error,
            "skipped": [{"reason": r, "rows": n} for r, n in self.skipped],
        }


# -- catalog facts ----------------------------------------------------------------------------

_LEGACY_TABLES = text("""
SELECT n.nspname AS schema, c.relname AS name
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY(:schemas)
""")

_COLUMNS = text("""
SELECT n.nspname AS schema, c.relname AS name, a.attname AS column,
       format_type(a.atttypid, a.atttypmod) AS type
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname || '.' || c.relname = ANY(:tables) AND a.attnum > 0 AND NOT a.attisdropped
""")

_UNIQUE = text("""
SELECT n.nspname AS schema, c.relname AS name,
       array(SELECT a.attname::text FROM unnest(i.indkey) WITH ORDINALITY k(attnum, o)
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum ORDER BY k.o) AS columns
FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE i.indisunique AND i.indisvalid AND i.indpred IS NULL
  AND n.nspname || '.' || c.relname = ANY(:tables)
""")

_FOREIGN = text("""
SELECT n.nspname AS schema, c.relname AS name, pn.nspname AS parent_schema, p.relname AS parent,
       array(SELECT a.attname::text FROM unnest(f.conkey) WITH ORDINALITY k(attnum, o)
             JOIN pg_attribute a ON a.attrelid = f.conrelid AND a.attnum = k.attnum ORDER BY k.o) AS columns,
       array(SELECT a.attname::text FROM unnest(f.confkey) WITH ORDINALITY k(attnum, o)
             JOIN pg_attribute a ON a.attrelid = f.confrelid AND a.attnum = k.attnum ORDER BY k.o) AS parent_columns
FROM pg_constraint f
JOIN pg_class c ON c.oid = f.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class p ON p.oid = f.confrelid JOIN pg_namespace pn ON pn.oid = p.relnamespace
WHERE f.contype = 'f' AND n.nspname || '.' || c.relname = ANY(:tables)
""")

_REFERENCING = text("""
SELECT pn.nspname AS parent_schema, p.relname AS parent, n.nspname AS schema, c.relname AS child,
       array(SELECT a.attname::text FROM unnest(f.conkey) WITH ORDINALITY k(attnum, o)
             JOIN pg_attribute a ON a.attrelid = f.conrelid AND a.attnum = k.attnum ORDER BY k.o) AS columns,
       array(SELECT a.attname::text FROM unnest(f.confkey) WITH ORDINALITY k(attnum, o)
             JOIN pg_attribute a ON a.attrelid = f.confrelid AND a.attnum = k.attnum ORDER BY k.o) AS parent_columns
FROM pg_constraint f
JOIN pg_class c ON c.oid = f.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class p ON p.oid = f.confrelid JOIN pg_namespace pn ON pn.oid = p.relnamespace
WHERE f.contype = 'f' AND pn.nspname || '.' || p.relname = ANY(:tables)
""")

# Sequences a target owns (its identity or serial columns): inserting into it advances them.
_OWNED_SEQUENCES = text("""
SELECT t.relnamespace::regnamespace::text || '.' || t.relname AS target,
       s.relnamespace::regnamespace::text || '.' || s.relname AS sequence
FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
JOIN pg_class t ON t.oid = d.refobjid
WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
  AND d.deptype IN ('a', 'i')
  AND t.relnamespace::regnamespace::text || '.' || t.relname = ANY(:tables)
""")

# Triggers and rules on a target fire on the move's writes, with the move's privileges (it
# runs as the legacy tables' owner): a migration's trigger there could delete legacy rows.
_TRIGGERS = text("""
SELECT n.nspname || '.' || c.relname AS target, t.tgname AS name, 'trigger' AS kind
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT t.tgisinternal AND n.nspname || '.' || c.relname = ANY(:tables)
UNION ALL
SELECT n.nspname || '.' || c.relname, r.rulename, 'rule'
FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE r.rulename <> '_RETURN' AND n.nspname || '.' || c.relname = ANY(:tables)
""")

# Candidates of the functions a move file calls, in the schema it names or on the path.
_FUNCTIONS = text("""
SELECT n.nspname AS schema, p.proname AS name, p.provolatile AS volatility,
       p.oid::regprocedure::text AS signature
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE p.proname = ANY(:names) AND p.prokind IN ('f', 'a', 'w')
  AND (n.nspname = ANY(:schemas) OR n.nspname = ANY(current_schemas(true)))
""")

_VOLATILITY = {"v": "volatile", "s": "stable", "i": "immutable"}

_PRIVILEGES = text("""
SELECT t.name, t.privilege
FROM unnest(CAST(:names AS text[]), CAST(:privileges AS text[])) AS t(name, privilege)
WHERE NOT has_table_privilege(t.name, t.privilege)
""")


@dataclass(frozen=True)
class Facts:
    infos: dict[str, TargetInfo]  # by move name


def _check(
    conn: Connection, declaration: Declaration, moves: Sequence[Move], schemas: Sequence[str]
) -> Facts:
    """Everything checkable before writing: raises MoveFileError / PermissionProblem."""
    legacy = [(r.schema, r.name) for r in conn.execute(_LEGACY_TABLES, {"schemas": list(schemas)})]
    uncovered = declaration.uncovered(legacy)
    if uncovered:
        raise MoveFileError(
            f"{declaration.directory.name}/: legacy table {uncovered[0]} is neither moved nor "
            f"listed in not-moved.toml",
            hint="add a move file for it, or list it in not-moved.toml with the reason",
        )
    tables = sorted({m.target_name for m in moves} | {m.source_name for m in moves})
    columns: dict[str, dict[str, str]] = {}
    for r in conn.execute(_COLUMNS, {"tables": tables}):
        columns.setdefault(f"{r.schema}.{r.name}", {})[r.column] = r.type
    unique: dict[str, list[tuple[str, ...]]] = {}
    for r in conn.execute(_UNIQUE, {"tables": tables}):
        unique.setdefault(f"{r.schema}.{r.name}", []).append(tuple(r.columns))
    foreign: dict[str, list[ForeignKey]] = {}
    for r in conn.execute(_FOREIGN, {"tables": tables}):
        foreign.setdefault(f"{r.schema}.{r.name}", []).append(
            ForeignKey(tuple(r.columns), (r.parent_schema, r.parent), tuple(r.parent_columns))
        )
    referencing: dict[str, list[ForeignKey]] = {}
    for r in conn.execute(_REFERENCING, {"tables": tables}):
        referencing.setdefault(f"{r.parent_schema}.{r.parent}", []).append(
            ForeignKey(tuple(r.columns), (r.schema, r.child), tuple(r.parent_columns))
        )
    owned: dict[str, list[str]] = {}
    for r in conn.execute(_OWNED_SEQUENCES, {"tables": tables}):
        owned.setdefault(r.target, []).append(r.sequence)
    _check_functions(conn, moves)
    _check_triggers(conn, moves)
    infos: dict[str, TargetInfo] = {}
    for move in moves:
        source_columns = columns.get(move.source_name)
        if source_columns is None:
            raise MoveFileError(f"{move.filename}: source {move.source_name} does not exist")
        key_type = source_columns.get(move.key)
        if key_type not in ("integer", "bigint", "smallint") or (move.key,) not in unique.get(
            move.source_name, []
        ):
            raise MoveFileError(
                f"{move.filename}: key {move.key} is not a unique integer column of "
                f"{move.source_name}",
                hint="the keyset of the copy is the source's integer primary key",
            )
        target_columns = columns.get(move.target_name)
        if target_columns is None:
            raise MoveFileError(
                f"{move.filename}: target {move.target_name} does not exist",
                hint=f"run `{command('apply')}` first: the migrations create it",
            )
        for column in move.column_names:
            if column not in target_columns:
                raise MoveFileError(
                    f"{move.filename}: {move.target_name} has no column {column}",
                    hint=f"its columns: {', '.join(sorted(target_columns))}",
                )
        if tuple(sorted(move.target_key)) not in {
            tuple(sorted(k)) for k in unique.get(move.target_name, [])
        }:
            raise MoveFileError(
                f"{move.filename}: target_key ({', '.join(move.target_key)}) is not a unique key "
                f"of {move.target_name}",
                hint="name the columns of its primary key or of one of its unique constraints",
            )
        infos[move.name] = TargetInfo(
            types={c: target_columns[c] for c in move.column_names},
            unique_keys=tuple(unique.get(move.target_name, [])),
            foreign_keys=tuple(foreign.get(move.target_name, [])),
            referenced_by=tuple(referencing.get(move.target_name, [])),
            sequences=tuple(owned.get(move.target_name, [])),
        )
    _check_privileges(conn, moves, infos)
    _check_target_code(conn, moves)
    for move in moves:
        try:
            conn.execute(text("SAVEPOINT explain"))
            conn.execute(text(plan.explain(move, infos[move.name])))
            conn.execute(text("RELEASE SAVEPOINT explain"))
        except DBAPIError as exc:
            if is_lock_timeout(exc):
                raise  # retried with backoff by the caller, which names the blocker
            raise MoveFileError(
                f"{move.filename}: the mapping does not run: {server_message(exc)}",
                hint="fix the expression, FROM clause or rule it names; nothing was copied",
            ) from None
    return Facts(infos)


def _check_functions(conn: Connection, moves: Sequence[Move]) -> None:
    """The early, friendly refusal of a fragment that may have side effects: every function
    a move file calls by name must resolve to immutable functions. A name with a volatile
    candidate (setval, nextval, random, ...) or none but stable ones (now, ...) is refused.
    Where PostgreSQL picks among immutable and stable overloads by argument type (timezone),
    the proof of each batch is the guarantee, as it is for operators."""
    names = sorted({n for m in moves for _, n in m.functions})
    schemas = sorted({s for m in moves for s, _ in m.functions if s})
    found: dict[tuple[str, str], list[Row[Any]]] = {}
    for r in conn.execute(_FUNCTIONS, {"names": names, "schemas": schemas}):
        found.setdefault((r.schema, r.name), []).append(r)
    for move in moves:
        for schema, name in move.functions:
            candidates = [
                r
                for (s, n), rows in found.items()
                if n == name and schema in (None, s)
                for r in rows
            ]
            bad = [r for r in candidates if r.volatility == "v"] or (
                [] if any(r.volatility == "i" for r in candidates) else candidates
            )
            if bad:
                raise MoveFileError(
                    f"{move.filename}: calls {bad[0].signature}, which is "
                    f"{_VOLATILITY.get(bad[0].volatility, bad[0].volatility)}: a move file may "
                    "call only immutable functions (no side effects, same result every time)",
                    hint="compute the value from the row's columns with immutable functions; "
                    "the move never changes a sequence or any legacy state",
                )


def _check_triggers(conn: Connection, moves: Sequence[Move]) -> None:
    """Triggers and rules on a target must be listed in the move file ([[trigger]], with the
    reason it is safe), else the run is refused. Disabling them per batch was the other
    choice, and is worse: `ALTER TABLE ... DISABLE TRIGGER` needs the target's owner
    (nucleus, not the move's session), takes a lock that queues the services' writes, and
    switches the trigger off for the services writing the target at the same time;
    `session_replication_role` needs a superuser. A listed trigger fires under the proof of
    each batch: if it changes anything outside the target, the batch is rolled back."""
    by_target = {m.target_name: m for m in moves}
    for r in conn.execute(_TRIGGERS, {"tables": sorted(by_target)}):
        move = by_target[r.target]
        if r.kind == "trigger" and r.name in {t.name for t in move.triggers}:
            continue
        raise MoveFileError(
            f"{move.filename}: {r.target} has {r.kind} {r.name}, which would fire on the move's "
            "writes with the rights of its session, owner of the legacy tables",
            hint=(
                f"if it only changes the rows the move writes, list it in {move.filename} as [[trigger]] with "
                f'name = "{r.name}" and the reason; otherwise drop it from the target'
                if r.kind == "trigger"
                else "a rule on a target is never accepted: drop it in a migration"
            ),
        )


def _check_privileges(
    conn: Connection, moves: Sequence[Move], infos: dict[str, TargetInfo]
) -> None:
    wanted: list[tuple[str, str]] = []
    for move in moves:
        wanted += [(".".join(t), "SELECT") for t in move.reads]
        wanted += [(move.target_name, p) for p in ("SELECT", "INSERT", "UPDATE", "DELETE")]
        wanted += [(".".join(fk.parent), "SELECT") for fk in infos[move.name].foreign_keys]
    wanted = list(dict.fromkeys(wanted))
    # has_table_privilege needs USAGE on the schema to even resolve the name.
    schemas = sorted({name.split(".")[0] for name, _ in wanted})
    no_usage = [
        r[0]
        for r in conn.execute(
            text(
                "SELECT s FROM unnest(CAST(:s AS text[])) s WHERE NOT has_schema_privilege(s, 'USAGE')"
            ),
            {"s": schemas},
        )
    ]
    who = conn.execute(text("SELECT current_user")).scalar_one()
    if no_usage:
        raise PermissionProblem(
            f"the move's session ({who}) lacks USAGE on schema {no_usage[0]}",
            hint=_GRANT_HINT.format(who=who, apply=command("apply")),
        )
    missing = conn.execute(
        _PRIVILEGES, {"names": [n for n, _ in wanted], "privileges": [p for _, p in wanted]}
    ).all()
    if missing:
        name, privilege = missing[0]
        raise PermissionProblem(
            f"the move's session ({who}) lacks {privilege} on {name}",
            hint=_GRANT_HINT.format(who=who, apply=command("apply")),
        )


# What a target table runs when the move writes it: the move's session is `postgres`, owner of
# the legacy tables, so a trigger, a rule, or a function called by an index, a default, a
# constraint or a policy of the target would run with the right to delete or drop them (a
# migration may leave one whose text names no legacy schema: 'dna' || '_schema'). Functions
# of extensions are the extension's (pgvector's), built-in ones are the server's.
_TARGET_CODE = text("""
SELECT t.name, x.what, x.trigger
FROM unnest(CAST(:names AS text[])) AS t(name), LATERAL (
    SELECT 'trigger ' || g.tgname || ' (' || CAST(CAST(g.tgfoid AS regprocedure) AS text) || ')'
           AS what, g.tgname AS trigger
    FROM pg_trigger g WHERE g.tgrelid = to_regclass(t.name) AND NOT g.tgisinternal
    UNION ALL
    SELECT 'rule ' || r.rulename, NULL FROM pg_rewrite r WHERE r.ev_class = to_regclass(t.name)
    UNION ALL
    SELECT pg_describe_object(d.classid, d.objid, d.objsubid) || ' calls '
           || CAST(CAST(d.refobjid AS regprocedure) AS text), NULL
    FROM pg_depend d
    WHERE d.refclassid = CAST('pg_proc' AS regclass) AND d.refobjid >= 16384
      AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = CAST('pg_proc' AS regclass)
                      AND e.objid = d.refobjid AND e.deptype = 'e')
      AND ((d.classid = CAST('pg_class' AS regclass)
            AND (d.objid = to_regclass(t.name)
                 OR d.objid IN (SELECT indexrelid FROM pg_index WHERE indrelid = to_regclass(t.name))))
        OR (d.classid = CAST('pg_attrdef' AS regclass)
            AND d.objid IN (SELECT oid FROM pg_attrdef WHERE adrelid = to_regclass(t.name)))
        OR (d.classid = CAST('pg_constraint' AS regclass)
            AND d.objid IN (SELECT oid FROM pg_constraint WHERE conrelid = to_regclass(t.name)))
        -- A CHECK of a domain a column has (domains over domains not followed).
        OR (d.classid = CAST('pg_constraint' AS regclass)
            AND d.objid IN (SELECT k.oid FROM pg_constraint k JOIN pg_attribute a
                            ON a.atttypid = k.contypid
                            WHERE a.attrelid = to_regclass(t.name) AND NOT a.attisdropped))
        OR (d.classid = CAST('pg_policy' AS regclass)
            AND d.objid IN (SELECT oid FROM pg_policy WHERE polrelid = to_regclass(t.name))))
) AS x
ORDER BY 1, 2
""")


def _check_target_code(conn: Connection, moves: Sequence[Move]) -> None:
    names = sorted({move.target_name for move in moves})
    # A trigger the move file lists ([[trigger]], see _check_triggers) is accepted there and
    # fires under each batch's proof; everything else is refused here, before anything runs.
    listed = {(m.target_name, t.name) for m in moves for t in m.triggers}
    found = [
        r
        for r in conn.execute(_TARGET_CODE, {"names": names})
        if r.trigger is None or (r.name, r.trigger) not in listed
    ]
    if found:
        who = conn.execute(text("SELECT current_user")).scalar_one()
        raise ScopeViolation(
            f"the move would run code of its target tables as {who}, owner of the legacy "
            "tables: " + "; ".join(f"{r.name}: {r.what}" for r in found[:10]),
            hint="nothing was written; drop that trigger, rule or function call from the new "
            "table in a reviewed migration (a target of the move holds data, not code), then "
            "run the move again",
        )


_GRANT_HINT = (
    "the move writes the new tables through the declared privileges: make {who} a member of "
    "nucleus_readwrite (GRANT nucleus_readwrite TO {who}, with the group's grants created by "
    "`{apply}`); it reads the legacy tables as their owner"
)


# -- the shell --------------------------------------------------------------------------------


class Mover:
    """One session of the move (the admin login) and its bounded, retried transactions."""

    def __init__(
        self, stack: ExitStack, target: db.Target, options: Options, listener: Listener
    ) -> None:
        self.target, self.options, self.listener = target, options, listener
        self.conn = stack.enter_context(db.connect(target.admin, target.description))
        self.pid: int = self.conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        self.conn.commit()
        self.watch = BlockerWatch(
            lambda: stack.enter_context(db.connect(target.admin, f"{target.description} (watch)"))
        )
        self._stack = stack
        self._sequences: Connection | None = None

    def sequences(self) -> Connection:
        """The second session that reads sequence values around a batch (a nextval or setval
        is not transactional: seen by every session at once, never rolled back)."""
        if self._sequences is None:
            self._sequences = self._stack.enter_context(
                db.connect(self.target.admin, f"{self.target.description} (sequences)")
            )
        return self._sequences

    def read(self, what: str, fn: Callable[[Connection], T], conn: Connection | None = None) -> T:
        """`fn` in a READ ONLY transaction with the run's bounded lock waits, retried with
        backoff; gives up naming the blocker. Read-only also refuses, in the server, any
        write a move file's expression might attempt (setval included). `conn`: another
        session of the move (the summaries are read on two at once)."""
        session = conn if conn is not None else self.conn
        pid = (
            self.pid
            if conn is None
            else session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        )

        def step() -> T:
            try:
                session.execute(text("SET TRANSACTION READ ONLY"))
                session.execute(
                    text(
                        "SELECT set_config('lock_timeout', :lock, true), "
                        "set_config('statement_timeout', '300s', true)"
                    ),
                    {"lock": f"{self.options.policy.timeout_ms}ms"},
                )
                return fn(session)
            finally:
                session.rollback()

        return self.attempts().run(what, lambda: [pid], step)

    def proven(
        self,
        what: str,
        move: Move,
        info: TargetInfo,
        statements: Sequence[tuple[str, dict[str, Any]]],
        timeout_ms: int = BATCH_STATEMENT_TIMEOUT_MS,
        writes: Callable[[list[Row[Any]]], Mapping[str, Counts]] = lambda rows: {},
    ) -> list[Row[Any]]:
        """`statements` in one transaction, committed only once the database proves they
        changed nothing but the move's target and its bookkeeping (`nucleus_move`): the
        per-transaction row counters of every other table, the fingerprint of every object
        (`provision.safety`), and every sequence but the target's own, read on a second
        session before and after; and the target's and the provenance tables' counters equal
        `writes(rows)`, what the statements themselves report writing (rows inserted,
        updated, deleted by table; none unless given). Anything else rolls the batch back
        and names it."""
        changes: list[str] = []

        def step() -> list[Row[Any]]:
            changes.clear()
            seq = self.sequences()
            seq_before = safety.sequence_values(seq, [SCHEMA])
            seq.rollback()
            try:
                self.conn.execute(
                    text(
                        "SELECT set_config('lock_timeout', :lock, true), "
                        "set_config('statement_timeout', :statement, true)"
                    ),
                    {"lock": f"{self.options.policy.timeout_ms}ms", "statement": f"{timeout_ms}ms"},
                )
                before = _outside(safety.snapshot(self.conn, [SCHEMA]), move)
                own_before = _own_counters(self.conn, move)
                locks_before = list(self.conn.execute(_ADVISORY).scalar_one())
                rows: list[Row[Any]] = []
                for sql, params in statements:
                    result = self.conn.execute(text(sql), params)
                    rows = list(result.all()) if result.returns_rows else []
                after = _outside(safety.snapshot(self.conn, [SCHEMA]), move)
                own_after = _own_counters(self.conn, move)
                locks_after = list(self.conn.execute(_ADVISORY).scalar_one())
                seq_after = safety.sequence_values(seq, [SCHEMA])
                seq.rollback()
                changes.extend(safety.violations(before, after))
                changes.extend(unreported_writes(own_before, own_after, writes(rows)))
                if locks_after != locks_before:
                    changes.append(
                        f"advisory locks of the move's session changed from {locks_before} to "
                        f"{locks_after} (the move lock is key {MOVE_KEY})"
                    )
                changes.extend(self._sequence_changes(info, seq_before, seq_after))
                if changes:
                    self.conn.rollback()
                    return []
                self.conn.commit()
                return rows
            except BaseException:
                self.conn.rollback()
                raise

        rows = self.attempts().run(what, lambda: [self.pid], step)
        if changes:
            undo = [c for c in changes if c.startswith("sequence ")]
            raise ScopeViolation(
                f"{move.filename}: {what} rolled back: it changed what a move must never "
                f"change: {'; '.join(changes)}",
                hint=(
                    "a sequence change is not undone by a rollback: "
                    + "; ".join(c.split(": restore with ", 1)[1] for c in undo if ": restore" in c)
                    + "; then "
                    if undo
                    else ""
                )
                + "find what fired (an expression of the move file, a trigger or rule, a "
                "cascade of a foreign key) and remove it; nothing of the batch was kept",
            )
        return rows

    def _sequence_changes(
        self, info: TargetInfo, before: dict[str, int | None], after: dict[str, int | None]
    ) -> list[str]:
        """Sequences the batch moved. Services advance legacy sequences at the same time, so an
        increase counts only when this session called nextval/setval on it (its currval is
        set); a decrease, or a reset to "never called", is never a service's nextval."""
        found = []
        for name in safety.changed_sequences(before, after):
            if name in info.sequences:
                continue
            old, new = before.get(name), after.get(name)
            ours = new is None or (old is not None and new < old)
            if not ours:
                self.conn.execute(text("SAVEPOINT nm_currval"))
                try:
                    self.conn.execute(text("SELECT currval(CAST(:s AS regclass))"), {"s": name})
                    ours = True
                except DBAPIError:
                    self.conn.execute(text("ROLLBACK TO SAVEPOINT nm_currval"))
            if ours:
                restore = f"SELECT setval('{name}', {old})" if old is not None else ""
                found.append(
                    f"sequence {name} moved from {old} to {new}"
                    + (f": restore with {restore}" if restore else "")
                )
        return found

    def attempts(self) -> Attempts:
        return Attempts(
            self.options.policy,
            self.watch,
            on_retry=lambda message: self.listener(Event(EventKind.WAITING, message=message)),
        )

    def transaction(
        self, what: str, statements: Sequence[tuple[str, dict[str, Any]]], timeout_ms: int = 0
    ) -> list[Row[Any]]:
        """Run `statements` in one transaction, lock waits bounded and retried; the rows of
        the last one."""

        def step() -> list[Row[Any]]:
            try:
                self.conn.execute(
                    text(
                        "SELECT set_config('lock_timeout', :lock, true), "
                        "set_config('statement_timeout', :statement, true)"
                    ),
                    {"lock": f"{self.options.policy.timeout_ms}ms", "statement": f"{timeout_ms}ms"},
                )
                rows: list[Row[Any]] = []
                for sql, params in statements:
                    result = self.conn.execute(text(sql), params)
                    rows = list(result.all()) if result.returns_rows else []
                self.conn.commit()
                return rows
            except BaseException:
                self.conn.rollback()
                raise

        return self.attempts().run(what, lambda: [self.pid], step)

    def lock(self) -> None:
        """The move lock: one `move run` per database. A killed run's backend may still be
        finishing its batch: wait for it (bounded by the policy's run wait), saying so."""
        deadline = time.monotonic() + self.options.policy.run_wait
        said = False
        while not self.conn.execute(
            text("SELECT pg_try_advisory_lock(:k)"), {"k": MOVE_KEY}
        ).scalar_one():
            others = holders(self.conn, MOVE_KEY)
            self.conn.commit()
            who = "; ".join(b.describe() for b in others) or "another session"
            if time.monotonic() > deadline:
                raise LockTimeout(
                    f"another move run holds the move lock: {who}",
                    hint="wait for it to finish (or stop it: a batch is atomic) and run "
                    f"`{command('move run')}` again",
                )
            if not said:
                self.listener(Event(EventKind.WAITING, message=f"another move run works: {who}"))
                said = True
            time.sleep(0.2)
        self.conn.commit()


# The rows of the tables a batch may write: its target and every provenance table (a claim that
# the move wrote a row, which later lets it update or delete that row). The proof's other
# counters leave them out (the target by design, `nucleus_move` as the tool's own schema), so
# their counters must equal exactly what the batch's own statements report writing: a move
# file's "immutable" function that deletes a service's row from the target, or forges a
# provenance row so that a later pass deletes it, shows as writes nobody reported.
_OWN_COUNTERS = text(f"""
SELECT schemaname || '.' || relname AS name, n_tup_ins, n_tup_upd, n_tup_del
FROM pg_stat_xact_user_tables
WHERE schemaname || '.' || relname = :target
   OR (schemaname = '{SCHEMA}' AND starts_with(relname, 'written_'))
""")

Counts = tuple[int, int, int]  # rows inserted, updated, deleted

# The advisory locks the move's session holds (the move lock among them): a move file's
# function calling pg_advisory_unlock_all() would let a second `move run` in beside this one,
# and pg_advisory_lock() would hold a lock someone else waits for, both outside any rollback.
_ADVISORY = text("""
SELECT coalesce(array_agg((classid::bigint << 32) | objid::bigint ORDER BY 1), '{}') AS held
FROM pg_locks
WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
""")


def _own_counters(conn: Connection, move: Move) -> dict[str, Counts]:
    return {
        r.name: (int(r.n_tup_ins), int(r.n_tup_upd), int(r.n_tup_del))
        for r in conn.execute(_OWN_COUNTERS, {"target": move.target_name})
    }


def unreported_writes(
    before: Mapping[str, Counts], after: Mapping[str, Counts], reported: Mapping[str, Counts]
) -> list[str]:
    """The writes to the target and the provenance tables beyond what the batch reported
    writing (pure): one line per table, empty when they match exactly."""
    found = []
    for table in sorted(after.keys() | before.keys() | reported.keys()):
        old, new = before.get(table, (0, 0, 0)), after.get(table, (0, 0, 0))
        done = tuple(n - o for n, o in zip(new, old, strict=True))
        expected = reported.get(table, (0, 0, 0))
        if done != expected:
            what = ", ".join(
                f"{n} {verb} (the move's statements: {e})"
                for n, e, verb in zip(
                    done, expected, ("inserted", "updated", "deleted"), strict=True
                )
                if n != e
            )
            found.append(f"rows of {table}: {what}")
    return found


def _outside(snapshot: safety.Snapshot, move: Move) -> safety.Snapshot:
    """The proof's view of a move's batch: every table's row counters but its target's."""
    rows = {t: c for t, c in snapshot.rows.items() if t != move.target_name}
    return dataclasses.replace(snapshot, rows=rows)  # every other field of the proof kept


def _record_error(mover: Mover, move: Move, message: str) -> None:
    try:
        mover.conn.execute(
            text(f"UPDATE {SCHEMA}.state SET last_error = :e, updated_at = now() WHERE name = :n"),
            {"e": message[:500], "n": move.name},
        )
        mover.conn.commit()
    except DBAPIError:
        mover.conn.rollback()


_BATCH_ROLLED_BACK = (
    "the step that failed, all of it (one transaction); every committed batch and the cursor "
    "stay, and `{run}` again resumes from there"
)


@contextmanager
def _failing_as(mover: Mover, move: Move, what: str) -> Iterator[None]:
    """A failed step: recorded as the move's last error, raised as MoveFailed (lock waits
    that ran out stay LockTimeout, which names the blocker)."""
    try:
        yield
    except (LockTimeout, ScopeViolation) as exc:
        _record_error(mover, move, exc.message)
        exc.rolled_back = exc.rolled_back or _BATCH_ROLLED_BACK.format(run=command("move run"))
        raise
    except DBAPIError as exc:
        mover.conn.rollback()
        message = f"{move.filename}: {what} failed: {server_message(exc)}"
        _record_error(mover, move, message)
        raise MoveFailed(
            message,
            hint="if the target refuses some rows, declare a [[skip]] rule for them in the "
            f"move file, then run `{command('move run')}` again",
            rolled_back=_BATCH_ROLLED_BACK.format(run=command("move run")),
        ) from None


def _throttle(started: float, rows: int, rate: float | None) -> None:
    if rate:
        ahead = rows / rate - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)


def _gate(mover: Mover, move: Move) -> throttle.Gate:
    """The throttle of one move's batch loop, reading its signals on the move's session."""
    pids = [mover.pid]
    target = ".".join(ident(part) for part in move.target)

    def read() -> tuple[throttle.Signals, str | None]:
        if mover._sequences is not None and len(pids) == 1:
            pids.append(mover._sequences.execute(text("SELECT pg_backend_pid()")).scalar_one())
            mover._sequences.commit()
        return mover.read(
            f"{move.name}: signals",
            lambda c: throttle.read_signals(c, pids, target, move.name),
        )

    return throttle.Gate(
        mover.options.limits,
        mover.options.batch_size,
        read,
        lambda message: mover.listener(Event(EventKind.WAITING, move.name, message=message)),
    )


def _state(mover: Mover, move: Move, info: TargetInfo) -> Row[Any]:
    # The provenance table's DDL only when it is missing: even CREATE INDEX IF NOT EXISTS
    # takes a SHARE lock first, which autovacuum's analyze of a freshly filled table holds off.
    missing = mover.transaction(
        f"{move.name}: provenance",
        [("SELECT to_regclass(:t) IS NULL", {"t": plan.written(move)})],
    )[0][0]
    rows = mover.transaction(
        f"{move.name}: state",
        [
            *((sql, {}) for sql in (plan.provenance_ddl(move, info) if missing else ())),
            (
                f"INSERT INTO {SCHEMA}.state (name, source, target, checksum) "
                "VALUES (:n, :s, :t, :c) ON CONFLICT (name) DO NOTHING",
                {"n": move.name, "s": move.source_name, "t": move.target_name, "c": move.checksum},
            ),
            (f"SELECT * FROM {SCHEMA}.state WHERE name = :n FOR UPDATE", {"n": move.name}),
        ],
    )
    state = rows[0]
    if state.checksum != move.checksum:
        # A changed mapping: every range is compared again on the next pass.
        mover.transaction(
            f"{move.name}: checksum",
            [
                (
                    f"UPDATE {SCHEMA}.state SET checksum = :c WHERE name = :n",
                    {"c": move.checksum, "n": move.name},
                ),
                (f"DELETE FROM {SCHEMA}.ranges WHERE name = :n", {"n": move.name}),
            ],
        )
        if state.phase != "copying" or state.copied:
            mover.listener(
                Event(
                    EventKind.NOTE,
                    move.name,
                    message=f"{move.filename} changed since the copy began: the catch-up pass "
                    "brings the rows the move wrote to the new mapping",
                )
            )
    return state


def _copy(mover: Mover, move: Move, info: TargetInfo, state: Row[Any]) -> None:
    options, listener = mover.options, mover.listener
    cursor, copied, scanned_before = int(state.cursor), int(state.copied), int(state.scanned)
    left = mover.read(
        f"{move.name}: count",
        lambda c: int(c.execute(text(plan.remaining(move)), {"cursor": cursor}).scalar_one()),
    )
    total = scanned_before + left
    listener(
        Event(
            EventKind.START,
            move.name,
            done=scanned_before,
            total=total,
            cursor=cursor,
            message=f"copy {move.source_name} -> {move.target_name}: {left:,} legacy rows to "
            f"read ({scanned_before:,} read before)",
        )
    )
    sql = plan.copy_batch(move, info)
    started, read, gate = time.monotonic(), scanned_before, _gate(mover, move)
    while True:
        gate.boundary(move.name)
        size, began = gate.size, time.monotonic()
        with _failing_as(mover, move, f"the batch after key {cursor}"):
            row = mover.proven(
                f"the batch after key {cursor}",
                move,
                info,
                [(sql, {"name": move.name, "cursor": cursor, "n": size})],
                writes=lambda rows: {
                    t: (int(rows[0].copied), 0, 0) for t in (move.target_name, _written(move))
                },
            )[0]
        cursor, batch, scanned = int(row.cursor), int(row.copied), int(row.scanned)
        gate.batch_done(time.monotonic() - began, scanned)
        if scanned == 0:
            break
        copied += batch
        read += scanned
        elapsed = time.monotonic() - started
        listener(
            Event(
                EventKind.BATCH,
                move.name,
                rows=scanned,
                done=read,
                total=max(total, read),
                rate=(read - scanned_before) / elapsed if elapsed > 0 else 0.0,
                cursor=cursor,
                message=f"wrote {batch:,} of {scanned:,} legacy rows read",
            )
        )
        _throttle(started, read - scanned_before, options.rate)
        if scanned < size:
            # The end of the source as of this batch: rows inserted since are the catch-up's
            # (it compares by content), so a busy writer cannot keep the copy chasing it.
            break
    mover.transaction(
        f"{move.name}: copied",
        [
            (plan.provenance_index(move), {}),
            (
                f"UPDATE {SCHEMA}.state SET phase = 'catching-up', copied_at = now() WHERE name = :n",
                {"n": move.name},
            ),
        ],
        timeout_ms=BATCH_STATEMENT_TIMEOUT_MS * 5,
    )
    listener(
        Event(
            EventKind.COPIED,
            move.name,
            done=copied,
            total=read,
            cursor=cursor,
            message=f"copied {copied:,} rows into {move.target_name} ({read:,} legacy rows read"
            + (
                f"; {read - copied:,} kept out by rules or left for the catch-up)"
                if read > copied
                else ")"
            ),
        )
    )


# -- summaries: what changed since the last pass, cheaply -------------------------------------

Summary = dict[int, tuple[int, int | None]]  # bucket -> (rows, hash)


@dataclass
class Summaries:
    """The current count and hash per key range of each legacy table read in a pass (each
    table read once per pass, whatever number of moves read it)."""

    keys: dict[tuple[str, str], str]  # legacy table -> its integer key (a move's source key)
    tables: dict[tuple[str, str], Summary] = field(default_factory=dict)

    def of(self, mover: Mover, table: tuple[str, str]) -> Summary:
        if table not in self.tables:
            self.tables[table] = _summary(mover, table, self.keys.get(table))
        return self.tables[table]

    def prefetch(self, mover: Mover, tables: Iterable[tuple[str, str]]) -> None:
        """Read the summaries of `tables` on two sessions at once: each is one scan of a
        table, and a no-change pass is nothing but these scans."""
        todo = [t for t in dict.fromkeys(tables) if t not in self.tables]
        sessions: queue.Queue[Connection | None] = queue.Queue()
        sessions.put(None)  # the move's own session
        sessions.put(mover.sequences())

        def one(table: tuple[str, str]) -> Summary:
            conn = sessions.get()
            try:
                return _summary(mover, table, self.keys.get(table), conn)
            finally:
                sessions.put(conn)

        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="summary") as pool:
            for table, summary in zip(todo, pool.map(one, todo), strict=True):
                self.tables[table] = summary


def _summary(
    mover: Mover, table: tuple[str, str], key: str | None, conn: Connection | None = None
) -> Summary:
    def read(hashed: bool) -> Summary:
        return mover.read(
            f"{'.'.join(table)}: summary",
            lambda c: {
                int(r.bucket): (int(r.rows), int(r.hash))
                for r in c.execute(text(plan.summary(table, key, hashed)))
            },
            conn,
        )

    try:
        return read(True)
    except DBAPIError:
        # A column type without a hash function (json, say): hash the row's text instead.
        return read(False)


def _collapse(summary: Summary) -> tuple[int, int | None]:
    rows, digest = 0, 0
    for n, h in summary.values():
        if h is None:
            return (-1, None)
        rows, digest = rows + n, digest ^ h
    return rows, digest


def _stored(mover: Mover, move: Move) -> dict[str, Summary]:
    def read(c: Connection) -> dict[str, Summary]:
        stored: dict[str, Summary] = {}
        if c.execute(text(f"SELECT to_regclass('{SCHEMA}.ranges') IS NULL")).scalar_one():
            return stored
        for r in c.execute(
            text(f"SELECT tbl, bucket, rows, hash FROM {SCHEMA}.ranges WHERE name = :n"),
            {"n": move.name},
        ):
            stored.setdefault(r.tbl, {})[int(r.bucket)] = (
                int(r.rows),
                None if r.hash is None else int(r.hash),
            )
        return stored

    return mover.read(f"{move.name}: ranges", read)


def changed_ranges(
    move: Move, current: dict[str, Summary], stored: dict[str, Summary]
) -> list[int] | None:
    """The source ranges to compare again (pure): [] nothing changed, None everything
    (never compared, another table read changed, or the mapping reads the source again)."""
    if not stored:
        return None
    source = move.source_name
    for table, summary in current.items():
        if table != source or move.self_reference:
            if _collapse(summary) != _collapse(stored.get(table, {})):
                return None
    now, then = current.get(source, {}), stored.get(source, {})
    changed = sorted(b for b in now.keys() | then.keys() if now.get(b) != then.get(b))
    changed += sorted(b for b, (_n, h) in then.items() if h is None and b not in changed)
    return None if len(changed) > MAX_RANGES else sorted(set(changed))


def _bounds(changed: list[int] | None) -> list[tuple[int, int]]:
    if changed is None:
        return [(plan.START_CURSOR, plan.MAX_KEY)]
    return [(b << plan.RANGE_BITS, ((b + 1) << plan.RANGE_BITS) - 1) for b in changed]


def _store(mover: Mover, move: Move, current: dict[str, Summary], dirty: set[int]) -> None:
    tables, buckets, rows, hashes = [], [], [], []
    for table, summary in current.items():
        for bucket, (n, h) in summary.items():
            tables.append(table)
            buckets.append(bucket)
            rows.append(n)
            hashes.append(None if table == move.source_name and bucket in dirty else h)
    for bucket in dirty - set(current.get(move.source_name, {})):
        tables.append(move.source_name)
        buckets.append(bucket)
        rows.append(0)
        hashes.append(None)
    mover.transaction(
        f"{move.name}: ranges",
        [
            (f"DELETE FROM {SCHEMA}.ranges WHERE name = :n", {"n": move.name}),
            (
                f"INSERT INTO {SCHEMA}.ranges (name, tbl, bucket, rows, hash) "
                "SELECT :n, * FROM unnest(CAST(:t AS text[]), CAST(:b AS bigint[]), "
                "CAST(:r AS bigint[]), CAST(:h AS bigint[]))",
                {"n": move.name, "t": tables, "b": buckets, "r": rows, "h": hashes},
            ),
        ],
    )


def _current(mover: Mover, move: Move, summaries: Summaries) -> dict[str, Summary]:
    return {".".join(t): summaries.of(mover, t) for t in move.reads}


# -- catch-up ---------------------------------------------------------------------------------

UNRESOLVED = ("waiting", *plan.CONFLICT_KINDS)


@dataclass
class PassResult:
    counts: dict[str, int] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)  # "kind: key" samples
    unchanged: bool = False  # no legacy range changed: nothing was compared

    @property
    def held(self) -> bool:
        return bool(self.counts.get("referenced"))

    @property
    def deleted(self) -> int:
        return self.counts.get("deleted", 0)


def catch_up(
    mover: Mover, move: Move, info: TargetInfo, summaries: Summaries, state: Row[Any]
) -> PassResult:
    """One catch-up pass: find the legacy ranges that changed since the last pass (from the
    summaries), list the keys where the mapped legacy rows differ from what the move wrote,
    and repair them, writing only rows the move wrote that still hold what it wrote."""
    options, listener = mover.options, mover.listener
    current = _current(mover, move, summaries)
    changed = changed_ranges(move, current, _stored(mover, move))
    result = PassResult()
    if state.cutover_at is not None:
        return _after_cutover(mover, move, info, changed, state)
    if changed == []:
        listener(
            Event(
                EventKind.UNCHANGED,
                move.name,
                message="no legacy range changed since the last pass",
            )
        )
        _synced(mover, move, None, 0)
        result.unchanged = True
        return result
    with _failing_as(mover, move, "the comparison"):
        rows = mover.proven(
            "the comparison",
            move,
            info,
            [
                (f"DELETE FROM {SCHEMA}.pending WHERE name = :name", {"name": move.name}),
                *(
                    (sql, {"name": move.name, "lo": lo, "hi": hi})
                    for lo, hi in _bounds(changed)
                    for sql in (plan.diff(move, info), plan.recheck_conflicts())
                ),
                (
                    f"UPDATE {SCHEMA}.state SET passes = passes + 1, updated_at = clock_timestamp(), "
                    f"last_diff = (SELECT count(*) FROM {SCHEMA}.pending WHERE name = :name) "
                    "WHERE name = :name RETURNING last_diff, now() AS as_of",
                    {"name": move.name},
                ),
            ],
            timeout_ms=0,
        )
    found, as_of = int(rows[0].last_diff), rows[0].as_of
    listener(
        Event(
            EventKind.DIFF,
            move.name,
            rows=found,
            total=found,
            message="every range" if changed is None else f"{len(changed)} changed range(s)",
        )
    )
    statements = plan.repair(move, info)
    done, started, dirty, gate = 0, time.monotonic(), set[int](), _gate(mover, move)
    while found:
        gate.boundary(move.name)
        with _failing_as(mover, move, "a repair batch"):
            report = mover.proven(
                "a repair batch",
                move,
                info,
                [(sql, {"name": move.name, "n": options.batch_size}) for sql in statements],
                writes=lambda rows: _repair_writes(move, rows),
            )
        if not report:
            break
        for r in report:
            action = {"insert": "inserted", "update": "updated", "delete": "deleted"}.get(
                r.action, r.action
            )
            result.counts[action] = result.counts.get(action, 0) + int(r.n)
            done += int(r.n)
            if r.action in UNRESOLVED:
                dirty.update(int(b) for b in r.buckets or ())
                if r.action != "waiting":
                    result.conflicts += [f"{r.action}: {k}" for k in r.sample or ()]
        elapsed = time.monotonic() - started
        listener(
            Event(
                EventKind.REPAIR,
                move.name,
                rows=sum(int(r.n) for r in report),
                done=done,
                total=found,
                rate=done / elapsed if elapsed > 0 else 0.0,
                counts=dict(result.counts),
            )
        )
        _throttle(started, done, options.rate)
    _store(mover, move, current, dirty)
    conflicts = sum(result.counts.get(k, 0) for k in plan.CONFLICT_KINDS)
    if conflicts:
        listener(
            Event(
                EventKind.CONFLICT,
                move.name,
                rows=conflicts,
                keys=tuple(result.conflicts[:20]),
                message="target rows the move did not write, or changed since it wrote them: "
                "left as they are",
            )
        )
    _synced(
        mover, move, as_of, sum(result.counts.get(k, 0) for k in ("inserted", "updated", "deleted"))
    )
    listener(Event(EventKind.SYNCED, move.name, rows=found, counts=dict(result.counts)))
    return result


def _written(move: Move) -> str:
    """The provenance table's name as the statistics views spell it."""
    return f"{SCHEMA}.written_{move.name}"


def _repair_writes(move: Move, report: Sequence[Row[Any]]) -> dict[str, Counts]:
    """What a repair batch wrote, from its report of actions (after the re-check of each
    write): a row inserted, updated or deleted in the target and in the provenance for each
    `insert`, `update`, `delete`; a provenance row deleted for each `forget`."""
    n = {r.action: int(r.n) for r in report}
    inserted, updated, deleted = n.get("insert", 0), n.get("update", 0), n.get("delete", 0)
    return {
        move.target_name: (inserted, updated, deleted),
        _written(move): (inserted, updated, deleted + n.get("forget", 0)),
    }


def _synced(mover: Mover, move: Move, as_of: Any, repaired: int) -> None:
    mover.transaction(
        f"{move.name}: synced",
        [
            (
                f"UPDATE {SCHEMA}.state SET phase = 'synced', "
                "synced_at = coalesce(CAST(:as_of AS timestamptz), now()), "
                "repaired = repaired + :r, updated_at = clock_timestamp(), last_error = NULL "
                "WHERE name = :name",
                {"name": move.name, "as_of": as_of, "r": repaired},
            )
        ],
    )


def legacy_after_cutover(
    mover: Mover, move: Move, info: TargetInfo, changed: list[int] | None
) -> list[tuple[str, int]]:
    """(how, legacy key) of the legacy rows that differ from what the move wrote (read-only)."""
    if changed == []:
        return []

    def read(c: Connection) -> list[tuple[str, int]]:
        found: list[tuple[str, int]] = []
        for lo, hi in _bounds(changed):
            found += [
                (r.how, int(r.legacy_key))
                for r in c.execute(text(plan.legacy_changed(move, info)), {"lo": lo, "hi": hi})
            ]
        return found

    return mover.read(f"{move.name}: legacy after cut-over", read)


def _after_cutover(
    mover: Mover, move: Move, info: TargetInfo, changed: list[int] | None, state: Row[Any]
) -> PassResult:
    """After cut-over the move writes nothing: legacy rows written since are reported."""
    found = legacy_after_cutover(mover, move, info, changed)
    mover.listener(
        Event(
            EventKind.CUTOVER,
            move.name,
            rows=len(found),
            keys=tuple(f"{how} {key}" for how, key in found[:20]),
            message=f"cut over at {state.cutover_at}: legacy rows written after cut-over are "
            "reported, not copied",
        )
    )
    return PassResult(counts={"legacy_after_cutover": len(found)})


def _skipped(mover: Mover, move: Move) -> list[tuple[str, int]]:
    if not move.skip:
        return []
    row = mover.read(f"{move.name}: rules", lambda c: c.execute(text(plan.skipped(move))).one())
    return [(rule.reason, int(n)) for rule, n in zip(move.skip, row, strict=True)]


def _keys(declaration: Declaration) -> dict[tuple[str, str], str]:
    return {m.source: m.key for m in declaration.moves}


def _pass(mover: Mover, declaration: Declaration, moves: Sequence[Move], facts: Facts) -> set[str]:
    """One catch-up pass over the moves, parents first. A move whose deletes waited for rows
    that reference them (a child move's rows, deleted later in the pass) is passed again,
    as long as the previous round deleted something (at most once per move)."""
    summaries = Summaries(_keys(declaration))
    summaries.prefetch(mover, [t for m in moves for t in m.reads])
    todo = list(moves)
    compared: set[str] = set()
    for _round in range(len(moves) + 1):
        results = {}
        for move in todo:
            info = facts.infos[move.name]
            results[move.name] = catch_up(mover, move, info, summaries, _state(mover, move, info))
            if not results[move.name].unchanged:
                compared.add(move.name)
        todo = [m for m in todo if results[m.name].held]
        if not todo or not any(r.deleted for r in results.values()):
            break
    return compared


def run(
    target: db.Target,
    declaration: Declaration,
    moves: Sequence[Move],
    protected_schemas: Sequence[str],
    options: Options = DEFAULT_OPTIONS,
    listener: Listener = lambda e: None,
    stop: Callable[[], bool] = lambda: False,
) -> list[MoveStatus]:
    """Check, copy what is left, catch up (repeatedly with `follow`); the moves' status."""
    with ExitStack() as stack:
        mover = Mover(stack, target, options, listener)
        facts = mover.read("checks", lambda c: _check(c, declaration, moves, protected_schemas))
        mover.lock()
        mover.transaction(
            "bookkeeping", [(sql, {}) for sql in (*plan.BOOKKEEPING, throttle.CONTROL_DDL)]
        )
        try:
            compared = _start(mover, declaration, moves, facts)
        except throttle.Cancelled:
            listener(Event(EventKind.NOTE, message=cancelled_note()))
            return mover.read("status", lambda c: _statuses(c, moves))
        for move in moves:
            if move.name not in compared:
                continue  # nothing changed: the counts are those of the last pass (`status`)
            for reason, count in _skipped(mover, move):
                if count:
                    listener(Event(EventKind.SKIPPED, move.name, rows=count, message=reason))
        while options.follow and not stop():
            deadline = time.monotonic() + options.interval
            while time.monotonic() < deadline and not stop():
                time.sleep(min(0.2, options.interval))
            if stop():
                break
            try:
                _pass(mover, declaration, moves, facts)
            except throttle.Cancelled:
                listener(Event(EventKind.NOTE, message=cancelled_note()))
                break
        return mover.read("status", lambda c: _statuses(c, moves))


def cancelled_note() -> str:
    return (
        "cancelled by `move cancel` at a batch boundary: every committed batch is kept; "
        f"`{command('move run')}` resumes from there"
    )


def _start(mover: Mover, declaration: Declaration, moves: Sequence[Move], facts: Facts) -> set[str]:
    """Clear a `move cancel` left by an earlier run (this run is the resume it asked for),
    copy what is left, and make the first catch-up pass."""
    mover.transaction(
        "cancel",
        [
            (
                f"UPDATE {SCHEMA}.state SET control = NULL "
                f"WHERE control = '{throttle.CANCELLED}' AND name = ANY(:names)",
                {"names": [m.name for m in moves]},
            )
        ],
    )
    for move in moves:
        info = facts.infos[move.name]
        state = _state(mover, move, info)
        if state.phase == "copying":
            _copy(mover, move, info, state)
        else:
            mover.listener(Event(EventKind.START, move.name, message="catch-up pass"))
    return _pass(mover, declaration, moves, facts)


def cutover(
    target: db.Target,
    declaration: Declaration,
    move: Move,
    protected_schemas: Sequence[str],
    options: Options = DEFAULT_OPTIONS,
) -> tuple[MoveStatus, list[tuple[str, int]]]:
    """Record the cut-over of one move: from now on `run` never writes its target (services
    own it); legacy rows written afterwards are reported with their keys. Also returns the
    legacy rows that already differ from what the move wrote (they will not be copied)."""
    with ExitStack() as stack:
        mover = Mover(stack, target, options, lambda e: None)
        facts = mover.read("checks", lambda c: _check(c, declaration, [move], protected_schemas))
        mover.lock()
        mover.transaction("bookkeeping", [(sql, {}) for sql in plan.BOOKKEEPING])
        info = facts.infos[move.name]
        state = _state(mover, move, info)
        if state.phase == "copying":
            raise MoveFailed(
                f"{move.name}: its copy has not finished ({state.phase}); a cut-over now would "
                "leave legacy rows behind for good",
                hint=f"run `{command(f'move run --only {move.name}')}` first, then cut over",
            )
        current = _current(mover, move, Summaries(_keys(declaration)))
        changed = changed_ranges(move, current, _stored(mover, move))
        differ = legacy_after_cutover(mover, move, info, changed)
        if state.cutover_at is None:
            # The summaries as of the cut-over: what later passes compare with.
            _store(mover, move, current, {key >> plan.RANGE_BITS for _how, key in differ})
            mover.transaction(
                f"{move.name}: cut-over",
                [
                    (
                        f"UPDATE {SCHEMA}.state SET cutover_at = now(), updated_at = now() "
                        "WHERE name = :n",
                        {"n": move.name},
                    )
                ],
            )
        statuses = mover.read("status", lambda c: _statuses(c, [move]))
        return statuses[0], differ


def _statuses(
    conn: Connection, moves: Sequence[Move], with_rules: bool = False
) -> list[MoveStatus]:
    exists = conn.execute(text(f"SELECT to_regclass('{SCHEMA}.state') IS NOT NULL")).scalar_one()
    states: dict[str, Row[Any]] = {}
    conflicts: dict[str, dict[str, int]] = {}
    if exists:
        states = {
            r.name: r
            for r in conn.execute(
                text(
                    f"SELECT st.*, extract(epoch FROM now() - st.synced_at) AS lag, "
                    f"(SELECT count(*) FROM {SCHEMA}.pending p WHERE p.name = st.name) AS pending "
                    f"FROM {SCHEMA}.state st"
                )
            )
        }
        if conn.execute(text(f"SELECT to_regclass('{SCHEMA}.conflicts') IS NOT NULL")).scalar_one():
            for r in conn.execute(
                text(f"SELECT name, kind, count(*) AS n FROM {SCHEMA}.conflicts GROUP BY 1, 2")
            ):
                conflicts.setdefault(r.name, {})[r.kind] = int(r.n)
    result = []
    for move in moves:
        state = states.get(move.name)
        status = MoveStatus(move.name, move.source_name, move.target_name, "not started")
        if state is not None:
            status.phase, status.copied, status.passes = (
                state.phase,
                int(state.copied),
                int(state.passes),
            )
            status.last_error = state.last_error
            status.lag_s = float(state.lag) if state.lag is not None else None
            cutover_at = getattr(state, "cutover_at", None)
            status.cutover_at = None if cutover_at is None else str(cutover_at)
            status.control = getattr(state, "control", None)
            status.conflicts = conflicts.get(move.name, {})
            if state.phase == "copying":
                status.pending = int(
                    conn.execute(text(plan.remaining(move)), {"cursor": state.cursor}).scalar_one()
                )
            else:
                status.pending = int(state.pending)
        else:
            status.pending = int(
                conn.execute(text(plan.remaining(move)), {"cursor": plan.START_CURSOR}).scalar_one()
            )
        if with_rules and move.skip:
            row = conn.execute(text(plan.skipped(move))).one()
            status.skipped = [(r.reason, int(n)) for r, n in zip(move.skip, row, strict=True)]
        result.append(status)
    return result


def status(
    target: db.Target,
    declaration: Declaration,
    moves: Sequence[Move],
    policy: LockPolicy = DEFAULT_POLICY,
) -> list[MoveStatus]:
    """Per move: phase, rows copied, rows pending, lag since the last pass, conflicts,
    cut-over, the legacy ranges changed since the last pass ("behind"), and the rows each
    rule keeps out. Read-only, with the run's bounded lock waits."""
    with ExitStack() as stack:
        mover = Mover(stack, target, Options(policy=policy), lambda e: None)
        statuses = mover.read("status", lambda c: _statuses(c, moves, with_rules=True))
        summaries = Summaries(_keys(declaration))
        summaries.prefetch(
            mover,
            [
                t
                for m, st in zip(moves, statuses, strict=True)
                if st.phase != "not started"
                for t in m.reads
            ],
        )
        for move, st in zip(moves, statuses, strict=True):
            if st.phase in ("catching-up", "synced"):
                current = _current(mover, move, summaries)
                stored = _stored(mover, move)
                changed = changed_ranges(move, current, stored) if stored else None
                st.behind = (
                    len(_source_ranges(move, current, stored))
                    if changed is None and stored
                    else (None if changed is None else len(changed))
                )
        return statuses


def _source_ranges(
    move: Move, current: dict[str, Summary], stored: dict[str, Summary]
) -> list[int]:
    """Every range that differs, of every table the move reads (for `status`)."""
    found = []
    for table in current.keys() | stored.keys():
        now, then = current.get(table, {}), stored.get(table, {})
        found += [b for b in now.keys() | then.keys() if now.get(b) != then.get(b)]
    return found
