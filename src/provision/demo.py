"""The README demo: the seed's production state, converged the production way.

It starts a local Cloud SQL emulation of its own (never one the user runs), then inspects,
plans, applies, inspects, verifies and applies again through the same path as production
(the Cloud SQL Python Connector, `--env local`), then diffs it live against a second, fresh
instance converged the same way (staging reproduces prod), and stops everything. It needs the
emulation extra (`pip install 'nucleus-provision[emulation]'`).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import click

from provision import commands, db, diff, render
from provision.desired import DesiredState
from provision.diff import render as diff_render
from provision.local import server
from provision.move.commands import demo_step


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
        banner("4. apply --auto-approve (the plan of step 3, approved; run exactly)")
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
        banner("8. Phase 4: move the legacy rows into the new tables, then verify")
        moved = demo_step(lambda: target(state_dir), desired, echo)
        banner("9. staging reproduces prod: a fresh instance, applied, diffed live")
        same = _diff_with_a_fresh_instance(state_dir, target, desired, echo)
    finally:
        if not keep:
            server.Server(state_dir).stop()
            shutil.rmtree(state_dir, ignore_errors=True)
            echo("\nstopped the local instance and removed its state")
        else:
            echo(
                f"\nleft running: NUCLEUS_LOCAL_STATE_DIR={state_dir} nucleus-provision local down"
            )
    return verdict.matches and moved and same


def _diff_with_a_fresh_instance(
    prod_dir: Path,
    target: Callable[[Path], db.Target],
    desired: DesiredState,
    echo: Callable[..., None],
) -> bool:
    """A second emulation, as a freshly deployed staging is (database and users only), gets
    the same apply; then `diff` compares it with the converged prod state over the new
    schemas (rows are not compared, so prod's moved rows are not a difference). Prod's legacy
    migration rows exist only there: that category is left out."""
    staging_dir = Path(tempfile.mkdtemp(prefix="nucleus-demo-staging-"))
    try:
        server.Server(staging_dir).start("empty")
        commands.apply(target(staging_dir), desired)
        schemas = diff.defaults(desired).managed_schemas
        # On Google Cloud this is `diff --env prod --env staging`; the README's session runs
        # the same comparison on two local emulations with --from-dsn/--to-dsn.
        echo(
            "nucleus-provision diff --env prod --env staging "
            f"--schema {','.join(schemas)} --ignore legacy-migrations"
        )
        result = diff.run_targets(
            target(prod_dir),
            target(staging_dir),
            diff.defaults(desired),
            diff.Options(ignore=frozenset({"legacy-migrations"})),
            schemas,
        )
        echo(diff_render.text(result))
        return result.identical
    finally:
        server.Server(staging_dir).stop()
        shutil.rmtree(staging_dir, ignore_errors=True)
