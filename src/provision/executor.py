"""The imperative shell: lock, read, plan, run, prove, check.

`apply` takes the run lock (a concurrent run waits, and says so) and the writer lock (so it
cannot start while any backend of an earlier run still works), reads the catalog and plans
*under the lock* (a run that waited sees the work already done and applies nothing twice),
runs each action in its own transaction in its session, then reads the catalog again and
fails if the database does not match the desired state.

Every lock on a live object is asked for under the `LockPolicy` (`provision.locks`): short
waits, retried with backoff, and a clear error naming the blocker when the budget runs out.
Each migration that runs in a transaction is proven, before its COMMIT, to have changed
nothing outside the managed schemas (`provision.safety`); a no-transaction one is checked
after it runs (every index it built is valid) before it is recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from enum import StrEnum

from pg8000.native import literal
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from provision import db, safety, scram
from provision.actions import APP_VERIFIER_SLOT, Action, Session, Sql
from provision.catalog import Catalog, read_access, read_catalog
from provision.desired import DesiredState
from provision.errors import (
    ApplyFailed,
    ConfigError,
    CredentialsMissing,
    LockTimeout,
    ManualActionRequired,
    MigrationFileError,
    PermissionProblem,
    ScopeViolation,
    SessionMismatch,
    VerifyFailed,
)
from provision.findings import Finding, Verdict, manual, verify
from provision.hints import command
from provision.locks import (
    DEFAULT_POLICY,
    RUN_KEY,
    WRITER_KEY,
    Attempts,
    BlockerWatch,
    LockGuard,
    LockPolicy,
    holders,
    outside_locks,
)
from provision.migrations import PROBE_TABLE, index_probes, reindex_targets
from provision.planner import Plan, findings, make_plan
from provision.sql import error_fields, ident, server_message

# Bounds every statement of a read, so that `plan` and `verify` never hang.
READ_STATEMENT_TIMEOUT_MS = 60_000


class EventKind(StrEnum):
    WAITING = "waiting"  # another run holds a lock we need; or a lock wait is being retried
    PLAN = "plan"  # computed under the lock, about to run
    ACTION_START = "action-start"
    ACTION_DONE = "action-done"


@dataclass(frozen=True)
class Event:
    kind: EventKind
    message: str = ""
    action: Action | None = None
    plan: Plan | None = None
    seconds: float = 0.0


Listener = Callable[[Event], None]


@dataclass
class ApplyResult:
    plan: Plan
    timings: list[tuple[Action, float]] = field(default_factory=list)


@dataclass(frozen=True)
class Reading:
    """What a read-only run learns: the catalog, the plan, and every finding."""

    catalog: Catalog
    plan: Plan
    findings: tuple[Finding, ...]
    desired: DesiredState | None = None  # as the run's login saw it (its fingerprint's input)

    @property
    def manual(self) -> list[Finding]:
        return manual(self.findings)

    @property
    def verdict(self) -> Verdict:
        return verify(self.findings, self.plan.actions)


# Called by `apply` with the plan it made under its lock, before anything runs: raises to stop.
Gate = Callable[[Reading, DesiredState], None]


# -- sessions ---------------------------------------------------------------------------------


class _Run:
    """The connections of one run: the admin session, the owner session (opened on first
    need, checked to log in as the owner on the admin's server and database), and a third
    connection only when a lock wait must be watched."""

    def __init__(
        self,
        stack: ExitStack,
        target: db.Target,
        desired: DesiredState,
        policy: LockPolicy,
        listener: Listener,
        *,
        writes: bool,
    ) -> None:
        self.stack, self.target, self.desired = stack, target, desired
        self.policy, self.listener, self.writes = policy, listener, writes
        self.admin = stack.enter_context(db.connect(target.admin, target.description))
        self._admin_pid: int | None = None
        self._owner: Connection | None = None
        self.owner_pid: int | None = None
        # A login sees the query of sessions of its own role; the owner's login is the one
        # that sees the services' sessions when they share it.
        self.watches = {
            Session.ADMIN: BlockerWatch(
                lambda: stack.enter_context(
                    db.connect(target.admin, f"{target.description} (watch)")
                )
            ),
            Session.OWNER: BlockerWatch(
                lambda: stack.enter_context(
                    db.connect(target.owner or target.admin, f"{target.description} (watch)")
                )
            ),
        }
        # The lock guard of a migration, logged in as the session it watches (so that it may
        # cancel that session's statement): opened when the first migration runs.
        self.guards = {
            Session.ADMIN: LockGuard(
                lambda: stack.enter_context(
                    db.connect(target.admin, f"{target.description} (lock guard)")
                )
            ),
            Session.OWNER: LockGuard(
                lambda: stack.enter_context(
                    db.connect(target.owner or target.admin, f"{target.description} (lock guard)")
                )
            ),
        }

    @property
    def admin_pid(self) -> int:
        """The admin backend's pid, asked for on first need (a lock wait to watch, the owner
        session's check, an action to run): a no-op run never needs it, and saves a round trip
        and a transaction."""
        if self._admin_pid is None:
            inside = self.admin.in_transaction()
            self._admin_pid = int(self.admin.execute(text("SELECT pg_backend_pid()")).scalar_one())
            if not inside:
                self.admin.commit()
        return self._admin_pid

    @property
    def has_owner_session(self) -> bool:
        return self.target.owner is not None

    def attempts(self, session: Session = Session.ADMIN) -> Attempts:
        return Attempts(
            self.policy,
            self.watches[session],
            on_retry=lambda message: self.listener(Event(EventKind.WAITING, message)),
        )

    def owner(self) -> Connection:
        if self._owner is None:
            assert self.target.owner is not None
            conn = self.stack.enter_context(
                db.connect(self.target.owner, f"{self.target.description} (owner)")
            )
            row = conn.execute(
                text(
                    "SELECT current_user AS who, current_database() AS database, "
                    "pg_postmaster_start_time() AS started, pg_backend_pid() AS pid"
                )
            ).one()
            if row.who != self.desired.owner:
                raise ConfigError(
                    f"the owner session logs in as {row.who}, not {self.desired.owner}",
                    hint=f"--owner-dsn (or users.owner) must log in as {self.desired.owner}, "
                    "so that what the migrations create belongs to it",
                )
            self._check_same_database(conn, row.database, row.started)
            if self.writes:
                # Every session that writes holds the writer lock: a later run cannot start
                # while this backend still works, even after our client is gone.
                conn.execute(text("SELECT pg_advisory_lock_shared(:k)"), {"k": WRITER_KEY})
            conn.commit()
            self._owner, self.owner_pid = conn, row.pid
        return self._owner

    def _check_same_database(self, conn: Connection, database: str, started: object) -> None:
        """Both sessions must be on one server and one database: a DSN pointing elsewhere would
        run and record migrations there. With the run lock held, the admin's lock is visible
        to the owner session only on the same server and database."""
        here = self.admin.execute(
            text("SELECT current_database() AS database, pg_postmaster_start_time() AS started")
        ).one()
        self.admin.commit()
        same = (here.database, here.started) == (database, started)
        if same and self.writes:
            same = bool(
                conn.execute(
                    text(
                        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
                        "AND granted AND pid = :pid AND database = (SELECT oid FROM pg_database "
                        "WHERE datname = current_database()))"
                    ),
                    {"pid": self.admin_pid},
                ).scalar()
            )
        if not same:
            raise SessionMismatch(
                f"the owner session reaches database {database!r} of another server or "
                f"database than the admin session ({here.database!r})",
                hint="--dsn and --owner-dsn must name the same host, port and database",
            )

    def pids(self) -> list[int]:
        return [self.admin_pid] + ([self.owner_pid] if self.owner_pid is not None else [])

    def bounded(self, conn: Connection) -> Connection:
        """Bound the waits of the read transaction that `conn` is in (or is about to begin)."""
        conn.execute(
            text(
                "SELECT set_config('lock_timeout', :lock, true), "
                "set_config('statement_timeout', :statement, true)"
            ),
            {"lock": f"{self.policy.timeout_ms}ms", "statement": f"{READ_STATEMENT_TIMEOUT_MS}ms"},
        )
        return conn

    def records_reader(self) -> Callable[[], Connection] | None:
        """The owner session, for reading the version table when the admin may not."""
        if not self.has_owner_session:
            return None
        return lambda: self.bounded(self.owner())

    def end_reads(self) -> None:
        """Close the read transactions (SQLAlchemy autobegins them)."""
        self.admin.commit()
        if self._owner is not None:
            self._owner.commit()


# -- reading ----------------------------------------------------------------------------------


def _catalog(run: _Run, *, every_schema: bool = False) -> Catalog:
    """Read the catalog, bounded: a lock held on the version table makes the read time out,
    retry, and finally name the holder."""

    def read() -> Catalog:
        try:
            return read_catalog(
                run.bounded(run.admin),
                run.desired,
                run.records_reader(),
                every_schema=every_schema,
            )
        except BaseException:
            run.admin.rollback()
            if run._owner is not None:
                run._owner.rollback()
            raise

    catalog = run.attempts().run("reading the catalog", run.pids, read)
    run.end_reads()
    return catalog


def _read(run: _Run, *, owner_session: bool, accept_changed: tuple[str, ...]) -> Reading:
    """Read the catalog and plan."""
    catalog = _catalog(run)
    plan = make_plan(
        run.desired, catalog, owner_session=owner_session, accept_changed=accept_changed
    )
    return Reading(catalog, plan, tuple(findings(run.desired, catalog)), run.desired)


def snapshot(
    target: db.Target,
    desired: DesiredState,
    *,
    policy: LockPolicy = DEFAULT_POLICY,
    listener: Listener = lambda e: None,
) -> Catalog:
    """`inspect`: the catalog and who can do what, read-only, bounded like every read."""
    with ExitStack() as stack:
        run = _Run(stack, target, desired, policy, listener, writes=False)
        catalog = _catalog(run, every_schema=True)
        schemas = [
            s
            for s in (*desired.schema_names, *desired.layout.protected_schemas)
            if s in catalog.schemas
        ]
        access = read_access(run.bounded(run.admin), desired, schemas)
        run.end_reads()
        return replace(catalog, access=access)


def read(
    target: db.Target,
    desired: DesiredState,
    *,
    accept_changed: tuple[str, ...] = (),
    assume_owner_session: bool = False,
    policy: LockPolicy = DEFAULT_POLICY,
    listener: Listener = lambda e: None,
) -> Reading:
    """`plan` and `verify`: read-only, no run lock. `assume_owner_session` plans as if the
    owner session were there (verify lists differences; it does not choose how to fix them)."""
    with ExitStack() as stack:
        run = _Run(stack, target, desired, policy, listener, writes=False)
        return _read(
            run,
            owner_session=assume_owner_session or run.has_owner_session,
            accept_changed=accept_changed,
        )


# -- locks of the run -------------------------------------------------------------------------


def _advisory(conn: Connection, sql: str, key: int) -> bool:
    return bool(conn.execute(text(sql), {"k": key}).scalar())


def _wait_for(run: _Run, key: int, *, what: str, exclusive: bool = True) -> None:
    """Take one of our advisory locks, waiting (and saying so) up to policy.run_wait."""
    conn = run.admin
    try_sql = (
        "SELECT pg_try_advisory_lock(:k)" if exclusive else "SELECT pg_try_advisory_lock_shared(:k)"
    )
    if _advisory(conn, try_sql, key):
        # No COMMIT here: advisory locks belong to the session, not to the transaction, and
        # `_run_locks` ends the transaction once, after the last of its lock statements.
        return
    others = holders(conn, key)
    conn.commit()
    who = "; ".join(b.describe() for b in others) or "a session that has just ended"
    run.listener(Event(EventKind.WAITING, f"{what} ({who}); waiting"))
    deadline = time.monotonic() + run.policy.run_wait
    delay = 0.05
    while time.monotonic() < deadline:
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
        if _advisory(conn, try_sql, key):
            conn.commit()
            return
        conn.commit()
    others = holders(conn, key)
    conn.commit()
    raise LockTimeout(
        f"gave up after waiting {run.policy.run_wait:g}s: {what} "
        f"({'; '.join(b.describe() for b in others) or 'no longer visible'})",
        hint="another apply is still running (or hung): see pg_stat_activity for that pid",
    )


@contextmanager
def _run_locks(run: _Run) -> Iterator[None]:
    conn = run.admin
    _wait_for(run, RUN_KEY, what="another nucleus-provision run holds the lock")
    try:
        # Exclusive for a moment: only possible once no backend of an earlier run still
        # holds its share (a killed client's owner backend may still be executing).
        _wait_for(
            run,
            WRITER_KEY,
            what="a backend of an earlier nucleus-provision run is still working",
        )
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": WRITER_KEY})
        conn.execute(text("SELECT pg_advisory_lock_shared(:k)"), {"k": WRITER_KEY})
        conn.commit()
        yield
    finally:
        try:
            conn.execute(text("SELECT pg_advisory_unlock_all()"))
            conn.commit()
        except DBAPIError:
            pass  # the session is gone: PostgreSQL released its locks with it


# -- running one action -----------------------------------------------------------------------


def _run_sql(conn: Connection, sql: Sql, extra: dict[str, object]) -> None:
    if sql.secret:
        # A slot filled with a secret only here, passed as a literal (utility statements take
        # no bind parameters); never echoed: errors below name the step, not the statement.
        filled = sql.text
        for slot, value in extra.items():
            filled = filled.replace("{" + slot + "}", literal(str(value)))
        conn.exec_driver_sql(filled)
    elif sql.params:
        params = {**sql.params, **{k: v for k, v in extra.items() if f":{k}" in sql.text}}
        conn.execute(text(sql.text), params)
    else:
        # Passed to the driver verbatim (simple query protocol): no bind-parameter parsing of
        # migration SQL, whose casts and literals may contain colons.
        conn.exec_driver_sql(sql.text)


def _where(action: Action) -> str:
    return action.migration.filename if action.migration else action.kind.value


# The catalog reads of the proof resolve names in pg_catalog first and this session's
# temporary objects last: a migration's `CREATE TEMP VIEW pg_locks` must not answer them.
_PROOF_SEARCH_PATH = "SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true)"


def _transaction(
    conn: Connection,
    action: Action,
    set_role: str | None,
    policy: LockPolicy,
    managed: tuple[str, ...],
    slots: dict[str, object],
    guard: LockGuard | None = None,
    pid: int = 0,
) -> None:
    """One attempt (see `_proven`); when a migration's transaction was rolled back for what
    it did outside (a lock found first, say), a sequence it moved back is still seen from
    the second session, set forward again and named."""
    watcher = guard.connection() if guard is not None and action.proven else None
    values = _sequences(watcher, managed, policy) if watcher is not None else None
    try:
        _proven(conn, action, set_role, policy, managed, slots, guard, pid, values)
    except ScopeViolation as exc:
        if watcher is None or values is None or "moved back" in exc.message:
            raise
        rewound = safety.rewound_sequences(values, _sequences(watcher, managed, policy))
        if not rewound:
            raise
        _restore(watcher, rewound, values)
        raise ScopeViolation(
            exc.message + "; " + "; ".join(_moved_back(name, values) for name in rewound),
            hint=exc.hint,
        ) from None


def _moved_back(name: str, values: dict[str, int | None]) -> str:
    return (
        f"sequence {name} moved back (set forward again to {values[name]}, so the services "
        "never draw an id twice)"
    )


def _proven(
    conn: Connection,
    action: Action,
    set_role: str | None,
    policy: LockPolicy,
    managed: tuple[str, ...],
    slots: dict[str, object],
    guard: LockGuard | None,
    pid: int,
    values: dict[str, int | None] | None,
) -> None:
    """One attempt: everything or nothing. A migration is proven before its COMMIT: nothing
    changed outside the managed schemas (rows, objects, global catalogs, sequences), and no
    lock stronger than ACCESS SHARE held there; while it runs, `guard` cancels it as soon as
    it takes such a lock, so that live traffic never queues behind it."""
    started = time.monotonic()
    scope = list(managed)
    with conn.begin():
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{policy.timeout_ms}ms'")
        if action.migration is not None:
            conn.execute(
                text("SELECT set_config('statement_timeout', :t, true)"),
                {"t": action.migration.statement_timeout},
            )
        if set_role:
            conn.exec_driver_sql(f"SET LOCAL ROLE {ident(set_role)}")
        before = None
        if action.proven:
            conn.exec_driver_sql(_PROOF_SEARCH_PATH)
            safety.forget_sequences(conn)
            before = safety.snapshot(conn, managed)
        watcher = guard.connection() if guard is not None and action.proven else None
        try:
            with guard.guarding(pid, scope) if watcher is not None and guard else nullcontext():
                for sql in action.statements:
                    _run_sql(conn, sql, slots)
                    if guard is not None and guard.tripped:
                        break
            if guard is not None and guard.tripped:
                raise _held_outside(action, guard.tripped)
        except DBAPIError:
            if guard is not None and guard.tripped:
                raise _held_outside(action, guard.tripped) from None
            raise
        if before is not None:
            conn.exec_driver_sql(_PROOF_SEARCH_PATH)
            # Locks first: the sequence check below takes a lock on each sequence it finds used.
            found = [f"lock {held}" for held in outside_locks(conn, pid or _pid(conn), scope)]
            found += safety.violations(before, safety.snapshot(conn, managed))
            found += [
                f"sequence {name} advanced or set (sequences are not transactional: its value "
                "stays moved)"
                for name in safety.used_sequences(conn, managed)
            ]
            if watcher is not None and values is not None and not found:
                # Only when the migration holds no lock outside: the second session's read
                # would wait for it, and the migration for the read.
                rewound = safety.rewound_sequences(values, _sequences(watcher, managed, policy))
                _restore(watcher, rewound, values)
                found += [_moved_back(name, values) for name in rewound]
            if found:
                raise _outside(action, found)
        if action.record is not None:
            elapsed = int((time.monotonic() - started) * 1000)
            _run_sql(conn, action.record, {"execution_time_ms": elapsed})


def _sequences(
    watcher: Connection, managed: tuple[str, ...], policy: LockPolicy
) -> dict[str, int | None]:
    """The sequences' values, read on the second session under the short lock wait (a lock
    timeout is retried by the step's Attempts, like any other)."""
    try:
        watcher.execute(
            text("SELECT set_config('lock_timeout', :t, true)"), {"t": f"{policy.timeout_ms}ms"}
        )
        return safety.sequence_values(watcher, managed)
    finally:
        watcher.rollback()


def _restore(watcher: Connection, names: list[str], values: dict[str, int | None]) -> None:
    """Set sequences a migration moved back forward again to their value before it: forward
    is always safe (a gap in ids, as any rolled-back insert leaves); back is not."""
    for name in names:
        watcher.execute(
            text(
                "SELECT setval(CAST(:s AS regclass), greatest(:v, (SELECT last_value FROM "
                "pg_sequences WHERE schemaname || '.' || sequencename = :s)))"
            ),
            {"s": ident(*name.split(".", 1)), "v": values[name]},
        )
    watcher.commit()


def _pid(conn: Connection) -> int:
    return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _held_outside(action: Action, held: list[str]) -> ScopeViolation:
    return _outside(action, [f"lock {h}" for h in held])


def _rolled_back(where: str) -> str:
    """The line a failed transactional step prints on its own (see ProvisionError)."""
    return (
        f"{where}, all of it (one transaction); the steps before it stay committed, and "
        f"`{command('apply')}` again resumes after them"
    )


def _outside(action: Action, found: list[str]) -> ScopeViolation:
    return ScopeViolation(
        f"{_where(action)} changed or locked what is outside the managed schemas: "
        + "; ".join(found[:10])
        + (f"; and {len(found) - 10} more" if len(found) > 10 else ""),
        rolled_back=_rolled_back(_where(action)),
        hint="its transaction was rolled back, nothing of it remains: legacy schemas, their rows "
        "and public.migrations' legacy rows are never changed, roles, the database and global "
        "objects belong to Terraform, and a migration may read legacy objects but never lock "
        "them (LOCK, SELECT ... FOR UPDATE/SHARE, writes), so that live traffic never waits "
        "for it; put only changes to the new schemas in migrations",
    )


_INVALID_SQL = text("""
SELECT n.nspname || '.' || c.relname
FROM unnest(CAST(:schemas AS text[]), CAST(:names AS text[])) AS w(schema, name)
LEFT JOIN pg_namespace n ON n.nspname = w.schema
LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = w.name
LEFT JOIN pg_index i ON i.indexrelid = c.oid
WHERE i.indisvalid IS DISTINCT FROM true
""")


# What an index's expressions, predicate and operator classes may use when it is built outside
# a transaction, where nothing could be rolled back: built-in functions, operators and types
# only (a function falsely declared IMMUTABLE runs on every row of the build), and operator
# classes that are built in or belong to an extension (pgvector's).
_PROBE_DEPENDENCIES_SQL = text("""
SELECT DISTINCT pg_describe_object(d.refclassid, d.refobjid, 0) AS object
FROM pg_index i
JOIN pg_depend d ON d.classid = CAST('pg_class' AS regclass) AND d.objid = i.indexrelid
WHERE to_regclass(:probe) IN (i.indrelid, i.indexrelid)
  AND d.refobjid >= 16384
  AND (d.refclassid IN (CAST('pg_proc' AS regclass), CAST('pg_operator' AS regclass),
                        CAST('pg_type' AS regclass))
       OR (d.refclassid IN (CAST('pg_opclass' AS regclass), CAST('pg_collation' AS regclass))
           AND NOT EXISTS (SELECT 1 FROM pg_depend e
                           WHERE e.classid = d.refclassid AND e.objid = d.refobjid
                             AND e.deptype = 'e')))
ORDER BY 1
""")


def _probe_indexes(
    conn: Connection, action: Action, set_role: str | None, managed: tuple[str, ...]
) -> None:
    """Before a no-transaction file runs: build each of its indexes on an empty temporary
    copy of its table, in a transaction that is rolled back (and proven like a migration's,
    since constant arguments of a function are folded while planning), and refuse a file
    whose index would call anything not built in."""
    if action.migration is None:
        return
    for probe in index_probes(action.migration):
        with conn.begin() as trans:
            if set_role:
                conn.exec_driver_sql(f"SET LOCAL ROLE {ident(set_role)}")
            conn.exec_driver_sql(_PROOF_SEARCH_PATH)
            before = safety.snapshot(conn, managed)
            conn.exec_driver_sql("SELECT set_config('search_path', 'public', true)")
            conn.exec_driver_sql(
                f"CREATE TEMP TABLE {ident(PROBE_TABLE)} (LIKE {ident(probe.schema, probe.table)}) "
                "ON COMMIT DROP"
            )
            conn.exec_driver_sql(probe.sql)
            conn.exec_driver_sql(_PROOF_SEARCH_PATH)
            uses = list(
                conn.execute(_PROBE_DEPENDENCIES_SQL, {"probe": f"pg_temp.{PROBE_TABLE}"})
                .scalars()
                .all()
            )
            found = safety.violations(before, safety.snapshot(conn, managed))
            trans.rollback()
        if found:
            raise _outside(action, found)
        if uses:
            raise MigrationFileError(
                f"{action.migration.filename}:{probe.line}: refused: an index built outside a "
                f"transaction may use only built-in functions and operators, and this one uses "
                f"{', '.join(uses)}",
                hint="nothing was applied; build this index in a transactional migration (drop "
                "the no-transaction marker and CONCURRENTLY), where the proof covers what its "
                "functions do",
            )
    # A REINDEX runs the existing index's expressions and predicate on every row, where
    # nothing can be rolled back either: the same rule, read from the index itself (an index
    # built in a transactional migration may call a function that acts only when the query
    # is a REINDEX).
    for line, schema, name in reindex_targets(action.migration):
        with conn.begin() as trans:
            conn.exec_driver_sql(_PROOF_SEARCH_PATH)
            uses = list(
                conn.execute(_PROBE_DEPENDENCIES_SQL, {"probe": ident(schema, name)})
                .scalars()
                .all()
            )
            trans.rollback()
        if uses:
            raise MigrationFileError(
                f"{action.migration.filename}:{line}: refused: a REINDEX outside a transaction "
                f"runs its indexes' expressions on every row, and {ident(schema, name)} uses "
                f"{', '.join(uses)}",
                hint="nothing was applied; rebuild it in a transactional migration (drop the "
                "no-transaction marker and CONCURRENTLY), where the proof covers what its "
                "functions do",
            )


def _autocommit(
    conn: Connection,
    action: Action,
    set_role: str | None,
    policy: LockPolicy,
    managed: tuple[str, ...] = (),
) -> None:
    """A no-transaction migration (CREATE INDEX CONCURRENTLY and kin): its indexes probed
    first (`_probe_indexes`), then one statement at a time, then every index it builds must be
    valid, and the fingerprint of what lies outside the managed schemas unchanged, before it
    is recorded. Its lock waits do not stall live traffic (CONCURRENTLY takes no lock that
    blocks reads or writes), so they may last the whole lock budget."""
    started = time.monotonic()
    conn.commit()  # no transaction may be open while the isolation level changes
    _probe_indexes(conn, action, set_role, managed)
    with conn.begin():
        conn.exec_driver_sql(_PROOF_SEARCH_PATH)
        before = safety.snapshot(conn, managed)
    # In SQLAlchemy 2 this changes the connection in place: restored below for the next action.
    conn.execution_options(isolation_level="AUTOCOMMIT")
    try:
        conn.exec_driver_sql(f"SET lock_timeout = '{int(policy.budget * 1000)}ms'")
        if action.migration is not None:
            conn.execute(
                text("SELECT set_config('statement_timeout', :t, false)"),
                {"t": action.migration.statement_timeout},
            )
        if set_role:
            conn.exec_driver_sql(f"SET ROLE {ident(set_role)}")
        for sql in action.statements:
            _run_sql(conn, sql, {})
        if action.indexes:
            invalid = (
                conn.execute(
                    _INVALID_SQL,
                    {
                        "schemas": [schema for schema, _ in action.indexes],
                        "names": [name for _, name in action.indexes],
                    },
                )
                .scalars()
                .all()
            )
            if invalid:
                raise ApplyFailed(
                    f"{_where(action)}: index {', '.join(invalid)} is missing or invalid after "
                    "the build (a CONCURRENTLY build that failed leaves an invalid index)",
                    hint=f"the step was not recorded; run `{command('apply')}` again: it drops the invalid index "
                    "and builds it anew",
                )
        conn.exec_driver_sql(_PROOF_SEARCH_PATH.replace(", true)", ", false)"))
        after = safety.snapshot(conn, managed)
        conn.exec_driver_sql("RESET search_path")
        # Row and catalog counters are per transaction: outside one, only the objects count.
        found = safety.violations(
            before, replace(after, rows=before.rows, catalogs=before.catalogs)
        )
        if found:
            raise ApplyFailed(
                f"{_where(action)} changed what is outside the managed schemas: "
                + "; ".join(found[:10]),
                hint="this step is not transactional, so what it did stays: it was not recorded; "
                "undo it by hand before running again",
            )
        if action.record is not None:
            elapsed = int((time.monotonic() - started) * 1000)
            _run_sql(conn, action.record, {"execution_time_ms": elapsed})
    finally:
        try:
            conn.exec_driver_sql("RESET lock_timeout")
            conn.exec_driver_sql("RESET statement_timeout")
            if set_role:
                conn.exec_driver_sql("RESET ROLE")
        finally:
            conn.commit()  # SQLAlchemy's autobegun (empty) transaction, before the level changes
            conn.execution_options(isolation_level=conn.default_isolation_level)


def _execute(
    run: _Run,
    action: Action,
    conn: Connection,
    pid: int,
    set_role: str | None,
    slots: dict[str, object],
) -> float:
    started = time.monotonic()
    where = _where(action)
    try:
        if action.transactional:
            session = Session.OWNER if conn is run._owner else Session.ADMIN
            guard = run.guards[session] if action.proven else None
            run.attempts(session).run(
                where,
                lambda: [pid],
                lambda: _transaction(
                    conn,
                    action,
                    set_role,
                    run.policy,
                    run.desired.schema_names,
                    slots,
                    guard,
                    pid,
                ),
            )
        else:
            _autocommit(conn, action, set_role, run.policy, run.desired.schema_names)
    except (OperationalError, InterfaceError) as exc:
        raise ApplyFailed(
            f"{where}: the connection was lost ({db.first_line(exc)})",
            hint=f"run `{command('apply')}` again: it resumes from what is committed",
            rolled_back=_rolled_back(where) if action.transactional else None,
        ) from None
    except DBAPIError as exc:
        fields = error_fields(exc)
        failed = str(exc.statement or "")
        statement = next((s for s in action.all_statements if s.text in failed), None)
        line = ""
        if action.migration and statement is not None:
            found = next((s for s in action.migration.statements if s.sql == statement.text), None)
            line = f":{found.line}" if found else ""
        error = PermissionProblem if fields.get("C") == "42501" else ApplyFailed
        raise error(
            f"{where}{line}: {server_message(exc)}",
            hint="nothing of this step was applied (its transaction was rolled back); fix and "
            f"run `{command('apply')}` again"
            if action.transactional
            else "this step is not transactional: check what it left before rerunning (apply "
            "rebuilds an index a failed build left invalid)",
            rolled_back=_rolled_back(where) if action.transactional else None,
        ) from None
    return time.monotonic() - started


# -- apply ------------------------------------------------------------------------------------


def _manual_error(found: list[Finding], *, applied: int) -> ManualActionRequired:
    done = f"apply did what it could ({applied} action(s)); " if applied else ""
    return ManualActionRequired(
        f"{done}the database differs from the desired state in a way apply cannot fix: "
        + "; ".join(f"{f.code}: {f.message}" for f in found),
        hint=" | ".join(f.remedy or "" for f in found),
    )


def _secret_slots(target: db.Target, actions: tuple[Action, ...]) -> dict[str, object]:
    """Secrets the plan needs, asked for before anything runs (a missing one changes
    nothing): the app login's SCRAM verifier, computed here from its password."""
    if not any(sql.secret for action in actions for sql in action.statements):
        return {}
    if target.app_password is None:
        raise CredentialsMissing(
            "creating the app login needs its password, and this run has no source for it",
            hint="export the variable named by users.app.password_env (NUCLEUS_APP_PASSWORD), "
            "or run with --env NAME to read its Secret Manager secret",
        )
    return {APP_VERIFIER_SLOT: scram.verifier(target.app_password())}


def realise(action: Action, now: Plan) -> Action:
    """A deferred action with the statements planned once the migrations ran: those of the
    plan's actions of its kind and session (none: nothing was left to do)."""
    found = [
        a
        for a in now.actions
        if not a.deferred
        and a.known_after_migrations
        and (a.kind, a.session) == (action.kind, action.session)
    ]
    return replace(action, statements=tuple(sql for a in found for sql in a.statements))


def apply(
    target: db.Target,
    desired: DesiredState,
    *,
    listener: Listener = lambda e: None,
    accept_changed: tuple[str, ...] = (),
    policy: LockPolicy = DEFAULT_POLICY,
    gate: Gate = lambda reading, desired: None,
) -> ApplyResult:
    """Plan under the run's locks, pass the plan through `gate` (a saved plan's check, a
    person's approval: it raises to stop, before anything ran), run it, check the result."""
    with ExitStack() as stack:
        run = _Run(stack, target, desired, policy, listener, writes=True)
        with _run_locks(run):
            reading = _read(run, owner_session=run.has_owner_session, accept_changed=accept_changed)
            plan = reading.plan
            slots = _secret_slots(target, plan.actions)
            uses_owner = plan.needs(Session.OWNER) and not plan.owner_via_set_role
            if uses_owner and run.has_owner_session:
                run.owner()  # connect and check who and where it is before anything runs
            listener(Event(EventKind.PLAN, plan=plan))
            gate(reading, run.desired)
            result = ApplyResult(plan)

            def execute(action: Action, via_set_role: bool) -> None:
                owner_direct = not via_set_role and run.has_owner_session
                if action.session == Session.OWNER and owner_direct:
                    conn, pid, role = run.owner(), run.owner_pid or 0, None
                else:
                    conn, pid = run.admin, run.admin_pid
                    role = desired.owner if action.session == Session.OWNER else None
                listener(Event(EventKind.ACTION_START, action=action))
                seconds = (
                    _execute(run, action, conn, pid, role, slots) if action.statements else 0.0
                )
                result.timings.append((action, seconds))
                listener(Event(EventKind.ACTION_DONE, action=action, seconds=seconds))

            for action in plan.actions:
                if action.deferred:
                    # Known after apply: plan this action's statements now that the migrations
                    # ran, and run them under the action the plan showed.
                    now = _read(run, owner_session=run.has_owner_session, accept_changed=())
                    realised = realise(action, now.plan)
                    execute(realised, now.plan.owner_via_set_role)
                else:
                    execute(action, plan.owner_via_set_role)
            after = reading
            if plan.actions:
                after = _read(run, owner_session=run.has_owner_session, accept_changed=())
            needs_person = after.manual
            remaining = verify([f for f in after.findings if not f.manual], after.plan.actions)
            if not remaining.matches:
                raise VerifyFailed(
                    "after apply the database still differs from the desired state: "
                    + "; ".join(remaining.differences),
                    hint=f"this is a bug or a concurrent change; run `{command('plan')}` to see what is left",
                )
            if needs_person:
                raise _manual_error(needs_person, applied=len(result.timings))
            return result
