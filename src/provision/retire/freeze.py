"""The REVOKEs of a freeze and the GRANTs of its undo, from the grants found (pure).

Grantor-aware, as `provision.concerns.privileges` is for memberships: PostgreSQL keeps one
grant per grantor, and a REVOKE removes only the grants of the role it runs as (or, with
GRANTED BY, of a role whose privileges it has). So each grant is revoked GRANTED BY its own
grantor when this session may act for it; a grant by anyone else is kept and reported with
the statement its grantor can run (the trigger stops that role's writes anyway). A grant
with GRANT OPTION that others hold grants from is revoked only after them, never with
CASCADE; if one of them is kept, it is kept too. Unfreeze gives back exactly what the freeze
took, parents first, each GRANTED BY its original grantor.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from provision.retire.observe import Grant
from provision.sql import ident


def _grantee(name: str) -> str:
    return "PUBLIC" if name == "PUBLIC" else ident(name)


def _on(grant: Grant, table: tuple[str, str]) -> str:
    column = f" ({ident(grant.column)})" if grant.column else ""
    return f"{grant.privilege}{column} ON {ident(*table)}"


def revoke_sql(grant: Grant, table: tuple[str, str]) -> str:
    return f"REVOKE {_on(grant, table)} FROM {_grantee(grant.grantee)} GRANTED BY {ident(grant.grantor)}"


def grant_sql(grant: Grant, table: tuple[str, str]) -> str:
    option = " WITH GRANT OPTION" if grant.grantable else ""
    return (
        f"GRANT {_on(grant, table)} TO {_grantee(grant.grantee)}{option} "
        f"GRANTED BY {ident(grant.grantor)}"
    )


def split(grants: Sequence[Grant]) -> tuple[list[Grant], list[Grant]]:
    """(grants to revoke, in a safe order: dependants before the grant they came from;
    grants kept, with the reason implied by `admin_acts_for_grantor`)."""
    kept: set[tuple[str, str, str, str]] = set()
    by_key = {g.key(): g for g in grants}

    def children(g: Grant) -> list[Grant]:
        return [
            c
            for c in grants
            if c.privilege == g.privilege
            and c.column == g.column
            and c.grantor == g.grantee
            and c.key() != g.key()
            # The owner's own privileges are not what its grants hang on: an owner always
            # holds the grant options of its table, so revoking its own leaves them in place.
            and g.grantee != g.grantor
        ]

    # A grant stays when its grantor is not ours to act for, or when a grant made from it stays.
    changed = True
    while changed:
        changed = False
        for g in grants:
            if g.key() in kept:
                continue
            if not g.admin_acts_for_grantor or any(c.key() in kept for c in children(g)):
                kept.add(g.key())
                changed = True
    order: list[Grant] = []
    placed: set[tuple[str, str, str, str]] = set()

    def place(g: Grant, seen: frozenset[tuple[str, str, str, str]]) -> None:
        if g.key() in placed or g.key() in seen:
            return
        for c in children(g):
            if c.key() not in kept:
                place(c, seen | {g.key()})
        placed.add(g.key())
        order.append(g)

    for g in grants:
        if g.key() not in kept:
            place(g, frozenset())
    return order, [by_key[k] for k in sorted(kept)]


def kept_hint(grant: Grant, table: tuple[str, str]) -> str:
    return (
        f"{grant.privilege}{' (' + grant.column + ')' if grant.column else ''} for "
        f"{grant.grantee}, granted by {grant.grantor} (not a role this session acts for): kept; "
        f"the freeze trigger still refuses its writes; to remove it, as {grant.grantor}: "
        f"{revoke_sql(grant, table)}"
    )


def from_record(items: Iterable[dict[str, Any]]) -> list[Grant]:
    return [
        Grant(i["grantee"], i["grantor"], i["privilege"], bool(i["grantable"]), i.get("column"))
        for i in items
    ]


def restore_order(revoked: Sequence[Grant]) -> list[Grant]:
    """The revoked grants in the order they were revoked, reversed: parents first."""
    return list(reversed(revoked))
