"""What `retire apply` would do for each table, and the gates of each step (pure).

A step runs only when every one of its gates holds; a gate that only a person can open
(a dependant to remove, a table gone) is `manual`. The plan is computed from the facts read
now (`observe.read_facts`), the table's recorded state and its snapshots since its window
started, plus the reading taken now: `plan` shows exactly what `apply` would decide, the
reading `apply` records being the one `plan` only looked at.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from provision.hints import command
from provision.retire import freeze
from provision.retire.declare import Retirement
from provision.retire.observe import (
    Grant,
    Judgement,
    OwnRead,
    TableFacts,
    Usage,
    judge,
    window_left,
)
from provision.retire.state import FREEZE_TRIGGER


@dataclass(frozen=True)
class Gate:
    name: str
    holds: bool
    evidence: str
    manual: bool = False  # failing, only a person can open it

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Step:
    step: str  # observe | freeze | refreeze
    gates: tuple[Gate, ...] = ()
    what: str = ""

    @property
    def runnable(self) -> bool:
        return all(g.holds for g in self.gates)

    @property
    def manual(self) -> bool:
        return any(g.manual and not g.holds for g in self.gates)

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "what": self.what,
            "runnable": self.runnable,
            "gates": [g.to_dict() for g in self.gates],
        }


@dataclass(frozen=True)
class Recorded:
    """A table's row of nucleus_retire.tables."""

    phase: str
    window_started_at: datetime
    window_reason: str
    frozen_at: datetime | None
    revoked: tuple[Grant, ...]


@dataclass
class TablePlan:
    retirement: Retirement
    facts: TableFacts
    phase: str  # new | observing | frozen
    judgement: Judgement
    cutover_at: datetime | None
    steps: list[Step] = field(default_factory=list)
    revoke: list[Grant] = field(default_factory=list)
    keep: list[Grant] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)  # a frozen table no longer as frozen
    revoked: tuple[Grant, ...] = ()

    @property
    def name(self) -> str:
        return self.retirement.name

    def step(self, name: str) -> Step | None:
        return next((s for s in self.steps if s.step == name), None)

    @property
    def manual(self) -> bool:
        return any(s.manual for s in self.steps) or not self.facts.exists

    @property
    def pending(self) -> bool:
        """Not at the last built phase (frozen and intact) yet."""
        return self.phase != "frozen" or bool(self.drift)

    def to_dict(self) -> dict[str, Any]:
        j = self.judgement
        facts = self.facts
        return {
            "table": self.name,
            "move": self.retirement.move,
            "phase": self.phase,
            "observe": self.retirement.observe_text,
            "window_started_at": j.window_started_at.isoformat(),
            "window_reason": j.window_reason,
            "window_left_seconds": window_left(
                j, self.retirement.observe, facts.now
            ).total_seconds(),
            "clean_intervals": j.intervals,
            "last_use": j.last_use,
            "cutover_at": self.cutover_at.isoformat() if self.cutover_at else None,
            "usage": facts.usage.to_dict() if facts.usage else None,
            "in_use_now": [h.describe() for h in facts.holders],
            "dependants": [d.to_dict() for d in facts.dependants],
            "steps": [s.to_dict() for s in self.steps],
            "revoke": [g.to_dict() for g in self.revoke],
            "keep": [g.to_dict() for g in self.keep],
            "revoked": [g.to_dict() for g in self.revoked],
            "drift": self.drift,
        }


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [
        f"{days}d" if days else "",
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
    ]
    return "".join(parts) + (f"{seconds}s" if seconds or not any(parts) else "")


