"""Typed environment configuration: one source of truth for the stacks and for `--env NAME`.

`environments.toml` describes each environment (prod, staging, local). An environment may
`extends` another; its table is then merged over the parent's, so staging states only what
differs from prod. Everything is validated by pydantic: a typo in a key or an unknown
value is an error that names the file, the environment and the field.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from provision.errors import ConfigError

CONFIG_ENV_VAR = "NUCLEUS_PROVISION_CONFIG"
CONFIG_FILE_NAME = "environments.toml"


class IpType(StrEnum):
    PUBLIC = "public"
    PRIVATE = "private"
    PSC = "psc"


class _Model(BaseModel):
    # Attribute docstrings describe the fields: provision.config_reference reads them from
    # this file's source to generate docs/environments.md. Not pydantic's
    # use_attribute_docstrings: that parses the source of every model at each import, about
    # 40 ms of every run (a no-op apply included) for text only the reference shows.
    model_config = ConfigDict(extra="forbid", frozen=True)


# IAM member prefixes that name one identity or a bounded group. `allUsers` and
# `allAuthenticatedUsers` are refused: a password secret must never be public.
_MEMBER_PREFIXES = ("serviceAccount:", "user:", "group:", "domain:", "principal:", "principalSet:")
# Secret Manager secret ids: letters, digits, '-' and '_', at most 255 characters.
_SECRET_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")


def _check_members(value: tuple[str, ...]) -> tuple[str, ...]:
    for member in value:
        if not member.startswith(_MEMBER_PREFIXES) or member.endswith(":"):
            raise ValueError(
                f"{member!r} is not an IAM member; write e.g. "
                "'serviceAccount:NAME@PROJECT.iam.gserviceaccount.com' or 'user:EMAIL' "
                "(allUsers and allAuthenticatedUsers are refused)"
            )
    if len(set(value)) != len(value):
        raise ValueError("lists the same member twice")
    return value


# PostgreSQL keeps identifiers to NAMEDATALEN - 1 = 63 bytes and silently truncates longer
# ones, so a longer declared name never matches what the catalog holds (apply would run for
# ever). `public`, `none` and the current_* keywords cannot name a role; `pg_` is reserved by
# PostgreSQL and `cloudsql` by Cloud SQL (its own roles, which nothing here may change).
_MAX_NAME_BYTES = 63
_RESERVED_NAMES = frozenset({"public", "none", "current_user", "session_user", "current_role"})


def role_name_problem(name: str) -> str | None:
    """Why `name` cannot be a role this project declares, or None."""
    if not name.strip():
        return "is empty"
    if len(name.encode()) > _MAX_NAME_BYTES:
        return (
            f"is {len(name.encode())} bytes long; PostgreSQL truncates names to "
            f"{_MAX_NAME_BYTES} bytes, so the role would never match it"
        )
    if name.lower() in _RESERVED_NAMES:
        return "is a reserved word PostgreSQL does not accept as a role name"
    if name.lower().startswith("pg_"):
        return "starts with pg_, which PostgreSQL reserves for its own roles"
    if name.lower().startswith("cloudsql"):
        return "starts with cloudsql, which Cloud SQL reserves for its own roles"
    return None


def _role_name(value: str, what: str = "name") -> str:
    problem = role_name_problem(value)
    if problem:
        raise ValueError(f"{what} {value!r} {problem}; choose another name")
    return value


class UserConfig(_Model):
    """A built-in database user and where its password lives."""

    name: str
    """the database role name"""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _role_name(value)

    member_of: tuple[str, ...] = Field(
        default=(), description="declared groups (privileges.toml) the user is a member of"
    )
    secret: str | None = Field(
        default=None, description="Secret Manager secret id holding the password"
    )
    password_env: str | None = Field(
        default=None, description="environment variable holding the password"
    )
    secret_accessors: tuple[str, ...] = Field(
        default=(),
        description="members that may read this user's secret, in addition to the environment's secret_accessors",
    )

    @field_validator("secret")
    @classmethod
    def _secret_id(cls, value: str | None) -> str | None:
        if value is not None and not _SECRET_ID.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a Secret Manager secret id (letters, digits, '-', '_')"
            )
        return value

    @field_validator("secret_accessors")
    @classmethod
    def _members(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _check_members(value)


class AppLoginConfig(UserConfig):
    """The least-privilege password login services use where they cannot use IAM. Created in
    the database by `apply` (as users.admin, from the password in its secret), never through
    the Cloud SQL API, which would make it a member of cloudsqlsuperuser, the database's
    owner (docs/design.md, "Privileges as code").

    Two logins alternate, both members of the same groups (`name` and `alternate`): `rotate`
    gives the one that is not current a new password, then points the secret at it, so that
    connections made with the previous password keep working until the next rotation."""

    alternate: str | None = Field(
        default=None,
        description="the second login that alternates with `name` at each rotation "
        "(default: `name` followed by `_b`)",
    )

    @model_validator(mode="after")
    def _alternate_differs(self) -> AppLoginConfig:
        if self.alternate_name == self.name:
            raise ValueError("alternate must be another login than name (they alternate)")
        return self

    @property
    def alternate_name(self) -> str:
        return self.alternate or f"{self.name}_b"

    @property
    def logins(self) -> tuple[str, str]:
        """Both alternating logins, `name` first."""
        return (self.name, self.alternate_name)


class Users(_Model):
    admin: UserConfig = UserConfig(name="postgres")
    """the admin session's user: `apply` runs as it (Cloud SQL's `postgres` by default)"""
    owner: UserConfig = UserConfig(name="nucleus")
    """the user that owns every object of the new layout and runs the migrations"""
    app: AppLoginConfig | None = None
    """the services' password login, created by `apply` (none by default)"""


