"""`local up | status | down`: one local Cloud SQL instance, put together from its parts.

`Server(state_dir).start(scenario)` starts the PostgreSQL process (`postgres`), does what
Cloud SQL does when an instance, its users and its database are created (`cloudsql_api`),
loads the scenario (`scenarios`), then starts the emulated Google side in front of it
(`gcp.emulator`: Admin API and mTLS proxy) and creates the environment's IAM service-account
users on both sides, so that `--env local` reaches this server through the Cloud SQL Python
Connector. `stop` takes it all down and deletes its data. Everything an instance owns lives
in its state directory.

This module orchestrates; the parts never import it.
"""

from __future__ import annotations

import dataclasses
import secrets
from pathlib import Path

from provision.config import Environment, load_environment
from provision.errors import ConfigError, LocalInstanceError
from provision.local import cloudsql_api, postgres, scenarios
from provision.local.gcp import emulator, state
from provision.local.instance import (
    ADMIN_USER,
    BOOTSTRAP_SUPERUSER,
    DATABASE,
    OWNER_USER,
    LocalInstance,
    default_state_dir,
)

LOCAL_ENVIRONMENT = "local"
# Used only when no environments.toml can be found (e.g. `local up` run outside the checkout);
# they repeat environments.toml's `local` environment.
_FALLBACK_IDENTITY = emulator.Identity(
    "local-project", "europe-west1", "nucleus-prototype-db", "POSTGRES_16"
)


def _local_environment() -> Environment | None:
    try:
        return load_environment(LOCAL_ENVIRONMENT)
    except ConfigError as exc:
        if "no environments.toml" not in exc.message:
            raise
        return None


def create_iam_user(instance: LocalInstance, email: str) -> state.IamUser:
    """What `gcloud sql users create EMAIL --type=cloud_iam_service_account` does, plus the
    access token the emulation will accept for that service account. Idempotent."""
    user = state.register_iam_user(instance.state_dir, email)
    cloudsql_api.create_iam_service_account_user(instance, user.db_user, user.password)
    return user


def summary(instance: LocalInstance) -> dict[str, object]:
    """The JSON `local up` and `local status` print."""
    return {
        "scenario": instance.scenario,
        "database": instance.database,
        "host": instance.host,
        "port": instance.port,
        "pid": instance.pid,
        "running": instance.is_running(),
        "admin_dsn": instance.admin_dsn,
        "owner_dsn": instance.owner_dsn,
        "state_dir": instance.state_dir,
        **(instance.extra or {}),
        **({"emulator_running": emulator.running(instance.state_dir)} if instance.extra else {}),
    }


class Server:
    """Start and stop one embedded instance; everything it owns lives in its state directory."""

    def __init__(self, state_dir: Path | None = None) -> None:
        """`state_dir` defaults to `$NUCLEUS_LOCAL_STATE_DIR`, else a per-user directory."""
        self.state_dir = (state_dir or default_state_dir()).expanduser().resolve()

    def start(
        self, scenario: str, *, host: str = "127.0.0.1", environment: Environment | None = None
    ) -> LocalInstance:
        """Create a fresh cluster, start it, set up the Cloud SQL roles and load a scenario,
        then start the emulated Admin API and proxy in front of it.

        `environment` names the emulated instance (project, region, instance, IAM users); by
        default the `local` environment of environments.toml.
        """
        scenarios.get(scenario)  # unknown names fail before anything is created
        existing = LocalInstance.load(self.state_dir)
        if existing is not None and existing.is_running():
            if existing.scenario == scenario:
                if existing.extra and all(emulator.running(self.state_dir).values()):
                    return existing
                # PostgreSQL survived but the emulator did not (or predates it): restart that part.
                emulator.stop(self.state_dir)
                return self._start_google_side(existing, environment)
            raise LocalInstanceError(
                f"an instance with scenario {existing.scenario!r} is already running from {self.state_dir}",
                hint="run `nucleus-provision local down` first, or pass another --state-dir",
            )
        if existing is not None:
            self._cleanup(existing)

        environment = environment or _local_environment()
        # The app login's password stands for the secret the stacks create for it: `apply`
        # (not `local up`) creates the login from it, as on Cloud SQL.
        app = environment.users.app.name if environment and environment.users.app else None
        passwords = {
            user: secrets.token_urlsafe(18)
            for user in (BOOTSTRAP_SUPERUSER, ADMIN_USER, OWNER_USER, *([app] if app else []))
        }
        instance = postgres.start(
            self.state_dir, host=host, scenario=scenario, database=DATABASE, passwords=passwords
        )
        try:
            cloudsql_api.bootstrap(instance)
            scenarios.load(instance, scenario)
            return self._start_google_side(instance, environment)
        except BaseException:
            self._cleanup(instance)
            raise

    def _start_google_side(
        self, instance: LocalInstance, environment: Environment | None
    ) -> LocalInstance:
        environment = environment or _local_environment()
        identity = (
            emulator.Identity(
                environment.project,
                environment.region,
                environment.instance,
                environment.database_version,
            )
            if environment is not None
            else _FALLBACK_IDENTITY
        )
        started = emulator.start(instance, identity)
        instance = dataclasses.replace(instance, extra=started.summary())
        instance.save()
        if environment is not None and environment.iam_auth:
            for email in environment.iam_users:
                create_iam_user(instance, email)
            # What the stacks create from iam_members, through the Cloud SQL API.
            for member in environment.iam_identities:
                if member.kind == "serviceAccount":
                    create_iam_user(instance, member.email)
                else:
                    cloudsql_api.create_iam_role(
                        instance, member.role, group=member.kind == "group"
                    )
        return instance

    def status(self) -> LocalInstance | None:
        return LocalInstance.load(self.state_dir)

    def stop(self) -> bool:
        """Stop the instance and delete its data. Returns False when nothing was running."""
        instance = LocalInstance.load(self.state_dir)
        if instance is None:
            return False
        self._cleanup(instance)
        return True

    def _cleanup(self, instance: LocalInstance) -> None:
        emulator.stop(instance.state_dir)
        postgres.stop(instance)
