"""Actions: what `apply` runs, each in one session and (unless declared otherwise) one
transaction, carrying its SQL and a one-line reason. Concerns produce them; `plan` prints
them; the executor runs exactly them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

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

    @property
    def proven(self) -> bool:
        """A migration in a transaction: the database proves what it changed before COMMIT."""
        return self.kind == ActionKind.MIGRATE and self.transactional

    @property
    def all_statements(self) -> tuple[Sql, ...]:
        return self.statements + ((self.record,) if self.record is not None else ())