class SchemaPrivilege(StrEnum):
    USAGE = "USAGE"
    CREATE = "CREATE"


class TablePrivilege(StrEnum):
    SELECT = "SELECT"
    INSERT = "INSERT"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    TRUNCATE = "TRUNCATE"
    REFERENCES = "REFERENCES"
    TRIGGER = "TRIGGER"


class SequencePrivilege(StrEnum):
    USAGE = "USAGE"
    SELECT = "SELECT"
    UPDATE = "UPDATE"


class GroupConfig(_Model):
    """A NOLOGIN group role and what its members may do in every schema of the new layout
    (tables and sequences: existing ones, and through default privileges every later one)."""

    description: str = ""
    """what the group is for (a comment on the role)"""
    schemas: tuple[SchemaPrivilege, ...] = (SchemaPrivilege.USAGE,)
    """privileges on every schema of the new layout"""
    tables: tuple[TablePrivilege, ...] = ()
    """privileges on every table of the new layout, existing and later (default privileges)"""
    sequences: tuple[SequencePrivilege, ...] = ()
    """privileges on every sequence of the new layout, existing and later"""


_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_$]{0,62}")


class LegacyConfig(_Model):
    """The legacy layout the live services still use: protected (apply never alters these
    schemas or their rows, and never revokes their grants: what only a person may change is
    reported with its remedy), and what replaces each old name, for the reports."""

    schemas: tuple[str, ...] = ()
    """the legacy schemas, protected"""
    replaced_by: dict[str, str] = Field(default_factory=dict)
    """an old schema or `schema.table` -> the new one the code uses instead"""

    @field_validator("schemas")
    @classmethod
    def _schema_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _SCHEMA_NAME.fullmatch(name) or name.startswith("pg_"):
                raise ValueError(f"legacy schema {name!r} is not a plain lower-case schema name")
        return value

    @model_validator(mode="after")
    def _replaced_names_are_legacy(self) -> LegacyConfig:
        for old, new in self.replaced_by.items():
            if old.split(".", 1)[0] not in self.schemas:
                raise ValueError(f"replaced_by names {old!r}, which is not in a legacy schema")
            if old.count(".") != new.count(".") or new.split(".", 1)[0] in self.schemas:
                raise ValueError(
                    f"replaced_by {old!r} = {new!r}: a schema maps to a new schema, a "
                    "schema.table to a new schema.table"
                )
        return self


class PrivilegesConfig(_Model):
    """The declaration of privileges.toml: the same in every environment."""

    groups: dict[str, GroupConfig] = Field(default_factory=dict)
    legacy: LegacyConfig = Field(default_factory=LegacyConfig)

    @field_validator("groups")
    @classmethod
    def _group_names(cls, value: dict[str, GroupConfig]) -> dict[str, GroupConfig]:
        for name in value:
            _role_name(name, "group")
        return value


# IAM identities as IAM policy members write them: the kind decides the Cloud SQL user type.
_IAM_MEMBER = re.compile(r"(serviceAccount|group|user):([^@\s]+@[A-Za-z0-9.-]+)")


