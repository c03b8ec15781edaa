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

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from provision import db
from provision.analysis import Report, analyze
from provision.catalog import Catalog, read_catalog
from provision.errors import ApplyFailed, PermissionProblem, VerifyFailed
from provision.layout import Layout
from provision.migrations import Migration, check_protected
from provision.planner import Action, Plan, Session, Sql, ident, make_plan

# pg_advisory_lock key shared by every nucleus-provision run on a database ("nucl").
LOCK_KEY = 0x6E75636C


@dataclass(frozen=True)
class Event:
    kind: str  # waiting | locked | plan | action-start | action-done
    message: str = ""
    action: Action | None = None
    plan: Plan | None = None
    seconds: float = 0.0


Listener = Callable[[Event], None]


@dataclass
class ApplyResult:
    plan: Plan
    timings: list[tuple[Action, float]] = field(default_factory=list)
    after: Report | None = None


def plan_for(
    conn: Connection,
    layout: Layout,
    migrations: list[Migration],
    *,
    owner_session: bool,
    accept_changed: tuple[str, ...] = (),
) -> tuple[Catalog, Plan]:
    for migration in migrations:  # guard rails first: nothing runs if one file is refused
        check_protected(migration, layout.protected_schemas)
    catalog = read_catalog(conn, layout)
    return catalog, make_plan(
        layout, catalog, migrations, owner_session=owner_session, accept_changed=accept_changed
    )


def differences(layout: Layout, catalog: Catalog, plan: Plan) -> list[str]:
    """What stands between the live database and the desired state (empty: it matches)."""
    diffs = [f"{f.code}: {f.message}" for f in analyze(layout, catalog).findings]
    diffs += [f"pending {a.kind}: {a.reason}" for a in plan.actions]
    return diffs


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
                "waiting",
                f"another nucleus-provision run holds the lock (backend pid {holder}); waiting",
            )
        )
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_KEY})
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
            auto = conn.execution_options(isolation_level="AUTOCOMMIT")
            if set_role:
                auto.exec_driver_sql(f"SET ROLE {ident(set_role)}")
            for sql in action.statements:
                extra["execution_time_ms"] = int((time.monotonic() - started) * 1000)
                _run_sql(auto, sql, extra)
            if set_role:
                auto.exec_driver_sql("RESET ROLE")
    except (OperationalError, InterfaceError) as exc:
        raise ApplyFailed(
            f"{where}: the connection was lost ({_first_line(exc)}); its transaction was rolled back",
            hint="run apply again: it resumes from what is committed",
        ) from None
    except DBAPIError as exc:
        fields = exc.orig.args[0] if exc.orig.args and isinstance(exc.orig.args[0], dict) else {}
        message = fields.get("M", _first_line(exc))
        statement = next((s for s in action.statements if s.text in str(exc.statement or "")), None)
        line = ""
        if action.migration and statement is not None:
            found = next((s for s in action.migration.statements if s.sql == statement.text), None)
            line = f":{found.line}" if found else ""
        error = PermissionProblem if fields.get("C") == "42501" else ApplyFailed
        raise error(
            f"{where}{line}: {message}" + (f" (SQLSTATE {fields['C']})" if fields.get("C") else ""),
            hint="nothing of this step was applied (its transaction was rolled back); fix and run again"
            if action.transactional
            else "this step is not transactional: check what it left before rerunning",
        ) from None
    return time.monotonic() - started


def _first_line(exc: BaseException) -> str:
    return str(getattr(exc, "orig", exc)).splitlines()[0][:200]


def apply(
    target: db.Target,
    layout: Layout,
    migrations: list[Migration],
    *,
    listener: Listener = lambda e: None,
    accept_changed: tuple[str, ...] = (),
) -> ApplyResult:
    with ExitStack() as stack:
        admin = stack.enter_context(db.connect(target.admin, target.description))
        _acquire_lock(admin, listener)
        try:
            catalog, plan = plan_for(
                admin,
                layout,
                migrations,
                owner_session=target.owner is not None,
                accept_changed=accept_changed,
            )
            admin.commit()
            listener(Event("plan", plan=plan))
            result = ApplyResult(plan)
            owner_conn: Connection | None = None
            for action in plan.actions:
                if action.session == Session.OWNER and not plan.owner_via_set_role:
                    if owner_conn is None:
                        assert target.owner is not None
                        owner_conn = stack.enter_context(
                            db.connect(target.owner, f"{target.description} (owner)")
                        )
                    conn, role = owner_conn, None
                else:
                    conn, role = admin, (layout.owner if action.session == Session.OWNER else None)
                listener(Event("action-start", action=action))
                seconds = _execute(conn, action, role)
                result.timings.append((action, seconds))
                listener(Event("action-done", action=action, seconds=seconds))
            if plan.actions:
                after, again = plan_for(
                    admin, layout, migrations, owner_session=target.owner is not None
                )
                admin.commit()
                remaining = differences(layout, after, again)
                if remaining:
                    raise VerifyFailed(
                        "after apply the database still differs from the desired state: "
                        + "; ".join(remaining),
                        hint="this is a bug or a concurrent change; run `plan` to see what is left",
                    )
            return result
        finally:
            try:
                admin.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
                admin.commit()
            except DBAPIError:
                pass  # the session is gone: PostgreSQL released the lock with it
