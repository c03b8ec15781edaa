"""The Nucleus database stack: one environment of environments.toml as Terraform resources.

The stack is deliberately thin. Every decision that differs between environments (names,
sizes, availability, protection, whether to adopt existing resources) is a field of the
validated `Environment`; this module only translates it, identically for every
environment, which is what lets staging reproduce prod (see `stacks.parity`).

Resources, in dependency order:
- the Google APIs the stack needs (`google_project_service`, never disabled on destroy:
  other workloads in the project may use them);
- the Cloud SQL instance, TLS only, with backups, point-in-time recovery, a maintenance
  window, Query Insights, and the environment's hardening: the CIS logging flags, pgaudit,
  connector enforcement, SSL mode, server CA mode and password validation policy;
- the database and the two built-in users, `postgres` (admin) and `nucleus` (owner), each
  with its own Secret Manager secret that only the configured identities may read
  (secret-level IAM, never project-wide);
- the app login's secret (the login itself is created in SQL by the hook's `apply`, never
  through the API, which would make it a member of cloudsqlsuperuser);
- IAM database users for the admin's service accounts and for iam_members (service
  accounts, groups, users), which `apply` then makes members of their declared groups;
- the post-provision hook (`stacks.hook`), once all of the above exist;
- outputs naming everything a client needs, never a secret value.

No password is in the synthesized JSON, in the Terraform state or in a plan file
(`stacks.state_secrets` checks every stack in `make test`). A user the stack creates gets a
password from an *ephemeral* `random_password` (Terraform 1.10+: generated during the run,
never stored), handed only to write-only arguments (Terraform 1.11+): `password_wo` of the
user and `secret_data_wo` of its secret's first version, with `*_wo_version = 1`, so
Terraform sets them once, at creation, and never again. Later passwords come from
`nucleus-provision rotate`, through the Admin API and Secret Manager, outside Terraform.
A user the stack adopts (`import_existing`) keeps the password it has: no password argument
at all, and its secret starts empty (README, "First deploy of prod").
"""

from __future__ import annotations

import json
import os

# Must run before the first cdktf_cdktf_provider_google import; see its docstring.
import stacks.bindings  # noqa: F401

# isort: split
from cdktf import (
    DataResource,
    GcsBackend,
    ITerraformDependable,
    LocalExecProvisioner,
    TerraformOutput,
    TerraformStack,
)
from cdktf_cdktf_provider_external.data_external import DataExternal
from cdktf_cdktf_provider_external.provider import ExternalProvider
from cdktf_cdktf_provider_google.project_service import ProjectService
from cdktf_cdktf_provider_google.provider import GoogleProvider
from cdktf_cdktf_provider_google.secret_manager_secret import (
    SecretManagerSecret,
    SecretManagerSecretReplication,
    SecretManagerSecretReplicationUserManaged,
    SecretManagerSecretReplicationUserManagedReplicas,
)
from cdktf_cdktf_provider_google.secret_manager_secret_iam_member import (
    SecretManagerSecretIamMember,
)
from cdktf_cdktf_provider_google.secret_manager_secret_version import SecretManagerSecretVersion
from cdktf_cdktf_provider_google.sql_database import SqlDatabase
from cdktf_cdktf_provider_google.sql_database_instance import (
    SqlDatabaseInstance,
    SqlDatabaseInstanceSettings,
    SqlDatabaseInstanceSettingsBackupConfiguration,
    SqlDatabaseInstanceSettingsBackupConfigurationBackupRetentionSettings,
    SqlDatabaseInstanceSettingsDatabaseFlags,
    SqlDatabaseInstanceSettingsInsightsConfig,
    SqlDatabaseInstanceSettingsIpConfiguration,
    SqlDatabaseInstanceSettingsIpConfigurationAuthorizedNetworks,
    SqlDatabaseInstanceSettingsMaintenanceWindow,
    SqlDatabaseInstanceSettingsPasswordValidationPolicy,
)
from cdktf_cdktf_provider_google.sql_user import SqlUser
from cdktf_cdktf_provider_random.provider import RandomProvider
from constructs import Construct

from provision import passwords
from provision.config import Environment, IpType, UserConfig
from provision.errors import ConfigError
from stacks import hook
from stacks.naming import iam_user_key, iam_user_name, member_key

SECRET_ACCESSOR_ROLE = "roles/secretmanager.secretAccessor"