class BackupConfig(_Model):
    start_time: str = "02:00"
    """UTC start of the daily backup window, HH:MM"""
    point_in_time_recovery: bool = True
    """keep transaction logs for point-in-time recovery"""
    transaction_log_retention_days: int = Field(default=7, ge=1, le=35)
    """days of transaction logs kept (1 to 35)"""
    retained_backups: int = Field(default=14, ge=1, le=365)
    """automated backups kept (1 to 365)"""

    @field_validator("start_time")
    @classmethod
    def _hh_mm(cls, value: str) -> str:
        if not re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9]", value):
            raise ValueError(f"must be a UTC time written HH:MM, got {value!r}")
        return value


class MaintenanceConfig(_Model):
    day: int = Field(default=7, ge=1, le=7)
    """maintenance window day, 1 (Monday) to 7 (Sunday)"""
    hour: int = Field(default=3, ge=0, le=23)
    """maintenance window hour, UTC (0 to 23)"""
    update_track: str = "stable"
    """maintenance timing: canary, stable or week5"""

    @field_validator("update_track")
    @classmethod
    def _known_track(cls, value: str) -> str:
        return _one_of(value, ("canary", "stable", "week5"))


class DatabaseFlag(_Model):
    """A Cloud SQL database flag (`settings.database_flags`), e.g. log_min_duration_statement."""

    name: str
    """the flag's name"""
    value: str
    """its value, as text"""


# -- hardening (CIS Cloud SQL for PostgreSQL; see docs/terraform.md, "Hardening") -----------------


class ConnectorEnforcement(StrEnum):
    """`settings.connector_enforcement`: REQUIRED refuses every client that is not a Cloud
    SQL Connector or the Auth Proxy (direct connections by IP, even over TLS)."""

    NOT_REQUIRED = "NOT_REQUIRED"
    REQUIRED = "REQUIRED"


class SslMode(StrEnum):
    """`ip_configuration.ssl_mode`. ALLOW_UNENCRYPTED_AND_ENCRYPTED is left out on purpose:
    plain-text connections are never acceptable here."""

    ENCRYPTED_ONLY = "ENCRYPTED_ONLY"
    TRUSTED_CLIENT_CERTIFICATE_REQUIRED = "TRUSTED_CLIENT_CERTIFICATE_REQUIRED"


class ServerCaMode(StrEnum):
    """`ip_configuration.server_ca_mode`: who signs the server certificate."""

    GOOGLE_MANAGED_INTERNAL_CA = "GOOGLE_MANAGED_INTERNAL_CA"
    GOOGLE_MANAGED_CAS_CA = "GOOGLE_MANAGED_CAS_CA"
    CUSTOMER_MANAGED_CAS_CA = "CUSTOMER_MANAGED_CAS_CA"


class PasswordComplexity(StrEnum):
    # COMPLEXITY_DEFAULT: at least one lower-case letter, upper-case letter, digit and symbol.
    COMPLEXITY_DEFAULT = "COMPLEXITY_DEFAULT"
    COMPLEXITY_UNSPECIFIED = "COMPLEXITY_UNSPECIFIED"


class PasswordValidationPolicy(_Model):
    """`settings.password_validation_policy`: what Cloud SQL accepts as a built-in user's
    password, whoever sets it (Terraform, the console, `ALTER ROLE`)."""

    enabled: bool = False
    """switch the policy on"""
    min_length: int = Field(default=16, ge=1)
    """the shortest password accepted"""
    complexity: PasswordComplexity = PasswordComplexity.COMPLEXITY_DEFAULT
    """COMPLEXITY_DEFAULT: a lower-case and an upper-case letter, a digit and a symbol"""
    reuse_interval: int = Field(
        default=0, ge=0, description="how many previous passwords may not be reused"
    )
    disallow_username_substring: bool = True
    """refuse a password containing the user's name"""


class PgauditClass(StrEnum):
    """The statement classes `pgaudit.log` accepts."""

    READ = "read"
    WRITE = "write"
    FUNCTION = "function"
    ROLE = "role"
    DDL = "ddl"
    MISC = "misc"
    MISC_SET = "misc_set"
    ALL = "all"


