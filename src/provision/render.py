"""Turning reports into text, markdown (like the seed's analysis document) and JSON."""

from __future__ import annotations

import json
from datetime import date, datetime
from enum import Enum
from typing import Any

from provision.analysis import Report

_SEVERITY_MARK = {"critical": "❌", "high": "❌", "medium": "⚠️", "low": "ℹ️"}


def to_json(data: Any) -> str:
    def default(value: Any) -> Any:
        if isinstance(value, (datetime, date)):
            return value.isoformat()
        if isinstance(value, Enum):
            return value.value
        if isinstance(value, (set, frozenset, tuple)):
            return list(value)
        raise TypeError(f"cannot serialise {type(value).__name__}")

    return json.dumps(data, indent=2, default=default, ensure_ascii=False)


def _label(status: str) -> str:
    return {"legacy": "(OLD - legacy name)", "expected": "(NEW - expected by code)", "other": ""}[
        status
    ]


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
    width = max((len(s["name"]) for s in report.schemas), default=10) + 2
    lines += [
        f"{s['name']:<{width}} {_label(s['status'])}".rstrip() + f"  owner: {s['owner']}"
        for s in report.schemas
    ]
    lines += ["```", ""]
    for schema in report.schemas:
        if schema["status"] == "other" or not schema["tables"]:
            continue
        lines += [
            f"### Tables in {schema['name']} {'(OLD)' if schema['status'] == 'legacy' else '(NEW)'}",
            "```",
        ]
        lines += [f"- {t['name']} ({t['kind']}, owner {t['owner']})" for t in schema["tables"]]
        lines += ["```", ""]
    lines += ["### Schemas Expected by Code", "```"]
    lines += [
        f"{s['name']:<12} {'present, owner ' + s['owner'] if s['present'] else 'MISSING'}"
        for s in report.expected_schemas
    ]
    mt = report.migrations_table
    lines += [
        "```",
        "",
        "### Migrations Table",
        "```",
        f"{mt['name']}: "
        + (
            f"owner {mt['owner']}, columns {', '.join(mt['columns'])}"
            if mt["exists"]
            else "missing"
        ),
        f"expected columns: {', '.join(mt['expected_columns'])}",
        f"legacy rows: {len(mt['legacy_rows'])}; recorded versions: {', '.join(mt['recorded_versions']) or 'none'}",
        "```",
        "",
        "### Extensions",
        "```",
    ]
    lines += [
        f"{e['name']:<12} installed {e['installed_version'] or '-'}, available {e['available_version'] or '-'}"
        for e in report.extensions
    ]
    lines += ["```", "", "### Roles", "```"]
    lines += [
        f"{key}: {', '.join(value) if isinstance(value, list) else value}"
        for key, value in report.roles.items()
    ]
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


def report_text(report: Report) -> str:
    lines = [
        f"database {report.database} (PostgreSQL {report.server_version // 10000}), connected as {report.connected_as}",
        "",
    ]
    lines.append("schemas:")
    for s in report.schemas:
        tables = s["tables"]
        names = ", ".join(t["name"] for t in tables[:8]) + (
            f", ... ({len(tables)} in all)" if len(tables) > 8 else ""
        )
        lines.append(f"  {s['name']:<16} {s['status']:<8} owner {s['owner']:<18} {names}")
    missing = [s["name"] for s in report.expected_schemas if not s["present"]]
    lines.append(f"  expected but missing: {', '.join(missing) or 'none'}")
    mt = report.migrations_table
    lines += [
        "",
        f"migrations table {mt['name']}: "
        + (
            f"owner {mt['owner']}; columns {', '.join(mt['columns'])}"
            if mt["exists"]
            else "missing"
        ),
    ]
    if mt["exists"]:
        lines.append(
            f"  legacy rows {len(mt['legacy_rows'])}; recorded versions {', '.join(mt['recorded_versions']) or 'none'}"
        )
    lines += ["", "extensions:"]
    lines += [
        f"  {e['name']:<12} installed {e['installed_version'] or '-':<8} available {e['available_version'] or '-'}"
        for e in report.extensions
    ]
    lines += ["", "roles:"]
    lines += [
        f"  {k}: {', '.join(v) if isinstance(v, list) else v}" for k, v in report.roles.items()
    ]
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


def display_sql(sql) -> str:
    """A statement as printed by `plan`: bound values shown as literals. Plans never carry
    passwords (the engine sets none), so nothing here needs masking."""
    from pg8000.native import literal

    shown = sql.text
    for name, value in sorted(sql.params.items(), key=lambda kv: -len(kv[0])):
        shown = shown.replace(f":{name}", literal(value))
    return shown