# The rules of the first passwords are rotate's (provision.passwords): one fact, one place.
PASSWORD_SPECIALS = passwords.SPECIALS
PASSWORD_LENGTH = passwords.PASSWORD_LENGTH
PASSWORD_MIN_PER_CLASS = passwords.MIN_PER_CLASS
# Write-only arguments are sent when their version changes: 1 sets the first password at
# creation and never again (rotation is `nucleus-provision rotate`'s, outside Terraform).
WRITE_ONLY_VERSION = 1
# Write-only arguments need Terraform 1.11, ephemeral resources 1.10 (README, "The stacks").
TERRAFORM_REQUIRED_VERSION = ">= 1.11"
# Set by `cdktf synth --hcl` (and stacks.scan): cdktf 0.21 renders HCL from the same app.
HCL_MODE_VARIABLE = "SYNTH_HCL_OUTPUT"


def password_length(env: Environment) -> int:
    """The length of the generated passwords: PASSWORD_LENGTH or the policy's minimum."""
    return passwords.length_for(env.password_validation_policy)


def app_secret_payload(username: str, password: str) -> str:
    """The app secret's JSON payload as a Terraform interpolation, `password` being a bare
    expression (provision.credentials reads it: `{"username": ..., "password": ...}`, the
    login that is current and its password)."""
    return f'${{jsonencode({{"username" = {json.dumps(username)}, "password" = {password}}})}}'


def required_services(env: Environment) -> tuple[str, ...]:
    """The Google APIs the stack's resources need in the environment's project."""
    services = ["sqladmin.googleapis.com", "secretmanager.googleapis.com"]
    if env.private_network:
        # Private IP goes through private services access (VPC peering).
        services.append("servicenetworking.googleapis.com")
    return tuple(services)


def database_flags(env: Environment) -> list[tuple[str, str]]:
    """The instance's database flags, sorted by name so that the plan is stable."""
    flags = {flag.name: flag.value for flag in env.database_flags}
    flags.update(env.pgaudit.flags())
    if env.iam_auth:
        flags["cloudsql.iam_authentication"] = "on"
    return sorted(flags.items())


def import_ids(env: Environment) -> dict[str, str]:
    """Terraform import ids of the resources `import_existing` adopts, by construct id.

    Formats from the google provider's import documentation: instances
    `projects/{project}/instances/{name}`, databases
    `projects/{project}/instances/{instance}/databases/{name}`, PostgreSQL users
    `{project}/{instance}/{name}`.
    """
    instance = f"projects/{env.project}/instances/{env.instance}"
    return {
        "instance": instance,
        "database": f"{instance}/databases/{env.database}",
        "admin_user": f"{env.project}/{env.instance}/{env.users.admin.name}",
        "owner_user": f"{env.project}/{env.instance}/{env.users.owner.name}",
    }