class PgauditConfig(_Model):
    """pgaudit: the `cloudsql.enable_pgaudit` and `pgaudit.log` flags, and the extension that
    `apply` creates where they are on."""

    enabled: bool = False
    """load pgaudit (cloudsql.enable_pgaudit) and have `apply` create the extension"""
    log: tuple[PgauditClass, ...] = (PgauditClass.DDL, PgauditClass.ROLE)
    """statement classes pgaudit logs (pgaudit.log)"""

    @field_validator("log")
    @classmethod
    def _classes(cls, value: tuple[PgauditClass, ...]) -> tuple[PgauditClass, ...]:
        if not value:
            raise ValueError("names no statement class; write e.g. ['ddl', 'role']")
        if len(set(value)) != len(value):
            raise ValueError("names the same statement class twice")
        return value

    def flags(self) -> dict[str, str]:
        """The database flags that switch pgaudit on; none when it is off."""
        if not self.enabled:
            return {}
        return {"cloudsql.enable_pgaudit": "on", "pgaudit.log": ",".join(self.log)}


# Values PostgreSQL accepts for the logging flags the CIS benchmark names, so that a typo
# fails here instead of at deploy time. Flags not listed are passed through unchecked.
_ON_OFF = ("on", "off")
_LEVELS = (
    "debug5", "debug4", "debug3", "debug2", "debug1",
    "info", "notice", "warning", "error", "log", "fatal", "panic",
)  # fmt: skip
_FLAG_VALUES: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(
        (
            "log_checkpoints",
            "log_connections",
            "log_disconnections",
            "log_duration",
            "log_executor_stats",
            "log_hostname",
            "log_lock_waits",
            "log_parser_stats",
            "log_planner_stats",
            "log_statement_stats",
        ),
        _ON_OFF,
    ),
    "log_statement": ("none", "ddl", "mod", "all"),
    "log_error_verbosity": ("terse", "default", "verbose"),
    "log_min_error_statement": _LEVELS,
    "log_min_messages": _LEVELS,
}
# Integer flags: -1 switches them off, otherwise a threshold (kB or ms).
_INTEGER_FLAGS = ("log_temp_files", "log_min_duration_statement")


def _one_of(value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"must be one of {', '.join(allowed)}; got {value!r}")
    return value


@dataclass(frozen=True)
class IamIdentity:
    """An IAM identity with a Cloud SQL IAM database user, and the group it joins."""

    kind: str  # serviceAccount | group | user
    email: str
    group: str

    @property
    def user_type(self) -> str:
        """The Cloud SQL user type (google_sql_user.type)."""
        return {
            "serviceAccount": "CLOUD_IAM_SERVICE_ACCOUNT",
            "group": "CLOUD_IAM_GROUP",
            "user": "CLOUD_IAM_USER",
        }[self.kind]

    @property
    def role(self) -> str:
        """The database role: a service account's email less `.gserviceaccount.com`; the
        email itself for users and groups."""
        return self.email.removesuffix(".gserviceaccount.com")


