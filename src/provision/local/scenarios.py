"""Database states the embedded instance can start from.

- `empty`: what a fresh Terraform deploy leaves: database `nucleus_v12`, users `postgres` and
  `nucleus`, nothing else;
- `legacy-nucleus-v12`: the seed's production state (old `_schema` schemas with data, the old
  `public.migrations`, everything owned by `postgres`, no `vector`);
- `legacy-nucleus-v12-partial`: the same, plus migration 001 half run by `postgres`: its
  statements before the one that creates `dna."values"` (where that hand-run stopped),
  recorded nowhere.

A scenario is loaded into a database created "through the API" (owned by cloudsqlsuperuser),
by a session logged in as `postgres`, exactly as the objects came to be on production.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

import pg8000.native

from provision.errors import ConfigError

if TYPE_CHECKING:
    from provision.local.server import LocalInstance


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    load: Callable[[pg8000.native.Connection], None]


def _run_file(name: str) -> Callable[[pg8000.native.Connection], None]:
    def load(conn: pg8000.native.Connection) -> None:
        sql = resources.files("provision.local").joinpath("scenarios").joinpath(name).read_text()
        conn.run(sql)  # simple query protocol: the whole file in one round trip

    return load


def _legacy_then_half_of_001(conn: pg8000.native.Connection) -> None:
    from provision.migrations import load_migrations

    _run_file("legacy-nucleus-v12.sql")(conn)
    first = load_migrations()[0]
    for statement in first.statements:
        if 'dna."values"' in statement.sql:
            break
        conn.run(statement.sql)


def _nothing(conn: pg8000.native.Connection) -> None:
    return None


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("empty", "a fresh Terraform deploy: database and users, nothing else", _nothing),
        Scenario(
            "legacy-nucleus-v12",
            "the seed's production state of nucleus_v12",
            _run_file("legacy-nucleus-v12.sql"),
        ),
        Scenario(
            "legacy-nucleus-v12-partial",
            "the production state plus migration 001 half run by postgres, unrecorded",
            _legacy_then_half_of_001,
        ),
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
    from provision.local.server import (
        ADMIN_USER,
        api_create_database,
        connect_as,
        superuser_connection,
    )

    scenario = get(name)
    database = database or instance.database
    admin = superuser_connection(instance)
    try:
        api_create_database(admin, database)
    finally:
        admin.close()
    conn = connect_as(instance, ADMIN_USER, database)
    try:
        conn.run("BEGIN")
        scenario.load(conn)
        conn.run("COMMIT")
    finally:
        conn.close()
