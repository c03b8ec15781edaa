"""Direct connections (`--dsn`): libpq's sslmode, and no TLS context where there is no TLS.

The emulated server speaks plain TCP on its direct port (TLS is the Connector's, on the
proxy), so a `prefer` connection to it must not build a TLS context: pg8000 on its own builds
one (loading the system's CA store) before it asks the server, and that was most of the
cost of connecting.
"""

from __future__ import annotations

import ssl

import pytest
import sqlalchemy
from sqlalchemy import text

from helpers import assert_clean_error, cli
from provision import db


class _Counted:
    """Counts the TLS contexts built while it is installed (the standard library's classes,
    observed, not replaced: every context still works)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.built = 0
        original_new = ssl.SSLContext.__new__

        def counting_new(cls, *args, **kwargs):
            self.built += 1
            return original_new(cls, *args, **kwargs)

        monkeypatch.setattr(ssl.SSLContext, "__new__", counting_new)


def test_a_connection_to_a_server_without_tls_builds_no_tls_context(legacy_db, monkeypatch):
    counted = _Counted(monkeypatch)
    engine = db.engine_for_dsn(legacy_db.admin_dsn)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT current_user")).scalar() == "postgres"
            ssl_in_use = conn.execute(
                text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            ).scalar()
    finally:
        engine.dispose()
    assert ssl_in_use is False
    assert counted.built == 0


def test_the_probe_sees_the_context_pg8000_builds_on_its_own(legacy_db, monkeypatch):
    """The check above can fail: pg8000 left to its default builds a context for nothing."""
    counted = _Counted(monkeypatch)
    engine = sqlalchemy.create_engine(
        db.parse_dsn(legacy_db.admin_dsn), poolclass=sqlalchemy.pool.NullPool
    )
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()
    assert counted.built >= 1


@pytest.mark.parametrize("mode", ["disable", "prefer"])
def test_sslmode_disable_and_prefer_reach_a_server_without_tls(legacy_db, mode):
    engine = db.engine_for_dsn(f"{legacy_db.admin_dsn}?sslmode={mode}")
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT current_user")).scalar() == "postgres"
    finally:
        engine.dispose()


def test_sslmode_require_refuses_a_server_without_tls(legacy_db):
    password = legacy_db.instance.passwords["postgres"]
    run = cli("plan", "--env", "local", "--dsn", f"{legacy_db.admin_dsn}?sslmode=require")
    assert_clean_error(run, "does not accept TLS", "sslmode=require", secrets=(password,))


def test_an_unknown_sslmode_or_parameter_is_refused_before_connecting(legacy_db):
    run = cli("plan", "--env", "local", "--dsn", f"{legacy_db.admin_dsn}?sslmode=allow")
    assert_clean_error(run, "sslmode 'allow' is not supported", "disable, prefer, require")
    run = cli("plan", "--env", "local", "--dsn", f"{legacy_db.admin_dsn}?sslcert=x.pem")
    assert_clean_error(run, "unsupported parameter(s) sslcert")
