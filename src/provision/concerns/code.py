"""Code that runs later: functions, procedures and triggers of the new schemas.

A migration is proven to change nothing outside the managed schemas while it runs; what it
leaves behind runs later, for other logins, and is checked here. A function that is
SECURITY DEFINER runs with its owner's rights (`nucleus` may write the legacy tables: the
old services use it), so whoever may execute it reaches what the declaration never gave
them; one that PUBLIC may execute (PostgreSQL's default, which the owner's default
privileges take away for functions created later) is callable by every login; a trigger
of a new table whose body names a legacy schema writes there whenever the new table is
written. None of these is something `apply` may decide to remove: each is a finding with
the statement a reviewed migration should run.
"""

from __future__ import annotations

from provision.actions import Action, Context
from provision.catalog import Catalog
from provision.desired import DesiredState
from provision.findings import Finding, Severity


def findings(desired: DesiredState, catalog: Catalog) -> list[Finding]:
    found = []
    definers = [c for c in catalog.code if c.security_definer]
    if definers:
        reaching = [c for c in definers if c.owner_reaches_protected]
        found.append(
            Finding(
                "code-security-definer",
                Severity.CRITICAL if reaching else Severity.HIGH,
                f"{len(definers)} function(s) of the new schemas run with their owner's rights "
                "(SECURITY DEFINER)",
                "whoever may execute them acts as their owner"
                + (", who may use the legacy schemas" if reaching else ""),
                tuple(f"{c.name} (owner {c.owner})" for c in definers),
                remedy="in a migration: ALTER FUNCTION ... SECURITY INVOKER (or drop it), for "
                + ", ".join(c.name for c in definers),
            )
        )
    public = [c for c in catalog.code if c.public_execute]
    if public:
        found.append(
            Finding(
                "code-public-execute",
                Severity.HIGH,
                f"{len(public)} function(s) of the new schemas may be executed by PUBLIC",
                "every login may run them; who may should be declared",
                tuple(c.name for c in public),
                remedy="in a migration: REVOKE EXECUTE ON FUNCTION ... FROM PUBLIC, for "
                + ", ".join(c.name for c in public),
            )
        )
    legacy = [c for c in catalog.code if c.kind == "trigger" and c.names_protected]
    if legacy:
        found.append(
            Finding(
                "code-names-legacy",
                Severity.HIGH,
                f"{len(legacy)} trigger(s) of the new tables run code that names a legacy schema",
                "writing a new table would read or write the legacy data",
                tuple(f"{c.name} names {', '.join(c.names_protected)}" for c in legacy),
                remedy="in a migration: drop the trigger, or rewrite its function without the "
                "legacy schemas: " + ", ".join(c.name for c in legacy),
            )
        )
    if catalog.shadowed:
        found.append(
            Finding(
                "schema-shadows-role",
                Severity.HIGH,
                f"role(s) {', '.join(catalog.shadowed)} have the name of a new schema",
                'their sessions resolve unqualified names in that schema first ("$user" in the '
                "default search_path), so legacy code run by them would reach the new tables",
                catalog.shadowed,
                remedy="rename the role(s) (Terraform, google_sql_user), or give them an "
                "explicit search_path without the new schema",
            )
        )
    return found


def actions(desired: DesiredState, catalog: Catalog, context: Context) -> list[Action]:
    """Nothing to run: what code may do later is a person's decision (a new migration that
    drops SECURITY DEFINER, revokes EXECUTE or rewrites the trigger); `findings` says which.
    The default that keeps PUBLIC from new functions is the privileges concern's."""
    return []
