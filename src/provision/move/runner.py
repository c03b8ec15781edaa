"""The imperative shell of the moves: check, copy, catch up, report.

`run` first checks everything it can before writing anything (every legacy table moved or
listed as not moved; sources, targets, keys and columns as the files say; the session's
privileges; every mapping planned by the server), so a bad move file fails with
`FILE: what is wrong` and nothing copied. Then, under the move lock (one `move run` at a time
per database), for each move in file order:

1. **copy**: keyset batches computed in the server (`plan.copy_batch`), each its own short
   transaction with a bounded lock wait (the run's `LockPolicy`, retried with backoff and
   naming the blocker), the cursor committed with its batch;
2. **catch up**: a comparison of the mapped source with the target (`plan.diff`) lists the
   keys that differ in `nucleus_move.pending`, repaired in batches (`plan.repair_batch`).
   Inserts, updates and deletes made by live services reach the target this way, as do
   changes of a move file's mapping. `--follow` repeats this pass until interrupted.

The bookkeeping (`nucleus_move.state`, `nucleus_move.pending`) lives in the database, in a
schema of the tool created by the move's session: a killed run resumes at its last
committed batch, and a finished move reruns as a catch-up pass that finds nothing to do.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Row, text
from sqlalchemy.exc import DBAPIError

from provision import db
from provision.errors import (
    LockTimeout,
    MoveFailed,
    MoveFileError,
    PermissionProblem,
    ScopeViolation,
)
from provision.locks import DEFAULT_POLICY, Attempts, BlockerWatch, LockPolicy, holders
from provision.move import plan
from provision.move.declare import Declaration, Move
from provision.move.plan import SCHEMA, ForeignKey, TargetInfo
from provision.sql import server_message

# pg_advisory_lock key of `move run` ("nucm"): one run at a time per database.
MOVE_KEY = 0x6E75636D
# A batch is a short transaction; a statement that runs longer than this is a defect.
BATCH_STATEMENT_TIMEOUT_MS = 60_000
DEFAULT_BATCH_SIZE = 50_000


class EventKind(StrEnum):
    WAITING = "waiting"  # another run holds the move lock, or a lock wait is retried
    START = "start"  # a move begins (copy or catch-up)
    BATCH = "batch"  # a copy batch committed
    COPIED = "copied"  # the copy reached the end of the source
    DIFF = "diff"  # a catch-up comparison found `rows` keys that differ
    REPAIR = "repair"  # a repair batch committed
    SYNCED = "synced"  # the move's target equals the mapped source as of the comparison
    SKIPPED = "skipped"  # rows a rule keeps out, with the reason
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

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"event": self.kind.value, "move": self.move}
        for name in ("rows", "done", "total", "cursor", "message"):
            value = getattr(self, name)
            if value not in (None, ""):
                data[name] = value
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

    def to_dict(self) -> dict[str, Any]:
        return {
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
                hint="run `nucleus-provision apply` first: the migrations create it",
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
        )
    _check_privileges(conn, moves, infos)
    _check_target_code(conn, moves)
    for move in moves:
        try:
            conn.execute(text("SAVEPOINT explain"))
            conn.execute(text(plan.explain(move, infos[move.name])))
            conn.execute(text("RELEASE SAVEPOINT explain"))
        except DBAPIError as exc:
            raise MoveFileError(
                f"{move.filename}: the mapping does not run: {server_message(exc)}",
                hint="fix the expression, FROM clause or rule it names; nothing was copied",
            ) from None
    return Facts(infos)


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
            hint=_GRANT_HINT.format(who=who),
        )
    missing = conn.execute(
        _PRIVILEGES, {"names": [n for n, _ in wanted], "privileges": [p for _, p in wanted]}
    ).all()
    if missing:
        name, privilege = missing[0]
        raise PermissionProblem(
            f"the move's session ({who}) lacks {privilege} on {name}",
            hint=_GRANT_HINT.format(who=who),
        )


# What a target table runs when the move writes it: the move's session is `postgres`, owner of
# the legacy tables, so a trigger, a rule, or a function called by an index, a default, a
# constraint or a policy of the target would run with the right to delete or drop them (a
# migration may leave one whose text names no legacy schema: 'dna' || '_schema'). Functions
# of extensions are the extension's (pgvector's), built-in ones are the server's.
_TARGET_CODE = text("""
SELECT t.name, x.what
FROM unnest(CAST(:names AS text[])) AS t(name), LATERAL (
    SELECT 'trigger ' || g.tgname || ' (' || CAST(CAST(g.tgfoid AS regprocedure) AS text) || ')'
           AS what
    FROM pg_trigger g WHERE g.tgrelid = to_regclass(t.name) AND NOT g.tgisinternal
    UNION ALL
    SELECT 'rule ' || r.rulename FROM pg_rewrite r WHERE r.ev_class = to_regclass(t.name)
    UNION ALL
    SELECT pg_describe_object(d.classid, d.objid, d.objsubid) || ' calls '
           || CAST(CAST(d.refobjid AS regprocedure) AS text)
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
    found = conn.execute(_TARGET_CODE, {"names": names}).all()
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
    "`nucleus-provision apply`); it reads the legacy tables as their owner"
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
                    hint="wait for it to finish (or stop it: a batch is atomic) and run again",
                )
            if not said:
                self.listener(Event(EventKind.WAITING, message=f"another move run works: {who}"))
                said = True
            time.sleep(0.2)
        self.conn.commit()


