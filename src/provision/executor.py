"""The imperative shell: lock, read, plan, run, check.

`apply` takes a PostgreSQL advisory lock (a concurrent run waits, and says so), reads the
catalog and plans *under the lock* (so a run that waited sees the work already done and
applies nothing twice), runs each action in its own transaction in its session, then reads
the catalog again and fails if the database does not match the desired state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from enum import StrEnum

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from provision import db
from provision.actions import Action, Session, Sql
from provision.catalog import Catalog, read_catalog
from provision.concerns import all_findings
from provision.desired import DesiredState
from provision.errors import ApplyFailed, ConfigError, PermissionProblem, VerifyFailed
from provision.findings import Verdict, verify
from provision.migrations import check_protected
from provision.planner import Plan, make_plan
from provision.sql import error_fields, ident, server_message

# pg_advisory_lock key shared by every nucleus-provision run on a database ("nucl").
LOCK_KEY = 0x6E75636C
LOCK_WAIT_SECONDS = 600


class EventKind(StrEnum):
    WAITING = "waiting"  # another run holds the lock
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


def check_guard_rails(desired: DesiredState) -> None:
    """Nothing runs if one file is refused."""
    vt = desired.version_table
    for migration in desired.migrations:
        check_protected(migration, desired.layout.protected_schemas, (vt.schema, vt.name))


def plan_for(
    conn: Connection,
    desired: DesiredState,
    *,
    owner_session: bool,
    accept_changed: tuple[str, ...] = (),
    records_conn: Callable[[], Connection] | None = None,
) -> tuple[Catalog, Plan]:
    check_guard_rails(desired)
    catalog = read_catalog(conn, desired, records_conn)
    return catalog, make_plan(
        desired, catalog, owner_session=owner_session, accept_changed=accept_changed
    )


def verdict(desired: DesiredState, catalog: Catalog, plan: Plan) -> Verdict:
    """What stands between the live database and the desired state."""
    return verify(all_findings(desired, catalog), plan.actions)


def _acquire_lock(conn: Connection, listener: Listener) -> None:
    got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar()
    if not got:
        holder = conn.execute(
            text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND ((classid::bigint << 32) | objid::bigint) = :k LIMIT 1"
            ),
            {"k": LOCK_KEY},
        ).scalar()
        listener(
            Event(
                EventKind.WAITING,
                f"another nucleus-provision run holds the lock (backend pid {holder}); waiting",
            )
        )
        try:
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_WAIT_SECONDS}s'")
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_KEY})
        except DBAPIError as exc:
            if error_fields(exc).get("C") != "55P03":  # lock_not_available
                raise
            raise ApplyFailed(
                f"gave up after waiting {LOCK_WAIT_SECONDS} s for the lock held by backend pid {holder}",
                hint="another apply is still running (or hung): see pg_stat_activity for that pid",
            ) from None
    conn.commit()


def _run_sql(conn: Connection, sql: Sql, extra: dict[str, object]) -> None:
    if sql.params:
        params = {**sql.params, **{k: v for k, v in extra.items() if f":{k}" in sql.text}}
        conn.execute(text(sql.text), params)
    else:
        # Passed to the driver verbatim (simple query protocol): no bind-parameter parsing of
        # migration SQL, whose casts and literals may contain colons.
        conn.exec_driver_sql(sql.text)


def _execute(conn: Connection, action: Action, set_role: str | None) -> float:
    started = time.monotonic()
    extra: dict[str, object] = {}
    where = action.migration.filename if action.migration else action.kind
    try:
        if action.transactional:
            with conn.begin():
                if set_role:
                    conn.exec_driver_sql(f"SET LOCAL ROLE {ident(set_role)}")
                for sql in action.statements:
                    extra["execution_time_ms"] = int((time.monotonic() - started) * 1000)
                    _run_sql(conn, sql, extra)
        else:
            _run_autocommit(conn, action, set_role, started, extra)
    except (OperationalError, InterfaceError) as exc:
        raise ApplyFailed(
            f"{where}: the connection was lost ({db.first_line(exc)}); its transaction was rolled back",
            hint="run apply again: it resumes from what is committed",
        ) from None
    except DBAPIError as exc:
        fields = error_fields(exc)
        statement = next((s for s in action.statements if s.text in str(exc.statement or "")), None)
        line = ""
        if action.migration and statement is not None:
            found = next((s for s in action.migration.statements if s.sql == statement.text), None)
            line = f":{found.line}" if found else ""
        error = PermissionProblem if fields.get("C") == "42501" else ApplyFailed
        raise error(
            f"{where}{line}: {server_message(exc)}",
            hint="nothing of this step was applied (its transaction was rolled back); fix and run again"
            if action.transactional
            else "this step is not transactional: check what it left before rerunning",
        ) from None
    return time.monotonic() - started


def _run_autocommit(
    conn: Connection, action: Action, set_role: str | None, started: float, extra: dict[str, object]
) -> None:
    """A migration declared non-transactional (e.g. CREATE INDEX CONCURRENTLY): one statement at a time."""
    conn.commit()  # no transaction may be open while the isolation level changes
    # In SQLAlchemy 2 this changes the connection in place: restored below for the next action.
    conn.execution_options(isolation_level="AUTOCOMMIT")
    try:
        if set_role:
            conn.exec_driver_sql(f"SET ROLE {ident(set_role)}")
        for sql in action.statements:
            extra["execution_time_ms"] = int((time.monotonic() - started) * 1000)
            _run_sql(conn, sql, extra)
    finally:
        if set_role:
            conn.exec_driver_sql("RESET ROLE")
        conn.commit()
        conn.execution_options(isolation_level=conn.default_isolation_level)


def _end_reads(admin: Connection, owner: _OwnerSession | None) -> None:
    """Close the read transactions the catalog reads opened (SQLAlchemy autobegins them)."""
    admin.commit()
    if owner is not None and owner.conn is not None:
        owner.conn.commit()


class _OwnerSession:
    """The owner connection, opened on first need and checked to log in as the owner: a session
    that logs in as anyone else would create objects owned by the wrong role."""

    def __init__(self, stack: ExitStack, target: db.Target, owner: str) -> None:
        self.stack, self.target, self.owner = stack, target, owner
        self.conn: Connection | None = None

    def __call__(self) -> Connection:
        if self.conn is None:
            assert self.target.owner is not None
            conn = self.stack.enter_context(
                db.connect(self.target.owner, f"{self.target.description} (owner)")
            )
            who = conn.execute(text("SELECT current_user")).scalar()
            conn.commit()
            if who != self.owner:
                raise ConfigError(
                    f"the owner session logs in as {who}, not {self.owner}",
                    hint=f"--owner-dsn (or users.owner) must log in as {self.owner}, "
                    "so that what the migrations create belongs to it",
                )
            self.conn = conn
        return self.conn


def read_and_plan(
    target: db.Target,
    desired: DesiredState,
    *,
    accept_changed: tuple[str, ...] = (),
    assume_owner_session: bool = False,
) -> tuple[Catalog, Plan]:
    """`plan` and `verify`: read-only, no lock. `assume_owner_session` plans as if the owner
    session were there (verify lists differences; it does not choose how to fix them)."""
    with ExitStack() as stack:
        admin = stack.enter_context(db.connect(target.admin, target.description))
        owner = _OwnerSession(stack, target, desired.owner) if target.owner is not None else None
        return plan_for(
            admin,
            desired,
            owner_session=assume_owner_session or owner is not None,
            accept_changed=accept_changed,
            records_conn=owner,
        )


def apply(
    target: db.Target,
    desired: DesiredState,
    *,
    listener: Listener = lambda e: None,
    accept_changed: tuple[str, ...] = (),
) -> ApplyResult:
    with ExitStack() as stack:
        admin = stack.enter_context(db.connect(target.admin, target.description))
        owner = _OwnerSession(stack, target, desired.owner) if target.owner is not None else None
        _acquire_lock(admin, listener)
        try:
            _catalog, plan = plan_for(
                admin,
                desired,
                owner_session=owner is not None,
                accept_changed=accept_changed,
                records_conn=owner,
            )
            _end_reads(admin, owner)
            uses_owner = plan.needs(Session.OWNER) and not plan.owner_via_set_role
            if uses_owner and owner is not None:
                owner()  # connect and check who it is before anything runs
            listener(Event(EventKind.PLAN, plan=plan))
            result = ApplyResult(plan)
            for action in plan.actions:
                if action.session == Session.OWNER and uses_owner and owner is not None:
                    conn, role = owner(), None
                else:
                    conn = admin
                    role = desired.owner if action.session == Session.OWNER else None
                listener(Event(EventKind.ACTION_START, action=action))
                seconds = _execute(conn, action, role)
                result.timings.append((action, seconds))
                listener(Event(EventKind.ACTION_DONE, action=action, seconds=seconds))
            if plan.actions:
                after, again = plan_for(
                    admin, desired, owner_session=owner is not None, records_conn=owner
                )
                _end_reads(admin, owner)
                remaining = verdict(desired, after, again)
                if not remaining.matches:
                    raise VerifyFailed(
                        "after apply the database still differs from the desired state: "
                        + "; ".join(remaining.differences),
                        hint="this is a bug or a concurrent change; run `plan` to see what is left",
                    )
            return result
        finally:
            try:
                admin.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
                admin.commit()
            except DBAPIError:
                pass  # the session is gone: PostgreSQL released the lock with it
