"""Locks: never stall production, never run twice.

Two kinds of lock matter here.

**Our own advisory locks** keep runs apart. The run lock (`RUN_KEY`, exclusive) is held by
the admin session of the one run that may plan and apply. The writer lock (`WRITER_KEY`) is
held, shared, by *every* session of a run that changes anything: when a client dies
(`kill -9`), its admin backend goes at once but its owner backend may still be executing a
statement; the next run, before it reads anything, takes the writer lock exclusively (and
lets it go), which it can only do once every backend of the earlier run has ended.

**Locks on live objects** (an `ALTER TABLE` queues behind a long transaction, and every
query of the service queues behind the `ALTER`) are asked for with a short `lock_timeout`
(`LockPolicy.timeout`, default 0.2 s), and a timed-out attempt is rolled back and retried
with exponential backoff and jitter, for a bounded total (`LockPolicy.budget`). While an
attempt runs, a watcher on another connection samples `pg_blocking_pids()` of the waiting
backend, so that when the tool gives up it names the blocking sessions: pid, user,
application, state, for how long, and the first line of their query.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential_jitter,
)

from provision.errors import LockTimeout
from provision.sql import error_fields

# pg_advisory_lock keys shared by every nucleus-provision run on a database ("nucl", "nucw").
RUN_KEY = 0x6E75636C
WRITER_KEY = 0x6E756377
# Held by `rotate` for the whole of one rotation ("nucr"): two at once could each set a password
# and store the other's.
ROTATE_KEY = 0x6E756372
# Held by `retire apply|unfreeze` for their whole run ("nret"): one retirement run at a time.
RETIRE_KEY = 0x6E726574
LOCK_NOT_AVAILABLE = "55P03"
T = TypeVar("T")


@dataclass(frozen=True)
class LockPolicy:
    """How long the tool may make others wait, and how long it keeps trying."""

    timeout: float = 0.2  # one attempt's lock wait: the most a queue behind us can stall
    budget: float = 30.0  # all attempts together, backoff included
    run_wait: float = 600.0  # for another nucleus-provision run to finish (stalls nobody)

    @property
    def timeout_ms(self) -> int:
        return max(1, int(self.timeout * 1000))


DEFAULT_POLICY = LockPolicy()


@dataclass(frozen=True)
class Blocker:
    pid: int
    user: str | None
    application: str | None
    state: str | None
    seconds: float | None
    query: str | None

    def describe(self) -> str:
        if self.query is None or self.query.startswith("<insufficient privilege>"):
            # pg_stat_activity hides other roles' sessions from a role without pg_read_all_stats.
            return (
                f"pid {self.pid} (user {self.user}; its state and query are hidden from this "
                "login: a member of pg_read_all_stats sees them)"
            )
        how_long = f"{self.seconds:.1f}s" if self.seconds is not None else "?"
        first = (self.query.strip().splitlines() or ["-"])[0][:100]
        return (
            f"pid {self.pid} (user {self.user}, application {self.application or '-'}, "
            f"{self.state or '?'} for {how_long}: {first})"
        )


_BLOCKERS_SQL = text("""
SELECT a.pid, a.usename AS user, a.application_name AS application, a.state,
       extract(epoch FROM now() - coalesce(a.xact_start, a.query_start, a.backend_start)) AS seconds,
       a.query
