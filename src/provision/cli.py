"""The `nucleus-provision` command line.

This layer only parses arguments, calls one function per verb and turns `ProvisionError`
into a message, a hint and an exit code. Exit codes (like `terraform plan -detailed-exitcode`):
0 success / nothing to do, 1 error (including bad usage), 2 changes pending (`plan`).
`--debug` shows tracebacks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from provision.errors import ProvisionError

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2

FORMATS = click.Choice(["text", "markdown", "json"], case_sensitive=False)

# The database states `local up` and `demo` can start from (provision.local.scenarios).
SCENARIO_NAMES = ["empty", "legacy-nucleus-v12", "legacy-nucleus-v12-partial"]


class Context:
    def __init__(self, debug: bool, config: str | None, connect_timeout: float = 10.0) -> None:
        self.debug = debug
        self.config = config
        self.connect_timeout = connect_timeout


def _state_dir_option(func):
    return click.option(
        "--state-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Where the local instance keeps its state [default: $NUCLEUS_LOCAL_STATE_DIR or a per-user dir].",
    )(func)


def target_options(func):
    """TARGET: `--dsn URL [--owner-dsn URL]` or `--env NAME`."""
    func = click.option(
        "--env",
        "env_name",
        metavar="NAME",
        help="An environment of environments.toml, reached through the Cloud SQL Connector.",
    )(func)
    func = click.option(
        "--owner-dsn",
        metavar="URL",
        help="Direct connection as the owner role (nucleus), for ownership hand-offs and migrations.",
    )(func)
    func = click.option(
        "--dsn",
        metavar="URL",
        help="Direct connection as the admin role: postgresql://postgres:PASSWORD@HOST:PORT/DB.",
    )(func)
    return func


def resolve_target(ctx: Context, dsn: str | None, owner_dsn: str | None, env_name: str | None):
    from provision import db
    from provision.errors import ConfigError

    if bool(dsn) == bool(env_name):
        raise ConfigError(
            "give exactly one of --dsn URL or --env NAME",
            hint="e.g. --dsn postgresql://postgres:PASSWORD@127.0.0.1:5432/nucleus_v12, or --env local",
        )
    if owner_dsn and not dsn:
        raise ConfigError(
            "--owner-dsn goes with --dsn",
            hint="with --env, the owner connection comes from the environment",
        )
    if dsn:
        admin = db.engine_for_dsn(dsn, connect_timeout=ctx.connect_timeout)
        owner = (
            db.engine_for_dsn(owner_dsn, connect_timeout=ctx.connect_timeout) if owner_dsn else None
        )
        return db.Target(admin=admin, owner=owner, description=db.mask(admin.url))
    from provision import cloudsql

    return cloudsql.target_for_environment(
        env_name, config_path=ctx.config, connect_timeout=ctx.connect_timeout
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.option(
    "--config",
    metavar="PATH",
    help="environments.toml to use [default: $NUCLEUS_PROVISION_CONFIG or "
    "the nearest environments.toml].",
)
@click.option(
    "--connect-timeout",
    type=click.FloatRange(min=0.5),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="Give up connecting after this long.",
)
@click.version_option(package_name="nucleus-provision")
@click.pass_context
def cli(click_ctx: click.Context, debug: bool, config: str | None, connect_timeout: float) -> None:
    """Bring the Nucleus database on Cloud SQL to the layout the code expects.

    \b
    Like Terraform: inspect, plan, apply, verify. Every rerun is a no-op, legacy
    schemas and their rows are never touched, and `postgres` is not a superuser.

    \b
    Typical session against the local Cloud SQL emulation:
      nucleus-provision local up --scenario legacy-nucleus-v12
      nucleus-provision inspect --env local --format markdown
      nucleus-provision plan --env local      # exit 2: changes pending
      nucleus-provision apply --env local
      nucleus-provision verify --env local    # exit 0: matches the layout
      nucleus-provision local down
    """
    click_ctx.obj = Context(debug, config, connect_timeout)


# -- local ------------------------------------------------------------------------------------


@cli.group()
def local() -> None:
    """The embedded Cloud SQL emulation (PostgreSQL 16 + pgvector, postgres not a superuser)."""


@local.command("up")
@click.option(
    "--scenario",
    default="legacy-nucleus-v12",
    show_default=True,
    type=click.Choice(SCENARIO_NAMES),
    help="The database state to start from.",
)
@_state_dir_option
def local_up(scenario: str, state_dir: Path | None) -> None:
    """Start an instance in the background and print its DSNs as JSON.

    \b
    Scenarios:
      empty                       what a fresh Terraform deploy leaves
      legacy-nucleus-v12          the seed's production state (old schemas, data)
      legacy-nucleus-v12-partial  the same plus migration 001 half run, unrecorded
    """
    from provision.local import server

    instance = server.Server(state_dir or server.default_state_dir()).start(scenario)
    click.echo(json.dumps(instance.summary(), indent=2))


@local.command("status")
@_state_dir_option
def local_status(state_dir: Path | None) -> None:
    """Print the running instance as JSON; exit 1 if none runs."""
    from provision.errors import LocalInstanceError
    from provision.local import server

    directory = state_dir or server.default_state_dir()
    instance = server.Server(directory).status()
    if instance is None or not instance.is_running():
        raise LocalInstanceError(
            f"no local instance runs from {directory}",
            hint="start one with `nucleus-provision local up`",
        )
    click.echo(json.dumps(instance.summary(), indent=2))


@local.command("down")
@_state_dir_option
def local_down(state_dir: Path | None) -> None:
    """Stop the instance and delete its data (no process is left behind)."""
    from provision.local import server

    directory = state_dir or server.default_state_dir()
    stopped = server.Server(directory).stop()
    click.echo(
        f"stopped the local instance in {directory}"
        if stopped
        else f"no local instance in {directory}"
    )


# -- inspect ----------------------------------------------------------------------------------


@cli.command()
@target_options
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@click.pass_obj
def inspect(
    ctx: Context, dsn: str | None, owner_dsn: str | None, env_name: str | None, fmt: str
) -> None:
    """Report the live database against the layout the code expects.

    Reads the catalog with a few set-based queries (read-only) and lists schemas,
    tables and owners, the migrations table, extensions, the role memberships that
    decide ownership changes, and findings with stable codes (JSON: code, severity,
    message). Exit 0 whether or not there are findings; use `verify` to gate.
    """
    from provision import commands

    report = commands.inspect(resolve_target(ctx, dsn, owner_dsn, env_name))
    from provision import render

    if fmt == "json":
        click.echo(render.to_json(report.to_dict()))
    elif fmt == "markdown":
        click.echo(render.report_markdown(report))
    else:
        click.echo(render.report_text(report))


# -- plan / apply / verify -----------------------------------------------------------------------


def engine_options(func):
    """Options of plan, apply and verify."""
    func = click.option(
        "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
    )(func)
    func = click.option(
        "--owner-role",
        default="nucleus",
        show_default=True,
        help="The role that owns the new layout.",
    )(func)
    func = click.option(
        "--migrations",
        "migrations_dir",
        type=click.Path(file_okay=False, exists=True, path_type=Path),
        help="Directory of NNN_name.sql files [default: ./bootstrap_sql or $NUCLEUS_BOOTSTRAP_SQL].",
    )(func)
    return func


def accept_changed_option(func):
    return click.option(
        "--accept-changed",
        "accept_changed",
        multiple=True,
        metavar="VERSION",
        help="Accept that applied migration VERSION's file changed (records the new checksum, "
        "like Flyway's repair). Repeatable.",
    )(func)


def _layout(owner_role: str):
    from provision.layout import NUCLEUS

    return NUCLEUS if owner_role == NUCLEUS.owner else NUCLEUS.with_owner(owner_role)


def _plan_dict(plan) -> dict:
    from provision import render

    return {
        "changes": len(plan.actions),
        "route": {"name": plan.route.name.value, "reason": plan.route.reason}
        if plan.route
        else None,
        "pending_migrations": list(plan.pending),
        "actions": [
            {
                "kind": a.kind,
                "session": a.session.value,
                "reason": a.reason,
                "transactional": a.transactional,
                "migration": a.migration.filename if a.migration else None,
                "sql": [render.display_sql(s) for s in a.statements],
            }
            for a in plan.actions
        ],
    }


def _echo_plan(plan) -> None:
    from provision import render

    if plan.empty:
        click.echo("No changes. The database matches the desired state.")
        return
    if plan.route:
        click.echo(f"Ownership route: {plan.route.name.value}\n  {plan.route.reason}\n")
    for n, action in enumerate(plan.actions, 1):
        session = "as owner" if action.session.value == "owner" else "as admin"
        tx = "one transaction" if action.transactional else "NOT transactional"
        click.echo(click.style(f"{n}. {action.kind}", bold=True) + f" ({session}, {tx})")
        click.echo(f"   why: {action.reason}")
        for sql in action.statements:
            shown = render.display_sql(sql)
            if action.migration and not sql.params and len(shown) > 100:
                shown = shown.splitlines()[0][:100] + " ..."
            click.echo(f"   {shown};")
    click.echo(f"\nPlan: {len(plan.actions)} action(s). Run `apply` to execute exactly these.")


def _progress(*, show_plan: bool, show_steps: bool):
    """The listener of `apply`: lock waits always (on stderr), the plan and each step on request."""

    def listener(event) -> None:
        if event.kind == "waiting":
            click.echo(f"waiting: {event.message}", err=True)
        elif event.kind == "plan" and show_plan:
            _echo_plan(event.plan)
            if not event.plan.empty:
                click.echo("\nApplying:")
        elif event.kind == "action-start" and show_steps:
            migration = f" {event.action.migration.filename}" if event.action.migration else ""
            click.echo(f"  - {event.action.kind}{migration} ...", nl=False)
        elif event.kind == "action-done" and show_steps:
            click.echo(f" done ({event.seconds:.2f}s)")

    return listener


@cli.command()
@target_options
@engine_options
@accept_changed_option
@click.pass_obj
def plan(
    ctx: Context, dsn, owner_dsn, env_name, migrations_dir, owner_role, accept_changed, fmt
) -> None:
    """Show the ordered actions `apply` would run, each with its SQL and reason.

    Read-only. Exit 0: nothing to do; 2: changes pending; 1: error (as
    `terraform plan -detailed-exitcode`).

    \b
    Examples:
      nucleus-provision plan --env staging
      nucleus-provision plan --dsn "$ADMIN_DSN" --owner-dsn "$OWNER_DSN" --format json
    """
    from provision import commands

    result = commands.plan(
        resolve_target(ctx, dsn, owner_dsn, env_name),
        _layout(owner_role),
        migrations_dir,
        tuple(accept_changed),
    )
    if fmt == "json":
        from provision import render

        click.echo(render.to_json(_plan_dict(result)))
    else:
        _echo_plan(result)
    sys.exit(EXIT_OK if result.empty else EXIT_CHANGES)


@cli.command()
@target_options
@engine_options
@accept_changed_option
@click.pass_obj
def apply(
    ctx: Context, dsn, owner_dsn, env_name, migrations_dir, owner_role, accept_changed, fmt
) -> None:
    """Run the plan: under an advisory lock, each step in its own transaction.

    The plan is computed after the lock is taken, printed, and executed exactly;
    afterwards the catalog is read again and the run fails if the database does not
    match the desired state. A rerun is a no-op. Exit 0 on success, 1 on error.

    \b
    Needs two sessions on Cloud SQL (PostgreSQL 16): postgres, and nucleus for the
    ownership hand-off and the migrations (--owner-dsn, or users.owner with --env).
    \b
    Examples:
      nucleus-provision apply --env local
      nucleus-provision apply --dsn "$ADMIN_DSN" --owner-dsn "$OWNER_DSN"
      nucleus-provision apply --env prod --accept-changed 002   # an edited, applied file
    """
    from provision import commands

    listener = _progress(show_plan=fmt == "text", show_steps=fmt == "text")
    result = commands.apply(
        resolve_target(ctx, dsn, owner_dsn, env_name),
        _layout(owner_role),
        migrations_dir,
        listener,
        tuple(accept_changed),
    )
    if fmt == "json":
        from provision import render

        click.echo(
            render.to_json(
                {
                    **_plan_dict(result.plan),
                    "applied": [
                        {
                            "kind": a.kind,
                            "migration": a.migration.filename if a.migration else None,
                            "seconds": round(s, 3),
                        }
                        for a, s in result.timings
                    ],
                }
            )
        )
    elif not result.plan.empty:
        click.echo(
            f"\nApply complete: {len(result.timings)} action(s); the database matches the desired state."
        )


@cli.command()
@target_options
@engine_options
@click.pass_obj
def verify(ctx: Context, dsn, owner_dsn, env_name, migrations_dir, owner_role, fmt) -> None:
    """Check that the live database matches the desired state (a CI/CD gate).

    Read-only. Exit 0 when it matches; 1 with the differences listed (findings of
    `inspect`, and anything `plan` would still do).

    \b
    Example (in CI, after deploy):
      nucleus-provision verify --env staging --format json
    """
    from provision import commands

    diffs = commands.verify(
        resolve_target(ctx, dsn, owner_dsn, env_name), _layout(owner_role), migrations_dir
    )
    if fmt == "json":
        from provision import render

        click.echo(render.to_json({"matches": not diffs, "differences": diffs}))
    elif diffs:
        click.echo(f"The database differs from the desired state ({len(diffs)}):")
        for d in diffs:
            click.echo(f"  - {d}")
    else:
        click.echo("OK: the database matches the desired state.")
    sys.exit(EXIT_ERROR if diffs else EXIT_OK)


@cli.command("diff")
@click.option(
    "--env",
    "envs",
    multiple=True,
    metavar="NAME",
    help="A side by environment (twice: left, then right).",
)
@click.option(
    "--dsn",
    "dsns",
    multiple=True,
    metavar="URL",
    help="A side by admin DSN (twice: left, then right).",
)
@click.option("--from-env", metavar="NAME", help="The left side (source), by environment.")
@click.option("--to-env", metavar="NAME", help="The right side (target), by environment.")
@click.option("--from-dsn", metavar="URL", help="The left side (source), by admin DSN.")
@click.option("--to-dsn", metavar="URL", help="The right side (target), by admin DSN.")
@click.option(
    "--schema",
    "schemas",
    multiple=True,
    metavar="NAME[,NAME]",
    help="Compare only these schemas [default: the managed schemas and public, plus the legacy ones].",
)
@click.option(
    "--exclude-schema",
    "excluded",
    multiple=True,
    metavar="NAME[,NAME]",
    help="Leave these schemas out.",
)
@click.option(
    "--ignore",
    "ignored",
    multiple=True,
    metavar="CATEGORY[,CATEGORY]",
    help="Leave a category out: schemas, tables, columns, constraints, indexes, sequences, views, functions, triggers, policies, extensions, owners, privileges, default-privileges, memberships, migrations, legacy-migrations.",
)
@click.option(
    "--map-role",
    "role_map",
    multiple=True,
    metavar="LEFT=RIGHT",
    help="Compare role LEFT on the left side as role RIGHT on the right. Repeatable.",
)
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@click.pass_obj
def diff_command(
    ctx: Context,
    envs,
    dsns,
    from_env,
    to_env,
    from_dsn,
    to_dsn,
    schemas,
    excluded,
    ignored,
    role_map,
    fmt,
) -> None:
    """Compare two live databases: is staging laid out like prod, right now?

    Read-only on both sides. Compares schemas, tables and columns, constraints, indexes,
    sequences, views, functions, triggers, policies, extensions and their versions, owners,
    privileges and default privileges, memberships of the managed roles, and the migration
    records (versions and checksums). Exit 0: identical; 2: different; 1: error.

    \b
    Examples:
      nucleus-provision diff --env prod --env staging
      nucleus-provision diff --from-dsn "$PROD_DSN" --to-dsn "$STAGING_DSN" --format markdown
      nucleus-provision diff --env prod --env staging --map-role nucleus=nucleus_staging
      nucleus-provision diff --env prod --env staging --schema dna,public --ignore legacy-migrations
    \b
    In CI (fails the job when staging no longer reproduces prod):
      nucleus-provision diff --env prod --env staging --format json > schema-diff.json
    """
    from provision import diff
    from provision.diff import options, render

    left_spec, right_spec = options.sides(envs, dsns, from_env, to_env, from_dsn, to_dsn)
    settings = diff.Options(
        ignore=options.categories(ignored), role_map=diff.parse_role_map(role_map)
    )
    scope = diff.schema_scope(options.schema_names(schemas), options.schema_names(excluded))
    left = resolve_target(ctx, left_spec.dsn, None, left_spec.env)
    try:
        right = resolve_target(ctx, right_spec.dsn, None, right_spec.env)
    except BaseException:
        left.dispose()
        raise
    result = diff.run_targets(left, right, settings, scope)
    click.echo(render.render(result, fmt))
    sys.exit(EXIT_OK if result.identical else EXIT_CHANGES)


@cli.command()
@click.option(
    "--scenario",
    default="legacy-nucleus-v12",
    show_default=True,
    type=click.Choice(SCENARIO_NAMES),
)
@click.option(
    "--keep",
    is_flag=True,
    help="Leave the instance running afterwards (stop it with `local down`).",
)
@click.pass_obj
def demo(ctx: Context, scenario: str, keep: bool) -> None:
    """Start the embedded legacy instance, then inspect, plan, apply, inspect, verify.

    Everything goes through the same path as production: the Cloud SQL Python
    Connector, against the local Cloud SQL emulation (`--env local`).
    """
    import os
    import shutil
    import tempfile

    from provision import commands, render
    from provision.local import server

    def banner(title: str) -> None:
        click.echo(
            "\n"
            + click.style(f"== {title} ", bold=True, fg="cyan")
            + click.style("=" * (70 - len(title)), fg="cyan")
        )

    # Always a fresh instance of its own: never one the user is running (it is stopped at the end).
    state_dir = Path(tempfile.mkdtemp(prefix="nucleus-demo-"))
    os.environ[server.STATE_ENV_VAR] = str(state_dir)
    banner(f"1. start the local Cloud SQL emulation ({scenario})")
    instance = server.Server(state_dir).start(scenario)
    summary = instance.summary()
    click.echo(
        f"PostgreSQL 16 + pgvector, reached as Cloud SQL instance {summary.get('connection_name')} "
        f"through the Connector (Admin API {summary.get('admin_api')}, proxy {summary.get('proxy')})"
    )
    click.echo(f"state in {state_dir}")
    try:
        # The production path: the Cloud SQL Python Connector, against the local emulation.
        target = lambda: resolve_target(ctx, None, None, "local")  # noqa: E731 - a fresh one per step, as separate runs
        banner("2. inspect (before)")
        click.echo(render.report_text(commands.inspect(target())))
        banner("3. plan")
        planned = commands.plan(target())
        _echo_plan(planned)
        banner("4. apply")
        commands.apply(target(), listener=_progress(show_plan=False, show_steps=True))
        banner("5. inspect (after)")
        click.echo(render.report_text(commands.inspect(target())))
        banner("6. verify")
        diffs = commands.verify(target())
        click.echo("OK: the database matches the desired state." if not diffs else "\n".join(diffs))
        banner("7. apply again (a rerun is a no-op)")
        again = commands.apply(target())
        click.echo("No changes." if again.plan.empty else f"{len(again.plan.actions)} action(s)?!")
    finally:
        if not keep:
            server.Server(state_dir).stop()
            shutil.rmtree(state_dir, ignore_errors=True)
            click.echo("\nstopped the local instance and removed its state")
        else:
            click.echo(
                f"\nleft running: NUCLEUS_LOCAL_STATE_DIR={state_dir} nucleus-provision local down"
            )
    if diffs:
        sys.exit(EXIT_ERROR)


def main(argv: list[str] | None = None) -> None:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        code = cli.main(args=argv, prog_name="nucleus-provision", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.Abort:
        click.echo("aborted", err=True)
        code = EXIT_ERROR
    except click.ClickException as exc:
        # Bad usage exits 1 (not click's 2), so that 2 always means "changes pending".
        exc.show()
        code = EXIT_ERROR
    except OSError as exc:  # a file or directory the user named (state dir, migrations, config)
        if debug:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        click.secho(f"error: {exc.strerror or exc}{where}", fg="red", err=True)
        code = EXIT_ERROR
    except ProvisionError as exc:
        if debug:
            raise
        click.secho(f"error: {exc.message}", fg="red", err=True)
        if exc.hint:
            click.echo(f"hint: {exc.hint}", err=True)
        code = exc.exit_code
    sys.exit(code or 0)
