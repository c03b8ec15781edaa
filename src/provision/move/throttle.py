"""The move throttles itself (issue 21): how many legacy keys the next batch reads, and whether
to wait before it.

Functional core: `next_batch_size` (the batch size that makes a batch take the target time,
as GitLab's batched background migrations keep each batch within its interval) and
`pause_reason` (from observed `Signals` and the operator's recorded verb). The shell part is
small: `read_signals` reads the server's view in one statement, and `Gate` is what the batch
loops of `provision.move.runner` call at each batch boundary.

The operator's verbs (`move pause|resume|cancel NAME`) are a column of the move's state row
(`nucleus_move.state.control`): a running `move run` reads it at every batch boundary, so they
take effect without a restart and survive one (a paused move stays paused for the next run).
A cancelled run stops at the boundary with every committed batch kept; the next `run` clears
the verb and resumes from the cursor, like a run that was killed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, text

from provision.errors import MoveFailed
from provision.hints import command
from provision.move.plan import SCHEMA

# A batch aims at this many seconds: short enough that the locks it takes (its target's rows,
# the state row) and the WAL it writes arrive in small steps, long enough that the per-batch
# proof (`Mover.proven`) stays a small share of the work.
DEFAULT_TARGET_S = 0.5
DEFAULT_MIN_ROWS = 1_000
DEFAULT_MAX_ROWS = 200_000
# One batch's size changes by at most this factor: one slow batch (a checkpoint, a cold
# cache) halves the next, never collapses it.
MAX_STEP = 2.0
# A signal (lock waiters, autovacuum, replica lag) holds the move at most this long at one
# boundary; then the run stops naming the reason (every committed batch kept), as a lock
# wait that runs out does. An operator's `move pause` holds it as long as it is recorded.
DEFAULT_MAX_PAUSE_S = 300.0
RECHECK_S = 0.5

PAUSED = "paused"
CANCELLED = "cancelled"
VERBS = {"pause": PAUSED, "cancel": CANCELLED, "resume": None}

# Kept with the rest of the bookkeeping (`plan.BOOKKEEPING`); also run by the verbs, so that
# `move pause` works on a move started by an older version.
CONTROL_DDL = (
    f"ALTER TABLE {SCHEMA}.state ADD COLUMN IF NOT EXISTS control text "
    f"CHECK (control IN ('{PAUSED}', '{CANCELLED}'))"
)


class Cancelled(Exception):
    """`move cancel` was recorded: the run stops at this batch boundary."""


@dataclass(frozen=True)
class Limits:
    target_s: float | None = DEFAULT_TARGET_S  # None: a fixed batch size
    min_rows: int = DEFAULT_MIN_ROWS
    max_rows: int = DEFAULT_MAX_ROWS
    max_replica_lag_s: float | None = None  # None: replica lag is not watched
    max_pause_s: float = DEFAULT_MAX_PAUSE_S


@dataclass(frozen=True)
class Signals:
    """What the server says about the move's neighbours at a batch boundary."""

    waiters: tuple[str, ...] = ()  # sessions waiting on a lock a session of the move holds
    vacuum: str | None = None  # an autovacuum worker's phase on the target table
    replica_lag_s: float | None = None  # worst replay lag of a replica; None: no replica


def next_batch_size(size: int, seconds: float, rows: int, limits: Limits) -> int:
    """The next batch's size from the last one's: scaled so that it takes `target_s`, by at
    most MAX_STEP either way, within [min_rows, max_rows]. `rows` < `size`: the source ran
    out (the last batch), which says nothing about speed."""
    if limits.target_s is None or seconds <= 0 or rows < size:
        return size
    factor = min(MAX_STEP, max(1 / MAX_STEP, limits.target_s / seconds))
    return max(limits.min_rows, min(limits.max_rows, round(size * factor)))


def pause_reason(signals: Signals, control: str | None, limits: Limits) -> str | None:
    """Why the move should wait before its next batch; None: go on."""
    if control == PAUSED:
        return f"paused by `move pause` (run `{command('move resume NAME')}` to go on)"
    if signals.waiters:
        shown = "; ".join(signals.waiters[:3])
        more = f" and {len(signals.waiters) - 3} more" if len(signals.waiters) > 3 else ""
        return f"sessions wait on a lock the move holds: {shown}{more}"
    if signals.vacuum is not None:
        return f"autovacuum works on the target table ({signals.vacuum})"
    if (
        limits.max_replica_lag_s is not None
        and signals.replica_lag_s is not None
        and signals.replica_lag_s > limits.max_replica_lag_s
    ):
        return (
            f"a replica lags {signals.replica_lag_s:.1f} s "
            f"(more than --max-replica-lag {limits.max_replica_lag_s:g} s)"
        )
    return None


