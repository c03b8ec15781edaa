"""One plain function per CLI verb (as alembic's command.py): `fn(target, desired, ...)`.

They return data and raise ProvisionError; printing and exit codes belong to the CLI. Each
one runs inside `session`, which sees the desired state from the run's login, explains a
missing owner session, and releases the target (and its Connector) however the verb ends.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from provision import credentials, db, executor
from provision.config import load_environment
from provision.desired import DesiredState, desired_state
from provision.errors import LocalInstanceError, PermissionProblem
from provision.findings import Verdict
from provision.lockfile import LOCK_NAME
from provision.lockfile import load as load_lock
from provision.locks import DEFAULT_POLICY, LockPolicy
from provision.migrations import default_directory, load_migrations
from provision.report import Report, build_report

# The environment whose desired state a run checks when it names none (`--dsn` alone): every
# environment declares the same layout, and prod is the one the others reproduce. A shell (or
# a test suite) that works against another environment's server says so once in this variable.
DEFAULT_ENVIRONMENT = "prod"
ENVIRONMENT_ENV_VAR = "NUCLEUS_PROVISION_ENV"


def load_desired(
    env_name: str | None = None,
    *,
    config: str | None = None,
    migrations_dir: Path | None = None,
) -> DesiredState:
    """The desired state of an environment of environments.toml, with the migration files."""
    named = env_name or os.environ.get(ENVIRONMENT_ENV_VAR)
    environment = load_environment(named or DEFAULT_ENVIRONMENT, config)
    directory = migrations_dir or default_directory()
    # IAM identities belong to an environment: with `--dsn` alone they are left alone.
    return desired_state(
        environment,
        load_migrations(directory),
        manage_iam=named is not None,
        expected=load_lock(directory / LOCK_NAME),
    )


def app_password(
    env_name: str | None = None, *, config: str | None = None
) -> Callable[[], str] | None:
    """users.app's password for a direct (`--dsn`) run: its variable, then its secret. An
    environment with a connector plug-in (`--env local --dsn ...`, the emulation reached at its
    DSNs) reads it where the plug-in keeps it, as `--env` alone does; the plug-in is asked only
    when apply must create the login, after the variable (`users.app.password_env`) if it is
    set, and when it runs no instance, the variable is read."""
    named = env_name or os.environ.get(ENVIRONMENT_ENV_VAR)
    environment = load_environment(named or DEFAULT_ENVIRONMENT, config)
    if environment.connector is None:
        return credentials.app_password_source(environment)

    def read() -> str:
        from provision.connector_plugin import overrides_for

        app = environment.users.app
        if app is not None and app.password_env and os.environ.get(app.password_env):
            # Named explicitly for this direct run: the DSN may reach a server the plug-in
            # does not run (a test's, a tunnel's), whose emulation must not be asked.
            plain = credentials.app_password_source(environment)
            assert plain is not None
            return plain()
        try:
            overrides = overrides_for(environment)
        except LocalInstanceError:
            # The DSN reaches a server the plug-in does not run (a test's, a tunnel's): the
            # variable, then Google's Secret Manager, as for an environment without one.
            overrides = None
        source = credentials.app_password_source(environment, overrides=overrides)
        assert source is not None  # users.app is declared: checked below
        return source()

    return read if environment.users.app is not None else None


@contextmanager
def session(target: db.Target, desired: DesiredState) -> Iterator[DesiredState]:
    """The desired state as the run's login sees it (an IAM login is the admin of its run);
    on the way out, a PermissionProblem that needed the missing owner session says where the
    credentials were looked for, and the target is disposed."""
    try:
        try:
            yield desired.with_admin(target.admin_role) if target.admin_role else desired
        except PermissionProblem as exc:
            if target.owner is None and target.owner_unavailable:
                exc.hint = f"{exc.hint}. No owner session: {target.owner_unavailable}"
            raise
    finally:
        target.dispose()


def inspect(
    target: db.Target, desired: DesiredState | None = None, policy: LockPolicy = DEFAULT_POLICY
) -> Report:
    """Read the catalog (read-only) and compare it with the desired state."""
    with session(target, desired or load_desired()) as seen:
        return build_report(seen, executor.snapshot(target, seen, policy=policy))


def plan(
    target: db.Target,
    desired: DesiredState | None = None,
    accept_changed: tuple[str, ...] = (),
    policy: LockPolicy = DEFAULT_POLICY,
) -> executor.Reading:
    """What `apply` would run now, and what it could not fix (read-only)."""
    with session(target, desired or load_desired()) as seen:
        return executor.read(target, seen, accept_changed=accept_changed, policy=policy)


def apply(
    target: db.Target,
    desired: DesiredState | None = None,
    listener: executor.Listener = lambda e: None,
    accept_changed: tuple[str, ...] = (),
    policy: LockPolicy = DEFAULT_POLICY,
    gate: executor.Gate = lambda reading, desired: None,
) -> executor.ApplyResult:
    """Run the plan under the run's locks (`gate` sees it first and may stop it), then check
    the result."""
    with session(target, desired or load_desired()) as seen:
        return executor.apply(
            target, seen, listener=listener, accept_changed=accept_changed, policy=policy, gate=gate
        )


def verify(
    target: db.Target, desired: DesiredState | None = None, policy: LockPolicy = DEFAULT_POLICY
) -> Verdict:
    """Does the live database match the desired state? (read-only)"""
    with session(target, desired or load_desired()) as seen:
        return executor.read(target, seen, assume_owner_session=True, policy=policy).verdict


def digest(
    target: db.Target, desired: DesiredState | None = None, policy: LockPolicy = DEFAULT_POLICY
) -> tuple[str, int]:
    """The live pending plan's digest (`provision.planfile.digest`) and its number of actions
    (read-only). Planned as if the owner session were there, like `verify`: the digest says
    what differs, not which route a run would take, so it does not change with the login."""
    from provision import planfile

    with session(target, desired or load_desired()) as seen:
        reading = executor.read(target, seen, assume_owner_session=True, policy=policy)
        return planfile.digest(reading.plan), len(reading.plan.actions)
