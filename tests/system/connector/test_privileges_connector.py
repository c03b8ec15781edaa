"""Privileges as code through the real Connector: `apply --env local` creates the groups and
the app login, and the logins services use (the app's password, a declared IAM service
account) can do what the declaration says and nothing more."""

from __future__ import annotations

from collections.abc import Iterator

import pg8000.native
import pytest
from connector_support import SCENARIO, Emulation, nucleus

from provision import cloudsql, credentials
from provision.local import plugin, server
from provision.local.gcp import state as gcp_state

API_SA = "nucleus-api@local-project.iam.gserviceaccount.com"  # local's iam_members
STRANGER = "stranger@local-project.iam.gserviceaccount.com"  # an IAM user nobody declared


@pytest.fixture(scope="module")
def converged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulation]:
    """An emulation of the `local` environment of environments.toml, converged by apply."""
    directory = tmp_path_factory.mktemp("privileges")
    srv = server.Server(directory)
    instance = srv.start(SCENARIO)
    try:
        emulation = Emulation(instance)
        server.create_iam_user(instance, STRANGER)
        run = nucleus("apply", "--auto-approve", "--env", "local", env=emulation.env())
        assert run.code == 0, run.err
        # The run created the app login from its secret and printed neither.
        assert "CREATE ROLE nucleus_app LOGIN PASSWORD <SCRAM-SHA-256 verifier" in run.out
        assert instance.passwords["nucleus_app"] not in run.out + run.err
        yield emulation
    finally:
        srv.stop()


def _session(emulation: Emulation, token: str) -> cloudsql.ConnectorSession:
    state = emulation.state
    return cloudsql.ConnectorSession(
        google_credentials=plugin.StaticTokenCredentials(token),
        ip_type="public",
        lazy_refresh=True,
        connect_timeout=10,
        sqladmin_api_endpoint=state.admin_api,
    )


def _through_connector(emulation: Emulation, login: credentials.Login, token: str, sql: list[str]):
    """Run each statement as `login` through the Connector; the SQLSTATE of each (or None)."""
    session = _session(emulation, token)
    outcomes: list[str | None] = []
    try:
        conn = session.connect(emulation.state.connection_name, login, "nucleus_v12")
        conn.autocommit = True
        try:
            for statement in sql:
                cursor = conn.cursor()
                try:
                    cursor.execute(statement)
                    outcomes.append(None)
                except pg8000.dbapi.DatabaseError as exc:
                    outcomes.append(exc.args[0]["C"])
        finally:
            conn.close()
    finally:
        session.close()
    return outcomes


WORK = [
    "INSERT INTO dna.entity (name) VALUES ('via connector')",
    "SELECT count(*) FROM dna.entity",
    "UPDATE dna.entity SET email = 'x@y' WHERE name = 'via connector'",
    "DELETE FROM dna.entity WHERE name = 'via connector'",
    "INSERT INTO dna.goals (entity_id, title) SELECT id, 'g' FROM dna.entity LIMIT 0",
]
STRUCTURE = [
    "CREATE TABLE dna.sneaky (id int)",
    "DROP TABLE dna.goals",
    "CREATE SCHEMA sneaky",
]


def test_the_app_login_works_rows_and_nothing_else_through_the_connector(converged):
    password = converged.instance.passwords["nucleus_app"]
    login = credentials.Login("nucleus_app", password, False, "test")
    outcomes = _through_connector(converged, login, converged.state.api_token, WORK + STRUCTURE)
    assert outcomes == [None] * len(WORK) + ["42501"] * len(STRUCTURE)


def test_a_declared_iam_service_account_works_rows_through_the_connector(converged):
    token = gcp_state.iam_users(converged.state_dir)[API_SA].token
    login = credentials.Login(API_SA, None, True, "test")
    outcomes = _through_connector(converged, login, token, WORK + STRUCTURE)
    assert outcomes == [None] * len(WORK) + ["42501"] * len(STRUCTURE)


def test_an_undeclared_iam_user_can_do_nothing_in_the_new_schemas(converged):
    token = gcp_state.iam_users(converged.state_dir)[STRANGER].token
    login = credentials.Login(STRANGER, None, True, "test")
    outcomes = _through_connector(converged, login, token, WORK[:2] + STRUCTURE[:1])
    assert outcomes == ["42501", "42501", "42501"]


def test_verify_through_the_connector_is_clean_and_a_rerun_changes_nothing(converged):
    assert nucleus("verify", "--env", "local", env=converged.env()).code == 0
    again = nucleus(
        "apply", "--auto-approve", "--env", "local", "--format", "json", env=converged.env()
    )
    assert again.code == 0 and '"applied": []' in again.out


def test_the_app_password_never_appears_in_later_runs(converged):
    password = converged.instance.passwords["nucleus_app"]
    plan = nucleus("plan", "--env", "local", env=converged.env())
    inspect = nucleus("inspect", "--env", "local", env=converged.env())
    assert password not in plan.out + plan.err + inspect.out + inspect.err
