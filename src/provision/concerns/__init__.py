"""One module per concern of the desired state, in one ordered registry.

Each concern compares the desired state with a catalog snapshot through two pure functions of
one shape, as pgbedrock's `analyze_<concern>`: `findings(desired, catalog)`, what differs (for
`inspect` and `verify`), and `actions(desired, catalog, context)`, what `apply` runs to fix it,
each action carrying its phase (`provision.actions.Phase`), which orders the plan. A new concern
is its module, a line in `REGISTRY` and its tests; the planner, the executor and the renderer
do not change.

- `migrations`: the files still to run, the objects they make (names), files gone missing;
- `structure`: every object of the managed schemas against the lock (`schema.lock`);
- `version_table`: `public.migrations`, adopted in place;
- `extension`: `vector` (and pgaudit where the instance loads it), created by the admin;
- `ownership`: who owns the new layout, and the route by which objects change hands;
- `privileges`: groups, the app login, memberships, grants, default privileges, effective
  access beyond the declaration;
- `code`: functions, procedures and triggers of the new schemas that run later.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from provision.catalog import Catalog
from provision.concerns import (
    code,
    extension,
    migrations,
    ownership,
    privileges,
    structure,
    version_table,
)
from provision.desired import DesiredState
from provision.findings import Finding

# In the order of the seed's own analysis (names, the version table, the extension, owners),
# which is the order `inspect` lists their findings in. The plan's order is the phases'.
REGISTRY: tuple[ModuleType, ...] = (
    migrations,
    structure,
    version_table,
    extension,
    ownership,
    privileges,
    code,
)

FINDING_ORDER: tuple[Callable[[DesiredState, Catalog], list[Finding]], ...] = tuple(
    concern.findings for concern in REGISTRY
)


def all_findings(desired: DesiredState, catalog: Catalog) -> list[Finding]:
    return [finding for concern in FINDING_ORDER for finding in concern(desired, catalog)]
