"""The desired state: what the Nucleus database must look like, as one frozen value.

Everything the engine compares against lives here and is built by one function,
`desired_state(environment, migrations)`: the roles come from the environment's `users` in
environments.toml (so `inspect`, `plan`, `apply`, `verify` and the stacks' hook agree on the
owner), the legacy layout from the privileges declaration (privileges.toml `[legacy]`), the
managed schemas and tables from the migrations of `bootstrap_sql/` through their lock. Nothing
here talks to a database; `fingerprint()` is what the stacks' hook hashes to know when to run
again.

Adding a migration, even one that creates a schema, touches `bootstrap_sql/` and its lock
(`nucleus-provision lock` rewrites `bootstrap_sql/schema.lock`): nothing else. The schemas and
tables of the new layout, and every column, index and constraint, are the lock's, derived from
the migrations (a file the lock does not know yet is asked for its CREATE SCHEMA statements).
What stays written here is what no migration can say: the version table's adoption.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum

from provision.config import Environment, load_environment
from provision.lockfile import LOCK_NAME, Lock, declaration_digest, load
from provision.migrations import Migration, default_directory, load_migrations, schemas_created
from provision.sql import ident


@dataclass(frozen=True)
class Schema:
    name: str
    migration: str  # version of the migration that creates it
    legacy: str | None = None  # the old schema the code used to expect instead


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    migration: str
    legacy: tuple[str, str] | None = None  # (schema, table) of its old counterpart

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class Column:
    name: str
    definition: str  # type and default, as in ADD COLUMN / CREATE TABLE


@dataclass(frozen=True)
class VersionTable:
    """The version table, adopted in place: the legacy columns and rows stay, the columns the
    code expects are added, and Flyway's bookkeeping (checksum, run time) beside them."""

    schema: str
    name: str
    legacy_columns: tuple[Column, ...]
    expected_columns: tuple[Column, ...]
    bookkeeping_columns: tuple[Column, ...]

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def ident(self) -> str:
        """The quoted, qualified name for SQL."""
        return ident(self.schema, self.name)

    @property
    def columns(self) -> tuple[Column, ...]:
        """Every column once, in table order: legacy first (`id` is shared), then the rest."""
        seen: dict[str, Column] = {}
        for column in self.legacy_columns + self.expected_columns + self.bookkeeping_columns:
            seen.setdefault(column.name, column)
        return tuple(seen.values())

    @property
    def added_columns(self) -> tuple[Column, ...]:
        """What adoption adds to the legacy table."""
        legacy = {c.name for c in self.legacy_columns}
        return tuple(c for c in self.columns if c.name not in legacy)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def required_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.expected_columns + self.bookkeeping_columns)

    @property
    def version_index(self) -> str:
        return f"{self.name}_version_key"


@dataclass(frozen=True)
class Layout:
    """The objects the code expects, independent of any environment's roles: the managed
    schemas and tables (the migrations', through the lock), the legacy schemas (declared in
    privileges.toml), the extensions, the version table."""

    schemas: tuple[Schema, ...]
    tables: tuple[Table, ...]
    extensions: tuple[str, ...]
    protected_schemas: tuple[str, ...]  # legacy: never altered, their rows never changed
    version_table: VersionTable


# The version table, adopted in place: a fact of production's history (the legacy tooling's
# table) and of this tool's bookkeeping, not something a migration makes.
VERSION_TABLE = VersionTable(
    schema="public",
    name="migrations",
    # What production's legacy tooling created (the seed: `id, migration_name, applied_at`).
    legacy_columns=(
        Column("id", "serial PRIMARY KEY"),
        Column("migration_name", "varchar(255) NOT NULL UNIQUE"),
        Column("applied_at", "timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP"),
    ),
    # What the code expects (the seed: `id, version, description, executed_at`).
    expected_columns=(
        Column("id", "serial PRIMARY KEY"),
        Column("version", "varchar(50)"),
        Column("description", "text"),
        Column("executed_at", "timestamptz DEFAULT CURRENT_TIMESTAMP"),
    ),
    # Kept as Flyway keeps them: detect edited files, show how long each migration took.
    bookkeeping_columns=(
        Column("checksum", "varchar(64)"),
        Column("execution_time_ms", "integer"),
    ),
)


