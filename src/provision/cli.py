"""The `nucleus-provision` command line.

This layer only parses arguments, calls one function per verb and turns `ProvisionError`
into a message, a hint and an exit code. Exit codes (`provision.exitcodes`, one table for
every verb, like `terraform plan -detailed-exitcode`): 0 same / done, 1 error (including bad
usage), 2 different / pending, 3 only a person can fix this. `--debug` shows tracebacks.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from provision.errors import (
    ConfigError,
    LocalInstanceError,
    ManualActionRequired,
    ProvisionError,
)
from provision.exitcodes import TABLE as EXIT_TABLE
from provision.exitcodes import ExitCode
from provision.hints import set_target

if TYPE_CHECKING:
    from provision import db
    from provision.desired import DesiredState
    from provision.executor import Gate, Reading
    from provision.locks import LockPolicy
    from provision.planfile import SavedPlan

# `--help`, `--version` and every usage error must answer before anything heavy is loaded
# (SQLAlchemy, pg8000, pydantic, the Connector, our engine: about 0.4 s together). So this
# module imports only click, the standard library and provision.errors at its top; each
# command imports what it needs inside its body. tests/unit/test_house.py checks the top-level
# imports, tests/system/test_cli_startup.py what a `--help` or a usage error really loads.

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = ExitCode.OK, ExitCode.ERROR, ExitCode.CHANGES

# provision.locks.LockPolicy's defaults, written here so that building the options imports
# nothing (tests/unit/test_cli_defaults.py proves they are the same values).
DEFAULT_LOCK_TIMEOUT = 0.2
DEFAULT_LOCK_BUDGET = 30.0

FORMATS = click.Choice(["text", "markdown", "json"], case_sensitive=False)
ENGINE_FORMATS = click.Choice(["text", "json"])
F = TypeVar("F", bound=Callable[..., Any])

# The database states `local up` and `demo` can start from (provision.local.scenarios).
SCENARIO_NAMES = ["empty", "legacy-nucleus-v12", "legacy-nucleus-v12-partial"]


class Context:
    def __init__(
        self,
        config: str | None,
        connect_timeout: float = 10.0,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        lock_budget: float = DEFAULT_LOCK_BUDGET,
    ) -> None:
        self.config = config
        self.connect_timeout = connect_timeout
        self.lock_timeout, self.lock_budget = lock_timeout, lock_budget

    @property
    def policy(self) -> LockPolicy:
        from provision.locks import LockPolicy

        return LockPolicy(timeout=self.lock_timeout, budget=self.lock_budget)


def _state_dir_option(func: F) -> F:
    return click.option(
        "--state-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Where the local instance keeps its state [default: $NUCLEUS_LOCAL_STATE_DIR or a per-user dir].",
    )(func)


def _start_one(state_dir: Path | None) -> str:
    """The hint of a `local` command that found no instance: the `local up` of the same state
    directory (without --state-dir it would start one elsewhere)."""
    import shlex

    where = f" --state-dir {shlex.quote(str(state_dir))}" if state_dir is not None else ""
    return f"start one with `nucleus-provision local up{where}`"


def target_options(func: F) -> F:
    """TARGET: `--env NAME` (through the Cloud SQL Connector), or `--dsn URL [--owner-dsn URL]`
    (direct), or both (the environment's desired state, reached at the DSN: a tunnel).
    The flags given are recorded for the hints (`provision.hints`): a hint that names a command
    repeats them, so that following it reaches the same database."""

    command = func

    @functools.wraps(command)
    def recorded(*args: Any, **kwargs: Any) -> Any:
        obj = click.get_current_context().find_object(Context)
        set_target(
            env_name=kwargs.get("env_name"),
            dsn=kwargs.get("dsn"),
            owner_dsn=kwargs.get("owner_dsn"),
            config=obj.config if obj is not None else None,
        )
        return command(*args, **kwargs)

    func = cast(F, recorded)
    func = click.option(
        "--env",
        "env_name",
        metavar="NAME",
        help="An environment of environments.toml: its desired state, reached through the Cloud "
        "SQL Connector (unless --dsn is given too).",
    )(func)
    func = click.option(
        "--owner-dsn",
        metavar="URL",
        help="Direct connection as the owner role (nucleus), for ownership hand-offs and migrations.",
    )(func)
    func = click.option(
        "--dsn",
        metavar="URL",
        help="Direct connection as the admin role: postgresql://postgres:PASSWORD@HOST:PORT/DB "
        "(checked against prod's desired state unless --env names another).",
    )(func)
    return func


def _check_target_options(dsn: str | None, owner_dsn: str | None, env_name: str | None) -> None:
    """A usage error, found before anything is loaded or opened."""
    if not dsn and not env_name:
        raise ConfigError(
            "give --dsn URL or --env NAME",
            hint="e.g. --dsn postgresql://postgres:PASSWORD@127.0.0.1:5432/nucleus_v12, or --env local",
        )
    if owner_dsn and not dsn:
        raise ConfigError(
            "--owner-dsn goes with --dsn",
            hint="with --env alone, the owner connection comes from the environment",
        )


def resolve_target(
    ctx: Context,
    dsn: str | None,
    owner_dsn: str | None,
    env_name: str | None,
    *,
    state_dir: Path | None = None,
) -> db.Target:
    """The connections of a run: the DSNs when given, else the environment's Connector.
    `state_dir` goes to the environment's connector plug-in (the demo's own emulation)."""
    _check_target_options(dsn, owner_dsn, env_name)
    from provision import db

    if dsn:
        admin = db.engine_for_dsn(dsn, connect_timeout=ctx.connect_timeout)
        owner = (
            db.engine_for_dsn(owner_dsn, connect_timeout=ctx.connect_timeout) if owner_dsn else None
        )
        return db.Target(admin=admin, owner=owner, description=db.mask(admin.url))
    from provision import cloudsql  # the Connector's imports are heavy: only for --env

    assert env_name is not None
    return cloudsql.target_for_environment(
        env_name, config_path=ctx.config, connect_timeout=ctx.connect_timeout, state_dir=state_dir
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
@click.option(
    "--lock-timeout",
    type=click.FloatRange(min=0.001),
    default=DEFAULT_LOCK_TIMEOUT,
    show_default=True,
    metavar="SECONDS",
    help="Longest wait for one lock on a live object: what a queue of live queries behind "
    "ours may stall. A wait cut short is rolled back and retried.",
)
@click.option(
    "--lock-budget",
    type=click.FloatRange(min=0),
    default=DEFAULT_LOCK_BUDGET,
    show_default=True,
    metavar="SECONDS",
    help="Keep retrying lock waits (with backoff) this long, then stop and name the blocker.",
)
@click.version_option(package_name="nucleus-provision")
@click.pass_context
def cli(
    click_ctx: click.Context,
    debug: bool,  # noqa: ARG001 - read by main(), before click runs
    config: str | None,
    connect_timeout: float,
    lock_timeout: float,
    lock_budget: float,
) -> None:
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
    click_ctx.obj = Context(config, connect_timeout, lock_timeout, lock_budget)


# -- local ------------------------------------------------------------------------------------


@cli.group()
def local() -> None:
    """The embedded Cloud SQL emulation (PostgreSQL 16 + pgvector, postgres not a superuser)."""


def _require_emulation() -> None:
    """A clear error when the `emulation` extra is not installed (it is optional)."""
    from provision.connector_plugin import EMULATION_EXTRA_HINT

    try:
        import provision.local.server  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"the local Cloud SQL emulation is not installed ({exc})", hint=EMULATION_EXTRA_HINT
        ) from None


@local.command("up")
@click.option(
    "--scenario",
    default="legacy-nucleus-v12",
    show_default=True,
    type=click.Choice(SCENARIO_NAMES),
    help="The database state to start from.",
)
@click.option(
    "--server-ca-mode",
    type=click.Choice(
        ["google-managed-internal-ca", "google-managed-cas-ca", "customer-managed-cas-ca"],
        case_sensitive=False,
    ),
    help="Who signs the server certificate (serverCaMode) [default: the local environment's].",
)
@click.option(
    "--dns-name",
    help="CA Service modes: the instance's DNS name [default: INSTANCE.PROJECT.REGION.sql.goog.].",
)
@click.option(
    "--custom-san",
    "custom_sans",
    multiple=True,
    help="customer-managed-cas-ca: another DNS name for the server certificate (repeatable).",
)
@_state_dir_option
def local_up(
    scenario: str,
    server_ca_mode: str | None,
    dns_name: str | None,
    custom_sans: tuple[str, ...],
    state_dir: Path | None,
) -> None:
    """Start an instance in the background and print its DSNs as JSON.

    On an instance already running (same scenario), brings its IAM database users to the
    environment's iam_users and iam_members, as `cdktf deploy` does through the Admin API,
    and keeps the data.

    \b
    Scenarios:
      empty                       what a fresh Terraform deploy leaves
      legacy-nucleus-v12          the seed's production state (old schemas, data)
      legacy-nucleus-v12-partial  the same plus migration 001 half run, unrecorded
    """
    _require_emulation()
    from provision.local import server
    from provision.local.gcp.server_ca import parse_mode

    emulation = server.Server(state_dir)
    instance = emulation.start(
        scenario,
        server_ca_mode=parse_mode(server_ca_mode) if server_ca_mode else None,
        dns_name=dns_name,
        custom_sans=custom_sans,
    )
    for role in emulation.iam_changes.created:
        click.echo(f"created IAM database user {role} (iam_members)", err=True)
    for role in emulation.iam_changes.deleted:
        click.echo(f"deleted IAM database user {role} (no longer in iam_members)", err=True)
    click.echo(json.dumps(server.summary(instance), indent=2))


@local.command("status")
@_state_dir_option
def local_status(state_dir: Path | None) -> None:
    """Print the running instance as JSON; exit 1 if none runs."""

    _require_emulation()
    from provision.local import server

    emulation = server.Server(state_dir)
    directory = emulation.state_dir
    instance = emulation.status()
    if instance is None or not instance.is_running():
        raise LocalInstanceError(
            f"no local instance runs from {directory}",
            hint=_start_one(state_dir),
        )
    click.echo(json.dumps(server.summary(instance), indent=2))


@local.command("env")
@click.option(
    "--prefix",
    default="",
    metavar="PREFIX",
    help="Name the DSN variables PREFIXADMIN_DSN and PREFIXOWNER_DSN (e.g. STAGING_), and leave "
    "NUCLEUS_LOCAL_STATE_DIR alone.",
)
@_state_dir_option
def local_env(prefix: str, state_dir: Path | None) -> None:
    """Print shell exports for the running instance: its DSNs and where it lives.

    \b
      eval "$(nucleus-provision local env)"
      nucleus-provision apply --env local --dsn "$ADMIN_DSN" --owner-dsn "$OWNER_DSN"

    The DSNs hold the emulation's throwaway passwords (as `local up` prints them);
    NUCLEUS_LOCAL_STATE_DIR is how `--env local` finds this instance (its Admin API, its
    Secret Manager with the app login's password). Exit 1 if none runs.
    """
    if (
        prefix
        and not (prefix[0].isalpha() or prefix[0] == "_")
        or not all(c.isalnum() or c == "_" for c in prefix)
    ):
        raise ConfigError(
            f"--prefix {prefix!r} cannot start a shell variable name",
            hint="letters, digits and _, not starting with a digit (e.g. STAGING_)",
        )
    _require_emulation()
    import shlex

    from provision.local import server
    from provision.local.instance import STATE_ENV_VAR

    emulation = server.Server(state_dir)
    instance = emulation.status()
    if instance is None or not instance.is_running():
        raise LocalInstanceError(
            f"no local instance runs from {emulation.state_dir}",
            hint=_start_one(state_dir),
        )
    if not prefix:
        click.echo(f"export {STATE_ENV_VAR}={shlex.quote(str(instance.state_dir))}")
    click.echo(f"export {prefix}ADMIN_DSN={shlex.quote(instance.admin_dsn)}")
    click.echo(f"export {prefix}OWNER_DSN={shlex.quote(instance.owner_dsn)}")


@local.command("down")
@_state_dir_option
def local_down(state_dir: Path | None) -> None:
    """Stop the instance and delete its data (no process is left behind)."""
    _require_emulation()
    from provision.local import server

    emulation = server.Server(state_dir)
    directory = emulation.state_dir
    stopped = emulation.stop()
    click.echo(
        f"stopped the local instance in {directory}"
        if stopped
        else f"no local instance in {directory}"
    )


@local.command("connect")
@click.option(
    "--as",
    "identity",
    required=True,
    metavar="IDENTITY",
    help="The IAM identity: serviceAccount:EMAIL, user:EMAIL, or the email alone.",
)
@click.option("-c", "--command", "sql", metavar="SQL", help="SQL to run [default: none].")
@_state_dir_option
def local_connect(identity: str, sql: str | None, state_dir: Path | None) -> None:
    """Run SQL as an IAM identity through the real Cloud SQL Python Connector.

    The identity logs in with IAM database authentication (its own access token, an
    ephemeral certificate, the mTLS proxy), as on Cloud SQL, so it may do exactly what its
    grants allow. It must be one of the local environment's iam_users or iam_members
    (`local up` creates their IAM database users). Prints the login, then the result's rows
    tab-separated; exit 1 if the statement fails (nothing is committed then).

    \b
      nucleus-provision local connect --as serviceAccount:runner@local-project.iam.gserviceaccount.com \\
          -c "SELECT current_user"
    """
    _require_emulation()
    from provision.config import load_environment
    from provision.local import connect, server

    environment = load_environment(server.LOCAL_ENVIRONMENT)
    who, columns, rows = connect.run_as(
        identity, sql, environment, server.Server(state_dir).state_dir
    )
    click.echo(f"connected as {who}", err=True)
    if columns:
        click.echo("\t".join(columns))
    for row in rows:
        click.echo("\t".join("" if v is None else str(v) for v in row))


@local.command("seed")
@click.option(
    "--rows",
    type=click.IntRange(min=1),
    required=True,
    help="Entities to add (2x interests, N/10 tasks and results).",
)
@_state_dir_option
def local_seed(rows: int, state_dir: Path | None) -> None:
    """Append a large legacy data set to the running instance (benchmarks of `move`)."""
    _require_emulation()
    from provision.local import server
    from provision.local.instance import ADMIN_USER, connect_as
    from provision.local.seed import seed

    instance = server.Server(state_dir).status()
    if instance is None or not instance.is_running():
        raise LocalInstanceError("no local instance runs", hint=_start_one(state_dir))
    conn = connect_as(instance, ADMIN_USER, timeout=600)
    try:
        click.echo(json.dumps({"rows": rows, "seconds": seed(conn, rows)}))
    finally:
        conn.close()


# -- inspect, plan, apply, verify -------------------------------------------------------------


def _inputs(
    ctx: Context,
    dsn: str | None,
    owner_dsn: str | None,
    env_name: str | None,
    migrations_dir: Path | None = None,
) -> tuple[db.Target, DesiredState]:
    """The run's desired state (checked first: a bad config or migration file opens nothing)
    and its target."""
    _check_target_options(dsn, owner_dsn, env_name)
    from provision import commands

    desired = commands.load_desired(env_name, config=ctx.config, migrations_dir=migrations_dir)
    target = resolve_target(ctx, dsn, owner_dsn, env_name)
    if dsn:
        target.app_password = commands.app_password(env_name, config=ctx.config)
    return target, desired


def migrations_option(func: F) -> F:
    return click.option(
        "--migrations",
        "migrations_dir",
        type=click.Path(file_okay=False, exists=True, path_type=Path),
        help="Directory of NNN_name.sql files [default: ./bootstrap_sql or $NUCLEUS_BOOTSTRAP_SQL].",
    )(func)


def accept_changed_option(func: F) -> F:
    return click.option(
        "--accept-changed",
        "accept_changed",
        multiple=True,
        metavar="VERSION",
        help="Accept that applied migration VERSION's file changed (records the new checksum, "
        "like Flyway's repair). Repeatable.",
    )(func)


@cli.command(epilog=EXIT_TABLE)
@target_options
@migrations_option
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@click.option(
    "--exit-zero",
    is_flag=True,
    help="Exit 0 whatever the findings (a report, not a gate); errors still exit 1.",
)
@click.option(
    "--role",
    "roles",
    multiple=True,
    metavar="NAME",
    help="Only this role: its rows of who-can-do-what, the findings naming it. Repeatable.",
)
@click.option(
    "--schema",
    "schemas",
    multiple=True,
    metavar="NAME",
    help="Only this schema: its tables, its rows of who-can-do-what, the findings naming it. "
    "Repeatable.",
)
@click.pass_obj
def inspect(
    ctx: Context,
    dsn: str | None,
    owner_dsn: str | None,
    env_name: str | None,
    migrations_dir: Path | None,
    fmt: str,
    exit_zero: bool,
    roles: tuple[str, ...],
    schemas: tuple[str, ...],
) -> None:
    """Report the live database against the layout the code expects.

    Reads the catalog with a few set-based queries (read-only) and lists schemas,
    tables and owners, the migrations table, extensions, the role memberships that
    decide ownership changes, and findings with stable codes (JSON: code, severity,
    message). Exit 0: no findings; 2: findings `apply` fixes; 3: findings only a
    person can fix; 1: error (--exit-zero: 0 unless an error).

    \b
    Examples:
      nucleus-provision inspect --env prod --format markdown --exit-zero > analysis.md
      nucleus-provision inspect --dsn "$ADMIN_DSN" --format json | jq '.findings[].code'
      nucleus-provision inspect --env prod --role nucleus_app --schema dna
    """
    target, desired = _inputs(ctx, dsn, owner_dsn, env_name, migrations_dir)
    from provision import commands, render
    from provision.report import narrow

    report = narrow(commands.inspect(target, desired, ctx.policy), roles=roles, schemas=schemas)
    if fmt == "json":
        click.echo(render.to_json(report.to_dict()))
    elif fmt == "markdown":
        click.echo(render.report_markdown(report))
    else:
        click.echo(render.report_text(report))
    if exit_zero or not report.findings:
        sys.exit(EXIT_OK)
    sys.exit(ExitCode.MANUAL if any(f.manual for f in report.findings) else EXIT_CHANGES)


@cli.command(epilog=EXIT_TABLE)
@target_options
@migrations_option
@accept_changed_option
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also save the plan (JSON, with fingerprints of the declaration and of the live "
    "catalog) to this file, for `apply FILE`.",
)
@click.option("--format", "fmt", type=ENGINE_FORMATS, default="text", show_default=True)
@click.pass_obj
def plan(
    ctx: Context,
    dsn: str | None,
    owner_dsn: str | None,
    env_name: str | None,
    migrations_dir: Path | None,
    accept_changed: tuple[str, ...],
    out: Path | None,
    fmt: str,
) -> None:
    """Show the ordered actions `apply` would run, each with its SQL and reason.

    Read-only. Every action `apply` will run is listed, those on what a pending
    migration creates too, marked "(known after apply)": their SQL is planned once
    the migration ran. Exit 0: nothing to do; 2: changes pending; 3: a difference
    `apply` cannot fix (listed with what a person must do); 1: error. The JSON
    format is documented in docs/plans.md.

    \b
    Examples:
      nucleus-provision plan --env staging
      nucleus-provision plan --env prod --out prod.plan   # then: apply prod.plan --env prod
      nucleus-provision plan --dsn "$ADMIN_DSN" --owner-dsn "$OWNER_DSN" --format json
    """
    target, desired = _inputs(ctx, dsn, owner_dsn, env_name, migrations_dir)
    from provision import commands, planfile, render

    reading = commands.plan(target, desired, accept_changed, ctx.policy)
    plan, manual = reading.plan, reading.manual
    document = planfile.plan_document(
        plan,
        manual,
        desired=reading.desired,
        catalog=reading.catalog,
        accept_changed=accept_changed,
    )
    if out is not None:
        saved = {**document, "environment": env_name}
        out.write_text(render.to_json(saved) + "\n", encoding="utf-8")
    if fmt == "json":
        click.echo(render.to_json(document))
    else:
        click.echo(render.plan_text(plan, manual))
        if out is not None:
            click.echo(f"\nSaved the plan to {out}: `apply {out}` runs exactly it, or refuses.")
    if manual:
        raise ManualActionRequired(
            f"{len(manual)} difference(s) apply cannot fix: {', '.join(f.code for f in manual)}",
            hint="see 'what to do' above; apply would still make the planned changes",
        )
    sys.exit(EXIT_OK if plan.empty else EXIT_CHANGES)


@cli.command(epilog=EXIT_TABLE)
@click.argument(
    "plan_file",
    metavar="[PLAN_FILE]",
    required=False,
    # Existence is checked by planfile.load (a clear error with its hint), not by click.
    type=click.Path(dir_okay=False, path_type=Path),
)
@target_options
@migrations_option
@accept_changed_option
@click.option(
    "--auto-approve",
    is_flag=True,
    help="Do not ask before changing the database (CI, the cdktf hook). Without it, apply asks "
    "on a terminal and refuses elsewhere.",
)
@click.option("--format", "fmt", type=ENGINE_FORMATS, default="text", show_default=True)
@click.pass_obj
def apply(
    ctx: Context,
    plan_file: Path | None,
    dsn: str | None,
    owner_dsn: str | None,
    env_name: str | None,
    migrations_dir: Path | None,
    accept_changed: tuple[str, ...],
    auto_approve: bool,
    fmt: str,
) -> None:
    """Run the plan: under an advisory lock, each step in its own transaction.

    The plan is computed after the lock is taken and shown; on a terminal apply asks
    before it changes anything (--auto-approve does not ask; without a terminal it
    refuses, as Terraform does). With PLAN_FILE (from `plan --out`), it runs exactly
    that plan, without asking, and refuses if the declaration or the live database
    changed since. Afterwards the catalog is read again and the run fails if the
    database does not match. A rerun is a no-op (and asks nothing).

    \b
    Needs two sessions on Cloud SQL (PostgreSQL 16): postgres, and nucleus for the
    ownership hand-off and the migrations (--owner-dsn, or users.owner with --env).
    \b
    Examples:
      nucleus-provision apply --env local
      nucleus-provision apply --env prod --auto-approve             # CI
      nucleus-provision plan --env prod --out prod.plan && nucleus-provision apply prod.plan --env prod
      nucleus-provision apply --dsn "$ADMIN_DSN" --owner-dsn "$OWNER_DSN" --auto-approve
      nucleus-provision apply --env prod --accept-changed 002   # an edited, applied file
    """
    _check_target_options(dsn, owner_dsn, env_name)  # a usage error first, loading nothing
    saved = None
    if plan_file is not None:
        from provision import planfile

        saved = planfile.load(plan_file)
        if accept_changed:
            raise ConfigError(
                "--accept-changed goes with `plan --out`, not with a saved plan",
                hint=f"the saved plan was made with --accept-changed "
                f"{' '.join(saved.accept_changed) or '(none)'}; plan again to change it",
            )
        accept_changed = saved.accept_changed
        if saved.environment is not None and env_name != saved.environment:
            raise ConfigError(
                f"{plan_file} is a plan for --env {saved.environment}, not "
                f"{'--env ' + env_name if env_name else 'this --dsn target'}",
                hint=f"apply {plan_file} --env {saved.environment}",
            )
    target, desired = _inputs(ctx, dsn, owner_dsn, env_name, migrations_dir)
    from provision import commands, render

    _interruptible("apply", "step")
    text = fmt == "text"
    listener = render.progress(click.echo, show_plan=text, show_steps=text)
    gate = _apply_gate(saved, auto_approve, show_plan=not text)
    result = commands.apply(target, desired, listener, accept_changed, ctx.policy, gate)
    if fmt == "json":
        click.echo(render.to_json(render.apply_dict(result)))
    elif (summary := render.apply_summary(result)) is not None:
        click.echo(summary)


def _apply_gate(saved: SavedPlan | None, auto_approve: bool, *, show_plan: bool) -> Gate:
    """What `apply` checks between making its plan (under its lock) and running it: a saved
    plan's fingerprints, else a person's yes on a terminal (Terraform's rule: no terminal
    and no --auto-approve is a refusal, with the way out in the hint)."""
    from provision import planfile
    from provision.errors import PlanRefused
    from provision.hints import command

    def gate(reading: Reading, desired: DesiredState) -> None:
        if saved is not None:
            current = planfile.plan_document(
                reading.plan,
                reading.manual,
                desired=desired,
                catalog=reading.catalog,
                accept_changed=saved.accept_changed,
            )
            reasons = planfile.stale(saved, current)
            if reasons:
                raise PlanRefused(
                    f"the saved plan {saved.path} no longer applies: {'; '.join(reasons)} since "
                    "it was made. Nothing was changed",
                    hint=f"run `{command(f'plan --out {saved.path}')}` again, review it, then "
                    f"`{command(f'apply {saved.path}')}`",
                )
            return
        if reading.plan.empty or auto_approve:
            return
        if not sys.stdin.isatty():
            raise PlanRefused(
                f"apply would run {len(reading.plan.actions)} action(s) and needs approval, but "
                "stdin is not a terminal. Nothing was changed",
                hint=f"review `{command('plan')}`, then run `{command('apply --auto-approve')}` "
                f"(CI, the cdktf hook), or save it with `{command('plan --out FILE')}` and run "
                f"`{command('apply FILE')}`",
            )
        if show_plan:
            from provision import render

            click.echo(render.plan_text(reading.plan), err=True)
        if not click.confirm(
            f"\nRun these {len(reading.plan.actions)} action(s)?", default=False, err=True
        ):
            raise PlanRefused("apply cancelled: nothing was changed")

    return gate


@cli.command(epilog=EXIT_TABLE)
@target_options
@migrations_option
@click.option("--format", "fmt", type=ENGINE_FORMATS, default="text", show_default=True)
@click.pass_obj
def verify(
    ctx: Context,
    dsn: str | None,
    owner_dsn: str | None,
    env_name: str | None,
    migrations_dir: Path | None,
    fmt: str,
) -> None:
    """Check that the live database matches the desired state (a CI/CD gate).

    Read-only. Lists each difference: its code, the object, what is expected and
    what is there (findings of `inspect`, and anything `plan` would still do).
    Exit 0 when it matches; 2 when it differs and `apply` would fix it; 3 when a
    person must fix something (what to do is listed); 1 on error.

    \b
    Example (in CI, after deploy):
      nucleus-provision verify --env staging --format json | jq '.differences[].code'
    """
    target, desired = _inputs(ctx, dsn, owner_dsn, env_name, migrations_dir)
    from provision import commands, render

    verdict = commands.verify(target, desired, ctx.policy)
    if fmt == "json":
        click.echo(render.to_json(render.verdict_dict(verdict)))
    else:
        click.echo(render.verdict_text(verdict))
    sys.exit(EXIT_OK if verdict.matches else ExitCode.MANUAL if verdict.manual else EXIT_CHANGES)


# -- digest (Terraform's `external` data source) ---------------------------------------------


@cli.command(epilog=EXIT_TABLE)
@click.option("--env", "env_name", metavar="NAME", help="An environment of environments.toml.")
@migrations_option
@click.pass_obj
def digest(ctx: Context, env_name: str | None, migrations_dir: Path | None) -> None:
    """A digest of the live pending plan, for Terraform's `external` data source.

    Speaks the external program protocol: reads a JSON object on stdin (a `query`;
    {"env": NAME} names the environment when --env does not), writes one JSON
    object of strings on stdout: `digest` (sha256 over the plan's canonical
    actions: it changes when the live database drifts, and returns to the
    converged value once `apply` repaired it), `instance` ("present" or
    "absent") and `pending_actions`. Nothing secret is in it. When the Admin API
    says the instance does not exist (404), the digest is the stable value
    "absent"; any other failure (network, credentials, permissions) is an error
    on stderr with exit 1, so that `cdktf diff` fails loudly instead of reading
    it as "absent". Exit 0 whether or not changes are pending.

    \b
    Examples:
      echo '{"env": "staging"}' | nucleus-provision digest
      nucleus-provision digest --env local < /dev/null
    """
    query: dict[str, object] = {}
    if not sys.stdin.isatty():
        raw = sys.stdin.read().strip()
        if raw:
            try:
                loaded = json.loads(raw)
            except ValueError as exc:
                raise ConfigError(
                    f"stdin is not JSON ({exc})",
                    hint='give a JSON object of strings, e.g. {"env": "prod"} (Terraform\'s '
                    "external data source `query`)",
                ) from None
            if not isinstance(loaded, dict):
                raise ConfigError("stdin must hold a JSON object", hint='e.g. {"env": "prod"}')
            query = loaded
    named = env_name or query.get("env")
    if not isinstance(named, str) or not named:
        raise ConfigError(
            "digest needs an environment", hint='--env NAME, or {"env": "NAME"} on stdin'
        )
    from provision import commands
    from provision.errors import InstanceAbsent

    desired = commands.load_desired(named, config=ctx.config, migrations_dir=migrations_dir)
    try:
        target = resolve_target(ctx, None, None, named)
        value, pending = commands.digest(target, desired, ctx.policy)
        result = {"digest": value, "instance": "present", "pending_actions": str(pending)}
    except InstanceAbsent:
        result = {"digest": "absent", "instance": "absent", "pending_actions": "0"}
    click.echo(json.dumps(result, sort_keys=True))


# -- rotate -----------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--env", "env_name", metavar="NAME", required=True, help="An environment of environments.toml."
)
@click.option(
    "--user",
    "role",
    type=click.Choice(["admin", "owner", "app"]),
    required=True,
    help="users.admin (postgres), users.owner (nucleus) or users.app (the alternating app logins).",
)
@click.option("--format", "fmt", type=ENGINE_FORMATS, default="text", show_default=True)
@click.pass_obj
def rotate(ctx: Context, env_name: str, role: str, fmt: str) -> None:
    """Give a user a new password and store it as a new version of its secret.

    The password satisfies the instance's password policy and is never shown. It
    works before the secret shows it: the app login alternates between two logins
    (connections with the previous password keep working until the next rotation);
    postgres and nucleus are set through the Cloud SQL Admin API, then stored.

    \b
    Examples:
      nucleus-provision rotate --env prod --user app
      nucleus-provision rotate --env staging --user admin --format json
    """
    set_target(env_name=env_name, config=ctx.config)
    from provision import render
    from provision import rotate as rotation
    from provision.config import load_environment

    environment = load_environment(env_name, ctx.config)
    result = rotation.rotate(
        environment,
        role,  # type: ignore[arg-type]  # click.Choice above
        connect_timeout=ctx.connect_timeout,
        policy=ctx.policy,
    )
    if fmt == "json":
        click.echo(render.to_json(result.as_dict()))
    else:
        click.echo(render.rotation_text(result))


@cli.command("lock")
@migrations_option
@click.option(
    "--check",
    is_flag=True,
    help="Do not write: exit 1 when the lock differs from what the migrations make now.",
)
@click.pass_obj
def lock_command(ctx: Context, migrations_dir: Path | None, check: bool) -> None:
    """Write the expected schema, bootstrap_sql/schema.lock, from the migrations.

    Replays every migration, then applies the privileges declaration, on a scratch
    PostgreSQL 16 + pgvector set up like Cloud SQL (the local emulation: needs the
    `emulation` extra, a development-time step), and writes the managed schemas'
    objects, one per line, sorted, with each migration file's checksum. `verify`,
    `plan` and `inspect` compare the live database with it; `diff` takes it as a side.
    Run it after adding a migration, and commit the lock with the migration.

    \b
    Examples:
      nucleus-provision lock
      nucleus-provision lock --check    # in CI: exit 1 when schema.lock is stale
    """
    _require_emulation()
    from provision import commands
    from provision.local import lock as locking
    from provision.lockfile import LOCK_NAME, REFRESH
    from provision.migrations import default_directory

    directory = migrations_dir or default_directory()
    # The lock is the same for every environment: the owner and the groups are shared.
    desired = commands.load_desired("local", config=ctx.config, migrations_dir=directory)
    text = locking.generate(desired)
    path = directory / LOCK_NAME
    current = path.read_text(encoding="utf-8") if path.is_file() else None
    if check:
        if current != text:
            raise ConfigError(
                f"{path} is {'missing' if current is None else 'stale'}: it does not describe "
                "what the migrations and the privileges declaration make",
                hint=f"run `{REFRESH}` and commit {LOCK_NAME}",
            )
        click.echo(f"{path} is up to date")
        return
    if current == text:
        click.echo(f"{path} is up to date")
        return
    path.write_text(text, encoding="utf-8")
    click.echo(f"wrote {path} ({len(text.splitlines())} lines)")


# -- move (Phase 4: the legacy rows into the new tables) ---------------------------------------


def _moves_options(func: F) -> F:
    func = click.option(
        "--only", metavar="NAME", help="Only this move (the file's name without its number)."
    )(func)
    func = click.option(
        "--moves",
        "moves_dir",
        type=click.Path(file_okay=False, exists=True, path_type=Path),
        help="Directory of move files [default: ./moves or $NUCLEUS_MOVES].",
    )(func)
    return func


@cli.group()
def move() -> None:
    """Move the legacy rows into the new tables: online, resumable, verified.

    \b
    Typical session (after `apply`, as postgres, a member of nucleus_readwrite):
      nucleus-provision move run --env prod          # copy, then catch up
      nucleus-provision move status --env prod
      nucleus-provision move run --env prod --follow # keep catching up until cut-over
      nucleus-provision move verify --env prod       # exit 0 equal, 1 different, 2 unfinished
      nucleus-provision move cutover entities --env prod  # services own dna.entity from now on
    """


@move.command("run")
@target_options
@_moves_options
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=50_000,
    show_default=True,
    help="Legacy keys per batch (one short transaction each).",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=1),
    metavar="ROWS_PER_S",
    help="At most this many rows per second.",
)
@click.option(
    "--batch-target",
    type=click.FloatRange(min=0),
    default=0.5,
    show_default=True,
    metavar="SECONDS",
    help="Adapt each batch's size so that it takes this long (0: keep --batch-size).",
)
@click.option(
    "--batch-min",
    type=click.IntRange(min=1),
    default=1_000,
    show_default=True,
    metavar="ROWS",
    help="Fewest legacy keys per adapted batch.",
)
@click.option(
    "--batch-max",
    type=click.IntRange(min=1),
    default=200_000,
    show_default=True,
    metavar="ROWS",
    help="Most legacy keys per adapted batch.",
)
@click.option(
    "--max-replica-lag",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Pause while a replica's replay lag (pg_stat_replication) exceeds this.",
)
@click.option(
    "--max-pause",
    type=click.FloatRange(min=0),
    default=300.0,
    show_default=True,
    metavar="SECONDS",
    help="Longest pause for lock waiters, autovacuum or replica lag; then stop, batches kept.",
)
@click.option(
    "--follow", is_flag=True, help="Keep catching up (every --interval) until interrupted."
)
@click.option(
    "--interval", type=click.FloatRange(min=0.1), default=5.0, show_default=True, metavar="SECONDS"
)
@click.option("--format", "fmt", type=ENGINE_FORMATS, default="text", show_default=True)
@click.pass_obj
def move_run(
    ctx: Context,
    dsn: str | None,
    owner_dsn: str | None,
    env_name: str | None,
    moves_dir: Path | None,
    only: str | None,
    batch_size: int,
    rate: float | None,
    batch_target: float,
    batch_min: int,
    batch_max: int,
    max_replica_lag: float | None,
    max_pause: float,
    follow: bool,
    interval: float,
    fmt: str,
) -> None:
    """Copy the legacy rows in keyset batches (cursor in the database), then catch up.

    A killed run resumes at its last committed batch; a finished move reruns as a catch-up
    pass over the legacy ranges changed since (inserts, updates, deletes). It writes only
    rows it wrote that still hold what it wrote: rows services wrote or changed are
    conflicts, listed with their keys. Exit 0, 1 on error.

    It throttles itself: each batch's size adapts so that it takes --batch-target, and it
    pauses at a batch boundary (saying why) while another session waits on a lock the move
    holds, while autovacuum works on the target table, and while a replica lags past
    --max-replica-lag. `move pause|resume|cancel NAME` from another shell take effect at
    the next batch boundary; a cancelled run exits 0 with every committed batch kept.
    """
    if batch_min > batch_max:
        raise click.BadParameter(
            f"--batch-min {batch_min} is above --batch-max {batch_max}", param_hint="--batch-min"
        )
    target, desired = _inputs(ctx, dsn, owner_dsn, env_name)
    from provision.move import commands as moves
    from provision.move import render as move_render
    from provision.move.throttle import Limits

    limits = Limits(batch_target or None, batch_min, batch_max, max_replica_lag, max_pause)
    options = moves.Options(batch_size, rate, follow, interval, ctx.policy, limits)
    listener = move_render.progress(click.echo, fmt, sys.stdout.isatty())
    try:
        statuses = moves.run(target, desired, moves_dir, only, options, listener)
    except KeyboardInterrupt:
        from provision.hints import command

        click.echo("stopped: interrupted", err=True)
        click.echo(
            "rolled back: the batch that was running, all of it (one transaction); every "
            f"committed batch and the cursor stay, and `{command('move run')}` again resumes",
            err=True,
        )
        sys.exit(EXIT_OK if follow else EXIT_ERROR)
    if fmt == "json":
        click.echo(json.dumps({"event": "done", "moves": [s.to_dict() for s in statuses]}))
    else:
        click.echo(move_render.status_text(statuses))


@move.command("status")
@target_options
@_moves_options
@click.option("--format", "fmt", type=ENGINE_FORMATS, default="text", show_default=True)
@click.pass_obj
def move_status(
    ctx: Context,
    dsn: str | None,
    owner_dsn: str | None,
    env_name: str | None,
    moves_dir: Path | None,
    only: str | None,
    fmt: str,
) -> None:
    """Per move: phase, rows copied, rows pending, legacy ranges changed since the last
    pass (behind), conflicts, lag, last error, rows each rule keeps out."""
    target, desired = _inputs(ctx, dsn, owner_dsn, env_name)
    from provision import render
    from provision.move import commands as moves
    from provision.move import render as move_render

    statuses = moves.status(target, desired, moves_dir, only, ctx.policy)
    if fmt == "json":
        click.echo(render.to_json([s.to_dict() for s in statuses]))
    else:
        click.echo(move_render.status_text(statuses))


@move.command("cutover")
@click.argument("name")
@target_options
@click.option(
    "--moves",
    "moves_dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Directory of move files [default: ./moves or $NUCLEUS_MOVES].",
)
@click.option("--format", "fmt", type=ENGINE_FORMATS, default="text", show_default=True)
@click.pass_obj
def move_cutover(
    ctx: Context,
    name: str,
    dsn: str | None,
    owner_dsn: str | None,
    env_name: str | None,
    moves_dir: Path | None,
    fmt: str,
) -> None:
    """Record that services own move NAME's target: `move run` never writes it again.

    Run it once the services write the new table and `move run` and `move verify` passed.
    Legacy rows written afterwards are reported by `move run` (with their keys), not copied.
    """
    # Imported here (issue 21: `--help` loads nothing heavier than click).
    from provision import render
    from provision.move import commands as moves
    from provision.move import render as move_render

    target, desired = _inputs(ctx, dsn, owner_dsn, env_name)
    status, differ = moves.cutover(target, desired, name, moves_dir, ctx.policy)
    if fmt == "json":
        click.echo(
            render.to_json(
                {
                    **status.to_dict(),
                    "legacy_differing": [{"legacy_key": k, "how": h} for h, k in differ],
                }
            )
        )
    else:
        click.echo(move_render.cutover_text(status, differ))


def _control_command(verb: str, doc: str) -> None:
    @move.command(verb, help=doc)
    @click.argument("name")
    @target_options
    @click.option(
        "--moves",
        "moves_dir",
        type=click.Path(file_okay=False, exists=True, path_type=Path),
        help="Directory of move files [default: ./moves or $NUCLEUS_MOVES].",
    )
    @click.option("--format", "fmt", type=ENGINE_FORMATS, default="text", show_default=True)
    @click.pass_obj
    def command(
        ctx: Context,
        name: str,
        dsn: str | None,
        owner_dsn: str | None,
        env_name: str | None,
        moves_dir: Path | None,
        fmt: str,
    ) -> None:
        # Imported here (issue 21: `--help` loads nothing heavier than click).
        from provision import render
        from provision.move import commands as moves
        from provision.move import render as move_render

        target, desired = _inputs(ctx, dsn, owner_dsn, env_name)
        statuses = moves.control(target, desired, name, verb, moves_dir, ctx.policy)
        if fmt == "json":
            click.echo(render.to_json([s.to_dict() for s in statuses]))
        else:
            click.echo(move_render.status_text(statuses))


_control_command(
    "pause",
    "Pause move NAME: a running `move run` waits at its next batch boundary, and a later run "
    "waits too, until `move resume NAME`.",
)
_control_command(
    "resume", "Resume move NAME after `move pause` (or clear a `move cancel` not yet seen)."
)
_control_command(
    "cancel",
    "Stop a running `move run` of NAME at its next batch boundary: every committed batch is "
    "kept, and the next `move run` resumes from there.",
)


@move.command("verify", epilog=EXIT_TABLE)
@target_options
@_moves_options
@click.option(
    "--range-size",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    metavar="KEYS",
    help="Legacy keys per compared range.",
)
@click.option("--format", "fmt", type=ENGINE_FORMATS, default="text", show_default=True)
@click.pass_obj
def move_verify(
    ctx: Context,
    dsn: str | None,
    owner_dsn: str | None,
    env_name: str | None,
    moves_dir: Path | None,
    only: str | None,
    range_size: int,
    fmt: str,
) -> None:
    """Compare the mapped legacy rows with the new tables: counts and hashes per key range.

    Exit 0 equal; 2 a move has not finished (`move run` continues it); 3 different
    (the ranges and keys listed: the move never overwrites a row, so a person
    decides); 1 error.
    """
    target, desired = _inputs(ctx, dsn, owner_dsn, env_name)
    from provision import render
    from provision.move import commands as moves
    from provision.move import render as move_render

    verdicts = moves.verify(target, desired, moves_dir, only, ctx.policy, range_size)
    if fmt == "json":
        click.echo(render.to_json([v.to_dict() for v in verdicts]))
    else:
        click.echo(move_render.verify_text(verdicts))
    outcomes = {v.outcome for v in verdicts}
    # A difference is for a person: the move never overwrites a row of the new tables (it may
    # be a service's write), so no rerun fixes it (3). Unfinished: `move run` continues (2).
    sys.exit(
        ExitCode.MANUAL
        if "different" in outcomes
        else EXIT_CHANGES
        if "unfinished" in outcomes
        else EXIT_OK
    )


# -- retire (Phase 4, last step: the legacy tables, on evidence) -----------------------------


@cli.group()
def retire() -> None:
    """Retire the legacy tables on evidence: observe, freeze, archive (docs/retire.md).

    \b
    Declared in moves/retire.toml (per table: its move, the observe window). Each step is
    gated, recorded in schema nucleus_retire (who, when, evidence) and reversible:
      nucleus-provision retire plan --env prod     # steps, gates; exit 2 pending, 3 blocked
      nucleus-provision retire apply --env prod    # snapshot usage; freeze what may be frozen
      nucleus-provision retire status --env prod   # per table: last use, by what, what blocks
      nucleus-provision retire verify --env prod   # exit 1 when a frozen table drifted
      nucleus-provision retire unfreeze dna_schema.entities --env prod
      nucleus-provision retire archive dna_schema.entities --bucket DIR --env prod
      nucleus-provision retire check-archive DIR/dna_schema.entities/TIME --env prod
    \b
    Exit codes: 0 done, 2 pending (a window to wait out, a step to run), 3 only a person
    can unblock (a view, a foreign key, a function reaching the table), 1 error or drift.
    """


def _retire_options(func: F) -> F:
    func = click.option("--format", "fmt", type=ENGINE_FORMATS, default="text", show_default=True)(
        func
    )
    func = click.option(
        "--moves",
        "moves_dir",
        type=click.Path(file_okay=False, exists=True, path_type=Path),
        help="Directory of the move files and retire.toml [default: ./moves or $NUCLEUS_MOVES].",
    )(func)
    return target_options(func)


def _retire_exit(plans: list[Any]) -> None:
    from provision.retire.plan import outcome

    sys.exit(
        {"done": EXIT_OK, "pending": EXIT_CHANGES, "manual": ExitCode.MANUAL, "drift": EXIT_ERROR}[
            outcome(plans)
        ]
    )


def _retire_command(verb: str, doc: str) -> None:
    @retire.command(verb, help=doc)
    @_retire_options
    @click.option("--only", metavar="SCHEMA.TABLE", help="Only this declared table.")
    @click.pass_obj
    def command(
        ctx: Context,
        dsn: str | None,
        owner_dsn: str | None,
        env_name: str | None,
        moves_dir: Path | None,
        fmt: str,
        only: str | None,
    ) -> None:
        # Imported here (issue 21: `--help` loads nothing heavier than click).
        from provision import render
        from provision.retire import commands as retiring
        from provision.retire import render as retire_render

        target, desired = _inputs(ctx, dsn, owner_dsn, env_name)
        # Progress to stdout before the plan; lock waits ("waiting: ...") to stderr.
        listener = (
            (lambda m: click.echo(m, err=m.startswith("waiting: ")))
            if fmt == "text"
            else (lambda m: click.echo(m, err=True) if m.startswith("waiting: ") else None)
        )
        if verb == "apply":
            plans = retiring.apply(target, desired, moves_dir, only, ctx.policy, listener)
        else:
            plans = getattr(retiring, verb)(target, desired, moves_dir, only, ctx.policy)
        if fmt == "json":
            click.echo(render.to_json([p.to_dict() for p in plans]))
        elif verb == "status":
            click.echo(retire_render.status_text(plans))
        else:
            click.echo(retire_render.plan_text(plans, f"retire {verb}"))
        if verb != "status":
            _retire_exit(plans)


_retire_command(
    "plan",
    "Per declared table: the evidence (usage since its window started, counter resets, "
    "sessions using it now, dependants) and the steps apply would run, each with its gates. "
    "Read-only. Exit 0 all frozen, 2 pending, 3 blocked until a person acts.",
)
_retire_command(
    "apply",
    "Record a usage snapshot of every declared table (a counter reset or a use restarts its "
    "window), then run each step whose gates all hold: freeze (a trigger refusing every "
    "write, for every role, plus REVOKEs of the write grants this login may revoke).",
)
_retire_command(
    "status",
    "Per declared table: phase, last use and by what, what still blocks (read-only, exit 0).",
)
_retire_command(
    "verify",
    "Check the recorded state against the database: every frozen table still carries its "
    "trigger (enabled always) and none of the grants its freeze revoked is back. Exit 1 on "
    "drift (retire apply re-creates a missing trigger), 2 pending, 3 blocked, 0 done.",
)


@retire.command("unfreeze")
@click.argument("table", metavar="SCHEMA.TABLE")
@_retire_options
@click.pass_obj
def retire_unfreeze(
    ctx: Context,
    table: str,
    dsn: str | None,
    owner_dsn: str | None,
    env_name: str | None,
    moves_dir: Path | None,
    fmt: str,
) -> None:
    """Undo the freeze of TABLE: drop its trigger, give back exactly the grants the freeze
    revoked (each by its original grantor), and restart its observe window."""
    from provision import render
    from provision.retire import commands as retiring
    from provision.retire import render as retire_render

    target, desired = _inputs(ctx, dsn, owner_dsn, env_name)
    after = retiring.unfreeze(target, desired, table, moves_dir, ctx.policy)
    if fmt == "json":
        click.echo(render.to_json(after.to_dict()))
    else:
        click.echo(retire_render.status_text([after]))


@retire.command("archive")
@click.argument("table", metavar="SCHEMA.TABLE")
@click.option(
    "--bucket",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory standing for the archive bucket (the emulation's Cloud Storage).",
)
@_retire_options
@click.pass_obj
def retire_archive(
    ctx: Context,
    table: str,
    bucket: Path,
    dsn: str | None,
    owner_dsn: str | None,
    env_name: str | None,
    moves_dir: Path | None,
    fmt: str,
) -> None:
    """Archive frozen TABLE into --bucket (rows as COPY text, a manifest with sha256, rows,
    DDL and per-range hashes), then check it: restored into a scratch table and compared per
    key range with the manifest and the live table. Prints the archive's directory."""
    from provision import render
    from provision.retire import commands as retiring

    target, desired = _inputs(ctx, dsn, owner_dsn, env_name)
    result = retiring.archive(target, desired, table, bucket, moves_dir, ctx.policy)
    if fmt == "json":
        click.echo(render.to_json(result))
    else:
        click.echo(
            f"{result['table']}: archived and checked: {result['rows']} rows, "
            f"{result['ranges']} key ranges, sha256 {result['sha256']}\n{result['directory']}"
        )


@retire.command("check-archive")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@_retire_options
@click.pass_obj
def retire_check_archive(
    ctx: Context,
    directory: Path,
    dsn: str | None,
    owner_dsn: str | None,
    env_name: str | None,
    moves_dir: Path | None,  # noqa: ARG001 - the common options of retire
    fmt: str,
) -> None:
    """Check the archive in DIRECTORY: its object against its manifest (a truncated or
    changed file is refused), then restored and compared per key range with the manifest
    and the live table. Exit 0 sound, 1 refused."""
    from provision import render
    from provision.retire import commands as retiring

    target, desired = _inputs(ctx, dsn, owner_dsn, env_name)
    result = retiring.check_archive(target, desired, directory, ctx.policy)
    if fmt == "json":
        click.echo(render.to_json(result))
    else:
        click.echo(
            f"{result['table']}: archive sound: {result['rows']} rows, sha256 {result['sha256']}"
        )


@cli.command("diff", epilog=EXIT_TABLE)
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
    "--from-lock", metavar="PATH", help="The left side: a schema lock (what the migrations make)."
)
@click.option(
    "--to-lock", metavar="PATH", help="The right side: a schema lock (bootstrap_sql/schema.lock)."
)
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
    help="Leave a category out: schemas, tables, columns, constraints, indexes, sequences, views, functions, triggers (and rules), policies, extensions, owners, privileges, default-privileges, memberships, migrations, legacy-migrations.",
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
    envs: tuple[str, ...],
    dsns: tuple[str, ...],
    from_env: str | None,
    to_env: str | None,
    from_dsn: str | None,
    to_dsn: str | None,
    from_lock: str | None,
    to_lock: str | None,
    schemas: tuple[str, ...],
    excluded: tuple[str, ...],
    ignored: tuple[str, ...],
    role_map: tuple[str, ...],
    fmt: str,
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
      nucleus-provision diff --env prod --to-lock bootstrap_sql/schema.lock   # prod vs the migrations
    \b
    In CI (fails the job when staging no longer reproduces prod):
      nucleus-provision diff --env prod --env staging --format json > schema-diff.json
    """
    from provision import commands, diff
    from provision.diff import options, render

    left_spec, right_spec = options.sides(
        envs, dsns, from_env, to_env, from_dsn, to_dsn, from_lock, to_lock
    )
    settings = diff.Options(
        ignore=options.categories(ignored), role_map=diff.parse_role_map(role_map)
    )
    # The layout's schemas (managed, legacy) and version table, as the default environment
    # declares them: they are the same in every environment.
    layout = diff.defaults(commands.load_desired(None, config=ctx.config))
    scope = diff.schema_scope(layout, options.schema_names(schemas), options.schema_names(excluded))

    def side(spec: options.SideSpec) -> db.Target | diff.LockSide:
        if spec.lock:
            return diff.LockSide(Path(spec.lock))
        return resolve_target(ctx, spec.dsn, None, spec.env)

    left = side(left_spec)
    try:
        right = side(right_spec)
    except BaseException:
        if isinstance(left, db.Target):
            left.dispose()
        raise
    result = diff.run_targets(left, right, layout, settings, scope)
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
    _require_emulation()
    from provision import commands
    from provision import demo as story

    matches = story.run(
        scenario=scenario,
        keep=keep,
        target=lambda state_dir: resolve_target(ctx, None, None, "local", state_dir=state_dir),
        desired=commands.load_desired("local", config=ctx.config),
        echo=click.echo,
    )
    sys.exit(EXIT_OK if matches else EXIT_ERROR)


# What a command that writes says on Ctrl-C (set by `apply` and `move run` as they start).
_ON_INTERRUPT: Callable[[], str] | None = None


def _interruptible(verb: str, unit: str) -> None:
    global _ON_INTERRUPT
    from provision.hints import command

    _ON_INTERRUPT = lambda: (  # noqa: E731  # evaluated at the interrupt, with the target flags
        f"the {unit} that was running, all of it (one transaction); what committed before it "
        f"stays, and `{command(verb)}` again resumes from there"
    )


def main(argv: list[str] | None = None) -> None:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        code = cli.main(args=argv, prog_name="nucleus-provision", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.Abort:
        # Ctrl-C (click turns KeyboardInterrupt into Abort). Every step of apply and every
        # batch of a move is one transaction, so the one that was running is rolled back by
        # the server when our connection closes; the commands that write say so.
        click.echo("aborted", err=True)
        if _ON_INTERRUPT is not None:
            click.echo(f"rolled back: {_ON_INTERRUPT()}", err=True)
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
        if exc.rolled_back:
            click.echo(f"rolled back: {exc.rolled_back}", err=True)
        if exc.hint:
            click.echo(f"hint: {exc.hint}", err=True)
        code = exc.exit_code
    except Exception as exc:  # anything unforeseen is still one line, never a traceback
        if debug:
            raise
        click.secho(
            f"error: unexpected {type(exc).__name__}: {_safe_first_line(exc)}", fg="red", err=True
        )
        click.echo("hint: run again with --debug for the traceback, and report it", err=True)
        code = EXIT_ERROR
    sys.exit(code or 0)


def _safe_first_line(exc: BaseException) -> str:
    """The first line of an unforeseen error, unless it could carry a connection string (and
    so a password): then only that it did."""
    line = (str(exc).strip().splitlines() or [""])[0][:200]
    return "(details withheld: they name a connection)" if "://" in line or "@" in line else line