FROM pg_stat_activity a
WHERE a.pid = ANY(pg_blocking_pids(:pid))
ORDER BY a.pid
""")

_HOLDERS_SQL = text("""
SELECT a.pid, a.usename AS user, a.application_name AS application, a.state,
       extract(epoch FROM now() - coalesce(a.xact_start, a.query_start, a.backend_start)) AS seconds,
       a.query
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.pid <> pg_backend_pid()
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND ((l.classid::bigint << 32) | l.objid::bigint) = :key
ORDER BY a.pid
""")


def _blockers(conn: Connection, sql: object, **params: object) -> list[Blocker]:
    rows = conn.execute(sql, params).all()  # type: ignore[call-overload]
    return [
        Blocker(r.pid, r.user, r.application, r.state, float(r.seconds or 0), r.query) for r in rows
    ]


def is_lock_timeout(exc: BaseException) -> bool:
    return isinstance(exc, DBAPIError) and error_fields(exc).get("C") == LOCK_NOT_AVAILABLE


class BlockerWatch:
    """Samples, on its own connection and thread, who blocks a backend while it waits."""

    def __init__(self, open_connection: Callable[[], Connection]) -> None:
        self._open = open_connection
        self._conn: Connection | None = None
        # Several sessions of one run may wait at once (the move reads on two): their samplers
        # share the watch's one connection, one query at a time.
        self._lock = threading.Lock()
        self.seen: list[Blocker] = []

    @contextmanager
    def watching(self, pids: list[int], interval: float = 0.02) -> Iterator[None]:
        with self._lock:
            if self._conn is None:
                self._conn = self._open()
            conn = self._conn
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(interval):
                try:
                    with self._lock:
                        found = [b for pid in pids for b in _blockers(conn, _BLOCKERS_SQL, pid=pid)]
                        conn.rollback()
                except DBAPIError:
                    return
                if found:
                    self.seen = found

        thread = threading.Thread(target=sample, name="blocker-watch", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(5)


@dataclass
class Attempts:
    """Runs a step with the lock policy: short lock waits, retried with backoff, bounded."""

    policy: LockPolicy
    watch: BlockerWatch | None = None
    on_retry: Callable[[str], None] = lambda message: None
    tries: int = field(default=0, init=False)

    def run(self, what: str, pids: Callable[[], list[int]], step: Callable[[], T]) -> T:
        """`step` must leave nothing behind when it fails (one transaction, rolled back)."""
        retrying = Retrying(
            reraise=True,
            stop=stop_after_delay(self.policy.budget),
            wait=wait_exponential_jitter(multiplier=0.05, max=2.0, jitter=0.1),
            retry=retry_if_exception(is_lock_timeout),
            before_sleep=lambda state: self.on_retry(
                f"{what}: lock not granted within {self.policy.timeout:g}s "
                f"(attempt {state.attempt_number}); retrying"
            ),
        )
        try:
            for attempt in retrying:
                with attempt:
                    self.tries += 1
                    if self.tries > 1 and self.watch is not None:
                        # From the second attempt on, see who is in the way.
                        with self.watch.watching(pids()):
                            return step()
                    return step()
        except DBAPIError as exc:
            if is_lock_timeout(exc):
                raise self._gave_up(what) from None
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _gave_up(self, what: str) -> LockTimeout:
        seen = self.watch.seen if self.watch is not None else []
        blockers = "; ".join(b.describe() for b in seen) or "a session that could not be seen"
        pids = list(dict.fromkeys(str(b.pid) for b in seen))
        # pg_terminate_backend takes one pid (a second argument is a timeout in ms).
        terminate = (
            f"pg_terminate_backend({pids[0] if pids else 'PID'})"
            if len(pids) < 2
            else f"pg_terminate_backend(pid) FROM unnest(ARRAY[{', '.join(pids)}]) AS pid"
        )
        return LockTimeout(
            f"{what}: gave up after {self.tries} attempt(s) in {self.policy.budget:g}s: each lock "
            f"wait was cut at {self.policy.timeout:g}s so live traffic never queued behind us; "
            f"blocked by {blockers}",
            hint=f"nothing of this step was applied; wait for that session to finish (or end it: "
            f"SELECT {terminate}) and run again, or allow longer with "
            "--lock-budget",
        )


def holders(conn: Connection, key: int) -> list[Blocker]:
    """Other sessions holding one of our advisory locks."""
    return _blockers(conn, _HOLDERS_SQL, key=key)


# -- locks a migration may hold outside its scope -----------------------------------------------
#
# A migration may read what lies outside the managed schemas (ACCESS SHARE, which blocks only
# an ACCESS EXCLUSIVE), never hold more: a LOCK through a view, a SELECT ... FOR UPDATE/SHARE
# (which leaves ROW SHARE on the table; its row locks show in pg_locks only while someone
# waits for them), a nextval of a legacy sequence (ROW EXCLUSIVE), a foreign key check
# against a legacy row. Advisory locks other than ours are counted too: legacy services may
# use them. Locks of this session's own temporary objects and of system catalogs are not, nor
# of relations another session cannot see (created by the migration's open transaction: if
# outside the managed schemas, the proof names them) or this one no longer sees (dropped by
# it: the proof names that too).
_OUTSIDE_LOCKS_SQL = text("""
SELECT n.nspname || '.' || c.relname AS object, l.mode, l.granted
FROM pg_locks l
JOIN pg_class c ON c.oid = l.relation
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE l.pid = :pid AND l.locktype = 'relation' AND l.mode <> 'AccessShareLock'
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND n.nspname <> ALL(CAST(:managed AS text[]))
  AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
