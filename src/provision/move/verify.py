"""`move verify`: are the mapped rows of the legacy tables and the new tables the same?

For each finished move, one read-only statement in the server joins the mapped source with
the target on the target key and groups the result by ranges of the legacy key: per range,
the row count and a hash (xor of the rows' md5 prefixes) of each side, and the first keys
that differ, so a difference is located, not only detected. Target rows that no legacy row
maps and the move did not write (a service's) are counted apart, never a difference. A move
that has not finished its copy is not compared. Every read waits like `apply`: bounded lock
waits, retried, the blocker named when it gives up.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text

from provision import db
from provision.locks import DEFAULT_POLICY, LockPolicy
from provision.move import plan
from provision.move.declare import Declaration, Move
from provision.move.runner import Mover, Options, _check, _statuses

DEFAULT_RANGE_SIZE = 10_000


@dataclass(frozen=True)
class Range:
    lo: int | None  # None: target rows no legacy row maps to
    hi: int | None
    source_rows: int
    target_rows: int
    source_hash: str
    target_hash: str
    differing: int
    sample: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "legacy_keys": None if self.lo is None else [self.lo, self.hi],
            "source_rows": self.source_rows,
            "target_rows": self.target_rows,
            "source_hash": self.source_hash,
            "target_hash": self.target_hash,
            "differing": self.differing,
            "sample": list(self.sample),
        }


@dataclass
class MoveVerdict:
    name: str
    source: str
    target: str
    phase: str
    source_rows: int = 0
    target_rows: int = 0
    ranges_compared: int = 0
    differing: list[Range] = field(default_factory=list)
    skipped: list[tuple[str, int]] = field(default_factory=list)
    service_rows: int = 0  # target rows neither written by the move nor mapped from legacy
    cutover_at: str | None = None

    @property
    def finished(self) -> bool:
        return self.phase in ("catching-up", "synced")

    @property
    def outcome(self) -> str:
        if not self.finished:
            return "unfinished"
        if self.cutover_at:
            return "cut over"  # services own the target: its differences are theirs
        return "different" if self.differing else "equal"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "target": self.target,
            "phase": self.phase,
            "outcome": self.outcome,
            "source_rows": self.source_rows,
            "target_rows": self.target_rows,
            "ranges_compared": self.ranges_compared,
            "differing_ranges": [r.to_dict() for r in self.differing],
            "service_rows": self.service_rows,
            "cutover_at": self.cutover_at,
            "skipped": [{"reason": r, "rows": n} for r, n in self.skipped],
        }


def verify(
    target: db.Target,
    declaration: Declaration,
    moves: Sequence[Move],
    protected_schemas: Sequence[str],
    policy: LockPolicy = DEFAULT_POLICY,
    range_size: int = DEFAULT_RANGE_SIZE,
) -> list[MoveVerdict]:
    """Compare each finished move (read-only)."""
    with ExitStack() as stack:
        mover = Mover(stack, target, Options(policy=policy), lambda e: None)
        facts = mover.read("checks", lambda c: _check(c, declaration, moves, protected_schemas))
        statuses = mover.read("status", lambda c: _statuses(c, moves, with_rules=True))
        verdicts = []
        for move, status in zip(moves, statuses, strict=True):
            verdict = MoveVerdict(
                move.name, move.source_name, move.target_name, status.phase, skipped=status.skipped
            )
            verdict.cutover_at = status.cutover_at
            if verdict.finished:
                info = facts.infos[move.name]
                rows = mover.read(
                    f"{move.name}: compare",
                    lambda c, m=move, i=info: c.execute(  # type: ignore[misc]
                        text(plan.verify(m, i)), {"width": range_size}
                    ).all(),
                )
                for r in rows:
                    if r.bucket is None:
                        # Target rows a service wrote: counted, never compared.
                        verdict.service_rows += int(r.target_rows)
                        continue
                    verdict.ranges_compared += 1
                    verdict.source_rows += int(r.source_rows)
                    verdict.target_rows += int(r.target_rows)
                    if r.differing:
                        verdict.differing.append(
                            Range(
                                None if r.bucket is None else int(r.lo),
                                None if r.bucket is None else int(r.hi),
                                int(r.source_rows),
                                int(r.target_rows),
                                r.source_hash,
                                r.target_hash,
                                int(r.differing),
                                tuple(r.sample or ()),
                            )
                        )
            verdicts.append(verdict)
        return verdicts
