"""Issue 17, inputs: every error reachable from input is one clear line, never a traceback,
never "report it", never a password."""

from __future__ import annotations

import os
from urllib.parse import quote

import pytest

from helpers import assert_clean_error, cli, config_replacing


def _no_password(db) -> str:
    admin = db.admin_dsn
    scheme, rest = admin.split("://", 1)
    credentials, place = rest.split("@", 1)
    user, password = credentials.split(":", 1)
    return f"{scheme}://{user}@{place}", password


def test_a_password_in_the_query_works_and_is_never_printed(legacy_db):
    base, password = _no_password(legacy_db)
    run = cli("inspect", "--exit-zero", "--dsn", f"{base}?password={password}")
    assert run.code == 0, run.err
    assert password not in run.out + run.err
    wrong = cli("inspect", "--dsn", f"{base}?password=wrong-secret-in-query")
    assert_clean_error(wrong, "password authentication failed", secrets=("wrong-secret-in-query",))


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("sslmode=bogus", "sslmode 'bogus' is not supported"),
        ("options=-csearch_path%3Ddna_schema", "unsupported parameter(s) options"),
        ("sslrootcert=/nonexistent.pem", "needs sslmode=verify-ca or verify-full"),
        ("sslmode=verify-full&sslrootcert=/nonexistent.pem", "sslrootcert cannot be read"),
        ("password=a&password=b", "repeats a parameter"),
    ],
)
def test_dsn_parameters_are_checked_by_name(legacy_db, query, fragment):
    run = cli("plan", "--dsn", f"{legacy_db.admin_dsn}?{query}")
    assert_clean_error(run, fragment, secrets=("a&password=b",))
    assert "report it" not in run.err


def test_sslmode_require_is_tried_and_a_server_without_tls_is_a_clear_error(legacy_db):
    run = cli("plan", "--dsn", legacy_db.admin_dsn + "?sslmode=require")
    # The emulation's server listens without TLS (the Connector's proxy is where TLS is).
    assert_clean_error(run, "cannot connect")
    assert "report it" not in run.err and "TypeError" not in run.err


def test_an_app_password_saslprep_refuses_logs_in_as_postgresql_accepts_it(legacy_db, tmp_path):
    # A tab and mixed-direction text: SASLprep refuses both, PostgreSQL then uses the raw
    # bytes (on both sides); libpq (psycopg) logs in the way psql would. Roles are global to
    # the server, so this test's app login has a name of its own.
    psycopg = pytest.importorskip("psycopg")
    password = "tab\there-\u05d0abc"
    login = f"app_tab_{legacy_db.name}"
    config = config_replacing(tmp_path, 'name = "nucleus_app"', f'name = "{login}"')
    env = {**os.environ, "NUCLEUS_APP_PASSWORD": password}
    run = cli("--config", config, "apply", "--auto-approve", *legacy_db.targets, env=env)
    assert run.code == 0, run.err
    assert password not in run.out + run.err
    with psycopg.connect(
        host=legacy_db.instance.host,
        port=legacy_db.instance.port,
        dbname=legacy_db.name,
        user=login,
        password=password,
    ) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (login,)


def test_a_name_key_in_an_environment_names_the_field(tmp_path):
    config = config_replacing(
        tmp_path, "[environments.prod]\n", '[environments.prod]\nname = "x"\n'
    )
    run = cli("--config", config, "plan", "--env", "prod")
    assert_clean_error(run, "environments.prod.name")
    assert "report it" not in run.err


def test_a_dsn_with_a_query_password_in_an_error_is_masked():
    from provision.db import mask

    shown = mask(
        "postgresql://postgres@h:5432/db?password=" + quote("s3cret/pw") + "&sslmode=require"
    )
    assert "s3cret" not in shown and "sslmode=require" in shown
