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
class Item:
    """One difference of a finding, as data: the object, what the desired state expects of it
    and what the live database has (`None`: absent). `verify` lists one line per item."""

    object: str
    expected: str | None
    actual: str | None


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
    # Each difference as (object, expected, actual). A finding that gives none is listed as
    # one item: its subject (the first detail, else its code), the declared state, the message.
    items: tuple[Item, ...] = ()

    @property
    def manual(self) -> bool:
        return self.remedy is not None

    @property
    def differences(self) -> tuple[Item, ...]:
        if self.items:
            return self.items
        subject = self.details[0] if len(self.details) == 1 else self.code
        return (Item(subject, "as declared", self.message),)


# The gate's rule. Every severity we report today is a real difference from the desired
# state, so every one fails `verify`; a future informational severity would be left out here.
FAILING: frozenset[Severity] = frozenset(Severity)


@dataclass(frozen=True)
class Difference:
    """One line of `verify`: a stable code (scripts match on it), the object, expected and
    actual; `manual` when only a person can fix it (then `remedy` says how)."""

    code: str
    object: str
    expected: str | None
    actual: str | None
    severity: str = ""
    manual: bool = False
    remedy: str | None = None

    def text(self) -> str:
        return (
            f"{self.code}: {self.object}: expected {_shown(self.expected)}, "
            f"actual {_shown(self.actual)}"
        )


def _shown(value: str | None) -> str:
    return "absent" if value is None else value


@dataclass(frozen=True)
class Verdict:
    items: tuple[Difference, ...]

    @property
    def differences(self) -> tuple[str, ...]:
        return tuple(d.text() for d in self.items)

    @property
    def matches(self) -> bool:
        return not self.items

    @property
    def manual(self) -> bool:
        """Some difference only a person can fix (exit 3)."""
        return any(d.manual for d in self.items)


def manual(findings: Iterable[Finding]) -> list[Finding]:
    """The findings `apply` cannot fix."""
    return [f for f in findings if f.manual and f.severity in FAILING]


def verify(findings: Iterable[Finding], pending: Sequence[Action] = ()) -> Verdict:
    """Does the database match? Findings of a failing severity and actions still pending
    (something `apply` would do) are differences; anything else is not."""
    items = [
        Difference(f.code, i.object, i.expected, i.actual, f.severity.value, f.manual, f.remedy)
        for f in findings
        if f.severity in FAILING
        for i in f.differences
    ]
    items += [
        Difference(
            f"pending-{a.kind.value}",
            a.migration.filename if a.migration else a.kind.value,
            "applied" if a.migration else "done",
            "pending: " + a.reason,
        )
        for a in pending
    ]
    return Verdict(tuple(items))
