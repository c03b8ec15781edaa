"""One plain function per `retire` verb (plan, apply, verify, status, unfreeze): they return
data and raise ProvisionError; the CLI prints and maps exit codes.

Every write runs in a short transaction with bounded lock waits (`provision.locks`), under
the proof (`provision.safety`): a snapshot of everything outside `nucleus_retire` before and
after, and nothing may differ but what the step declares it touches (the frozen table's ACL
and its trigger). Anything else rolls the step back and names what changed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, text

from provision import commands, db, safety
from provision.desired import DesiredState
from provision.errors import MoveFailed, ProvisionError, ScopeViolation
from provision.hints import command
from provision.locks import DEFAULT_POLICY, RETIRE_KEY, Attempts, BlockerWatch, LockPolicy, holders
from provision.move import declare as move_declare
from provision.move.plan import SCHEMA as MOVE_SCHEMA
from provision.retire import declare, freeze, observe, state
from provision.retire.plan import Recorded, TablePlan, plan_table
from provision.retire.state import FREEZE_TRIGGER, SCHEMA
from provision.sql import ident

Statement = tuple[str, dict[str, Any]]
Listener = Callable[[str], None]


class _Session:
    """The admin session of a retire run, its watcher, and its bounded transactions."""

    def __init__(self, stack: ExitStack, target: db.Target, policy: LockPolicy, listener: Listener):
        self.policy, self.listener = policy, listener
        self.conn: Connection = stack.enter_context(db.connect(target.admin, target.description))
        self.pid: int = self.conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        self.conn.commit()
        self.watch = BlockerWatch(
            lambda: stack.enter_context(db.connect(target.admin, f"{target.description} (watch)"))
        )

    def _attempts(self) -> Attempts:
        return Attempts(self.policy, self.watch, on_retry=lambda m: self.listener(f"waiting: {m}"))

    def _limits(self) -> None:
        self.conn.execute(
            text(
                "SELECT set_config('lock_timeout', :lock, true), "
                "set_config('statement_timeout', '60s', true)"
            ),
            {"lock": f"{self.policy.timeout_ms}ms"},
        )

    def read(self, what: str, fn: Callable[[Connection], Any]) -> Any:
        def step() -> Any:
            try:
                self.conn.execute(text("SET TRANSACTION READ ONLY"))
                self._limits()
                return fn(self.conn)
            finally:
                self.conn.rollback()

        return self._attempts().run(what, lambda: [self.pid], step)

    def proven(
        self,
        what: str,
        statements: Sequence[Statement],
        allowed: set[str],
        work: Callable[[Connection], None] = lambda conn: None,
        table: tuple[str, str] | None = None,
    ) -> None:
        """`work`, then `statements`, in one transaction, committed only if everything outside
        `nucleus_retire` that changed is in `allowed` (lines of `safety.violations`)."""
        found: list[str] = []

        def step() -> None:
            found.clear()
            try:
                self._limits()
                before = safety.snapshot(self.conn, [SCHEMA])
                shape = _shape(self.conn, table) if table else ()
                work(self.conn)
                for sql, params in statements:
                    self.conn.execute(text(sql), params)
                after = safety.snapshot(self.conn, [SCHEMA])
                found.extend(v for v in safety.violations(before, after) if v not in allowed)
                if table and _shape(self.conn, table) != shape:
                    found.append(
                        f"{'.'.join(table)}: more than its privileges and its trigger changed "
                        "(storage, columns, options or another trigger)"
                    )
                if found:
                    self.conn.rollback()
                else:
                    self.conn.commit()
            except BaseException:
                self.conn.rollback()
                raise

        self._attempts().run(what, lambda: [self.pid], step)
        if found:
            raise ScopeViolation(
                f"{what}: rolled back: it changed more than the step declares: {'; '.join(found)}",
                hint="nothing of the step was kept; find what fired (an event trigger, a rule) "
                "and remove it, then run again",
            )

    def lock(self) -> None:
        if not self.conn.execute(
            text("SELECT pg_try_advisory_lock(:k)"), {"k": RETIRE_KEY}
        ).scalar_one():
            others = "; ".join(b.describe() for b in holders(self.conn, RETIRE_KEY))
            self.conn.rollback()
            raise MoveFailed(
                f"another retire run holds the retire lock: {others or 'a session not visible'}",
                hint="wait for it to finish, then run again",
            )
        self.conn.commit()


# What a freeze or unfreeze may change of its table is its ACL (table and columns) and its
# trigger: `safety` reports both as "relation ... altered", which would also cover a rewrite
# (new storage) or a changed column. So the rest of the table's shape is compared too.
_SHAPE_SQL = """
SELECT c.relfilenode, c.relkind, pg_get_userbyid(c.relowner) AS owner,
       CAST(c.reloptions AS text) AS options, c.relrowsecurity, c.relpersistence,
       (SELECT string_agg(concat_ws(':', a.attname, format_type(a.atttypid, a.atttypmod),
                                    a.attnotnull, pg_get_expr(d.adbin, d.adrelid)), ','
                          ORDER BY a.attnum)
          FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid
                                                 AND d.adnum = a.attnum
         WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns,
       (SELECT string_agg(t.tgname || '=' || CAST(t.tgenabled AS text), ',' ORDER BY t.tgname)
          FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname <> :trigger) AS other_triggers
FROM pg_class c WHERE c.oid = CAST(:table AS regclass)
"""


def _shape(conn: Connection, table: tuple[str, str]) -> tuple[Any, ...]:
    row = conn.execute(text(_SHAPE_SQL), {"table": ident(*table), "trigger": FREEZE_TRIGGER}).one()
    return tuple(row)


def _allowed(table: str, *trigger_changes: str) -> set[str]:
    return {f"relation {table} altered"} | {
        f"trigger {table}.{FREEZE_TRIGGER} {change}" for change in trigger_changes
    }


# -- reading the state -------------------------------------------------------------------------


def _exists(conn: Connection, name: str) -> bool:
    return bool(conn.execute(text("SELECT to_regclass(:n) IS NOT NULL"), {"n": name}).scalar_one())


def _recorded(conn: Connection) -> tuple[dict[str, Recorded], dict[str, list[observe.Usage]]]:
    if not _exists(conn, f"{SCHEMA}.tables"):
        return {}, {}
    rows = conn.execute(
        text(
            f"SELECT name, phase, window_started_at, window_reason, frozen_at, "
            f"CAST(revoked AS text) AS revoked FROM {SCHEMA}.tables"
        )
    ).all()
    recorded = {
        r.name: Recorded(
            r.phase,
            r.window_started_at,
            r.window_reason,
            r.frozen_at,
            tuple(freeze.from_record(json.loads(r.revoked))),
        )
        for r in rows
    }
    history: dict[str, list[observe.Usage]] = {}
    for r in conn.execute(
        text(
            f"SELECT s.* FROM {SCHEMA}.snapshots s JOIN {SCHEMA}.tables t ON t.name = s.name "
            "WHERE s.taken_at >= t.window_started_at ORDER BY s.name, s.taken_at, s.id"
        )
    ):
        history.setdefault(r.name, []).append(
            observe.Usage(
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
        )
    return recorded, history


def _own_reads(conn: Connection) -> dict[str, tuple[observe.OwnRead, ...]]:
    if not _exists(conn, f"{SCHEMA}.own_reads"):
        return {}
    own: dict[str, list[observe.OwnRead]] = {}
    for r in conn.execute(
        text(f"SELECT name, at, seq_scan, idx_scan FROM {SCHEMA}.own_reads ORDER BY at")
    ):
        own.setdefault(r.name, []).append(observe.OwnRead(r.at, int(r.seq_scan), int(r.idx_scan)))
    return {name: tuple(reads) for name, reads in own.items()}


def _cutovers(conn: Connection) -> dict[str, datetime | None]:
    if not _exists(conn, f"{MOVE_SCHEMA}.state"):
        return {}
    return {
        r.name: r.cutover_at
        for r in conn.execute(text(f"SELECT name, cutover_at FROM {MOVE_SCHEMA}.state"))
    }


def _plans(
    conn: Connection, retire: declare.RetireDeclaration, names: Sequence[str], include_now: bool
) -> list[TablePlan]:
    facts = observe.read_facts(conn, names, SCHEMA, FREEZE_TRIGGER)
    recorded, history = _recorded(conn)
    own = _own_reads(conn)
    cutovers = _cutovers(conn)
    return [
        plan_table(
            t,
            facts[t.name],
            recorded.get(t.name),
            history.get(t.name, []),
            cutovers.get(t.move),
            include_now,
            own.get(t.name, ()),
        )
        for t in retire.tables
        if t.name in names
    ]


def _declaration(desired: DesiredState, moves_dir: Path | None) -> declare.RetireDeclaration:
    return declare.load(move_declare.load(moves_dir, desired.layout))


# -- the verbs ---------------------------------------------------------------------------------


def plan(
    target: db.Target,
    desired: DesiredState,
    moves_dir: Path | None = None,
    only: str | None = None,
    policy: LockPolicy = DEFAULT_POLICY,
) -> list[TablePlan]:
    """Per table: its phase, the evidence, and the steps `apply` would run (read-only)."""
    retire = _declaration(desired, moves_dir)  # a bad file opens nothing
    names = [t.name for t in retire.only(only)]
    with commands.session(target, desired), ExitStack() as stack:
        session = _Session(stack, target, policy, lambda m: None)
        result: list[TablePlan] = session.read(
            "retire plan", lambda c: _plans(c, retire, names, True)
        )
        return result


status = plan  # the same reading; the CLI renders it per table


def _observe(session: _Session, names: Sequence[str], moves: dict[str, str]) -> None:
    """Record a usage snapshot of every declared table (and its first state row)."""
    statements: list[Statement] = [(sql, {}) for sql in state.BOOKKEEPING]
    statements += [
        (
            f"INSERT INTO {SCHEMA}.tables (name, move, window_reason) "
            "SELECT n, m, 'observation started' FROM unnest(CAST(:names AS text[]), "
            "CAST(:moves AS text[])) AS x(n, m) ON CONFLICT (name) DO NOTHING",
            {"names": list(names), "moves": [moves[n] for n in names]},
        ),
        (
            f"INSERT INTO {SCHEMA}.snapshots (name, taken_at, relid, stats_reset, "
            "postmaster_start, seq_scan, idx_scan, n_tup_ins, n_tup_upd, n_tup_del, "
            f"last_seq_scan, last_idx_scan) SELECT name, taken_at, relid, stats_reset, "
            "postmaster_start, seq_scan, idx_scan, n_tup_ins, n_tup_upd, n_tup_del, "
            f"last_seq_scan, last_idx_scan FROM ({observe.USAGE_SQL}) u",
            {"names": list(names)},
        ),
    ]
    session.proven("retire: usage snapshot", statements, set())


def _event(name: str, step: str, evidence: dict[str, Any]) -> Statement:
    return (
        state.EVENT_SQL,
        {"name": name, "step": step, "evidence": json.dumps(evidence, default=str)},
    )


def _freeze_statements(p: TablePlan) -> list[Statement]:
    table = p.retirement.table
    statements: list[Statement] = [(sql, {}) for sql in state.freeze_trigger(table)]
    statements += [(freeze.revoke_sql(g, table), {}) for g in p.revoke]
    revoked = [g.to_dict() for g in p.revoke]
    freeze_step = p.step("freeze")
    statements += [
        (
            f"UPDATE {SCHEMA}.tables SET phase = 'frozen', frozen_at = now(), "
            "revoked = CAST(:revoked AS jsonb), updated_at = now() WHERE name = :name",
            {"name": p.name, "revoked": json.dumps(revoked)},
        ),
        _event(
            p.name,
            "freeze",
            {
                "gates": [g.to_dict() for g in freeze_step.gates] if freeze_step else [],
                "usage": p.facts.usage.to_dict() if p.facts.usage else None,
                "last_use": p.judgement.last_use,
                "revoked": revoked,
                "kept": [{**g.to_dict(), "why": freeze.kept_hint(g, table)} for g in p.keep],
                "acl_before": list(p.facts.acl),
                "dependants": [d.to_dict() for d in p.facts.dependants],
            },
        ),
    ]
    return statements


def apply(
    target: db.Target,
    desired: DesiredState,
    moves_dir: Path | None = None,
    only: str | None = None,
    policy: LockPolicy = DEFAULT_POLICY,
    listener: Listener = lambda m: None,
) -> list[TablePlan]:
    """Record a usage snapshot, restart windows that a use or a reset ended, then run every
    step whose gates hold. Returns the plans as they stand afterwards."""
    retire = _declaration(desired, moves_dir)
    chosen = retire.only(only)
    names = [t.name for t in chosen]
    with commands.session(target, desired), ExitStack() as stack:
        session = _Session(stack, target, policy, listener)
        session.lock()
        existing = session.read(
            "retire: tables",
            lambda c: [
                n for n in names if c.execute(text("SELECT to_regclass(:n)"), {"n": n}).scalar_one()
            ],
        )
        _observe(session, existing, {t.name: t.move for t in chosen})
        plans: list[TablePlan] = session.read(
            "retire apply", lambda c: _plans(c, retire, names, False)
        )
        for p in plans:
            recorded_start = p.judgement.window_started_at
            listener(f"{p.name}: observed ({p.judgement.window_reason})")
            restarts = [
                (
                    f"UPDATE {SCHEMA}.tables SET window_started_at = :at, window_reason = :why, "
                    "updated_at = now() WHERE name = :name AND window_started_at <> :at",
                    {"at": recorded_start, "why": p.judgement.window_reason, "name": p.name},
                )
            ]
            if p.facts.exists:
                session.proven(f"{p.name}: observe window", restarts, set())
            freeze_step = p.step("freeze")
            if freeze_step is not None and freeze_step.runnable and p.phase != "frozen":
                listener(f"{p.name}: freezing")
                session.proven(
                    f"{p.name}: freeze",
                    _freeze_statements(p),
                    _allowed(p.name, "created"),
                    table=p.retirement.table,
                )
            elif p.step("refreeze") is not None:
                listener(f"{p.name}: re-creating the freeze trigger")
                again: list[Statement] = [
                    (sql, {}) for sql in state.freeze_trigger(p.retirement.table)
                ]
                again.append(_event(p.name, "refreeze", {"drift": p.drift}))
                session.proven(
                    f"{p.name}: refreeze",
                    again,
                    _allowed(p.name, "created", "altered"),
                    table=p.retirement.table,
                )
        result: list[TablePlan] = session.read(
            "retire apply", lambda c: _plans(c, retire, names, False)
        )
        return result


def verify(
    target: db.Target,
    desired: DesiredState,
    moves_dir: Path | None = None,
    only: str | None = None,
    policy: LockPolicy = DEFAULT_POLICY,
) -> list[TablePlan]:
    """The recorded state against the database (read-only): each frozen table carries its
    trigger, enabled always, and none of the grants its freeze revoked is back."""
    return plan(target, desired, moves_dir, only, policy)


def unfreeze(
    target: db.Target,
    desired: DesiredState,
    name: str,
    moves_dir: Path | None = None,
    policy: LockPolicy = DEFAULT_POLICY,
) -> TablePlan:
    """Undo a freeze: drop the trigger, give back exactly the grants the freeze revoked
    (each GRANTED BY its grantor), and restart the table's observe window."""
    retire = _declaration(desired, moves_dir)
    (table,) = retire.only(name)
    with commands.session(target, desired), ExitStack() as stack:
        session = _Session(stack, target, policy, lambda m: None)
        session.lock()
        plans: list[TablePlan] = session.read(
            "retire unfreeze", lambda c: _plans(c, retire, [table.name], True)
        )
        (p,) = plans
        if p.phase != "frozen":
            raise ProvisionError(
                f"{table.name} is not frozen (phase {p.phase}): there is nothing to unfreeze",
                hint=f"{command('retire status')} shows each table's phase",
            )
        restore = freeze.restore_order(p.revoked)
        statements: list[Statement] = [(sql, {}) for sql in state.unfreeze_trigger(table.table)]
        statements += [(freeze.grant_sql(g, table.table), {}) for g in restore]
        statements += [
            (
                f"UPDATE {SCHEMA}.tables SET phase = 'observing', frozen_at = NULL, "
                "revoked = '[]', window_started_at = now(), window_reason = 'unfrozen', "
                "updated_at = now() WHERE name = :name",
                {"name": table.name},
            ),
            _event(table.name, "unfreeze", {"restored": [g.to_dict() for g in restore]}),
        ]
        session.proven(
            f"{table.name}: unfreeze",
            statements,
            _allowed(table.name, "dropped"),
            table=table.table,
        )
        after: list[TablePlan] = session.read(
            "retire unfreeze", lambda c: _plans(c, retire, [table.name], True)
        )
        return after[0]


def archive(
    target: db.Target,
    desired: DesiredState,
    name: str,
    bucket: Path,
    moves_dir: Path | None = None,
    policy: LockPolicy = DEFAULT_POLICY,
) -> dict[str, Any]:
    """Export frozen table `name` into `bucket` (a manifest beside the rows), then check the
    archive: restored into a scratch table, per-range counts and hashes against the manifest
    and the live table. Recorded as an `archive` event with the manifest's facts."""
    from provision.retire import archive as archiving

    declaration = move_declare.load(moves_dir, desired.layout)
    retire = declare.load(declaration)
    (table,) = retire.only(name)
    (move,) = declaration.only(table.move)
    with commands.session(target, desired), ExitStack() as stack:
        session = _Session(stack, target, policy, lambda m: None)
        session.lock()
        plans: list[TablePlan] = session.read(
            "retire archive", lambda c: _plans(c, retire, [table.name], True)
        )
        if plans[0].phase != "frozen":
            raise ProvisionError(
                f"{table.name} is not frozen (phase {plans[0].phase}): its rows could change "
                "under the export",
                hint=f"freeze it first: {command('retire apply')} ({command('retire plan')} "
                "shows its gates)",
            )
        written: archiving.Archive = session.read(
            f"{table.name}: export",
            lambda c: archiving.write(c, bucket, table.table, move.name, move.key),
        )
        # The manifest was computed from the live table a moment ago, frozen since.
        return _check(session, archiving, written, "archive", live=False)


def _check(
    session: _Session, archiving: Any, archived: Any, step: str, live: bool = True
) -> dict[str, Any]:
    checked: dict[str, Any] = {}

    def work(conn: Connection) -> None:
        for sql in state.BOOKKEEPING:  # own_reads, for a schema made by an older version
            conn.execute(text(sql))
        checked.update(archiving.check(conn, archived, live))

    table = str(archived.manifest["table"])
    session.proven(
        f"{table}: archive check",
        [
            _event(
                table,
                step,
                {**archived.to_dict(), "checked": True},
            )
        ],
        set(),
        work,
    )
    return {**archived.to_dict(), **checked}


def check_archive(
    target: db.Target,
    desired: DesiredState,
    directory: Path,
    policy: LockPolicy = DEFAULT_POLICY,
) -> dict[str, Any]:
    """Check an existing archive: object against manifest (before any connection), then a
    restore into a scratch table compared per range with the manifest and the live table."""
    from provision.retire import archive as archiving

    archived = archiving.load(directory)  # a truncated or changed file opens nothing
    with commands.session(target, desired), ExitStack() as stack:
        session = _Session(stack, target, policy, lambda m: None)
        return _check(session, archiving, archived, "archive-check")
