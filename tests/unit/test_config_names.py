"""Role names the configuration refuses before anything connects: names PostgreSQL would
truncate or refuses, roles of PostgreSQL and Cloud SQL, and an app login that is the admin
or the owner."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from provision.config import Environment, load_environment

ROOT = Path(__file__).resolve().parents[2]
PROD = load_environment("prod", ROOT / "environments.toml").model_dump(mode="json")


def _with(**changes) -> dict:
    data = {**PROD, "users": {k: dict(v) if v else v for k, v in PROD["users"].items()}}
    for path, value in changes.items():
        where, key = path.rsplit("__", 1)
        target = data
        for part in where.split("__"):
            target = target[part]
        target[key] = value
    return data


LONG = "n" * 64


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("PUBLIC", "reserved word"),
        ("", "is empty"),
        ("cloudsqlsuperuser", "Cloud SQL reserves"),
        ("pg_write_all_data", "PostgreSQL reserves"),
        (LONG, "truncates names to 63 bytes"),
    ],
)
def test_a_group_name_postgres_or_cloud_sql_would_not_keep_is_refused(name, message):
    groups = dict(PROD["privileges"]["groups"])
    groups[name] = groups.pop("nucleus_readonly")
    data = {**PROD, "privileges": {"groups": groups}}
    with pytest.raises(ValidationError, match=message):
        Environment.model_validate(data)


@pytest.mark.parametrize("name", ["postgres", "nucleus"])
def test_an_app_login_that_is_the_admin_or_the_owner_is_refused(name):
    with pytest.raises(ValidationError, match="the app login must be a role of its own"):
        Environment.model_validate(_with(users__app__name=name))


def test_a_user_name_over_63_bytes_is_refused():
    with pytest.raises(ValidationError, match="truncates"):
        Environment.model_validate(_with(users__app__name=LONG))


def test_the_checked_in_environments_pass():
    Environment.model_validate(PROD)
