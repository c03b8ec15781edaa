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

These are the phases of `provision.actions.Phase`: each action carries its own, the planner
sorts by it.

9. privileges of what the pending migrations create: known only once they ran. The plan holds
   one deferred action per session and kind that can arise then (default privileges in the
   schemas they create, grants on their objects), described from the schema lock, which knows
   what each migration creates; the executor plans their statements at that point and runs
   them under these actions (Terraform's "(known after apply)"). So the list `plan` shows is
   the list `apply` runs, one for one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from provision.actions import Action, ActionKind, Context, Phase, Session
from provision.catalog import Catalog
from provision.concerns import REGISTRY, all_findings, ownership
from provision.concerns.ownership import Route
from provision.desired import DesiredState
from provision.findings import Finding


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
    context = Context(owner_session=owner_session, accept_changed=tuple(accept_changed))
    planned = _actions(desired, catalog, context)
    # Owner work (the version table, a migration) needs a route to the owner even when nothing
    # changes hands: plan again knowing it (only then: a no-op run plans once).
    owner_work = any(a.phase in (Phase.VERSION_TABLE, Phase.MIGRATIONS) for a in planned)
    if owner_work:
        context = replace(context, owner_work=True)
        planned = _actions(desired, catalog, context)
    route = ownership.route_for(desired, catalog, context)
    pending = tuple(
        a.migration.version for a in planned if a.kind == ActionKind.MIGRATE and a.migration
    )
    if pending:
        planned += known_after(desired, pending)
    return Plan(
        actions=tuple(planned),
        route=route,
        owner_via_set_role=not owner_session and route is not None and route.via_set_role,
        pending=pending,
    )


# How many names a deferred action's reason lists before it counts the rest.
_NAMES_SHOWN = 8


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:_NAMES_SHOWN])
    return shown + (f" and {len(names) - _NAMES_SHOWN} more" if len(names) > _NAMES_SHOWN else "")


def known_after(desired: DesiredState, pending: tuple[str, ...]) -> list[Action]:
    """The deferred actions of a plan with pending migrations: what they create, from the
    schema lock (`created_by`); their statements are planned once the migrations ran."""
    after = ", ".join(pending)
    created = desired.expected.created_by if desired.expected is not None else {}
    schemas = sorted(k for k, v in created.items() if v in pending and "." not in k)
    tables = sorted(k for k, v in created.items() if v in pending and "." in k)
    if desired.expected is None:
        what, where = "what they create", "the schemas they create"
    else:
        what = (
            f"the {len(tables)} table(s) they create ({_names(tables)}) and their sequences"
            if tables
            else "what they change (the lock lists no new table)"
        )
        where = f"the schema(s) they create ({_names(schemas)})" if schemas else "no new schema"
    known = "(known after apply: planned once they ran, from the catalog then)"
    return [
        Action(
            ActionKind.DEFAULT_PRIVILEGES,
            Session.OWNER,
            f"after {after}: the declared default privileges in {where} {known}",
            (),
            deferred=True,
        ),
        Action(
            ActionKind.GRANTS,
            Session.OWNER,
            f"after {after}: GRANT the declared privileges on {what}, and on their schemas {known}",
            (),
            deferred=True,
        ),
    ]


def _actions(desired: DesiredState, catalog: Catalog, context: Context) -> list[Action]:
    """Every concern's actions, by phase (stable: a concern's own order within a phase)."""
    found = [a for concern in REGISTRY for a in concern.actions(desired, catalog, context)]
    return sorted(found, key=lambda a: a.phase)


def findings(desired: DesiredState, catalog: Catalog) -> list[Finding]:
    """Every concern's findings, in the registry's order (what the executor reports)."""
    return all_findings(desired, catalog)
