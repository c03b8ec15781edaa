"""Database states the embedded instance can start from.

- `empty`: what a fresh Terraform deploy leaves: database `nucleus_v12`, users `postgres` and
  `nucleus`, nothing else;
- `legacy-nucleus-v12`: the seed's production state (old `_schema` schemas with data, the old
  `public.migrations`, everything owned by `postgres`, no `vector`): `legacy-nucleus-v12.sql`
  beside this file;
- `legacy-nucleus-v12-partial`: the same, plus migration 001 half run by `postgres`, recorded
  nowhere: the statements of 001 above its line `-- nucleus-provision: the production hand-run
  of this file stopped here`, where that hand-run stopped.

A scenario is loaded into a database created "through the API" (owned by cloudsqlsuperuser),
by a session logged in as `postgres`, exactly as the objects came to be on production.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import pg8000.native

from provision.errors import ConfigError, MigrationFileError
from provision.local import cloudsql_api
from provision.local.instance import ADMIN_USER, LocalInstance, connect_as, superuser_connection
from provision.migrations import Migration, load_migrations

# The line of 001_init_schemas.sql where the production hand-run stopped.
STOP_MARKER = re.compile(
    r"^\s*--\s*nucleus-provision:\s*the production hand-run of this file stopped here\b"
)

Loader = Callable[[pg8000.native.Connection], None]


@dataclass(frozen=True)
class Scenario:
    name: str
    load: Loader


def _run_file(name: str) -> Loader:
    def load(conn: pg8000.native.Connection) -> None:
        sql = resources.files(__name__).joinpath(name).read_text()
        conn.run(sql)  # simple query protocol: the whole file in one round trip

    return load


def statements_before_stop_marker(migration: Migration) -> list[str]:
    """The statements of `migration` above its stop marker line (see STOP_MARKER)."""
    lines = migration.path.read_text().splitlines()
    marker = next((n for n, line in enumerate(lines, 1) if STOP_MARKER.match(line)), None)
    if marker is None:
        raise MigrationFileError(
            f"{migration.filename} has no line '-- nucleus-provision: the production hand-run "
            "of this file stopped here'",
            hint="the legacy-nucleus-v12-partial scenario runs the statements above that line",
        )
    return [statement.sql for statement in migration.statements if statement.line < marker]


def _legacy_then_half_of_001(conn: pg8000.native.Connection) -> None:
    _run_file("legacy-nucleus-v12.sql")(conn)
    for sql in statements_before_stop_marker(load_migrations()[0]):
        conn.run(sql)


def _nothing(conn: pg8000.native.Connection) -> None:
    return None


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("empty", _nothing),
        Scenario("legacy-nucleus-v12", _run_file("legacy-nucleus-v12.sql")),
        Scenario("legacy-nucleus-v12-partial", _legacy_then_half_of_001),
    )
}


def get(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ConfigError(
            f"unknown scenario {name!r}", hint=f"choose one of: {', '.join(SCENARIOS)}"
        ) from None


def load(instance: LocalInstance, name: str, database: str | None = None) -> None:
    """Create `database` the way Cloud SQL's API does and load scenario `name` into it as `postgres`."""
    scenario = get(name)
    database = database or instance.database
    admin = superuser_connection(instance)
    try:
        cloudsql_api.create_database(admin, database)
    finally:
        admin.close()
    conn = connect_as(instance, ADMIN_USER, database)
    try:
        conn.run("BEGIN")
        scenario.load(conn)
        conn.run("COMMIT")
    finally:
        conn.close()
