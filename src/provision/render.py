"""Everything the CLI shows: reports in text, markdown (like the seed's analysis) and JSON,
plans, apply progress, and verify verdicts. Pure functions from data to strings; the CLI
decides where they go."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, is_dataclass
from datetime import date, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

import click

from provision import planfile
from provision.actions import Session
from provision.executor import ApplyResult, Event, EventKind
from provision.findings import Finding, Severity, Verdict
from provision.hints import command
from provision.planfile import display_sql
from provision.planner import Plan
from provision.report import Report, SchemaStatus

if TYPE_CHECKING:
    from provision.rotate import Rotation

_SEVERITY_MARK = {Severity.CRITICAL: "❌", Severity.HIGH: "❌", Severity.MEDIUM: "⚠️"}
_STATUS_LABEL = {
    SchemaStatus.LEGACY: "(OLD - legacy name)",
    SchemaStatus.EXPECTED: "(NEW - expected by code)",
    SchemaStatus.OTHER: "",
}


def to_json(data: Any) -> str:
    def default(value: Any) -> Any:
        if isinstance(value, (datetime, date)):
            return value.isoformat()
        if isinstance(value, Enum):
            return value.value
        if isinstance(value, (set, frozenset, tuple)):
            return list(value)
        if is_dataclass(value) and not isinstance(value, type):
            return asdict(value)
        raise TypeError(f"cannot serialise {type(value).__name__}")

    return json.dumps(data, indent=2, default=default, ensure_ascii=False)


# -- inspect ----------------------------------------------------------------------------------


def report_markdown(report: Report, *, title: str = "Database State Analysis") -> str:
    lines = [
        f"# {title} - {report.database}",
        "",
        f"**Database:** {report.database}  ",
        f"**Connected as:** {report.connected_as} (PostgreSQL {report.server_version // 10000})",
        "",
        "---",
        "",
        "## Current State",
        "",
        "### Schemas Found",
        "```",
    ]
    width = max((len(s.name) for s in report.schemas), default=10) + 2
    lines += [
        f"{s.name:<{width}} {_STATUS_LABEL[s.status]}".rstrip() + f"  owner: {s.owner}"
        for s in report.schemas
    ]
    lines += ["```", ""]
    for schema in report.schemas:
        if schema.status == SchemaStatus.OTHER or not schema.tables:
            continue
        age = "(OLD)" if schema.status == SchemaStatus.LEGACY else "(NEW)"
        lines += [f"### Tables in {schema.name} {age}", "```"]
        lines += [f"- {t.name} ({t.kind}, owner {t.owner})" for t in schema.tables]
        lines += ["```", ""]
    lines += ["### Schemas Expected by Code", "```"]
    lines += [
        f"{s.name:<12} {'present, owner ' + (s.owner or '?') if s.present else 'MISSING'}"
        for s in report.expected_schemas
    ]
    mt = report.migrations_table
    state = f"owner {mt.owner}, columns {', '.join(mt.columns)}" if mt.exists else "missing"
    lines += [
        "```",
        "",
        "### Migrations Table",
        "```",
        f"{mt.name}: {state}",
        f"expected columns: {', '.join(mt.expected_columns)}",
        f"legacy rows: {len(mt.legacy_rows)}; recorded versions: "
        f"{', '.join(mt.recorded_versions) or 'none'}",
        "```",
        "",
        "### Extensions",
        "```",
    ]
    lines += [
        f"{e.name:<12} installed {e.installed_version or '-'}, available "
        f"{e.available_version or '-'}"
        for e in report.extensions
    ]
    lines += ["```", "", "### Roles", "```"]
    lines += [f"{key}: {_value(value)}" for key, value in asdict(report.roles).items()]
    if report.privileges:
        lines += [
            "```",
            "",
            "### Who Can Do What",
            "",
            "| role | schema | usage | read | write | create | owner |",
        ]
        lines += ["| --- | --- | --- | --- | --- | --- | --- |"]
        lines += [
            f"| {a.role} | {a.schema} | {_mark(a.usage)} | {_mark(a.read)} | {_mark(a.write)} "
            f"| {_mark(a.create)} | {_mark(a.owner)} |"
            for a in report.privileges
        ]
        lines += ["", "---", "", "## Issues Identified", ""]
    else:
        lines += ["```", "", "---", "", "## Issues Identified", ""]
    if not report.findings:
        lines += ["None: the database matches the layout the code expects. ✅", ""]
    for n, f in enumerate(report.findings, 1):
        lines += [f"### {n}. {f.code} {_SEVERITY_MARK[f.severity]}", f"**Problem:** {f.message}  "]
        if f.impact:
            lines.append(f"**Impact:** {f.impact}  ")
        lines += [f"**Severity:** {f.severity.upper()}", ""]
        lines += [f"- {d}" for d in f.details[:20]]
        if len(f.details) > 20:
            lines.append(f"- ... and {len(f.details) - 20} more")
        if f.details:
            lines.append("")
    return "\n".join(lines)


def _mark(value: bool | None) -> str:
    return "-" if value is None else "yes" if value else "no"


def access_table(report: Report) -> list[str]:
    """The privileges matrix: one line per role and schema, columns usage/read/write/create/owner."""
    if not report.privileges:
        return []
    width = max(len(a.role) for a in report.privileges) + 2
    swidth = max(len(a.schema) for a in report.privileges) + 2
    lines = [f"{'role':<{width}}{'schema':<{swidth}}usage read write create owner"]
    for a in report.privileges:
        lines.append(
            f"{a.role:<{width}}{a.schema:<{swidth}}{_mark(a.usage):<6}{_mark(a.read):<5}"
            f"{_mark(a.write):<6}{_mark(a.create):<7}{_mark(a.owner)}"
        )
    return lines


def _value(value: object) -> str:
    """A value as a person reads it: yes/no, never Python's True/False; lists comma-separated."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return ", ".join(value) if isinstance(value, (list, tuple)) else str(value)


