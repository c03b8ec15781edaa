"""Fixtures of the system tests: one embedded Cloud-SQL-like server per test session, one database per test.

The server starts once (about a second). Each scenario is loaded once into a template
database; every test then gets its own copy, created and dropped by pytest-postgresql's
DatabaseJanitor (CREATE DATABASE ... TEMPLATE is a file copy: milliseconds). The copy is
handed to `cloudsqlsuperuser`, as databases created through Cloud SQL's API are.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

import pg8000.native
import pytest
from pytest_postgresql.janitor import DatabaseJanitor

from helpers import APP_PASSWORD
from provision.commands import ENVIRONMENT_ENV_VAR
from provision.local import scenarios
from provision.local.instance import (
    ADMIN_USER,
    BOOTSTRAP_SUPERUSER,
    OWNER_USER,
    SUPERUSER_GROUP,
    LocalInstance,
    connect_as,
)
from provision.local.server import Server

# Every database of these tests lives on the emulated server, which is what the `local`
# environment describes (its server cannot load pgaudit): `--dsn` runs check local's desired
# state. Tests of prod's desired state name `--env prod` themselves.
os.environ[ENVIRONMENT_ENV_VAR] = "local"
# The app login's password for `--dsn` runs (on Cloud SQL: its Secret Manager secret).
os.environ["NUCLEUS_APP_PASSWORD"] = APP_PASSWORD


@dataclass(frozen=True)
class Database:
    """One test database on the embedded server, with the DSNs of each role."""

    instance: LocalInstance
    name: str

    def dsn(self, user: str, password: str | None = None) -> str:
        return self.instance.dsn(user, self.name, password)

    @property
    def admin_dsn(self) -> str:
        return self.dsn(ADMIN_USER)

    @property
    def owner_dsn(self) -> str:
        return self.dsn(OWNER_USER)

    @property
    def targets(self) -> tuple[str, ...]:
        """The CLI's TARGET options for both sessions."""
        return ("--dsn", self.admin_dsn, "--owner-dsn", self.owner_dsn)

    def connect(self, user: str = BOOTSTRAP_SUPERUSER) -> pg8000.native.Connection:
        return connect_as(self.instance, user, self.name, timeout=30)

    def query(self, sql: str, user: str = BOOTSTRAP_SUPERUSER, **params):
        conn = self.connect(user)
        try:
            return conn.run(sql, **params)
        finally:
            conn.close()


@pytest.fixture(scope="session")
def instance(tmp_path_factory: pytest.TempPathFactory):
    server = Server(tmp_path_factory.mktemp("cloudsql"))
    started = server.start("empty")
    for name in scenarios.SCENARIOS:
        scenarios.load(started, name, database=f"tmpl_{name.replace('-', '_')}")
    yield started
    server.stop()


_counter = itertools.count()


def create_database(instance: LocalInstance, template: str) -> tuple[DatabaseJanitor, Database]:
    """A new database copied from `template` (a scenario's, or one a test module prepared),
    handed to cloudsqlsuperuser as Cloud SQL's API does; drop it with the janitor."""
    name = f"t{os.getpid()}_{next(_counter)}"
    janitor = DatabaseJanitor(
        user=BOOTSTRAP_SUPERUSER,
        host=instance.host,
        port=instance.port,
        dbname=name,
        template_dbname=template,
        password=instance.passwords[BOOTSTRAP_SUPERUSER],
    )
    janitor.init()
    db = Database(instance, name)
    db.query(f'ALTER DATABASE "{name}" OWNER TO {SUPERUSER_GROUP}')
    return janitor, db


def _database(instance: LocalInstance, scenario: str) -> tuple[DatabaseJanitor, Database]:
    return create_database(instance, f"tmpl_{scenario.replace('-', '_')}")


@pytest.fixture(scope="session")
def database_from():
    """`create_database`, for modules that build their own templates (module-scoped ones too)."""
    return create_database


@pytest.fixture
def make_db(instance):
    """Factory: a fresh database loaded with a scenario, dropped after the test."""
    janitors = []

    def make(scenario: str) -> Database:
        janitor, db = _database(instance, scenario)
        janitors.append(janitor)
        return db

    yield make
    for janitor in janitors:
        janitor.drop()


@pytest.fixture
def legacy_db(make_db) -> Database:
    return make_db("legacy-nucleus-v12")


@pytest.fixture
def partial_db(make_db) -> Database:
    return make_db("legacy-nucleus-v12-partial")


@pytest.fixture
def empty_db(make_db) -> Database:
    return make_db("empty")
