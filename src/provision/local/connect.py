"""`local connect --as IDENTITY [-c SQL]`: run SQL on the emulated instance as one IAM
identity (a service account or a person of iam_users / iam_members), the way that identity
would on Cloud SQL: its own access token, the real Cloud SQL Python Connector with IAM
database authentication, the emulated Admin API and mTLS proxy. Nothing here reaches
PostgreSQL directly, so what the identity may do is what its grants allow.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import sqlalchemy

from provision import cloudsql, credentials
from provision.config import Environment
from provision.errors import ConfigError, LocalInstanceError, PermissionProblem, ProvisionError
from provision.local import plugin
from provision.local.gcp.state import iam_users
from provision.local.instance import STATE_ENV_VAR, LocalInstance
from provision.sql import error_fields, server_message

_PREFIXES = ("serviceAccount:", "user:")


def _email(identity: str) -> str:
    for prefix in _PREFIXES:
        if identity.startswith(prefix):
            return identity.removeprefix(prefix)
    if identity.startswith(("group:", "domain:")):
        raise ConfigError(
            f"{identity} is not one identity: a group's members log in as themselves",
            hint="pass a member's user:EMAIL or a serviceAccount:EMAIL",
        )
    return identity


def run_as(
    identity: str, sql: str | None, environment: Environment, state_dir: Path
) -> tuple[str, list[str], list[tuple[Any, ...]]]:
    """Run `sql` (default: nothing) as `identity`; returns the session's current_user, the
    result's column names and rows (empty for a statement without a result)."""
    instance = LocalInstance.load(state_dir)
    if instance is None or not instance.is_running():
        raise LocalInstanceError(
            f"no local Cloud SQL emulation runs from {state_dir}",
            hint=f"start one with `nucleus-provision local up`, or set {STATE_ENV_VAR}",
        )
    email = _email(identity)
    user = iam_users(state_dir).get(email)
    if user is None:
        raise ConfigError(
            f"the emulation has no IAM database user for {email}",
            hint="add it to iam_members (or iam_users) of the local environment in "
            "environments.toml, with iam_auth = true, then run `nucleus-provision local up`",
        )
    overrides = dataclasses.replace(
        plugin.overrides(environment, state_dir=state_dir),
        google_credentials=plugin.StaticTokenCredentials(user.token),
    )
    login = credentials.Login(user.db_user, None, True, f"the IAM identity {email}")
    engine, close = cloudsql.login_engine(environment, login, overrides=overrides)
    try:
        with engine.connect() as conn:
            who = str(conn.execute(sqlalchemy.text("SELECT current_user")).scalar())
            if sql is None:
                return who, [], []
            try:
                # exec_driver_sql: the text goes to the server as written (no bind markers).
                result = conn.exec_driver_sql(sql)
            except sqlalchemy.exc.DBAPIError as exc:
                # The statement failed in the server: nothing was committed.
                if error_fields(exc).get("C") == "42501":
                    raise PermissionProblem(
                        f"as {user.db_user}: {server_message(exc)}",
                        hint="an IAM identity may do what its grants allow: give its "
                        "iam_members group the privilege in the privileges file, then "
                        "`nucleus-provision apply --env local`",
                    ) from None
                raise ProvisionError(
                    f"as {user.db_user}: {server_message(exc)}",
                    hint="nothing was changed; correct the SQL and run it again",
                ) from None
            columns = list(result.keys()) if result.returns_rows else []
            rows = [tuple(row) for row in result] if result.returns_rows else []
            conn.commit()
            return who, columns, rows
    finally:
        close()