def report_text(report: Report) -> str:
    lines = [
        f"database {report.database} (PostgreSQL {report.server_version // 10000}), "
        f"connected as {report.connected_as}",
        "",
        "schemas:",
    ]
    for s in report.schemas:
        names = ", ".join(t.name for t in s.tables[:8])
        if len(s.tables) > 8:
            names += f", ... ({len(s.tables)} in all)"
        lines.append(f"  {s.name:<16} {s.status:<8} owner {s.owner:<18} {names}")
    missing = [s.name for s in report.expected_schemas if not s.present]
    lines.append(f"  expected but missing: {', '.join(missing) or 'none'}")
    mt = report.migrations_table
    state = f"owner {mt.owner}; columns {', '.join(mt.columns)}" if mt.exists else "missing"
    lines += ["", f"migrations table {mt.name}: {state}"]
    if mt.exists:
        lines.append(
            f"  legacy rows {len(mt.legacy_rows)}; recorded versions "
            f"{', '.join(mt.recorded_versions) or 'none'}"
        )
    lines += ["", "extensions:"]
    lines += [
        f"  {e.name:<12} installed {e.installed_version or '-':<8} available "
        f"{e.available_version or '-'}"
        for e in report.extensions
    ]
    lines += ["", "roles:"]
    lines += [f"  {k}: {_value(v)}" for k, v in asdict(report.roles).items()]
    if report.privileges:
        lines += ["", "who can do what (inherited included):"]
        lines += [f"  {line}" for line in access_table(report)]
    lines += [
        "",
        f"findings ({len(report.findings)}):"
        if report.findings
        else "findings: none, the layout matches",
    ]
    for f in report.findings:
        lines.append(f"  [{f.severity}] {f.code}: {f.message}")
        lines += [f"      - {d}" for d in f.details[:10]]
        if len(f.details) > 10:
            lines.append(f"      - ... and {len(f.details) - 10} more")
    return "\n".join(lines)


# -- plan and apply ---------------------------------------------------------------------------


def plan_dict(plan: Plan, manual: Sequence[Finding] = ()) -> dict[str, Any]:
    """The JSON plan without fingerprints (docs/plans.md; `provision.planfile`)."""
    return planfile.plan_document(plan, manual)


def apply_dict(result: ApplyResult) -> dict[str, Any]:
    return {
        **plan_dict(result.plan),
        "applied": [
            {
                "kind": a.kind.value,
                "migration": a.migration.filename if a.migration else None,
                "known_after_apply": a.deferred,
                # A deferred action's statements as planned once the migrations ran.
                "sql": [display_sql(x) for x in a.all_statements] if a.deferred else None,
                "seconds": round(s, 3),
            }
            for a, s in result.timings
        ],
    }


def manual_text(manual: Sequence[Finding]) -> str:
    lines = [
        click.style("Manual action required", bold=True)
        + f": {len(manual)} difference(s) apply cannot fix"
    ]
    for f in manual:
        lines += [f"  - {f.code}: {f.message}", f"    what to do: {f.remedy}"]
    return "\n".join(lines)


