"""Findings: what differs between the live database and the desired state, as plain data.

Every concern reports its findings with a stable `code` (scripts match on it), a `severity`
and a human `message`. `verify` turns findings and pending actions into a verdict with one
explicit rule, `FAILING`: which severities fail the CI/CD gate.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from provision.actions import Action


class Severity(StrEnum):
    CRITICAL = "critical"  # the code cannot run against this database
    HIGH = "high"  # a part of the code fails, or the next change would
    MEDIUM = "medium"  # degraded: a feature or the tool's own view is missing


@dataclass(frozen=True)
class Finding:
    code: str
    severity: Severity
    message: str
    impact: str = ""
    details: tuple[str, ...] = ()
    # None: `apply` fixes it. Otherwise what a person must do: `plan` and `apply` say so and
    # exit 1 instead of claiming the database will match.
    remedy: str | None = None

    @property
    def manual(self) -> bool:
        return self.remedy is not None


# The gate's rule. Every severity we report today is a real difference from the desired
# state, so every one fails `verify`; a future informational severity would be left out here.
FAILING: frozenset[Severity] = frozenset(Severity)


@dataclass(frozen=True)
class Verdict:
    differences: tuple[str, ...]

    @property
    def matches(self) -> bool:
        return not self.differences


def manual(findings: Iterable[Finding]) -> list[Finding]:
    """The findings `apply` cannot fix."""
    return [f for f in findings if f.manual and f.severity in FAILING]


def verify(findings: Iterable[Finding], pending: Sequence[Action] = ()) -> Verdict:
    """Does the database match? Findings of a failing severity and actions still pending
    (something `apply` would do) are differences; anything else is not."""
    differences = [f"{f.code}: {f.message}" for f in findings if f.severity in FAILING]
    differences += [f"pending {a.kind}: {a.reason}" for a in pending]
    return Verdict(tuple(differences))