class NucleusDatabaseStack(TerraformStack):
    """One environment's Cloud SQL instance, database, users, secrets and hook."""

    def __init__(
        self,
        scope: Construct,
        env: Environment,
        *,
        desired_state_sha256: str,
        hook_working_dir: str,
    ) -> None:
        super().__init__(scope, env.name)
        self.env = env
        # Raw blocks cdktf has no binding for, by override path: written into the JSON as
        # overrides, and rendered by `hcl_blocks` for HCL (whose renderer mangles them).
        self.raw_blocks: dict[str, dict[str, object] | str] = {}

        GcsBackend(self, bucket=env.state_bucket, prefix=env.state_prefix)
        self._raw("terraform.required_version", TERRAFORM_REQUIRED_VERSION)
        # Resources name no project of their own: the provider's is the only place it is
        # written, so that a stack cannot half-point at another environment's project.
        GoogleProvider(self, "google", project=env.project, region=env.region)
        # Only for the ephemeral random_password (3.7+): nothing of it reaches the state.
        RandomProvider(self, "random")
        ExternalProvider(self, "external")

        services = {
            name: ProjectService(
                self,
                f"service_{name.split('.')[0]}",
                service=name,
                disable_on_destroy=False,
            )
            for name in required_services(env)
        }

        instance = self._instance(depends_on=[services["sqladmin.googleapis.com"]])
        database = SqlDatabase(
            self,
            "database",
            name=env.database,
            instance=instance.name,
            # charset and collation are left to Cloud SQL's defaults (UTF8, en_US.UTF8):
            # stating them would force a replacement of an adopted database whose values
            # are spelled differently. ABANDON: Terraform never drops the data; removing
            # the resource only forgets it (Cloud SQL refuses the drop anyway while users
            # other than cloudsqlsuperuser own objects in it).
            deletion_policy="ABANDON",
        )

        secrets_api = services["secretmanager.googleapis.com"]
        admin_user, admin_version, admin_secret = self._user(
            "admin", env.users.admin, instance, secrets_api
        )
        owner_user, owner_version, owner_secret = self._user(
            "owner", env.users.owner, instance, secrets_api
        )
        # The app login gets its secret here, but no google_sql_user: a user created through
        # the Cloud SQL API joins cloudsqlsuperuser, the database's owner. The hook's `apply`
        # creates it in SQL from this secret (README, "Privileges as code"). It never exists
        # before the stack, so its secret always gets a first version.
        app_version, app_secret = None, None
        if env.users.app is not None:
            app_secret = self._secret("app", env.users.app, secrets_api)
            app_version = self._first_version(
                "app",
                app_secret,
                app_secret_payload(env.users.app.name, self._ephemeral_password("app")),
            )
        # IAM database users: the admin's service accounts (iam_users) and the identities
        # of iam_members, each of the type its kind says; `apply` makes them group members.
        iam_accounts = dict.fromkeys(env.iam_users, "CLOUD_IAM_SERVICE_ACCOUNT")
        for identity in env.iam_identities:
            iam_accounts.setdefault(identity.email, identity.user_type)
        iam_users = [
            SqlUser(
                self,
                f"iam_user_{iam_user_key(email)}",
                name=iam_user_name(email),
                instance=instance.name,
                type=user_type,
                deletion_policy="ABANDON",
            )
            for email, user_type in iam_accounts.items()
        ]

        if env.import_existing:
            # Production exists already: adopt it with import blocks instead of creating it.
            # The adopted users keep their passwords (`_user` gives them no password argument);
            # see the README, "First deploy of prod".
            ids = import_ids(env)
            instance.import_from(ids["instance"])
            database.import_from(ids["database"])
            admin_user.import_from(ids["admin_user"])
            owner_user.import_from(ids["owner_user"])

        # The hook reads the passwords from Secret Manager, so the secret versions the
        # stack writes must exist before it runs, not only the users.
        hook_needs = [
            instance,
            database,
            admin_user,
            owner_user,
            *[v for v in (admin_version, owner_version, app_version) if v is not None],
            *iam_users,
        ]
        # Terraform sees the database: the live pending plan's digest (stacks.hook). Its read
        # waits for what the hook needs (on a first deploy: until the apply created them).
        live_plan = DataExternal(
            self,
            "live_plan",
            program=hook.digest_program(env.name),
            query={"env": env.name},
            working_dir=hook_working_dir,
            depends_on=hook_needs,
        )
        DataResource(
            self,
            "post_provision",
            triggers_replace={
                "desired_state_sha256": desired_state_sha256,
                # A replaced instance is a new, empty server: run the hook again.
                "instance": instance.id,
                # A live database that drifted from the plan: run the hook to repair it.
                "live_plan_digest": live_plan.result.lookup("digest"),
            },
            depends_on=hook_needs,
            provisioners=[
                LocalExecProvisioner(
                    type="local-exec",
                    command=hook.hook_command(env.name),
                    working_dir=hook_working_dir,
                    environment=hook.hook_environment(),
                )
            ],
        )

        # Names and ids only: a client finds the password through the secret id, with its
        # own permission to read it. Nothing here is sensitive, so nothing is marked so.
        # (No list output for the IAM users: their names follow from the configuration,
        # and a literal list makes cdktf 0.21 call Node's deprecated util.isArray, whose
        # warning would clutter every synth.)
        outputs: dict[str, str] = {
            "connection_name": instance.connection_name,
            "database_name": database.name,
            "admin_user_name": admin_user.name,
            "owner_user_name": owner_user.name,
            "admin_password_secret_id": admin_secret.secret_id,
            "owner_password_secret_id": owner_secret.secret_id,
        }
        if app_secret is not None and env.users.app is not None:
            outputs["app_user_name"] = env.users.app.name
            outputs["app_password_secret_id"] = app_secret.secret_id
        for name, value in outputs.items():
            TerraformOutput(self, name, value=value)

    def _instance(self, depends_on: list[ITerraformDependable]) -> SqlDatabaseInstance:
        env = self.env
        public = env.ip_type is IpType.PUBLIC
        return SqlDatabaseInstance(
            self,
            "instance",
            name=env.instance,
            region=env.region,
            database_version=env.database_version,
            # Terraform-level protection: plan fails before any destroy is attempted.
            deletion_protection=env.deletion_protection,
            depends_on=depends_on,
            settings=SqlDatabaseInstanceSettings(
                edition=env.edition,
                tier=env.tier,
                availability_type=env.availability_type,
                disk_size=env.disk_size_gb,
                disk_type=env.disk_type,
                disk_autoresize=True,
                # API-level protection: also refuses deletes from gcloud and the console.
                deletion_protection_enabled=env.deletion_protection,
                backup_configuration=SqlDatabaseInstanceSettingsBackupConfiguration(
                    enabled=True,
                    start_time=env.backup.start_time,
                    point_in_time_recovery_enabled=env.backup.point_in_time_recovery,
                    transaction_log_retention_days=env.backup.transaction_log_retention_days,
                    backup_retention_settings=SqlDatabaseInstanceSettingsBackupConfigurationBackupRetentionSettings(
                        retained_backups=env.backup.retained_backups,
                        retention_unit="COUNT",
                    ),
                ),
                maintenance_window=SqlDatabaseInstanceSettingsMaintenanceWindow(
                    day=env.maintenance.day,
                    hour=env.maintenance.hour,
                    update_track=env.maintenance.update_track,
                ),
                insights_config=SqlDatabaseInstanceSettingsInsightsConfig(
                    query_insights_enabled=env.query_insights,
                    record_application_tags=env.query_insights,
                    # Client addresses are personal data for some callers; not needed here.
                    record_client_address=False,
                ),
                # REQUIRED refuses direct connections (see environments.toml for why prod
                # does not require it yet).
                connector_enforcement=env.connector_enforcement.value,
                password_validation_policy=self._password_policy(),
                ip_configuration=SqlDatabaseInstanceSettingsIpConfiguration(
                    ipv4_enabled=public,
                    private_network=env.private_network,
                    # TLS only, always (config refuses plain text). The Connector brings its
                    # own client certificate, so it works with both modes.
                    ssl_mode=env.ssl_mode.value,
                    server_ca_mode=env.server_ca_mode.value,
                    server_ca_pool=env.server_ca_pool,
                    authorized_networks=[
                        SqlDatabaseInstanceSettingsIpConfigurationAuthorizedNetworks(
                            name=f"network-{index}", value=cidr.strip()
                        )
                        for index, cidr in enumerate(env.authorized_networks)
                    ],
                ),
                database_flags=[
                    SqlDatabaseInstanceSettingsDatabaseFlags(name=name, value=value)
                    for name, value in database_flags(env)
                ],
            ),
        )

    def _password_policy(self) -> SqlDatabaseInstanceSettingsPasswordValidationPolicy | None:
        policy = self.env.password_validation_policy
        if not policy.enabled:
            return None
        return SqlDatabaseInstanceSettingsPasswordValidationPolicy(
            enable_password_policy=True,
            min_length=policy.min_length,
            complexity=policy.complexity.value,
            reuse_interval=policy.reuse_interval,
            disallow_username_substring=policy.disallow_username_substring,
        )

    def _user(
        self,
        role: str,
        user: UserConfig,
        instance: SqlDatabaseInstance,
        secrets_api: ProjectService,
    ) -> tuple[SqlUser, SecretManagerSecretVersion | None, SecretManagerSecret]:
        """A built-in user and the secret that holds its password.

        A user the stack creates gets a fresh password, set once through write-only arguments;
        an adopted one (`import_existing`) no password argument at all: Terraform then neither
        knows nor changes it, and its secret starts empty."""
        secret = self._secret(role, user, secrets_api)
        written: dict[str, object] = {}
        version = None
        if not self.env.import_existing:
            password = f"${{{self._ephemeral_password(role)}}}"
            written = {"password_wo": password, "password_wo_version": WRITE_ONLY_VERSION}
            version = self._first_version(role, secret, password)
        sql_user = SqlUser(
            self,
            f"{role}_user",
            name=user.name,
            instance=instance.name,
            # `type` is left out on purpose: an adopted built-in user reads back without
            # one, and stating BUILT_IN would plan its replacement. ABANDON: PostgreSQL
            # refuses to drop a role that owns objects, and dropping `nucleus` would be a
            # disaster anyway; removing the resource only forgets it.
            deletion_policy="ABANDON",
            **written,  # type: ignore[arg-type]
        )
        return sql_user, version, secret

    def _ephemeral_password(self, role: str) -> str:
        """An ephemeral `random_password` (random provider 3.7+, Terraform 1.10+): generated
        in each run that needs it and never written to the state or a plan; only write-only
        arguments may take it (stacks.state_secrets checks that). cdktf 0.21 has no binding
        for ephemeral blocks, so it is written as a raw `ephemeral` block of the JSON."""
        name = f"{role}_password"
        self._raw(
            f"ephemeral.random_password.{name}",
            {
                "length": password_length(self.env),
                "special": True,
                "override_special": PASSWORD_SPECIALS,
                # Enough of every class to pass the password validation policy's complexity.
                "min_lower": PASSWORD_MIN_PER_CLASS,
                "min_upper": PASSWORD_MIN_PER_CLASS,
                "min_numeric": PASSWORD_MIN_PER_CLASS,
                "min_special": PASSWORD_MIN_PER_CLASS,
            },
        )
        # A bare expression: callers interpolate it, alone or inside jsonencode().
        return f"ephemeral.random_password.{name}.result"

    def _raw(self, path: str, value: dict[str, object] | str) -> None:
        self.raw_blocks[path] = value
        if os.environ.get(HCL_MODE_VARIABLE, "").lower() not in ("1", "true"):
            self.add_override(path, value)

    def hcl_blocks(self) -> str:
        """The raw blocks as HCL, for `cdktf synth --hcl`: cdktf 0.21's HCL renderer turns a
        `terraform.required_version` override into `0 = "required_version"` (a parse error)
        and drops an `ephemeral` section, so `main.append_hcl_blocks` appends these instead."""
        lines = []
        for path, value in self.raw_blocks.items():
            if path == "terraform.required_version":
                lines.append(f"terraform {{\n  required_version = {json.dumps(value)}\n}}")
            else:
                _, kind, name = path.split(".")
                assert isinstance(value, dict)
                body = "".join(f"  {key} = {json.dumps(item)}\n" for key, item in value.items())
                lines.append(f'ephemeral "{kind}" "{name}" {{\n{body}}}')
        return "\n\n".join(lines) + "\n"

    def _first_version(
        self, role: str, secret: SecretManagerSecret, data: str
    ) -> SecretManagerSecretVersion:
        """The secret's first version, written once through `secret_data_wo`. Later versions
        are added by `nucleus-provision rotate`; Terraform keeps only this one in its state
        (without its data), and rotate never disables or destroys it."""
        return SecretManagerSecretVersion(
            self,
            f"{role}_secret_version",
            secret=secret.id,
            secret_data_wo=data,
            secret_data_wo_version=WRITE_ONLY_VERSION,
        )

    def _secret(
        self, role: str, user: UserConfig, secrets_api: ProjectService
    ) -> SecretManagerSecret:
        """The Secret Manager secret that holds a user's password, readable by its readers."""
        env = self.env
        if user.secret is None:  # stacks.checks reports this with the other problems first
            raise ConfigError(f"environment {env.name!r}: users.{role}.secret is missing")
        secret = SecretManagerSecret(
            self,
            f"{role}_secret",
            secret_id=user.secret,
            # Replicas in the database's own region: the password lives where the data
            # lives, and is as available as the instance it opens.
            replication=SecretManagerSecretReplication(
                user_managed=SecretManagerSecretReplicationUserManaged(
                    replicas=[
                        SecretManagerSecretReplicationUserManagedReplicas(location=env.region)
                    ]
                )
            ),
            deletion_protection=env.deletion_protection,
            depends_on=[secrets_api],
        )
        for member in dict.fromkeys((*env.secret_accessors, *user.secret_accessors)):
            SecretManagerSecretIamMember(
                self,
                f"{role}_secret_reader_{member_key(member)}",
                secret_id=secret.id,
                role=SECRET_ACCESSOR_ROLE,
                member=member,
            )
        return secret