class Environment(_Model):
    """One environment: a Cloud SQL instance, its database and its users."""

    name: str
    """the environment's name: the key of its [environments.NAME] table (not written as a key)"""
    project: str
    """Google Cloud project id"""
    region: str
    """region of the Cloud SQL instance"""
    instance: str
    """Cloud SQL instance name"""
    database: str = "nucleus_v12"
    """the database the tool converges"""
    database_version: str = "POSTGRES_16"
    """Cloud SQL database version"""
    edition: str = "ENTERPRISE"
    """Cloud SQL edition: ENTERPRISE or ENTERPRISE_PLUS"""
    tier: str = "db-custom-2-7680"
    """machine tier of the instance"""
    availability_type: str = "ZONAL"
    """ZONAL, or REGIONAL for high availability"""
    disk_size_gb: int = Field(default=20, ge=10)
    """initial disk size in GB (at least 10; the disk grows automatically)"""
    disk_type: str = "PD_SSD"
    """PD_SSD or PD_HDD"""
    deletion_protection: bool = True
    """refuse to delete the instance (Terraform and Cloud SQL)"""
    import_existing: bool = False
    """adopt an instance, database and users that already exist (Terraform import blocks) instead of creating them"""
    ip_type: IpType = IpType.PUBLIC
    """the address the Connector dials and the stacks give the instance: public, private (needs private_network) or psc"""
    private_network: str | None = None
    """VPC network (projects/P/global/networks/N) for a private IP"""
    authorized_networks: tuple[str, ...] = ()
    """CIDR ranges allowed to reach a public IP directly (the Connector needs none)"""
    iam_auth: bool = False
    """IAM database authentication (the cloudsql.iam_authentication flag)"""
    iam_users: tuple[str, ...] = Field(
        default=(), description="service-account emails given IAM database users"
    )
    secret_accessors: tuple[str, ...] = Field(
        default=(), description="members that may read the password secrets"
    )
    iam_login: str | None = Field(
        default=None,
        description="service account (one of iam_users) the admin session logs in as with IAM "
        "database authentication, instead of users.admin with its password",
    )
    iam_members: dict[str, str] = Field(
        default_factory=dict,
        description="IAM identities given Cloud SQL IAM database users by the stacks "
        "('serviceAccount:EMAIL', 'group:EMAIL', 'user:EMAIL') and the declared group each "
        "is made a member of",
    )
    privileges: PrivilegesConfig = Field(
        default_factory=PrivilegesConfig,
        description="the privileges declaration; in environments.toml, the path of its file",
    )
    lazy_refresh: bool = False
    """the Connector's lazy refresh strategy (for serverless runtimes) instead of background refresh"""
    connector: str | None = Field(
        default=None,
        description="a connector plug-in (entry point of group nucleus_provision.connectors) "
        "that supplies the Admin API endpoint, Google credentials and passwords instead of "
        "Google; `local` is the local Cloud SQL emulation (`local up`)",
    )
    state_bucket: str = "nucleus-terraform-state"
    """GCS bucket of the Terraform state (create it first: docs/deploying.md)"""
    state_prefix: str = ""
    """path prefix of this environment's state in the bucket"""
    backup: BackupConfig = BackupConfig()
    """automated backups ([environments.NAME.backup])"""
    maintenance: MaintenanceConfig = MaintenanceConfig()
    """maintenance window ([environments.NAME.maintenance])"""
    users: Users = Users()
    """the built-in users ([environments.NAME.users.admin|owner|app])"""
    query_insights: bool = Field(
        default=True, description="Cloud SQL Query Insights on the instance"
    )
    database_flags: tuple[DatabaseFlag, ...] = Field(
        default=(),
        description="extra database flags; cloudsql.iam_authentication is set from iam_auth",
    )

    connector_enforcement: ConnectorEnforcement = Field(
        default=ConnectorEnforcement.NOT_REQUIRED,
        description="REQUIRED refuses clients that are not a Connector or the Auth Proxy",
    )
    ssl_mode: SslMode = SslMode.ENCRYPTED_ONLY
    """ENCRYPTED_ONLY, or TRUSTED_CLIENT_CERTIFICATE_REQUIRED"""
    server_ca_mode: ServerCaMode = ServerCaMode.GOOGLE_MANAGED_INTERNAL_CA
    """who signs the server certificate: GOOGLE_MANAGED_INTERNAL_CA, GOOGLE_MANAGED_CAS_CA or CUSTOMER_MANAGED_CAS_CA"""
    server_ca_pool: str | None = Field(
        default=None,
        description="CA Service pool (projects/P/locations/L/caPools/NAME) that signs the "
        "server certificate; only with server_ca_mode = CUSTOMER_MANAGED_CAS_CA",
    )
    password_validation_policy: PasswordValidationPolicy = PasswordValidationPolicy()
    """what Cloud SQL accepts as a built-in user's password"""
    pgaudit: PgauditConfig = PgauditConfig()
    """the pgaudit extension and its flags ([environments.NAME.pgaudit])"""

    @field_validator("edition")
    @classmethod
    def _known_edition(cls, value: str) -> str:
        return _one_of(value, ("ENTERPRISE", "ENTERPRISE_PLUS"))

    @field_validator("availability_type")
    @classmethod
    def _known_availability(cls, value: str) -> str:
        return _one_of(value, ("ZONAL", "REGIONAL"))

    @field_validator("disk_type")
    @classmethod
    def _known_disk_type(cls, value: str) -> str:
        return _one_of(value, ("PD_SSD", "PD_HDD"))

    @field_validator("private_network")
    @classmethod
    def _network_path(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"projects/[^/]+/global/networks/[^/]+", value):
            raise ValueError(
                f"must be a VPC path like projects/PROJECT/global/networks/NAME, got {value!r}"
            )
        return value

    @field_validator("iam_users")
    @classmethod
    def _service_accounts(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        # iam_auth is declared before iam_users, so it is already validated here.
        if value and not info.data.get("iam_auth"):
            raise ValueError("needs iam_auth = true (the cloudsql.iam_authentication flag)")
        for email in value:
            if not re.fullmatch(r"[a-z][a-z0-9-]*@[a-z0-9.-]+\.gserviceaccount\.com", email):
                raise ValueError(
                    f"{email!r} is not a service-account email (NAME@PROJECT.iam.gserviceaccount.com)"
                )
        if len(set(value)) != len(value):
            raise ValueError("lists the same service account twice")
        return value

    @field_validator("secret_accessors")
    @classmethod
    def _members(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _check_members(value)

    @field_validator("database_flags")
    @classmethod
    def _flags(cls, value: tuple[DatabaseFlag, ...]) -> tuple[DatabaseFlag, ...]:
        names = [flag.name for flag in value]
        if len(set(names)) != len(names):
            raise ValueError("names the same flag twice")
        if "cloudsql.iam_authentication" in names:
            raise ValueError("cloudsql.iam_authentication is set from iam_auth; remove it here")
        if "cloudsql.enable_pgvector" in names:
            # An often-copied flag that does not exist; Cloud SQL rejects it (see docs/cloudsql.md).
            raise ValueError("cloudsql.enable_pgvector does not exist; pgvector needs no flag")
        return value

    @field_validator("database_flags", mode="before")
    @classmethod
    def _flags_table(cls, value: Any) -> Any:
        # environments.toml writes the flags as a table (`log_connections = "on"`), so that an
        # environment that extends another inherits them and may override one by name; TOML
        # booleans and integers become the strings Cloud SQL expects.
        if not isinstance(value, dict):
            return value

        def text(flag: Any) -> Any:
            if isinstance(flag, bool):
                return "on" if flag else "off"
            return str(flag) if isinstance(flag, int) else flag

        return tuple({"name": name, "value": text(flag)} for name, flag in value.items())

    @field_validator("database_flags")
    @classmethod
    def _flag_values(cls, value: tuple[DatabaseFlag, ...]) -> tuple[DatabaseFlag, ...]:
        for flag in value:
            if flag.name == "cloudsql.enable_pgaudit" or flag.name.startswith("pgaudit."):
                raise ValueError(f"{flag.name} is set from the [pgaudit] table; remove it here")
            allowed = _FLAG_VALUES.get(flag.name)
            if allowed is not None and flag.value not in allowed:
                raise ValueError(
                    f"{flag.name} must be one of {', '.join(allowed)}; got {flag.value!r}"
                )
            if flag.name in _INTEGER_FLAGS and not re.fullmatch(r"-1|0|[1-9][0-9]*", flag.value):
                raise ValueError(
                    f"{flag.name} must be -1 (off) or a non-negative integer; got {flag.value!r}"
                )
        return value

    @field_validator("server_ca_pool")
    @classmethod
    def _ca_pool_path(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(
            r"projects/[^/]+/locations/[^/]+/caPools/[^/]+", value
        ):
            raise ValueError(
                "must be a CA pool path like projects/PROJECT/locations/REGION/caPools/NAME, "
                f"got {value!r}"
            )
        return value

    @field_validator("database_version")
    @classmethod
    def _postgres_only(cls, value: str) -> str:
        if not value.startswith("POSTGRES_"):
            raise ValueError(f"must be a PostgreSQL version such as POSTGRES_16, got {value!r}")
        return value

    @field_validator("authorized_networks")
    @classmethod
    def _no_open_network(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(cidr.strip() in ("0.0.0.0/0", "::/0") for cidr in value):
            raise ValueError(
                "0.0.0.0/0 would open the instance to the internet; use the Connector instead"
            )
        for cidr in value:
            try:
                network = ipaddress.ip_network(cidr.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not a CIDR range such as 203.0.113.0/24") from None
            # Catch the disguised forms too (0.0.0.0/00, ::0/0, 0/0 written otherwise) and
            # ranges so wide they amount to the internet.
            if network.prefixlen < 8:
                raise ValueError(
                    f"{cidr!r} would open the instance to a large part of the internet "
                    "(like 0.0.0.0/0); use the Connector instead"
                )
        return value

    @model_validator(mode="after")
    def _iam_login_is_an_iam_user(self) -> Environment:
        # An IAM login only works for a service account that has an IAM database user on an
        # instance with the cloudsql.iam_authentication flag: both come from this file.
        if self.iam_login is not None and self.iam_login not in self.iam_users:
            raise ValueError(
                f"iam_login {self.iam_login!r} needs iam_auth = true and the same email in iam_users"
            )
        return self

    @model_validator(mode="after")
    def _ca_pool_goes_with_customer_managed_ca(self) -> Environment:
        customer_managed = self.server_ca_mode is ServerCaMode.CUSTOMER_MANAGED_CAS_CA
        if customer_managed and self.server_ca_pool is None:
            raise ValueError(
                "server_ca_mode = 'CUSTOMER_MANAGED_CAS_CA' needs server_ca_pool "
                "(projects/PROJECT/locations/REGION/caPools/NAME)"
            )
        if not customer_managed and self.server_ca_pool is not None:
            raise ValueError(
                "server_ca_pool only applies to server_ca_mode = 'CUSTOMER_MANAGED_CAS_CA'"
            )
        return self

    @property
    def required_extensions(self) -> tuple[str, ...]:
        """The extensions `apply` must create in the database: pgvector always, pgaudit where
        the environment switches it on (`[pgaudit] enabled`, the cloudsql.enable_pgaudit flag)."""
        return ("vector", "pgaudit") if self.pgaudit.enabled else ("vector",)

    @model_validator(mode="after")
    def _privileges_refer_to_declared_groups(self) -> Environment:
        groups = set(self.privileges.groups)
        users = {self.users.admin.name, self.users.owner.name}
        if self.users.app is not None:
            users.add(self.users.app.name)
        for role in ("admin", "owner", "app"):
            user = getattr(self.users, role)
            unknown = set(user.member_of) - groups if user is not None else set()
            if unknown:
                raise ValueError(
                    f"users.{role}.member_of names undeclared group(s) "
                    f"{', '.join(sorted(unknown))}; declared in the privileges file: "
                    f"{', '.join(sorted(groups)) or 'none'}"
                )
        if self.users.owner.member_of:
            raise ValueError("users.owner owns the new layout: it needs no group (member_of)")
        # users.admin == users.owner is refused by the stacks' checks (stacks/checks.py).
        app = self.users.app
        if app is not None and app.name in (self.users.admin.name, self.users.owner.name):
            role = "admin" if app.name == self.users.admin.name else "owner"
            raise ValueError(
                f"users.app.name {app.name!r} is users.{role}: the app login must be a role of "
                "its own with only its groups' privileges (e.g. nucleus_app)"
            )
        clash = groups & users
        if clash:
            raise ValueError(f"{', '.join(sorted(clash))} is both a user and a group")
        if self.iam_members and not self.iam_auth:
            raise ValueError(
                "iam_members needs iam_auth = true (the cloudsql.iam_authentication flag)"
            )
        for member, group in self.iam_members.items():
            match = _IAM_MEMBER.fullmatch(member)
            if not match:
                raise ValueError(
                    f"iam_members: {member!r} is not an IAM identity; write "
                    "'serviceAccount:NAME@PROJECT.iam.gserviceaccount.com', 'group:EMAIL' or "
                    "'user:EMAIL'"
                )
            role = IamIdentity(match.group(1), match.group(2), group).role
            problem = role_name_problem(role)
            if problem:
                raise ValueError(
                    f"iam_members: the database role of {member!r}, {role!r}, {problem}"
                )
            if group not in groups:
                raise ValueError(
                    f"iam_members: {member!r} joins undeclared group {group!r}; declared: "
                    f"{', '.join(sorted(groups)) or 'none'}"
                )
        return self

    @property
    def iam_identities(self) -> tuple[IamIdentity, ...]:
        """The IAM identities of iam_members, with the database role Cloud SQL names each."""
        found = []
        for member, group in sorted(self.iam_members.items()):
            match = _IAM_MEMBER.fullmatch(member)
            assert match is not None  # validated above
            kind, email = match.groups()
            found.append(IamIdentity(kind, email, group))
        return tuple(found)

    @property
    def connection_name(self) -> str:
        """The Cloud SQL instance connection name, `project:region:instance`."""
        return f"{self.project}:{self.region}:{self.instance}"


def find_config_file(path: str | os.PathLike[str] | None = None) -> Path:
    """Locate environments.toml: the given path, $NUCLEUS_PROVISION_CONFIG, or the nearest
    environments.toml in the working directory or one of its parents."""
    if path is None:
        path = os.environ.get(CONFIG_ENV_VAR) or None
    if path is not None:
        candidate = Path(path)
        if not candidate.is_file():
            raise ConfigError(
                f"configuration file {candidate} does not exist",
                hint=f"pass --config PATH or set {CONFIG_ENV_VAR} to the project's {CONFIG_FILE_NAME}",
            )
        return candidate
    here = Path.cwd().resolve()
    for directory in (here, *here.parents):
        candidate = directory / CONFIG_FILE_NAME
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"no {CONFIG_FILE_NAME} in {here} or any parent directory",
        hint=f"run from the project checkout, pass --config PATH, or set {CONFIG_ENV_VAR}",
    )


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _resolve(
    name: str, tables: dict[str, dict[str, Any]], seen: tuple[str, ...] = ()
) -> dict[str, Any]:
    if name in seen:
        raise ConfigError(
            f"environment {name!r} extends itself through {' -> '.join(seen + (name,))}"
        )
    table = dict(tables[name])
    parent = table.pop("extends", None)
    if parent is None:
        return table
    if parent not in tables:
        raise ConfigError(
            f"environment {name!r} extends unknown environment {parent!r}",
            hint=f"known environments: {', '.join(sorted(tables))}",
        )
    return _merge(_resolve(parent, tables, seen + (name,)), table)


def load_environments(path: str | os.PathLike[str] | None = None) -> dict[str, Environment]:
    """Read and validate every environment of the configuration file."""
    config_file = find_config_file(path)
    try:
        data = tomllib.loads(config_file.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config_file} is not valid TOML: {exc}") from None
    tables = data.get("environments")
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"{config_file} has no [environments.NAME] tables")
    for name, table in tables.items():
        # Shapes pydantic never sees: an environment that is not a table, a non-text parent.
        if not isinstance(table, dict):
            raise ConfigError(
                f"{config_file}: environments.{name} is not a table",
                hint=f"write it as a [environments.{name}] section with key = value lines",
            )
        if "name" in table:
            raise ConfigError(
                f"{config_file}: environments.{name}.name is not a setting: an environment's "
                "name is its table's name",
                hint=f"remove the name key from [environments.{name}]",
            )
        if "extends" in table and not isinstance(table["extends"], str):
            raise ConfigError(
                f"{config_file}: environments.{name}.extends must name an environment",
                hint=f'e.g. extends = "prod"; known: {", ".join(sorted(tables))}',
            )
    environments: dict[str, Environment] = {}
    declarations: dict[Path, dict[str, Any]] = {}
    for name in tables:
        try:
            resolved = _resolve(name, tables)
            if isinstance(resolved.get("privileges"), str):
                declaration = (config_file.parent / resolved["privileges"]).resolve()
                if declaration not in declarations:
                    declarations[declaration] = _read_privileges(declaration)
                resolved["privileges"] = declarations[declaration]
            environments[name] = Environment(name=name, **resolved)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
                for error in exc.errors()
            )
            raise ConfigError(
                f"{config_file}: environment {name!r} is invalid: {problems}",
                hint="fix the field named above",
            ) from None
        except ConfigError as exc:
            if str(config_file) not in exc.message:
                exc.message = f"{config_file}: {exc.message}"
            raise
        except (TypeError, AttributeError, KeyError) as exc:
            # A shape no validator expected (a value where a table belongs, before pydantic
            # sees it): still the file's fault, named by environment, never "report it".
            raise ConfigError(
                f"{config_file}: environment {name!r} has a malformed value ({exc})",
                hint="compare its tables and keys with the prod environment of environments.toml",
            ) from None
    return environments


def _read_privileges(path: Path) -> dict[str, Any]:
    """The privileges declaration a `privileges = "FILE"` line names (relative to
    environments.toml)."""
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"privileges file {path} does not exist",
            hint="privileges = names a TOML file beside environments.toml (privileges.toml)",
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def load_environment(name: str, path: str | os.PathLike[str] | None = None) -> Environment:
    """One environment by name; an unknown name is an error that lists the known ones."""
    environments = load_environments(path)
    if name not in environments:
        raise ConfigError(
            f"unknown environment {name!r}",
            hint=f"choose one of: {', '.join(sorted(environments))}",
        )
    return environments[name]