def _record_error(mover: Mover, move: Move, message: str) -> None:
    try:
        mover.conn.execute(
            text(f"UPDATE {SCHEMA}.state SET last_error = :e, updated_at = now() WHERE name = :n"),
            {"e": message[:500], "n": move.name},
        )
        mover.conn.commit()
    except DBAPIError:
        mover.conn.rollback()


@contextmanager
def _failing_as(mover: Mover, move: Move, what: str) -> Iterator[None]:
    """A failed step: recorded as the move's last error, raised as MoveFailed (lock waits
    that ran out stay LockTimeout, which names the blocker)."""
    try:
        yield
    except LockTimeout as exc:
        _record_error(mover, move, exc.message)
        raise
    except DBAPIError as exc:
        mover.conn.rollback()
        message = f"{move.filename}: {what} failed: {server_message(exc)}"
        _record_error(mover, move, message)
        raise MoveFailed(
            message,
            hint="that batch was rolled back and the cursor kept; if the target refuses some "
            "rows, declare a [[skip]] rule for them in the move file, then run again",
        ) from None


def _throttle(started: float, rows: int, rate: float | None) -> None:
    if rate:
        ahead = rows / rate - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)


def _state(mover: Mover, move: Move) -> Row[Any]:
    rows = mover.transaction(
        f"{move.name}: state",
        [
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
        mover.transaction(
            f"{move.name}: checksum",
            [
                (
                    f"UPDATE {SCHEMA}.state SET checksum = :c WHERE name = :n",
                    {"c": move.checksum, "n": move.name},
                )
            ],
        )
        if state.phase != "copying" or state.copied:
            mover.listener(
                Event(
                    EventKind.NOTE,
                    move.name,
                    message=f"{move.filename} changed since the copy began: the catch-up pass "
                    "brings the target to the new mapping",
                )
            )
    return state


def _copy(mover: Mover, move: Move, info: TargetInfo, state: Row[Any]) -> None:
    options, listener = mover.options, mover.listener
    cursor, copied = int(state.cursor), int(state.copied)
    left = mover.transaction(f"{move.name}: count", [(plan.remaining(move), {"cursor": cursor})])[
        0
    ][0]
    total = copied + int(left)
    listener(
        Event(
            EventKind.START,
            move.name,
            done=copied,
            total=total,
            cursor=cursor,
            message=f"copy {move.source_name} -> {move.target_name}",
        )
    )
    sql = plan.copy_batch(move, info)
    started, written = time.monotonic(), 0
    while True:
        with _failing_as(mover, move, f"the batch after key {cursor}"):
            row = mover.transaction(
                f"{move.name}: batch after key {cursor}",
                [(sql, {"name": move.name, "cursor": cursor, "n": options.batch_size})],
                BATCH_STATEMENT_TIMEOUT_MS,
            )[0]
        cursor, batch, scanned = int(row.cursor), int(row.copied), int(row.scanned)
        if scanned == 0:
            break
        copied += batch
        written += scanned
        elapsed = time.monotonic() - started
        listener(
            Event(
                EventKind.BATCH,
                move.name,
                rows=batch,
                done=copied,
                total=max(total, copied),
                rate=written / elapsed if elapsed > 0 else 0.0,
                cursor=cursor,
            )
        )
        _throttle(started, written, options.rate)
    mover.transaction(
        f"{move.name}: copied",
        [
            (
                f"UPDATE {SCHEMA}.state SET phase = 'catching-up', copied_at = now() WHERE name = :n",
                {"n": move.name},
            )
        ],
    )
    listener(Event(EventKind.COPIED, move.name, done=copied, total=copied, cursor=cursor))


def catch_up(mover: Mover, move: Move, info: TargetInfo) -> int:
    """One catch-up pass: compare, then repair what differs. Returns the keys repaired."""
    options, listener = mover.options, mover.listener
    with _failing_as(mover, move, "the comparison"):
        rows = mover.transaction(
            f"{move.name}: compare",
            [
                (f"DELETE FROM {SCHEMA}.pending WHERE name = :name", {"name": move.name}),
                (plan.diff(move, info), {"name": move.name}),
                (
                    f"UPDATE {SCHEMA}.state SET passes = passes + 1, updated_at = clock_timestamp(), "
                    f"last_diff = (SELECT count(*) FROM {SCHEMA}.pending WHERE name = :name) "
                    "WHERE name = :name RETURNING last_diff, now() AS as_of",
                    {"name": move.name},
                ),
            ],
        )
    found, as_of = int(rows[0].last_diff), rows[0].as_of
    listener(Event(EventKind.DIFF, move.name, rows=found, total=found))
    sql = plan.repair_batch(move, info)
    repaired, started = 0, time.monotonic()
    while found:
        with _failing_as(mover, move, "a repair batch"):
            row = mover.transaction(
                f"{move.name}: repair",
                [(sql, {"name": move.name, "n": options.batch_size})],
                BATCH_STATEMENT_TIMEOUT_MS,
            )[0]
        if not row.taken:
            break
        repaired += int(row.taken)
        elapsed = time.monotonic() - started
        listener(
            Event(
                EventKind.REPAIR,
                move.name,
                rows=int(row.taken),
                done=repaired,
                total=found,
                rate=repaired / elapsed if elapsed > 0 else 0.0,
                message=f"{row.upserted} upserted, {row.deleted} deleted",
            )
        )
        _throttle(started, repaired, options.rate)
    mover.transaction(
        f"{move.name}: synced",
        [
            (
                f"UPDATE {SCHEMA}.state SET phase = 'synced', synced_at = :as_of, "
                "repaired = repaired + :r, updated_at = clock_timestamp(), last_error = NULL "
                "WHERE name = :name",
                {"name": move.name, "as_of": as_of, "r": repaired},
            )
        ],
    )
    listener(Event(EventKind.SYNCED, move.name, rows=repaired))
    return repaired


def _skipped(mover: Mover, move: Move) -> list[tuple[str, int]]:
    if not move.skip:
        return []
    row = mover.transaction(f"{move.name}: rules", [(plan.skipped(move), {})])[0]
    return [(rule.reason, int(n)) for rule, n in zip(move.skip, row, strict=True)]


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
        with _read_only(mover):
            facts = _check(mover.conn, declaration, moves, protected_schemas)
        mover.lock()
        mover.transaction("bookkeeping", [(sql, {}) for sql in plan.BOOKKEEPING])
        for move in moves:
            info = facts.infos[move.name]
            state = _state(mover, move)
            if state.phase == "copying":
                _copy(mover, move, info, state)
            else:
                listener(Event(EventKind.START, move.name, message="catch-up pass"))
            catch_up(mover, move, info)
            for reason, count in _skipped(mover, move):
                if count:
                    listener(Event(EventKind.SKIPPED, move.name, rows=count, message=reason))
        while options.follow and not stop():
            deadline = time.monotonic() + options.interval
            while time.monotonic() < deadline and not stop():
                time.sleep(min(0.2, options.interval))
            if stop():
                break
            for move in moves:
                catch_up(mover, move, facts.infos[move.name])
        return _statuses(mover.conn, moves)


@contextmanager
def _read_only(mover: Mover) -> Iterator[None]:
    """A read-only transaction with bounded waits (reads hold locks that DDL queues behind)."""
    conn = mover.conn
    conn.execute(text("SET TRANSACTION READ ONLY"))
    conn.execute(
        text(
            "SELECT set_config('lock_timeout', :lock, true), "
            "set_config('statement_timeout', '60s', true)"
        ),
        {"lock": f"{mover.options.policy.timeout_ms}ms"},
    )
    try:
        yield
    finally:
        conn.rollback()


def _statuses(
    conn: Connection, moves: Sequence[Move], with_rules: bool = False
) -> list[MoveStatus]:
    exists = conn.execute(text(f"SELECT to_regclass('{SCHEMA}.state') IS NOT NULL")).scalar_one()
    states: dict[str, Row[Any]] = {}
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
    conn.rollback()
    return result


def status(
    target: db.Target, moves: Sequence[Move], policy: LockPolicy = DEFAULT_POLICY
) -> list[MoveStatus]:
    """Per move: phase, rows copied, rows pending, lag since the last sync, last error, and
    the rows each rule keeps out (read-only)."""
    with ExitStack() as stack:
        mover = Mover(stack, target, Options(policy=policy), lambda e: None)
        with _read_only(mover):
            return _statuses(mover.conn, moves, with_rules=True)
