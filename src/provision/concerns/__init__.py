"""One module per concern of the desired state.

Each concern compares the desired state with a catalog snapshot and exposes two pure
functions, as pgbedrock's `analyze_<concern>` does: `findings(desired, catalog)`, what
differs (for `inspect` and `verify`), and `actions(desired, catalog, ...)`, what `apply`
runs to fix it. `provision.planner` orders the concerns' actions into one plan; the report
of `inspect` gathers their findings in `FINDING_ORDER`.

- `migrations`: the objects the migration files create, and the files still to run;
- `structure`: every object of the managed schemas against the lock (`schema.lock`);
- `version_table`: `public.migrations`, adopted in place;
- `extension`: `vector`, created by the admin;
- `ownership`: who owns the new layout, and the route by which objects change hands;
- `privileges`: groups, the app login, memberships, grants and default privileges.
"""

from __future__ import annotations

from collections.abc import Callable

from provision.catalog import Catalog
from provision.concerns import (
    extension,
    migrations,
    ownership,
    privileges,
    structure,
    version_table,
)
from provision.desired import DesiredState
from provision.findings import Finding

# The order of the seed's own analysis: names, the version table, the extension, owners.
FINDING_ORDER: tuple[Callable[[DesiredState, Catalog], list[Finding]], ...] = (
    migrations.findings,
    structure.findings,
    version_table.findings,
    extension.findings,
    ownership.findings,
    privileges.findings,
)


def all_findings(desired: DesiredState, catalog: Catalog) -> list[Finding]:
    return [finding for concern in FINDING_ORDER for finding in concern(desired, catalog)]
