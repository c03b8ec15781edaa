"""The README demo: the seed's production state, converged the production way.

It starts a local Cloud SQL emulation of its own (never one the user runs), then inspects,
plans, applies, inspects, verifies and applies again through the same path as production
(the Cloud SQL Python Connector, `--env local`), and stops everything. It needs the
emulation extra (`pip install 'nucleus-provision[emulation]'`).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import click

from provision import commands, db, render
from provision.desired import DesiredState
from provision.local import server


def run(
    *,
    scenario: str,
    keep: bool,
    target: Callable[[Path], db.Target],
    desired: DesiredState,
    echo: Callable[..., None],
) -> bool:
    """Tell the story on `echo`; True when the database matches at the end. `target` opens a
    fresh target for each step, as separate runs would, on the emulation of the state
    directory it is given."""

    def banner(title: str) -> None:
        echo(
            "\n"
            + click.style(f"== {title} ", bold=True, fg="cyan")
            + click.style("=" * (70 - len(title)), fg="cyan")
        )

    state_dir = Path(tempfile.mkdtemp(prefix="nucleus-demo-"))
    banner(f"1. start the local Cloud SQL emulation ({scenario})")
    instance = server.Server(state_dir).start(scenario)
    summary = server.summary(instance)
    echo(
        f"PostgreSQL 16 + pgvector, reached as Cloud SQL instance {summary.get('connection_name')} "
        f"through the Connector (Admin API {summary.get('admin_api')}, proxy {summary.get('proxy')})"
    )
    echo(f"state in {state_dir}")
    try:
        banner("2. inspect (before)")
        echo(render.report_text(commands.inspect(target(state_dir), desired)))
        banner("3. plan")
        reading = commands.plan(target(state_dir), desired)
        echo(render.plan_text(reading.plan, reading.manual))
        banner("4. apply")
        commands.apply(
            target(state_dir), desired, render.progress(echo, show_plan=False, show_steps=True)
        )
        banner("5. inspect (after)")
        echo(render.report_text(commands.inspect(target(state_dir), desired)))
        banner("6. verify")
        verdict = commands.verify(target(state_dir), desired)
        echo(render.verdict_text(verdict))
        banner("7. apply again (a rerun is a no-op)")
        again = commands.apply(target(state_dir), desired)
        echo("No changes." if again.plan.empty else f"{len(again.plan.actions)} action(s)?!")
    finally:
        if not keep:
            server.Server(state_dir).stop()
            shutil.rmtree(state_dir, ignore_errors=True)
            echo("\nstopped the local instance and removed its state")
        else:
            echo(
                f"\nleft running: NUCLEUS_LOCAL_STATE_DIR={state_dir} nucleus-provision local down"
            )
    return verdict.matches