def plan_text(plan: Plan, manual: Sequence[Finding] = ()) -> str:
    if plan.empty and not manual:
        return "No changes. The database matches the desired state."
    if plan.empty:
        return "No changes apply can make.\n\n" + manual_text(manual)
    lines = []
    if plan.route:
        lines += [f"Ownership route: {plan.route.name.value}", f"  {plan.route.reason}", ""]
    for n, action in enumerate(plan.actions, 1):
        session = "as owner" if action.session == Session.OWNER else "as admin"
        tx = "one transaction" if action.transactional else "NOT transactional"
        lines.append(click.style(f"{n}. {action.kind.value}", bold=True) + f" ({session}, {tx})")
        lines.append(f"   why: {action.reason}")
        if action.deferred:
            lines.append("   (known after apply)")
        for sql in action.all_statements:
            shown = display_sql(sql)
            if action.migration and not sql.params and len(shown) > 100:
                shown = shown.splitlines()[0][:100] + " ..."
            lines.append(f"   {shown};")
    later = sum(a.deferred for a in plan.actions)
    known = f", {later} known after apply" if later else ""
    lines += [
        "",
        f"Plan: {len(plan.actions)} action(s){known}. `{command('apply')}` runs exactly these "
        "(it shows them and asks; without a terminal it needs --auto-approve).",
    ]
    if manual:
        lines += ["", manual_text(manual)]
    return "\n".join(lines)


def apply_summary(result: ApplyResult) -> str | None:
    if result.plan.empty:
        return None
    return (
        f"\nApply complete: {len(result.timings)} action(s); "
        "the database matches the desired state."
    )


def progress(
    echo: Callable[..., None], *, show_plan: bool, show_steps: bool
) -> Callable[[Event], None]:
    """The listener of `apply`: lock waits always (on stderr), the plan and each step on
    request. `echo` is click.echo's signature (message, nl=, err=)."""

    def listener(event: Event) -> None:
        if event.kind == EventKind.WAITING:
            echo(f"waiting: {event.message}", err=True)
        elif event.kind == EventKind.PLAN and show_plan and event.plan is not None:
            echo(plan_text(event.plan))
            if not event.plan.empty:
                echo("\nApplying:")
        elif event.kind == EventKind.ACTION_START and show_steps and event.action is not None:
            migration = f" {event.action.migration.filename}" if event.action.migration else ""
            echo(f"  - {event.action.kind.value}{migration} ...", nl=False)
        elif event.kind == EventKind.ACTION_DONE and show_steps and event.action is not None:
            action = event.action
            if not action.deferred:
                echo(f" done ({event.seconds:.2f}s)")
            elif not action.statements:
                echo(" nothing left to do (known after apply: none needed)")
            else:
                echo(f" done ({event.seconds:.2f}s); known after apply, ran:")
                for sql in action.all_statements:
                    echo(f"      {display_sql(sql)};")

    return listener


# -- verify -----------------------------------------------------------------------------------


def verdict_dict(verdict: Verdict) -> dict[str, Any]:
    return {
        "matches": verdict.matches,
        "manual": verdict.manual,
        "differences": [
            {
                "code": d.code,
                "object": d.object,
                "expected": d.expected,
                "actual": d.actual,
                "severity": d.severity or None,
                "manual": d.manual,
                "remedy": d.remedy,
            }
            for d in verdict.items
        ],
    }


def verdict_text(verdict: Verdict) -> str:
    if verdict.matches:
        return "OK: the database matches the desired state."
    lines = [f"The database differs from the desired state ({len(verdict.items)}):"]
    for d in verdict.items:
        lines.append(f"  - {d.code}  {d.object}")
        lines.append(f"      expected: {'absent' if d.expected is None else d.expected}")
        lines.append(f"      actual:   {'absent' if d.actual is None else d.actual}")
    remedies = sorted({d.remedy for d in verdict.items if d.remedy})
    if remedies:
        lines += ["", "Only a person can fix some of these:"]
        lines += [f"  - {r}" for r in remedies]
    return "\n".join(lines)


# -- rotate -----------------------------------------------------------------------------------


def rotation_text(rotation: Rotation) -> str:
    """What `rotate` did, in a few lines (names and versions only, never a password)."""
    lines = [
        f"rotated users.{rotation.user} of {rotation.environment}: {rotation.login} has a new "
        f"password ({rotation.set_through}), proven by a login",
        f"stored as {rotation.version}",
    ]
    if rotation.previous_login is not None:
        lines.append(
            f"{rotation.previous_login} keeps its password until the next rotation: connections "
            "that read the previous version keep working"
        )
    if rotation.stale_variable is not None:
        lines.append(
            f"warning: {rotation.stale_variable} is set in this shell and holds the previous "
            f"password, which no longer works: unset it (runs read the secret then)"
        )
    return "\n".join(lines)
