"""pgaudit where the environment turns it on, against a server that can or cannot load it."""

from __future__ import annotations

from helpers import assert_clean_error, cli


def test_the_local_environment_wants_no_pgaudit_and_converges(legacy_db):
    assert cli("apply", "--auto-approve", "--env", "local", *legacy_db.targets).code == 0
    assert cli("verify", "--env", "local", *legacy_db.targets).code == 0
    assert legacy_db.query("SELECT extname FROM pg_extension ORDER BY 1") == [
        ["plpgsql"],
        ["vector"],
    ]


def test_prods_desired_state_on_a_server_without_pgaudit_names_the_flag_to_turn_on(legacy_db):
    """The emulated server cannot load pgaudit: prod's desired state on it is drift that only
    a person (a flag and a deploy) can fix; plan says so and still plans the rest."""
    plan = cli("plan", "--env", "prod", *legacy_db.targets, "--format", "json")
    assert_clean_error(plan, "apply cannot fix", "extension-missing", code=3)
    assert [m["code"] for m in plan.json["manual"]] == ["extension-missing"]
    assert "cloudsql.enable_pgaudit" in plan.json["manual"][0]["remedy"]
    assert plan.json["changes"] > 0  # the rest of the convergence is still planned
    assert cli("verify", "--env", "prod", *legacy_db.targets).code == 3
