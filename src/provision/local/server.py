"""`local up | status | down`: one local Cloud SQL instance, put together from its parts.

`Server(state_dir).start(scenario)` starts the PostgreSQL process (`postgres`), does what
Cloud SQL does when an instance, its users and its database are created (`cloudsql_api`),
loads the scenario (`scenarios`), then starts the emulated Google side in front of it
(`gcp.emulator`: Admin API and mTLS proxy) and creates the environment's IAM service-account
users on both sides, so that `--env local` reaches this server through the Cloud SQL Python
Connector. `stop` takes it all down and deletes its data. Everything an instance owns lives
in its state directory.

The instance's server CA mode (`serverCaMode`: the per-instance CA, Google's CA Service or
the customer's) is the environment's `server_ca_mode` unless `local up --server-ca-mode`
says otherwise (`provision.local.gcp.server_ca`).

This module orchestrates; the parts never import it.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provision.config import Environment, IpType, ServerCaMode, load_environment
from provision.errors import ConfigError, LocalInstanceError
from provision.local import cloudsql_api, postgres, scenarios
from provision.local.gcp import emulator, state
from provision.local.gcp.server_ca import server_ca
from provision.local.instance import (
    ADMIN_USER,
    BOOTSTRAP_SUPERUSER,
    DATABASE,
    OWNER_USER,
    STATE_ENV_VAR,
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


def create_iam_user(instance: LocalInstance, email: str, *, person: bool = False) -> state.IamUser:
    """What `gcloud sql users create EMAIL --type=cloud_iam_service_account` does (with
    `person`, `--type=cloud_iam_user`), plus the access token the emulation will accept for
    that identity. Idempotent."""
    user = state.register_iam_user(instance.state_dir, email)
    cloudsql_api.create_iam_service_account_user(
        instance,
        user.db_user,
        user.password,
        **({"parent": "cloudsqliamuser"} if person else {}),
    )
    return user


def dsn_run(instance: LocalInstance) -> dict[str, object]:
    """What a run with the DSNs above needs besides them (printed by `local up`): the desired
    state is the `local` environment's (`--env local`; prod's needs pgaudit, which this server
    cannot load), and the app login's password, which `apply` needs to create the login, is
    read by `--env local` from this emulation's Secret Manager: the emulation is found through
    NUCLEUS_LOCAL_STATE_DIR. No password of it is printed here."""
    environment = _local_environment()
    app = environment.users.app if environment is not None else None
    return {
        "env": LOCAL_ENVIRONMENT,
        "state_dir_variable": f"{STATE_ENV_VAR}={instance.state_dir}",
        "app_password": (
            f"read by --env local from the emulation's Secret Manager (secret {app.secret}); "
            f"or export {app.password_env}"
            if app is not None and app.secret and app.password_env
            else "none: the local environment declares no app login"
        ),
        "example": f"{STATE_ENV_VAR}={instance.state_dir} nucleus-provision apply --env local "
        '--dsn "$ADMIN_DSN" --owner-dsn "$OWNER_DSN"',
    }


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
        "dsn_run": dsn_run(instance),
        "state_dir": instance.state_dir,
        **(instance.extra or {}),
        **({"emulator_running": emulator.running(instance.state_dir)} if instance.extra else {}),
    }


def _identity(
    environment: Environment | None,
    mode: ServerCaMode | None,
    dns_name: str | None,
    custom_sans: tuple[str, ...],
) -> emulator.Identity:
    """The emulated instance: the environment's, with the server CA options applied."""
    base = (
        emulator.Identity(
            environment.project,
            environment.region,
            environment.instance,
            environment.database_version,
        )
        if environment is not None
        else _FALLBACK_IDENTITY
    )
    env_mode = environment.server_ca_mode if environment is not None else None
    chosen = mode or env_mode or ServerCaMode.GOOGLE_MANAGED_INTERNAL_CA
    pool = environment.server_ca_pool if environment is not None else None
    settings = server_ca(
        chosen,
        project=base.project,
        region=base.region,
        instance=base.instance,
        dns_name=dns_name,
        custom_sans=custom_sans,
        ca_pool=pool,
    )
    policy = environment.password_validation_policy.model_dump() if environment else {}
    return dataclasses.replace(
        base, server_ca=settings, password_policy=policy, **_network(environment)
    )


def _network(environment: Environment | None) -> dict[str, Any]:
    """The instance's addresses as the stacks configure them (stacks/database.py): a public
    IP for ip_type public (`ipv4_enabled`), a private IP where `private_network` is set or
    ip_type is private, PSC for ip_type psc; so a private-IP misconfiguration fails locally."""
    if environment is None:
        return {"ip_types": ("PRIMARY",), "psc_enabled": False}
    kinds = []
    if environment.ip_type is IpType.PUBLIC:
        kinds.append("PRIMARY")
    if environment.ip_type is IpType.PRIVATE or environment.private_network:
        kinds.append("PRIVATE")
    return {"ip_types": tuple(kinds), "psc_enabled": environment.ip_type is IpType.PSC}


def _serves(state_dir: Path, identity: emulator.Identity) -> bool:
    """Whether the running emulation has this server CA (mode and names) and network."""
    settings = identity.server_ca
    current = state.EmulatorState.load(state_dir)
    return current is not None and (
        current.server_ca_mode,
        current.dns_name,
        tuple(current.custom_sans),
        tuple(current.ip_types),
        current.psc_enabled,
    ) == (
        settings.mode.value,
        settings.dns_name,
        settings.custom_sans,
        identity.ip_types,
        identity.psc_enabled,
    )