def managed_schemas(
    migrations: Sequence[Migration], lock: Lock | None, excluded: Iterable[str] = ()
) -> dict[str, str]:
    """The schemas the migrations create, each with the version of the first that does: the
    lock's, and for the files the lock does not know as they are (new or edited, or every file
    where there is no lock) the names their CREATE SCHEMA statements give. A fresh lock costs
    no parse. `excluded` (the version table's schema, the legacy ones) is never managed: a
    migration that names a legacy schema is refused when it would run."""
    found: dict[str, str] = {}
    known: dict[str, str] = dict(lock.files) if lock is not None else {}
    if lock is not None:
        for name in lock.schemas:
            found[name] = lock.created_by.get(name, "")
    for migration in migrations:
        if known.get(migration.filename) == migration.checksum:
            continue
        for name in schemas_created(migration):
            found.setdefault(name, migration.version)
    skip = set(excluded)
    return {name: version for name, version in found.items() if name not in skip}


def layout_of(
    environment: Environment, migrations: Sequence[Migration], lock: Lock | None
) -> Layout:
    """The layout of an environment's declaration, these migrations and their lock: no schema
    or table is named in Python (a migration that adds one needs no edit here)."""
    legacy = environment.privileges.legacy
    replaced = legacy.replaced_by
    old_schema = {new: old for old, new in replaced.items() if "." not in old}
    old_table = {
        (new.split(".", 1)[0], new.split(".", 1)[1]): (old.split(".", 1)[0], old.split(".", 1)[1])
        for old, new in replaced.items()
        if "." in old
    }
    managed = managed_schemas(migrations, lock, (VERSION_TABLE.schema, *legacy.schemas))
    return Layout(
        schemas=tuple(
            Schema(name, version, old_schema.get(name))
            for name, version in sorted(managed.items(), key=lambda kv: (kv[1], kv[0]))
        ),
        tables=tables_of(lock, old_table),
        # pgvector everywhere; pgaudit where the environment's instance loads it (the
        # cloudsql.enable_pgaudit flag), which the local emulation cannot.
        extensions=environment.required_extensions,
        protected_schemas=tuple(legacy.schemas),
        version_table=VERSION_TABLE,
    )


@dataclass(frozen=True)
class Group:
    """A NOLOGIN group and what its members may do in every schema of the new layout."""

    name: str
    schema: tuple[str, ...]  # on the schemas
    tables: tuple[str, ...]  # on every table (and, by default privileges, every later one)
    sequences: tuple[str, ...]


class MemberKind(StrEnum):
    LOGIN = "login"  # users.app: created by apply, in the database, from its secret
    IAM = "iam"  # an IAM database user: created by the stacks through the Cloud SQL API


@dataclass(frozen=True)
class Member:
    role: str
    group: str
    kind: MemberKind


@dataclass(frozen=True)
class Privileges:
    """Who may do what in the new schemas: authoritative there (what is not declared is
    revoked), never applied to legacy schemas or Cloud SQL's own roles."""

    groups: tuple[Group, ...] = ()
    members: tuple[Member, ...] = ()
    app_login: str | None = None  # the login apply creates when it does not exist
    # The login that alternates with app_login at each rotation: apply creates it without a
    # password (nobody can log in as it until `rotate` gives it one), in the same groups.
    app_alternate: str | None = None
    # IAM identities are the environment's: in scope only when an environment is named
    # (a `--dsn` run with prod's declaration leaves IAM users' memberships alone).
    manage_iam: bool = True
    # Who creates IAM database users for this environment, for the hint that names it: the
    # stacks (`cdktf deploy`), or for the emulation (connector "local") `local up`. Not
    # declared state: left out of the fingerprint.
    iam_users_from_local_up: bool = False

    def group(self, name: str) -> Group | None:
        return next((g for g in self.groups if g.name == name), None)

    @property
    def group_names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.groups)


