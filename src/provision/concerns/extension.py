"""Extensions: `vector` (pgvector) everywhere, `pgaudit` where the environment turns the
`cloudsql.enable_pgaudit` flag on; both created by the admin.

On Cloud SQL `postgres` is not a superuser, but as a member of `cloudsqlsuperuser` it may
create the extensions of Cloud SQL's allow-list, `vector` and `pgaudit` among them; `vector`
needs no database flag (shared/docs/cloudsql.md, section 3), `pgaudit` needs its flag (the
stacks set it from the same `[pgaudit]` table the desired state reads). The version is
whatever the server offers (`pg_available_extensions.default_version`), never assumed.
"""

from __future__ import annotations

from provision.actions import Action, ActionKind, Context, Session, Sql
from provision.catalog import SUPERUSER_GROUP, Catalog
from provision.desired import DesiredState
from provision.findings import Finding, Item, Severity
from provision.sql import ident

_IMPACT = {
    "vector": "embeddings (memory schema) cannot be stored",
    "pgaudit": "the audit log the CIS benchmark asks for (pgaudit.log) is not written",
}
_UNAVAILABLE_HINT = {
    "pgaudit": "turn the instance's cloudsql.enable_pgaudit flag on ([pgaudit] enabled = true in "
    "environments.toml, then cdktf deploy), or set enabled = false for an environment whose "
    "server cannot load it",
}


def findings(desired: DesiredState, catalog: Catalog) -> list[Finding]:
    found = []
    for name in desired.layout.extensions:
        ext = catalog.extensions.get(name)
        if ext is None or (ext.default_version is None and ext.installed_version is None):
            found.append(
                Finding(
                    "extension-missing",
                    Severity.CRITICAL,
                    f"extension {name} is not installed and not available on this server",
                    "it cannot be created",
                    (name,),
                    remedy=_UNAVAILABLE_HINT.get(
                        name, "use a Cloud SQL for PostgreSQL version that ships it"
                    ),
                    items=(Item(f"extension {name}", "installed", "not available on the server"),),
                )
            )
        elif ext.installed_version is None:
            found.append(
                Finding(
                    "extension-missing",
                    Severity.MEDIUM,
                    f"extension {name} is not installed (version {ext.default_version} is available)",
                    _IMPACT.get(name, "what needs it fails"),
                    (name,),
                    items=(
                        Item(
                            f"extension {name}",
                            "installed",
                            f"not installed ({ext.default_version} available)",
                        ),
                    ),
                )
            )
    return found


def actions(desired: DesiredState, catalog: Catalog, context: Context) -> list[Action]:
    planned = []
    for name in desired.layout.extensions:
        ext = catalog.extensions.get(name)
        if ext is not None and ext.installed_version is not None:
            continue
        if ext is None or ext.default_version is None:
            continue  # nothing apply can do: the finding carries the remedy
        planned.append(
            Action(
                ActionKind.CREATE_EXTENSION,
                Session.ADMIN,
                f"extension {name} is missing; version {ext.default_version} is available and "
                f"{desired.admin}, a member of {SUPERUSER_GROUP}, may create it",
                (Sql(f"CREATE EXTENSION IF NOT EXISTS {ident(name)}"),),
            )
        )
    return planned