def _create_secrets(
    instance: LocalInstance, environment: Environment, started: state.EmulatorState
) -> None:
    """What the stacks do in Secret Manager, in the emulation's: a secret per user holding
    its first password (the app secret as JSON naming the current login), through the real
    client, as every later reader and `rotate` will use it. A secret that has versions
    already (an emulator restarted over a running server) is left as it is."""
    from provision.credentials import AppSecret, SecretStore
    from provision.local.plugin import StaticTokenCredentials

    users = environment.users
    payloads = {
        user.secret: instance.passwords[user.name]
        for user in (users.admin, users.owner)
        if user.secret and user.name in instance.passwords
    }
    if users.app is not None and users.app.secret and users.app.name in instance.passwords:
        payloads[users.app.secret] = AppSecret(
            users.app.name, instance.passwords[users.app.name]
        ).payload()
    store = SecretStore(StaticTokenCredentials(started.api_token), endpoint=started.secret_manager)
    try:
        for secret, payload in payloads.items():
            store.create_secret(started.project, secret)
            if not store.has_versions(started.project, secret):
                store.add_version(started.project, secret, payload)
    finally:
        store.close()


IAM_MEMBERS_FILE = "iam-members.json"


@dataclass(frozen=True)
class IamChanges:
    """IAM database users `local up` created and deleted, by database role name."""

    created: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()


def _declared_iam(environment: Environment | None) -> dict[str, dict[str, str]]:
    """The IAM database users the stacks create for `environment` (iam_users, iam_members),
    by role: {"kind": serviceAccount|user|group, "email": ...}."""
    if environment is None or not environment.iam_auth:
        return {}
    declared = {
        email.removesuffix(".gserviceaccount.com"): {"kind": "serviceAccount", "email": email}
        for email in environment.iam_users
    }
    for member in environment.iam_identities:
        declared[member.role] = {"kind": member.kind, "email": member.email}
    return declared


def reconcile_iam(instance: LocalInstance, environment: Environment | None) -> IamChanges:
    """Create the declared IAM database users and delete those `local up` created earlier
    that are no longer declared, as the Admin API does for the stacks' google_sql_user
    resources. Only what `local up` created (kept in `iam-members.json`) is ever deleted:
    an IAM user made another way is left alone. Creation is idempotent, so every run
    re-creates what is declared (and gives service accounts a token again)."""
    path = Path(instance.state_dir) / IAM_MEMBERS_FILE
    try:
        created: dict[str, dict[str, str]] = json.loads(path.read_text())
    except FileNotFoundError:
        created = {}
    declared = _declared_iam(environment)
    new = tuple(sorted(set(declared) - set(created)))
    for role, member in sorted(declared.items()):
        if member["kind"] == "group":
            cloudsql_api.create_iam_role(instance, role, group=True)
        else:
            create_iam_user(instance, member["email"], person=member["kind"] == "user")
    deleted = []
    for role, member in sorted(created.items()):
        if role in declared:
            continue
        # Record each step as it is done: a refusal part-way leaves a true record.
        cloudsql_api.delete_iam_role(instance, role)
        if member["kind"] != "group":
            state.unregister_iam_user(instance.state_dir, member["email"])
        deleted.append(role)
        state.write_private(
            path, json.dumps({r: m for r, m in created.items() if r not in deleted}, indent=2)
        )
    state.write_private(path, json.dumps(declared, indent=2))
    return IamChanges(created=new, deleted=tuple(deleted))


class Server:
    """Start and stop one embedded instance; everything it owns lives in its state directory."""

    def __init__(self, state_dir: Path | None = None) -> None:
        """`state_dir` defaults to `$NUCLEUS_LOCAL_STATE_DIR`, else a per-user directory."""
        self.state_dir = (state_dir or default_state_dir()).expanduser().resolve()
        # What the last `start` did to the instance's IAM database users.
        self.iam_changes = IamChanges()

    def start(
        self,
        scenario: str,
        *,
        host: str = "127.0.0.1",
        environment: Environment | None = None,
        server_ca_mode: ServerCaMode | None = None,
        dns_name: str | None = None,
        custom_sans: tuple[str, ...] = (),
    ) -> LocalInstance:
        """Create a fresh cluster, start it, set up the Cloud SQL roles and load a scenario,
        then start the emulated Admin API and proxy in front of it.

        `environment` names the emulated instance (project, region, instance, server CA mode,
        IAM users); by default the `local` environment of environments.toml. `server_ca_mode`,
        `dns_name` and `custom_sans` override its server CA (ConfigError for a combination
        Cloud SQL does not have, before anything starts).
        """
        scenarios.get(scenario)  # unknown names fail before anything is created
        environment = environment or _local_environment()
        identity = _identity(environment, server_ca_mode, dns_name, custom_sans)
        existing = LocalInstance.load(self.state_dir)
        if existing is not None and existing.is_running():
            if existing.scenario == scenario:
                if (
                    existing.extra
                    and all(emulator.running(self.state_dir).values())
                    and _serves(self.state_dir, identity)
                ):
                    # Running: bring its IAM users to iam_members, as the stacks would
                    # through the Admin API, keeping the data.
                    self.iam_changes = reconcile_iam(existing, environment)
                    return existing
                # PostgreSQL survived but the emulator did not (or predates it, or has another
                # server CA): restart that part.
                emulator.stop(self.state_dir)
                return self._start_google_side(existing, environment, identity)
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
            return self._start_google_side(instance, environment, identity)
        except BaseException:
            self._cleanup(instance)
            raise

    def _start_google_side(
        self, instance: LocalInstance, environment: Environment | None, identity: emulator.Identity
    ) -> LocalInstance:
        started = emulator.start(instance, identity)
        instance = dataclasses.replace(instance, extra=started.summary())
        instance.save()
        if environment is not None:
            _create_secrets(instance, environment, started)
        self.iam_changes = reconcile_iam(instance, environment)
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
