"""Where passwords come from: the password variable, Secret Manager's latest version (the real
client against a fake that speaks Secret Manager's REST protocol), or the local emulation.
Missing credentials say where they were looked for; no password is ever shown."""

from __future__ import annotations

from collections.abc import Iterator

import google.oauth2.credentials
import pytest
from connector_support import CONFIG, emulated_target, local_environment

from provision import credentials
from provision.config import Environment, UserConfig, Users, load_environment
from provision.errors import ConnectionFailed, CredentialsMissing
from provision.local import plugin

ADMIN_SECRET = "projects/nucleus-prod/secrets/nucleus-prototype-db-postgres-password"


@pytest.fixture
def prod(monkeypatch) -> Environment:
    monkeypatch.delenv("NUCLEUS_ADMIN_PASSWORD", raising=False)
    monkeypatch.delenv("NUCLEUS_OWNER_PASSWORD", raising=False)
    return load_environment("prod", CONFIG)


@pytest.fixture
def reader(secret_manager) -> Iterator[credentials.SecretStore]:
    reader = credentials.SecretStore(
        google.oauth2.credentials.Credentials(token="test-token"),
        endpoint=secret_manager.endpoint,
        timeout=5,
    )
    yield reader
    reader.close()


def test_the_password_comes_from_the_latest_version_of_the_secret(prod, secret_manager, reader):
    secret_manager.secrets[ADMIN_SECRET] = (
        "from-secret-manager\n"  # as `echo pw | gcloud secrets create`
    )
    login = credentials.login_for(prod, "admin", secrets=reader)
    assert (login.user, login.password, login.iam) == ("postgres", "from-secret-manager", False)
    assert login.source == f"Secret Manager secret {ADMIN_SECRET} (latest version)"
    assert secret_manager.calls == [f"{ADMIN_SECRET}/versions/latest"]
    assert "from-secret-manager" not in repr(login)


def test_the_password_variable_comes_before_secret_manager(
    prod, secret_manager, reader, monkeypatch
):
    monkeypatch.setenv("NUCLEUS_ADMIN_PASSWORD", "from-the-shell")
    login = credentials.login_for(prod, "admin", secrets=reader)
    assert (
        login.password == "from-the-shell"
        and login.source == "environment variable NUCLEUS_ADMIN_PASSWORD"
    )
    assert secret_manager.calls == []


def test_missing_credentials_name_every_place_looked(prod, reader):
    with pytest.raises(CredentialsMissing) as missing:
        credentials.login_for(prod, "owner", secrets=reader)
    message = missing.value.message
    assert "no password for database user 'nucleus'" in message
    assert "environment variable NUCLEUS_OWNER_PASSWORD (not set)" in message
    assert (
        "projects/nucleus-prod/secrets/nucleus-prototype-db-nucleus-password/versions/latest: not found"
        in message
    )
    assert "export NUCLEUS_OWNER_PASSWORD" in (missing.value.hint or "")


def test_a_secret_the_caller_may_not_read_says_which_role_to_grant(prod, secret_manager, reader):
    secret_manager.denied.add(ADMIN_SECRET)
    with pytest.raises(CredentialsMissing) as denied:
        credentials.login_for(prod, "admin", secrets=reader)
    assert f"no permission to read Secret Manager secret {ADMIN_SECRET}" in denied.value.message
    assert "roles/secretmanager.secretAccessor" in (denied.value.hint or "")


def test_an_unreachable_secret_manager_fails_within_its_timeout(prod):
    reader = credentials.SecretStore(
        google.oauth2.credentials.Credentials(token="test-token"),
        endpoint="http://127.0.0.1:9",
        timeout=2,
    )
    with pytest.raises(ConnectionFailed) as failed:
        credentials.login_for(prod, "admin", secrets=reader)
    assert "cannot read Secret Manager secret" in failed.value.message


def test_an_exported_production_password_is_never_sent_to_the_emulation(emulation, monkeypatch):
    monkeypatch.setenv("NUCLEUS_ADMIN_PASSWORD", "the-production-password")
    local = load_environment("local", CONFIG)
    login = credentials.login_for(
        local, "admin", overrides=plugin.overrides(local, state_dir=emulation.state_dir)
    )
    assert login.password == emulation.instance.passwords["postgres"]
    # Read from the emulated Secret Manager, where `local up` put it, as the stacks would.
    assert login.source == (
        "Secret Manager secret projects/local-project/secrets/nucleus-prototype-db-postgres-"
        f"password (latest version) of the local emulation in {emulation.state_dir}"
    )
    accessed = [r for r in emulation.records() if r["event"] == "accessSecretVersion"]
    assert accessed and accessed[-1]["path"].endswith(
        "/secrets/nucleus-prototype-db-postgres-password/versions/latest:access"
    )


def test_without_owner_credentials_the_target_has_no_owner_and_says_why(emulation, monkeypatch):
    monkeypatch.delenv("NUCLEUS_TEST_OWNER", raising=False)
    users = Users(
        admin=UserConfig(name="postgres"),
        owner=UserConfig(name="app_owner", password_env="NUCLEUS_TEST_OWNER"),
    )
    target = emulated_target(local_environment(users=users.model_dump()), emulation.state_dir)
    try:
        assert target.owner is None
        assert target.owner_unavailable is not None
        assert "no password for database user 'app_owner'" in target.owner_unavailable
        assert "NUCLEUS_TEST_OWNER (not set)" in target.owner_unavailable
    finally:
        target.dispose()


def test_static_token_credentials_survive_the_connectors_down_scoping():
    # IAM logins make the Connector copy the credentials and refresh the copy.
    import copy

    import google.auth.transport.requests

    creds = plugin.StaticTokenCredentials("static")
    assert creds.valid and creds.expiry is None
    scoped = copy.copy(creds)
    scoped.refresh(google.auth.transport.requests.Request())
    assert scoped.token == "static" and scoped.expiry is not None
