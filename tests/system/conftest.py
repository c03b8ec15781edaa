"""Fixtures of the `diff` system tests: the layout applied once per module, cloned per test.

Applying the layout (through the real CLI) to an `empty` and to a `legacy-nucleus-v12`
database takes a few seconds; each test then gets its own copies of the two applied databases
(`CREATE DATABASE ... TEMPLATE`: milliseconds), so a test may change one side freely.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pytest_postgresql.janitor import DatabaseJanitor

from helpers import cli
from provision.local.server import (
    ADMIN_USER,
    BOOTSTRAP_SUPERUSER,
    OWNER_USER,
    SUPERUSER_GROUP,
    LocalInstance,
    connect_as,
)

_names = itertools.count()


@dataclass(frozen=True)
class Side:
    """One database of the pair: its DSNs, and a way to change it by hand."""

    instance: LocalInstance
    name: str

    @property
    def admin_dsn(self) -> str:
        return self.instance.dsn(ADMIN_USER, self.name)

    @property
    def owner_dsn(self) -> str:
        return self.instance.dsn(OWNER_USER, self.name)

    def query(self, sql: str, user: str = BOOTSTRAP_SUPERUSER) -> Any:
        conn = connect_as(self.instance, user, self.name, timeout=30)
        try:
            return conn.run(sql)
        finally:
            conn.close()


def _create(instance: LocalInstance, template: str) -> tuple[DatabaseJanitor, Side]:
    name = f"d{os.getpid()}_{next(_names)}"
    janitor = DatabaseJanitor(
        user=BOOTSTRAP_SUPERUSER,
        host=instance.host,
        port=instance.port,
        dbname=name,
        template_dbname=template,
        password=instance.passwords[BOOTSTRAP_SUPERUSER],
    )
    janitor.init()
    side = Side(instance, name)
    side.query(f'ALTER DATABASE "{name}" OWNER TO {SUPERUSER_GROUP}')
    return janitor, side


@pytest.fixture(scope="module")
def applied(instance: LocalInstance) -> Iterator[dict[str, str]]:
    """Template databases: the layout applied to `empty` and to `legacy-nucleus-v12`."""
    janitors, names = [], {}
    for scenario in ("empty", "legacy-nucleus-v12"):
        janitor, side = _create(instance, f"tmpl_{scenario.replace('-', '_')}")
        janitors.append(janitor)
        run = cli("apply", "--dsn", side.admin_dsn, "--owner-dsn", side.owner_dsn)
        assert run.code == 0, run.err
        names[scenario] = side.name
    yield names
    for janitor in janitors:
        janitor.drop()


@pytest.fixture
def clone(instance: LocalInstance, applied: dict[str, str]) -> Iterator[Callable[[str], Side]]:
    """Factory: a fresh copy of the applied `empty` or `legacy-nucleus-v12` database."""
    janitors = []

    def make(scenario: str) -> Side:
        janitor, side = _create(instance, applied[scenario])
        janitors.append(janitor)
        return side

    yield make
    for janitor in janitors:
        janitor.drop()
