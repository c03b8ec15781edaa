"""IAM database authentication: a service account logs in with its token behind the ephemeral
certificate, no password, exactly as `enable_iam_auth=True` does against Cloud SQL."""

from __future__ import annotations

import json

import pg8000.native
import pytest
from connector_support import (
    IAM_ACCOUNT,
    config_variant,
    emulated_target,
    local_environment,
    nucleus,
)
from sqlalchemy import text

from provision import cloudsql, commands, credentials
from provision.errors import ConnectionFailed
from provision.local import plugin, server
from provision.local.gcp import state as gcp_state
from provision.local.instance import superuser_connection

IAM_DB_USER = "runner@local-project.iam"


def test_a_service_account_logs_in_with_iam_and_no_password(emulation, tmp_path):
    config = config_variant(
        tmp_path, "iam", iam_auth=True, iam_users=[IAM_ACCOUNT], iam_login=IAM_ACCOUNT
    )
    before = len(emulation.records())
    run = nucleus(
        "--config",
        str(config),
        "inspect",
        "--env",
        "local",
        "--format",
        "json",
        "--exit-zero",  # a report here (the fresh instance has findings: exit 2 or 3 without it)
        env=emulation.env(),
    )
    assert run.code == 0, run.err
    assert json.loads(run.out)["connected_as"] == IAM_DB_USER

    records = emulation.records(before)
    # The run acts as the service account for every Admin API call; the admin session's
    # certificate carries its identity (an owner session, when one is opened, has its own).
    cert_calls = [r for r in records if r["event"] == "generateEphemeralCert"]
    assert cert_calls and {r["caller"] for r in cert_calls} == {f"serviceAccount:{IAM_ACCOUNT}"}
    (cert_call,) = [r for r in cert_calls if r["certificate"]["iam_user"] == IAM_ACCOUNT]
    (connection,) = [
        r
        for r in records
        if r["event"] == "connection" and r["client_cert"]["iam_user"] == IAM_ACCOUNT
    ]
    assert connection["client_cert"]["sha256"] == cert_call["certificate"]["sha256"]
    assert any(r["event"] == "iam_login" and r["db_user"] == IAM_DB_USER for r in records)


def test_local_up_creates_the_iam_users_like_the_cloud_sql_api(emulation):
    conn = superuser_connection(emulation.instance)
    try:
        rows = conn.run(
            "SELECT pg_has_role(:u, 'cloudsqlsuperuser', 'MEMBER'), "
            "pg_has_role(:u, 'cloudsqliamserviceaccount', 'MEMBER'), rolcanlogin "
            "FROM pg_roles WHERE rolname = :u",
            u=IAM_DB_USER,
        )
    finally:
        conn.close()
    # IAM users are no members of cloudsqlsuperuser (shared/docs/cloudsql.md, section 6).
    assert rows == [[False, True, True]]


def test_the_iam_user_cannot_log_in_without_its_certificate(emulation):
    state = emulation.state
    # Straight to PostgreSQL: its password is internal to the emulation; guessing fails.
    with pytest.raises(pg8000.native.DatabaseError):
        pg8000.native.Connection(
            IAM_DB_USER,
            host=state.pg_host,
            port=state.pg_port,
            database="nucleus_v12",
            password="guess",
        )
    # Through the Connector with an ordinary certificate (no IAM token behind it), the proxy
    # does not vouch for the user: PostgreSQL asks for the password, which nobody outside has.
    session = cloudsql.ConnectorSession(
        google_credentials=plugin.StaticTokenCredentials(state.api_token),
        ip_type="public",
        lazy_refresh=True,
        connect_timeout=10,
        sqladmin_api_endpoint=state.admin_api,
    )
    try:
        login = credentials.Login(IAM_DB_USER, "guess", False, "test")
        with pytest.raises(pg8000.native.DatabaseError) as refused:
            session.connect(state.connection_name, login, "nucleus_v12")
        assert refused.value.args[0]["C"] == "28P01"
    finally:
        session.close()


def test_an_iam_login_the_emulation_does_not_know_is_refused(emulation, tmp_path):
    environment = local_environment(
        iam_auth=True,
        iam_users=["stranger@local-project.iam.gserviceaccount.com"],
        iam_login="stranger@local-project.iam.gserviceaccount.com",
    )
    with pytest.raises(Exception) as refused:
        emulated_target(environment, emulation.state_dir)
    assert "has no IAM service account stranger@" in str(refused.value)
    # Only what `local up` created: the admin's account and local's iam_members one.
    assert gcp_state.iam_users(emulation.state_dir).keys() == {
        IAM_ACCOUNT,
        "nucleus-api@local-project.iam.gserviceaccount.com",
    }


def test_iam_and_password_sessions_share_the_run(emulation):
    target = emulated_target(
        local_environment(iam_auth=True, iam_users=[IAM_ACCOUNT], iam_login=IAM_ACCOUNT),
        emulation.state_dir,
    )
    try:
        with target.admin.connect() as conn:
            assert conn.execute(text("SELECT current_user")).scalar() == IAM_DB_USER
        assert target.owner is not None
        with target.owner.connect() as conn:
            assert conn.execute(text("SELECT current_user")).scalar() == "nucleus"
    finally:
        target.dispose()


def test_an_iam_login_without_a_database_user_is_one_clear_error(fragile_emulation):
    ghost = "ghost@local-project.iam.gserviceaccount.com"
    user = server.create_iam_user(fragile_emulation.instance, ghost)
    conn = superuser_connection(fragile_emulation.instance)
    try:
        conn.run(f'DROP ROLE "{user.db_user}"')  # the IAM user was deleted on the instance
    finally:
        conn.close()
    target = emulated_target(
        local_environment(iam_auth=True, iam_users=[ghost], iam_login=ghost),
        fragile_emulation.state_dir,
    )
    with pytest.raises(ConnectionFailed) as failed:
        commands.inspect(target)
    assert (
        'password authentication failed for user "ghost@local-project.iam"' in failed.value.message
    )
    assert f"check that {ghost} has an IAM database user" in (failed.value.hint or "")