# -- the shell: one statement per boundary --------------------------------------------------

# Waiters from pg_locks, which every login sees whole (pg_stat_activity hides other roles'
# wait events from a login without pg_read_all_stats, as the admin login is on Cloud SQL);
# only sessions waiting on a heavyweight lock are asked for their blockers (pg_blocking_pids
# is not free). Autovacuum: a worker holding a lock on the target (pg_locks and backend_type
# are visible to every login; its phase, from pg_stat_progress_*, only to privileged ones).
# Replica lag: replay_lag on the primary, NULL (absent) when there is no replica.
SIGNALS_SQL = f"""
SELECT
  ARRAY(
    SELECT format('pid %s (%s, %s)', w.pid, coalesce(a.usename, '?'),
                  coalesce(nullif(a.application_name, ''), a.backend_type, '?'))
    FROM (SELECT DISTINCT pid FROM pg_locks WHERE NOT granted AND pid <> ALL(:pids)) w
    LEFT JOIN pg_stat_activity a ON a.pid = w.pid
    WHERE pg_blocking_pids(w.pid) && CAST(:pids AS integer[])
    ORDER BY w.pid
  ) AS waiters,
  (SELECT min(coalesce('vacuum: ' || v.phase, 'analyze: ' || z.phase, 'pid ' || a.pid))
   FROM pg_locks l
   JOIN pg_stat_activity a ON a.pid = l.pid AND a.backend_type = 'autovacuum worker'
   LEFT JOIN pg_stat_progress_vacuum v ON v.pid = a.pid
   LEFT JOIN pg_stat_progress_analyze z ON z.pid = a.pid
   WHERE l.locktype = 'relation' AND l.granted AND l.relation = to_regclass(:target)
     AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  ) AS vacuum,
  (SELECT extract(epoch FROM max(replay_lag))::float8 FROM pg_stat_replication) AS lag,
  (SELECT control FROM {SCHEMA}.state WHERE name = :name) AS control
"""


def read_signals(
    conn: Connection, pids: Sequence[int], target: str, name: str
) -> tuple[Signals, str | None]:
    """The signals and the operator's recorded verb, in one statement."""
    row = conn.execute(
        text(SIGNALS_SQL), {"pids": list(pids), "target": target, "name": name}
    ).one()
    signals = Signals(
        tuple(row.waiters or ()), row.vacuum, None if row.lag is None else float(row.lag)
    )
    return signals, row.control


Reader = Callable[[], tuple[Signals, str | None]]


class Gate:
    """Called by a batch loop at each boundary: waits while `pause_reason` says so (saying
    why once per reason through `say`), raises Cancelled on `move cancel`, and sizes the next
    batch."""

    def __init__(
        self,
        limits: Limits,
        size: int,
        read: Reader,
        say: Callable[[str], None],
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self.limits, self.size, self._read, self._say, self._sleep = (
            limits,
            size,
            read,
            say,
            sleep,
        )

    def batch_done(self, seconds: float, rows: int) -> None:
        self.size = next_batch_size(self.size, seconds, rows, self.limits)

    def boundary(self, what: str) -> None:
        said: str | None = None
        held_since = self._clock()
        while True:
            signals, control = self._read()
            if control == CANCELLED:
                raise Cancelled(what)
            reason = pause_reason(signals, control, self.limits)
            if reason is None:
                if said is not None:
                    self._say(f"{what}: resumed")
                return
            if control != PAUSED:
                waited = self._clock() - held_since
                if waited > self.limits.max_pause_s:
                    raise MoveFailed(
                        f"{what}: held {waited:.0f} s at a batch boundary, and still: {reason}",
                        hint=f"every committed batch is kept; run `{command('move run')}` again "
                        "once it clears (or raise --max-pause)",
                    )
            else:
                held_since = self._clock()  # an operator's pause is not bounded
            if reason != said:
                self._say(f"{what}: paused: {reason}")
                said = reason
            self._sleep(RECHECK_S)
