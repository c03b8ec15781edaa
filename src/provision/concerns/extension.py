"""Extensions: `vector` (pgvector), created by the admin.

On Cloud SQL `postgres` is not a superuser, but as a member of `cloudsqlsuperuser` it may
create the extensions of Cloud SQL's allow-list, `vector` among them; no database flag is
needed (shared/docs/cloudsql.md, section 3). The version is whatever the server offers
(`pg_available_extensions.default_version`), never assumed.
"""

from __future__ import annotations

from provision.actions import Action, ActionKind, Session, Sql
from provision.catalog import SUPERUSER_GROUP, Catalog
from provision.desired import DesiredState
from provision.errors import ProvisionError
from provision.findings import Finding, Severity
from provision.sql import ident


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
                )
            )
        elif ext.installed_version is None:
            found.append(
                Finding(
                    "extension-missing",
                    Severity.MEDIUM,
                    f"extension {name} is not installed (version {ext.default_version} is available)",
                    "embeddings (memory schema) cannot be stored",
                    (name,),
                )
            )
    return found


def actions(desired: DesiredState, catalog: Catalog) -> list[Action]:
    planned = []
    for name in desired.layout.extensions:
        ext = catalog.extensions.get(name)
        if ext is not None and ext.installed_version is not None:
            continue
        if ext is None or ext.default_version is None:
            raise ProvisionError(
                f"extension {name} is not available on this server",
                hint="use a Cloud SQL for PostgreSQL version that ships it (pgvector: PostgreSQL 11+)",
            )
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
