"""Effective access outside tables and schemas: a SECURITY DEFINER function outside the new
schemas that a runtime role may call runs with another role's rights (here: delete legacy rows
as postgres); a large object whose ACL names PUBLIC or cloudsqliamgroup. verify names each, apply
changes no grant outside the new schemas and prints the remedy, which ends the finding."""

from __future__ import annotations

import pg8000.native

from helpers import APP_PASSWORD, cli

APP = "nucleus_app"
WIPE = "public.wipe_entities()"


def test_a_definer_function_of_postgres_the_app_may_call_is_a_finding_until_revoked(legacy_db):
    assert cli("apply", "--auto-approve", *legacy_db.targets).code == 0
    # A plain function runs with the caller's rights: executable by PUBLIC, no finding; nor
    # a definer trigger function, which no one can call.
    legacy_db.query(
        "CREATE FUNCTION public.harmless() RETURNS int LANGUAGE sql AS 'SELECT 1'", user="postgres"
    )
    legacy_db.query(
        "CREATE FUNCTION public.fired() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
        "AS 'BEGIN RETURN NEW; END'",
        user="postgres",
    )
    legacy_db.query(
        "CREATE FUNCTION public.wipe_entities() RETURNS void LANGUAGE sql SECURITY DEFINER "
        "AS 'DELETE FROM dna_schema.entities WHERE false'",
        user="postgres",
    )
    # The database's own verdict: the app may call it and lacks postgres' rights itself.
    assert legacy_db.query(
        "SELECT has_function_privilege(:app, CAST(:fn AS regprocedure), 'EXECUTE'), "
        "pg_has_role(:app, 'postgres', 'USAGE')",
        app=APP,
        fn=WIPE,
    ) == [[True, False]]

    verify = cli("verify", *legacy_db.targets)
    assert verify.code == 3, verify.out  # only a person (the grantor) can revoke it
    assert f"{APP} can do what the declaration never gives it: EXECUTE on function {WIPE}" in (
        verify.out
    ), verify.out
    assert "harmless" not in verify.out and "fired" not in verify.out

    apply = cli("apply", "--auto-approve", *legacy_db.targets)
    assert apply.code == 3
    hint = f"REVOKE EXECUTE ON FUNCTION {WIPE} FROM PUBLIC"
    assert f"as postgres (or a role that may act for it): {hint}" in apply.err, apply.err
    # apply changed no grant outside the new schemas: the function is still PUBLIC's
    assert legacy_db.query(
        "SELECT has_function_privilege(:app, CAST(:fn AS regprocedure), 'EXECUTE')",
        app=APP,
        fn=WIPE,
    ) == [[True]]

    # The hint, followed as printed, ends the finding.
    legacy_db.query(hint, user="postgres")
    assert cli("verify", *legacy_db.targets).code == 0


def test_a_large_object_public_may_write_is_a_finding_until_revoked(legacy_db):
    assert cli("apply", "--auto-approve", *legacy_db.targets).code == 0
    legacy_db.query("SELECT lo_create(424242)", user="postgres")
    legacy_db.query("GRANT UPDATE ON LARGE OBJECT 424242 TO PUBLIC", user="postgres")
    legacy_db.query("SELECT lo_create(424243)", user="postgres")
    legacy_db.query("GRANT SELECT ON LARGE OBJECT 424243 TO cloudsqliamgroup", user="postgres")
    # One the app creates itself is its own: no finding.
    app = pg8000.native.Connection(
        APP,
        host=legacy_db.instance.host,
        port=legacy_db.instance.port,
        database=legacy_db.name,
        password=APP_PASSWORD,
    )
    try:
        app.run("SELECT lo_create(424244)")
    finally:
        app.close()

    verify = cli("verify", *legacy_db.targets)
    assert verify.code == 3, verify.out  # only a person (the grantor) can revoke it
    assert f"{APP} can do what the declaration never gives it: UPDATE on large object 424242" in (
        verify.out
    ), verify.out
    assert "SELECT on large object 424243" in verify.out  # the analysts, an IAM group
    assert "424244" not in verify.out

    apply = cli("apply", "--auto-approve", *legacy_db.targets)
    assert apply.code == 3
    hints = [
        "REVOKE UPDATE ON LARGE OBJECT 424242 FROM PUBLIC",
        "REVOKE SELECT ON LARGE OBJECT 424243 FROM cloudsqliamgroup",
    ]
    for hint in hints:
        assert hint in apply.err, apply.err
    for hint in hints:
        legacy_db.query(hint, user="postgres")
    assert cli("verify", *legacy_db.targets).code == 0


def test_default_privileges_outside_the_new_schemas_granting_a_runtime_role_are_findings(
    legacy_db,
):
    # What the next legacy table postgres creates would grant: every runtime login could
    # insert into it (PUBLIC), the IAM groups' members update every sequence postgres makes.
    assert cli("apply", "--auto-approve", *legacy_db.targets).code == 0
    legacy_db.query(
        "ALTER DEFAULT PRIVILEGES IN SCHEMA dna_schema GRANT INSERT ON TABLES TO PUBLIC",
        user="postgres",
    )
    legacy_db.query(
        "ALTER DEFAULT PRIVILEGES GRANT UPDATE ON SEQUENCES TO cloudsqliamgroup", user="postgres"
    )
    verify = cli("verify", *legacy_db.targets)
    assert verify.code == 3, verify.out  # only a person (the grantor) can revoke it
    assert (
        f"{APP} can do what the declaration never gives it: INSERT on future tables of postgres "
        "in schema dna_schema"
    ) in verify.out, verify.out
    assert "UPDATE on future sequences of postgres in every schema" in verify.out, verify.out

    apply = cli("apply", "--auto-approve", *legacy_db.targets)
    assert apply.code == 3
    hints = [
        "ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA dna_schema REVOKE INSERT ON TABLES "
        "FROM PUBLIC",
        "ALTER DEFAULT PRIVILEGES FOR ROLE postgres REVOKE UPDATE ON SEQUENCES FROM "
        "cloudsqliamgroup",
    ]
    for hint in hints:
        assert hint in apply.err, apply.err
    for hint in hints:
        legacy_db.query(hint, user="postgres")
    assert cli("verify", *legacy_db.targets).code == 0
