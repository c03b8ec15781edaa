"""Text of the `retire` verbs (JSON is `TablePlan.to_dict`)."""

from __future__ import annotations

from collections.abc import Sequence

from provision.hints import command
from provision.retire import freeze
from provision.retire.observe import Grant
from provision.retire.plan import TablePlan


def _grant(g: Grant) -> str:
    column = f" ({g.column})" if g.column else ""
    return f"{g.privilege}{column} for {g.grantee} (by {g.grantor})"


def plan_text(plans: Sequence[TablePlan], title: str = "retire plan") -> str:
    lines = [f"{title}: {len(plans)} table(s)"]
    for p in plans:
        j = p.judgement
        lines.append("")
        lines.append(
            f"{p.name} (move {p.retirement.move}): {p.phase}; window since "
            f"{j.window_started_at:%Y-%m-%d %H:%M:%S%z} ({j.window_reason})"
        )
        lines.append(f"  last use: {j.last_use or 'none recorded since statistics began'}")
        for d in p.facts.dependants:
            lines.append(f"  {'BLOCKS' if d.blocks else 'warns '}: {d.kind} {d.what} {d.why}")
        for line in p.drift:
            lines.append(f"  DRIFT: {line}")
        for step in p.steps:
            if step.step == "observe":
                lines.append(f"  + observe: {step.what}")
                continue
            mark = "+" if step.runnable else ("!" if step.manual else "~")
            verdict = "runs" if step.runnable else ("blocked" if step.manual else "waits")
            lines.append(
                f"  {mark} {step.step}: {verdict}" + (f" ({step.what})" if step.what else "")
            )
            for g in step.gates:
                tag = "ok" if g.holds else ("BLOCK" if g.manual else "wait")
                lines.append(f"      [{tag}] {g.name}: {g.evidence}")
        if p.phase != "frozen":
            for grant in p.revoke:
                lines.append(f"  revoke at freeze: {_grant(grant)}")
            for grant in p.keep:
                lines.append(f"  kept at freeze: {freeze.kept_hint(grant, p.retirement.table)}")
        else:
            for grant in p.revoked:
                lines.append(f"  revoked by the freeze: {_grant(grant)}")
    return "\n".join(lines)


def status_text(plans: Sequence[TablePlan]) -> str:
    """One block per table: phase, last use and by what, and what still blocks."""
    lines = []
    for p in plans:
        j = p.judgement
        waiting = [f"{g.name}: {g.evidence}" for s in p.steps for g in s.gates if not g.holds]
        lines.append(
            f"{p.name}: {p.phase} (move {p.retirement.move}, observe {p.retirement.observe_text})"
        )
        lines.append(
            f"  window: since {j.window_started_at:%Y-%m-%d %H:%M:%S%z} ({j.window_reason})"
        )
        lines.append(f"  last use: {j.last_use or 'none recorded since statistics began'}")
        if p.facts.holders:
            lines.append("  in use now: " + "; ".join(h.describe() for h in p.facts.holders))
        for w in waiting:
            lines.append(f"  blocks: {w}")
        for d in p.facts.dependants:
            if not d.blocks:
                lines.append(f"  warns: {d.kind} {d.what} {d.why}")
        for line in p.drift:
            lines.append(f"  DRIFT: {line}")
        if p.phase == "frozen" and not p.drift:
            lines.append(
                "  frozen: every write refused; next: "
                f"{command(f'retire archive {p.name} --bucket DIR')} "
                "(soft delete and drop: not built, docs/retire.md)"
            )
    return "\n".join(lines)
