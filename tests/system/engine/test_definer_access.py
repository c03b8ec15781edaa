"""Effective access through a SECURITY DEFINER function outside the new schemas: a function any
runtime role may call that runs with another role's rights is a way to do what that role may
(here: delete legacy rows as postgres), so verify names it and apply gives the remedy."""

from __future__ import annotations

from helpers import cli

APP = "nucleus_app"
WIPE = "public.wipe_entities()"


def test_a_definer_function_of_postgres_the_app_may_call_is_a_finding_until_revoked(legacy_db):
    assert cli("apply", *legacy_db.targets).code == 0
    # A plain function runs with the caller's rights: executable by PUBLIC, no finding.
    legacy_db.query(
        "CREATE FUNCTION public.harmless() RETURNS int LANGUAGE sql AS 'SELECT 1'", user="postgres"
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
    assert verify.code == 1, verify.out
    assert f"{APP} can do what the declaration never gives it: EXECUTE on function {WIPE}" in (
        verify.out
    ), verify.out
    assert "harmless" not in verify.out

    apply = cli("apply", *legacy_db.targets)
    assert apply.code == 1
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
