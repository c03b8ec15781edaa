"""`--env local` reaches PostgreSQL through the real Cloud SQL Python Connector, and the
emulator's own records prove it: Admin API calls, then a client certificate signed by the
client CA presented to the proxy."""

from __future__ import annotations

import json
import threading

import pytest
from connector_support import CONFIG, emulated_target, local_environment, nucleus
from cryptography import x509
from sqlalchemy import text

from provision import cloudsql


def _events(records: list[dict]) -> list[tuple[str, str]]:
    return [(r["component"], r["event"]) for r in records]


def test_inspect_env_local_goes_through_the_admin_api_and_the_mtls_proxy(emulation):
    before = len(emulation.records())
    run = nucleus(
        "inspect", "--exit-zero", "--env", "local", "--format", "json", env=emulation.env()
    )
    assert run.code == 0, run.err
    assert json.loads(run.out)["connected_as"] == "postgres"

    records = emulation.records(before)
    # The admin's and the owner's passwords from the emulated Secret Manager (as the stacks'
    # secrets in production); the two Admin API calls run concurrently; then the one
    # connection of the one role used.
    assert sorted(_events(records)) == [
        ("admin-api", "connectSettings"),
        ("admin-api", "generateEphemeralCert"),
        ("proxy", "connection"),
        ("proxy", "startup"),
        ("secret-manager", "accessSecretVersion"),
        ("secret-manager", "accessSecretVersion"),
    ]
    (startup,) = [r for r in records if r["event"] == "startup"]
    assert (startup["db_user"], startup["database"]) == ("postgres", "nucleus_v12")
    api_calls = [r for r in records if r["component"] == "admin-api"]
    for call in api_calls:
        assert call["status"] == 200
        assert call["caller"] == "local developer (static token)"
        assert call["user_agent"].startswith("cloud-sql-python-connector/1.23.0+pg8000")
        assert "nucleus-provision/" in call["user_agent"]
    (connection,) = [r for r in records if r["event"] == "connection"]
    assert connection["tls_version"] == "TLSv1.3"
    presented = x509.load_pem_x509_certificate(connection["client_cert"]["pem"].encode())
    client_ca = x509.load_pem_x509_certificate(emulation.state.path("client-ca.pem").read_bytes())
    presented.verify_directly_issued_by(client_ca)  # raises unless the client CA signed it
    (issued,) = [r["certificate"] for r in api_calls if r["event"] == "generateEphemeralCert"]
    assert connection["client_cert"]["sha256"] == issued["sha256"]


def test_admin_and_owner_sessions_share_one_connector_and_one_certificate(emulation, monkeypatch):
    monkeypatch.setenv("NUCLEUS_LOCAL_STATE_DIR", str(emulation.state_dir))
    before = len(emulation.records())
    target = cloudsql.target_for_environment("local", str(CONFIG))
    try:
        assert target.owner is not None and target.owner_unavailable is None
        with target.admin.connect() as conn:
            assert conn.execute(text("SELECT current_user")).scalar() == "postgres"
            assert conn.execute(text("SELECT count(*) FROM dna_schema.entities")).scalar() >= 0
        with target.owner.connect() as conn:
            assert conn.execute(text("SELECT current_user")).scalar() == "nucleus"
            assert conn.execute(text("SELECT current_database()")).scalar() == "nucleus_v12"
    finally:
        target.dispose()
    records = emulation.records(before)
    events = _events(records)
    assert events.count(("admin-api", "connectSettings")) == 1
    assert events.count(("admin-api", "generateEphemeralCert")) == 1
    assert events.count(("proxy", "connection")) == 2  # one per role, no pool left open
    assert [r["db_user"] for r in records if r["event"] == "startup"] == ["postgres", "nucleus"]
    assert not [
        t for t in threading.enumerate() if t.name.startswith("cloudsql-connector") and t.is_alive()
    ]


def test_engines_carry_no_password_and_dispose_is_idempotent(emulation, monkeypatch):
    monkeypatch.setenv("NUCLEUS_LOCAL_STATE_DIR", str(emulation.state_dir))
    target = cloudsql.target_for_environment("local", str(CONFIG))
    target.dispose()
    target.dispose()
    assert target.admin.url.password is None and target.admin.url.username == "postgres"
    for password in emulation.instance.passwords.values():
        assert password not in target.description
        assert password not in repr(target.admin.url)


# The shared emulation has a public IP only (the `local` environment's ip_type): the other
# ip_types are tested against instances that have them in test_cloudsql_fidelity.py.
@pytest.mark.parametrize("ip_type", ["public"])
@pytest.mark.parametrize("lazy_refresh", [False, True])
def test_every_refresh_strategy_connects(emulation, ip_type, lazy_refresh):
    environment = local_environment(ip_type=ip_type, lazy_refresh=lazy_refresh)
    target = emulated_target(environment, emulation.state_dir)
    try:
        with target.admin.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
    finally:
        target.dispose()
