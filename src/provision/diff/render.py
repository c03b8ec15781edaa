"""`diff` results as text (grouped by object), markdown (like the seed's analysis) and JSON.

Only the differences are shown. A value that spans lines (a view's or a function's
definition) is shown as a unified diff of the two sides rather than twice in full.
"""

from __future__ import annotations

import difflib
import json
from collections import Counter

from provision.diff import Result
from provision.diff.compare import CATEGORIES, Difference, Value

ABSENT = "(absent)"


def _value(value: Value) -> str:
    if value is None:
        return ABSENT
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(value) if value else "(none)"
    return value


def _multiline(d: Difference) -> bool:
    return any(isinstance(v, str) and "\n" in v for v in (d.left, d.right))


def _unified(d: Difference) -> list[str]:
    left = "" if d.left is None else _value(d.left)
    right = "" if d.right is None else _value(d.right)
    return list(
        difflib.unified_diff(
            left.splitlines(), right.splitlines(), "left", "right", lineterm="", n=1
        )
    )


def _counts(result: Result) -> Counter[str]:
    return Counter(d.category for d in result.differences)


def _summary_line(result: Result) -> str:
    if result.identical:
        return "Identical: no differences."
    counts = _counts(result)
    by_category = ", ".join(f"{c} {counts[c]}" for c in CATEGORIES if counts[c])
    n = len(result.differences)
    return f"{n} difference{'s' if n != 1 else ''} ({by_category})."


def text(result: Result) -> str:
    lines = [
        f"left:  {result.left}",
        f"right: {result.right}",
        f"schemas: {', '.join(result.schemas)}"
        + (f"; ignored: {', '.join(result.ignored)}" if result.ignored else ""),
        "",
    ]
    groups: dict[str, list[Difference]] = {}
    for d in result.differences:
        groups.setdefault(d.group, []).append(d)
    for group in sorted(groups):
        lines.append(group)
        for d in groups[group]:
            subject = "" if d.object == group else f"{d.object}: "
            if _multiline(d):
                lines.append(f"  {d.kind} {subject}".rstrip())
                lines += [f"    {line}" for line in _unified(d)]
            elif d.right is None:
                lines.append(f"  {d.kind} {subject}only on the left ({_value(d.left)})")
            elif d.left is None:
                lines.append(f"  {d.kind} {subject}only on the right ({_value(d.right)})")
            else:
                lines.append(f"  {d.kind} {subject}left {_value(d.left)} | right {_value(d.right)}")
        lines.append("")
    lines.append(_summary_line(result))
    return "\n".join(lines)


def _cell(value: Value) -> str:
    return _value(value).replace("|", "\\|")


def markdown(result: Result, *, title: str = "Schema Comparison") -> str:
    lines = [
        f"# {title}",
        "",
        f"**Left (source):** `{result.left}`  ",
        f"**Right (target):** `{result.right}`  ",
        f"**Schemas compared:** {', '.join(result.schemas)}  ",
        f"**Ignored:** {', '.join(result.ignored) if result.ignored else 'nothing'}",
        "",
        "---",
        "",
        "## Summary",
        "",
    ]
    if result.identical:
        lines += ["✅ The two databases are laid out the same way: no differences.", ""]
        return "\n".join(lines)
    counts = _counts(result)
    lines += ["| category | differences |", "| --- | ---: |"]
    lines += [f"| {c} | {counts[c]} |" for c in CATEGORIES if counts[c]]
    lines += ["", "---", "", "## Differences Found", ""]
    for n, category in enumerate((c for c in CATEGORIES if counts[c]), 1):
        found = [d for d in result.differences if d.category == category]
        lines += [f"### {n}. {category.capitalize()} ❌", ""]
        lines += ["| object | kind | left | right |", "| --- | --- | --- | --- |"]
        long: list[Difference] = []
        for d in found:
            if _multiline(d):
                long.append(d)
                lines.append(f"| {d.object} | {d.kind} | (below) | (below) |")
            else:
                lines.append(f"| {d.object} | {d.kind} | {_cell(d.left)} | {_cell(d.right)} |")
        lines.append("")
        for d in long:
            lines += [f"**{d.object}** ({d.kind}):", "```diff", *_unified(d), "```", ""]
    lines += ["---", "", f"**Status:** {_summary_line(result)}", ""]
    return "\n".join(lines)


def to_json(result: Result) -> str:
    """One entry per difference: kind, object, left, right (null where absent)."""
    return json.dumps([d.to_dict() for d in result.differences], indent=2, ensure_ascii=False)


def render(result: Result, fmt: str) -> str:
    if fmt == "json":
        return to_json(result)
    if fmt == "markdown":
        return markdown(result)
    return text(result)
