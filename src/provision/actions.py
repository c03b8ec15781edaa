"""Actions: what `apply` runs, each in one session and (unless declared otherwise) one
transaction, carrying its SQL and a one-line reason. Concerns produce them; `plan` prints
them; the executor runs exactly them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

from provision.migrations import Migration


class Session(StrEnum):
    ADMIN = "admin"  # logged in as users.admin (`postgres`)
    OWNER = "owner"  # logged in as users.owner (`nucleus`), or the admin after SET ROLE


class ActionKind(StrEnum):
    CREATE_EXTENSION = "create-extension"
    GRANT_PRIVILEGES = "grant-privileges"
    GRANT_MEMBERSHIP = "grant-membership"
    HANDOFF = "handoff"
    HANDOFF_TO_GROUP = "handoff-to-group"
    HANDOFF_TO_OWNER = "handoff-to-owner"
    ADOPT_VERSION_TABLE = "adopt-migrations-table"
    MIGRATE = "migrate"
    ACCEPT_CHANGED = "accept-changed"
    CREATE_ROLES = "create-roles"
    CREATE_LOGIN = "create-login"
    MEMBERSHIPS = "memberships"
    DEFAULT_PRIVILEGES = "default-privileges"
    GRANTS = "grants"
    REBUILD_INDEX = "rebuild-index"


class Phase(IntEnum):
    """The one order that works: a plan runs its actions phase by phase (the concerns' own
    order within a phase)."""

    EXTENSIONS = 1  # as the admin: only cloudsqlsuperuser members may create them
    OWNERSHIP = 2  # CREATE for an owner made with SQL, then the hand-off
    ROLES = 3  # groups, the app login, memberships, as the admin
    DEFAULT_PRIVILEGES = 4  # of the owner, before the migrations create anything
    VERSION_TABLE = 5  # adopted in place, as the owner
    MIGRATIONS = 6  # each pending file, as the owner, with its record
    REPAIRS = 7  # what the lock expects and apply may restore (an invalid index)
    GRANTS = 8  # on the existing objects of the new schemas
    # What the pending migrations create gets its privileges here: the default privileges in
    # the schemas they create and the grants on their objects, planned again once they ran
    # (Terraform's "known after apply"). The plan shows these actions; apply runs exactly them.
    AFTER_MIGRATIONS = 9


PHASE_OF: dict[ActionKind, Phase] = {
    ActionKind.CREATE_EXTENSION: Phase.EXTENSIONS,
    ActionKind.GRANT_PRIVILEGES: Phase.OWNERSHIP,
    ActionKind.GRANT_MEMBERSHIP: Phase.OWNERSHIP,
    ActionKind.HANDOFF: Phase.OWNERSHIP,
    ActionKind.HANDOFF_TO_GROUP: Phase.OWNERSHIP,
    ActionKind.HANDOFF_TO_OWNER: Phase.OWNERSHIP,
    ActionKind.CREATE_ROLES: Phase.ROLES,
    ActionKind.CREATE_LOGIN: Phase.ROLES,
    ActionKind.MEMBERSHIPS: Phase.ROLES,
    ActionKind.DEFAULT_PRIVILEGES: Phase.DEFAULT_PRIVILEGES,
    ActionKind.ADOPT_VERSION_TABLE: Phase.VERSION_TABLE,
    ActionKind.MIGRATE: Phase.MIGRATIONS,
    ActionKind.ACCEPT_CHANGED: Phase.MIGRATIONS,
    ActionKind.REBUILD_INDEX: Phase.REPAIRS,
    ActionKind.GRANTS: Phase.GRANTS,
}

# The placeholder the executor fills with the app login's SCRAM verifier; never printed.
APP_VERIFIER_SLOT = "app_password_verifier"


@dataclass(frozen=True)
class Context:
    """What a run adds to (desired state, catalog) for the concerns' `actions`."""

    owner_session: bool = True  # the run has a session logged in as the owner
    accept_changed: tuple[str, ...] = ()  # --accept-changed versions
    # Some action must run as the owner (the version table, a migration): the ownership
    # concern then needs a route even when nothing changes hands. Set by the planner.
    owner_work: bool = False


@dataclass(frozen=True)
class Sql:
    text: str
    params: Mapping[str, object] = field(default_factory=dict)
    # Holds a `{slot}` the executor fills with a secret (a password verifier) at run time;
    # plans show the slot's description, never its value.
    secret: bool = False


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    session: Session
    reason: str
    statements: tuple[Sql, ...]
    migration: Migration | None = None
    transactional: bool = True
    # Written after the statements and their checks, in the same transaction when there is one.
    record: Sql | None = None
    # Indexes a no-transaction step builds: each must be valid before the step is recorded.
    indexes: tuple[tuple[str, str], ...] = ()
    # Known after apply: its statements are planned once the pending migrations ran (the
    # objects they create do not exist before). `plan` shows it with what the schema lock says
    # those migrations create; `apply` runs it with the statements planned at that point.
    deferred: bool = False

    @property
    def phase(self) -> Phase:
        return Phase.AFTER_MIGRATIONS if self.deferred else PHASE_OF[self.kind]

    @property
    def known_after_migrations(self) -> bool:
        """Planned again once the migrations ran: privileges of what they created."""
        return PHASE_OF[self.kind] in (Phase.DEFAULT_PRIVILEGES, Phase.GRANTS)

    @property
    def proven(self) -> bool:
        """A migration in a transaction: the database proves what it changed before COMMIT."""
        return self.kind == ActionKind.MIGRATE and self.transactional

    @property
    def all_statements(self) -> tuple[Sql, ...]:
        return self.statements + ((self.record,) if self.record is not None else ())