def plan_table(
    retirement: Retirement,
    facts: TableFacts,
    recorded: Recorded | None,
    history: list[Usage],
    cutover_at: datetime | None,
    include_now: bool = True,
    own: tuple[OwnRead, ...] = (),
) -> TablePlan:
    """`history`: the snapshots since the recorded window start; `include_now`: judge the
    reading in `facts` too (plan: not recorded yet; apply: already the last of `history`)."""
    now_reading = facts.usage if include_now else None
    judgement = judge(
        recorded.window_started_at if recorded else None,
        recorded.window_reason if recorded else "observation starts with the first apply",
        history,
        now_reading,
        own,
    )
    phase = recorded.phase if recorded else "new"
    result = TablePlan(retirement, facts, phase, judgement, cutover_at)
    result.revoked = recorded.revoked if recorded else ()
    result.steps.append(Step("observe", what="record a usage snapshot (pg_stat_user_tables)"))
    if not facts.exists:
        result.steps.append(
            Step(
                "freeze",
                (Gate("table exists", False, f"{retirement.name} does not exist", manual=True),),
            )
        )
        return result
    if phase == "frozen":
        if facts.trigger != "A":
            state = "absent" if facts.trigger is None else f"enabled as {facts.trigger!r}"
            result.drift.append(f"trigger {FREEZE_TRIGGER} is {state}: writes are not refused")
            result.steps.append(
                Step("refreeze", what=f"re-create trigger {FREEZE_TRIGGER}, ENABLE ALWAYS")
            )
        revoked = {g.key() for g in result.revoked}
        for g in facts.grants:
            if g.key() in revoked:
                result.drift.append(
                    f"{g.privilege} for {g.grantee} (by {g.grantor}) was granted again after the "
                    f"freeze (the trigger still refuses its writes; as {g.grantor}: "
                    f"{freeze.revoke_sql(g, retirement.table)})"
                )
        return result
    left = window_left(judgement, retirement.observe, facts.now)
    elapsed = facts.now - judgement.window_started_at
    if judgement.intervals == 0:
        window = Gate(
            "observe window",
            False,
            f"window started {judgement.window_started_at:%Y-%m-%d %H:%M:%S%z} "
            f"({judgement.window_reason}); no reading after it yet: the next apply compares",
        )
    else:
        window = Gate(
            "observe window",
            left == timedelta(0),
            f"no use since {judgement.window_started_at:%Y-%m-%d %H:%M:%S%z} "
            f"({judgement.window_reason}): {_span(elapsed)} of {retirement.observe_text}"
            + (f", {_span(left)} left" if left else ""),
        )
    blocking = [d for d in facts.dependants if d.blocks]
    result.revoke, result.keep = freeze.split(facts.grants)
    gates = (
        Gate(
            "move cut over",
            cutover_at is not None,
            f"move {retirement.move} cut over at {cutover_at:%Y-%m-%d %H:%M:%S%z}"
            if cutover_at
            else f"move {retirement.move} is not cut over: services may still need the table "
            f"({command(f'move cutover {retirement.move}')})",
        ),
        window,
        Gate(
            "not in use now",
            not facts.holders,
            "no other session holds a lock on it"
            if not facts.holders
            else "held by " + "; ".join(h.describe() for h in facts.holders),
        ),
        Gate(
            "no dependants",
            not blocking,
            "nothing outside it reaches it"
            if not blocking
            else "; ".join(f"{d.kind} {d.what} {d.why}" for d in blocking),
            manual=bool(blocking),
        ),
    )
    result.steps.append(
        Step(
            "freeze",
            gates,
            f"trigger {FREEZE_TRIGGER} refusing INSERT, UPDATE, DELETE, TRUNCATE for every role; "
            f"revoke {len(result.revoke)} write grant(s)",
        )
    )
    return result


def outcome(plans: list[TablePlan]) -> str:
    """`drift` (a frozen table is no longer frozen as recorded), `manual` (a gate only a person
    can open), `pending` (a step still to run or wait for), or `done`."""
    if any(p.drift for p in plans):
        return "drift"
    if any(p.manual for p in plans):
        return "manual"
    if any(p.pending for p in plans):
        return "pending"
    return "done"