UNION ALL
SELECT 'advisory key ' || CAST((l.classid::bigint << 32) | l.objid::bigint AS text), l.mode,
       l.granted
FROM pg_locks l
WHERE l.pid = :pid AND l.locktype = 'advisory'
  AND NOT (l.objsubid = 1 AND ((l.classid::bigint << 32) | l.objid::bigint) = ANY(CAST(:ours AS bigint[])))
ORDER BY 1, 2
""")


def outside_locks(conn: Connection, pid: int, managed: list[str]) -> list[str]:
    """Locks backend `pid` holds (or waits for) outside the managed schemas that are stronger
    than ACCESS SHARE, one line each: empty when it only reads there."""
    rows = conn.execute(
        _OUTSIDE_LOCKS_SQL, {"pid": pid, "managed": managed, "ours": [RUN_KEY, WRITER_KEY]}
    ).all()
    return [f"{r.object}: {r.mode}{'' if r.granted else ' (waiting)'}" for r in rows]


_CANCEL = text("SELECT pg_cancel_backend(:pid)")
_TERMINATE = text("SELECT pg_terminate_backend(:pid)")


def _running(conn: Connection, pid: int) -> bool:
    """Whether backend `pid` is running a statement (not idle in its aborted transaction,
    waiting for its client's ROLLBACK)."""
    state = conn.execute(
        text("SELECT state FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
    ).scalar()
    return state == "active"


class LockGuard:
    """Watches, on its own connection and thread, the locks a migration's backend takes
    outside the managed schemas while it runs, and cancels its statement at once when one is
    stronger than ACCESS SHARE: live traffic then waits one sampling interval, not for the
    whole migration (the proof before COMMIT would roll it back, but only at its end). The
    connection logs in as the same user as the watched one: a login may cancel its own
    backends' statements without any further privilege."""

    def __init__(self, open_connection: Callable[[], Connection]) -> None:
        self._open = open_connection
        self._conn: Connection | None = None
        self.tripped: list[str] = []

    def connection(self) -> Connection:
        """The guard's own connection: a second session, also for reads around a transaction
        of the watched one (never while guarding)."""
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    @contextmanager
    def guarding(self, pid: int, managed: list[str], interval: float = 0.05) -> Iterator[None]:
        conn = self.connection()
        self.tripped = []
        stop = threading.Event()

        def sample() -> None:
            cancelled = False
            while not stop.wait(interval):
                try:
                    found = outside_locks(conn, pid, managed)
                    if found:
                        self.tripped = found
                        # A cancel is an error the migration's own code may catch (plpgsql's
                        # EXCEPTION WHEN query_canceled) and go on holding the lock; a backend
                        # still running a statement with the lock one interval after a cancel
                        # is ended: its transaction rolls back and the lock goes with it.
                        ending = _TERMINATE if cancelled and _running(conn, pid) else _CANCEL
                        conn.execute(ending, {"pid": pid})
                        cancelled = True
                    conn.rollback()
                except Exception:  # noqa: BLE001 - a thread's error would print a traceback
                    # The guard's connection is gone (a proxy cut, say): the migration's own
                    # connection fails the same way, and the proof before COMMIT still stands.
                    return
                # Found or not, keep sampling: a cancel that reached the backend between two
                # statements cancels nothing, and the next statement must not run long.

        thread = threading.Thread(target=sample, name="lock-guard", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(5)
