"""The planner: a pure function from (desired state, catalog snapshot) to an ordered plan.
No database, no I/O: tested on plain data.

The concerns (`provision.concerns`) each say what they would do; the planner puts it in the
one order that works, and decides how owner work reaches the database:

1. extensions (`vector`, `pgaudit`), as the admin: only cloudsqlsuperuser members may;
2. ownership: CREATE for an owner made with SQL, then the hand-off of what the admin owns
   but the owner should, by a route that works under Cloud SQL's rules;
3. roles, as the admin: the declared groups, the app login, memberships;
4. default privileges of the owner in the new schemas (so that what the migrations create
   gets the declared grants);
5. adoption of the version table, as the owner;
6. each pending migration, as the owner, with its record, in its own transaction;
7. invalid indexes the lock expects valid, rebuilt CONCURRENTLY (outside a transaction);
8. grants and revokes on the existing objects of the new schemas.

Privileges of objects that pending migrations create are known only once they ran: the
executor plans steps 4 and 7 again after the migrations (Terraform's "known after apply").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from provision.actions import Action, Session
from provision.catalog import Catalog
from provision.concerns import (
    extension,
    migrations,
    ownership,
    privileges,
    structure,
    version_table,
)
from provision.concerns.ownership import Route
from provision.desired import DesiredState


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    route: Route | None
    owner_via_set_role: bool  # the owner session is the admin session after SET ROLE owner
    pending: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.actions

    def needs(self, session: Session) -> bool:
        return any(a.session == session for a in self.actions)


def make_plan(
    desired: DesiredState,
    catalog: Catalog,
    *,
    owner_session: bool,
    accept_changed: Iterable[str] = (),
) -> Plan:
    """The ordered actions that bring the catalog to the desired state; empty when it matches.

    `owner_session`: the run has a session logged in as the owner (else owner work needs a
    route that lets the admin SET ROLE to it)."""
    ownership.require_owner_role(desired, catalog)
    migrate = migrations.actions(desired, catalog, accept_changed=accept_changed)
    create = extension.actions(desired, catalog)
    adopt = version_table.actions(desired, catalog)
    route, handoff = ownership.actions(
        desired, catalog, owner_session=owner_session, owner_work=bool(adopt or migrate)
    )
    roles = privileges.role_actions(desired, catalog)
    defaults = privileges.default_actions(desired, catalog)
    grants = privileges.grant_actions(desired, catalog)
    rebuild = structure.actions(desired, catalog)
    return Plan(
        actions=tuple(create + handoff + roles + defaults + adopt + migrate + rebuild + grants),
        route=route,
        owner_via_set_role=not owner_session and route is not None and route.via_set_role,
        pending=migrations.pending(desired, catalog),
    )