@dataclass(frozen=True)
class DesiredState:
    """The layout, the roles of one environment, and the migrations to have run."""

    owner: str  # owns every object of the new layout (users.owner)
    admin: str  # the run's admin session (users.admin, or the IAM login's role)
    layout: Layout
    migrations: tuple[Migration, ...] = field(default=())
    privileges: Privileges = field(default_factory=Privileges)
    # The expected schema (bootstrap_sql/schema.lock), None where the directory has none.
    expected: Lock | None = field(default=None, compare=False)

    @property
    def declaration(self) -> str:
        """The digest of what the lock is derived from besides the files: the owner and the
        groups' privileges (memberships are per environment and not in the lock)."""
        return declaration_digest(
            {"owner": self.owner, "groups": [asdict(g) for g in self.privileges.groups]}
        )

    @property
    def schema_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.layout.schemas)

    @property
    def version_table(self) -> VersionTable:
        return self.layout.version_table

    def with_admin(self, admin: str) -> DesiredState:
        """The same state seen from another admin login (an IAM service account's role)."""
        return replace(self, admin=admin)

    def fingerprint(self) -> str:
        """sha256 of everything declared, migrations by name and checksum: what the stacks'
        hook hashes, so that it runs again exactly when the desired state changes."""
        data = {
            "owner": self.owner,
            "admin": self.admin,
            "layout": asdict(self.layout),
            "privileges": {
                k: v for k, v in asdict(self.privileges).items() if k != "iam_users_from_local_up"
            },
            "migrations": [(m.filename, m.checksum) for m in self.migrations],
        }
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def tables_of(
    lock: Lock | None, legacy: Mapping[tuple[str, str], tuple[str, str]] | None = None
) -> tuple[Table, ...]:
    """The tables of the new layout: the lock's, each with the migration that first made it
    and the legacy table it replaces, if any."""
    if lock is None:
        return ()
    return tuple(
        Table(
            schema,
            name,
            lock.created_by.get(f"{schema}.{name}", ""),
            (legacy or {}).get((schema, name)),
        )
        for schema, name in lock.tables
    )


def default_layout() -> Layout:
    """The layout of the default environment (prod), the default migrations directory and its
    lock: for readers that are handed no desired state (a move file read on its own)."""
    directory = default_directory()
    return layout_of(
        load_environment("prod"), load_migrations(directory), load(directory / LOCK_NAME)
    )


def desired_privileges(environment: Environment, *, manage_iam: bool = True) -> Privileges:
    """The privileges declaration with this environment's members."""
    groups = tuple(
        Group(
            name,
            tuple(p.value for p in g.schemas),
            tuple(p.value for p in g.tables),
            tuple(p.value for p in g.sequences),
        )
        for name, g in sorted(environment.privileges.groups.items())
    )
    app, admin = environment.users.app, environment.users.admin
    members = [Member(admin.name, g, MemberKind.LOGIN) for g in admin.member_of]
    if app:
        members += [
            Member(login, g, MemberKind.LOGIN) for login in app.logins for g in app.member_of
        ]
    members += [Member(i.role, i.group, MemberKind.IAM) for i in environment.iam_identities]
    return Privileges(
        groups=groups,
        members=tuple(sorted(members, key=lambda m: (m.group, m.role))),
        app_login=app.name if app else None,
        app_alternate=app.alternate_name if app else None,
        manage_iam=manage_iam,
        iam_users_from_local_up=environment.connector == "local",
    )


def desired_state(
    environment: Environment,
    migrations: Sequence[Migration] = (),
    *,
    manage_iam: bool = True,
    expected: Lock | None = None,
) -> DesiredState:
    """The desired state of one environment: its users, the code's layout, these migrations.

    The admin is `users.admin`; a run that logs in another way (an IAM service account) sees
    the same state `with_admin` its login's role."""
    return DesiredState(
        owner=environment.users.owner.name,
        admin=environment.users.admin.name,
        layout=layout_of(environment, migrations, expected),
        migrations=tuple(migrations),
        privileges=desired_privileges(environment, manage_iam=manage_iam),
        expected=expected,
    )
