"""What plan shows, apply does: the executed list is the planned one, a saved plan runs
exactly or is refused, and apply asks before it changes anything."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

import pytest

from helpers import assert_clean_error, cli


def _shown(actions: list[dict]) -> list[tuple[str, str, str | None, bool]]:
    return [(a["kind"], a["session"], a["migration"], a["known_after_apply"]) for a in actions]


@pytest.mark.parametrize("scenario", ["empty", "legacy-nucleus-v12"])
def test_apply_runs_exactly_the_actions_plan_listed(make_db, scenario):
    db = make_db(scenario)
    plan = cli("plan", *db.targets, "--format", "json")
    assert plan.code == 2, plan.err
    known_after = [a for a in plan.json["actions"] if a["known_after_apply"]]
    # The grants on what the pending migrations create are in the plan, from the lock.
    assert known_after and "dna.entity" in " ".join(a["reason"] for a in known_after)
    applied = cli("apply", "--auto-approve", *db.targets, "--format", "json")
    assert applied.code == 0, applied.err
    assert _shown(applied.json["actions"]) == _shown(plan.json["actions"])
    executed = [
        (a["kind"], a["migration"], a["known_after_apply"]) for a in applied.json["applied"]
    ]
    assert executed == [(k, m, d) for k, _, m, d in _shown(plan.json["actions"])]
    # The deferred grants did something: they are what made the new tables readable.
    ran = [s for a in applied.json["applied"] if a["known_after_apply"] for s in a["sql"]]
    assert any("GRANT" in s and "dna.entity" in s for s in ran)
    assert cli("verify", "--dsn", db.admin_dsn).code == 0


def test_the_text_apply_shows_one_plan_and_no_second_one(make_db):
    db = make_db("empty")
    run = cli("apply", "--auto-approve", *db.targets)
    assert run.code == 0, run.err
    assert run.out.count("Plan:") == 1
    assert "known after apply" in run.out


def test_a_saved_plan_is_applied_exactly(legacy_db, tmp_path):
    saved = tmp_path / "legacy.plan"
    plan = cli("plan", *legacy_db.targets, "--out", str(saved))
    assert plan.code == 2, plan.err
    document = json.loads(saved.read_text())
    assert document["format"] == "nucleus-provision-plan" and document["format_version"] == 1
    assert set(document["fingerprints"]) == {"declaration", "catalog"}
    # No terminal and no --auto-approve: a saved plan is the approval.
    run = cli("apply", str(saved), *legacy_db.targets, "--format", "json")
    assert run.code == 0, run.err
    assert _shown(run.json["actions"]) == _shown(document["actions"])


def test_live_writes_between_plan_and_apply_do_not_invalidate_a_saved_plan(legacy_db, tmp_path):
    """The catalog fingerprint covers what the plan depends on (objects, owners, privileges,
    roles, migration records), not the rows services keep writing."""
    saved = tmp_path / "legacy.plan"
    assert cli("plan", *legacy_db.targets, "--out", str(saved)).code == 2
    legacy_db.query(
        "INSERT INTO dna_schema.entities (external_id, name) VALUES (gen_random_uuid(), 'live')"
    )
    run = cli("apply", str(saved), *legacy_db.targets)
    assert run.code == 0, run.err


def test_a_saved_plan_after_a_concurrent_change_is_refused_and_nothing_changes(legacy_db, tmp_path):
    saved = tmp_path / "legacy.plan"
    assert cli("plan", *legacy_db.targets, "--out", str(saved)).code == 2
    # Between plan and apply, the legacy tooling records a migration and someone grants
    # CREATE on schema public to everyone (what the plan saw is no longer what is there).
    legacy_db.query("INSERT INTO public.migrations (migration_name) VALUES ('legacy_hotfix')")
    legacy_db.query("GRANT CREATE ON SCHEMA public TO PUBLIC")
    state = (
        "SELECT (SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace), "
        "(SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles)"
    )
    before = legacy_db.query(state)
    run = cli("apply", str(saved), *legacy_db.targets)
    assert_clean_error(run, "no longer applies", "the live database changed", "Nothing was changed")
    assert "plan --out" in run.err
    assert legacy_db.query(state) == before
    assert legacy_db.query("SELECT to_regclass('dna.entity') IS NULL") == [[True]]


def test_a_saved_plan_after_a_changed_declaration_is_refused(legacy_db, tmp_path):
    saved = tmp_path / "legacy.plan"
    assert cli("plan", *legacy_db.targets, "--out", str(saved)).code == 2
    document = json.loads(saved.read_text())
    document["fingerprints"]["declaration"] = "0" * 64
    saved.write_text(json.dumps(document))
    run = cli("apply", str(saved), *legacy_db.targets)
    assert_clean_error(run, "no longer applies", "the declaration changed")
    assert legacy_db.query("SELECT to_regclass('dna.entity') IS NULL") == [[True]]


def test_without_a_terminal_or_auto_approve_apply_refuses_and_changes_nothing(legacy_db):
    run = cli("apply", *legacy_db.targets)
    assert_clean_error(run, "needs approval", "not a terminal", "Nothing was changed")
    assert "--auto-approve" in run.err
    assert legacy_db.query("SELECT to_regclass('dna.entity') IS NULL") == [[True]]
    # Nothing to do needs no approval: a converged rerun passes without the flag.
    assert cli("apply", "--auto-approve", *legacy_db.targets).code == 0
    assert cli("apply", *legacy_db.targets).code == 0


def test_a_file_that_is_not_a_plan_is_refused(legacy_db, tmp_path):
    bogus = tmp_path / "x.plan"
    bogus.write_text('{"actions": []}')
    run = cli("apply", str(bogus), *legacy_db.targets)
    assert_clean_error(run, "is not a nucleus-provision plan")


def _on_a_terminal(answer: str, *args: str) -> subprocess.CompletedProcess:
    """`nucleus-provision ARGS` with stdin a pseudo-terminal that types `answer`."""
    main, replica = pty.openpty()
    try:
        os.write(main, answer.encode())
        return subprocess.run(
            [sys.executable, "-m", "provision", *args],
            stdin=replica,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        os.close(main)
        os.close(replica)


def test_on_a_terminal_apply_shows_the_plan_and_asks(legacy_db):
    declined = _on_a_terminal("n\n", "apply", *legacy_db.targets)
    assert declined.returncode == 1, declined.stderr
    assert "Run these" in declined.stderr and "apply cancelled: nothing was changed" in (
        declined.stderr
    )
    assert "Plan:" in declined.stdout  # shown before the question
    assert legacy_db.query("SELECT to_regclass('dna.entity') IS NULL") == [[True]]

    approved = _on_a_terminal("y\n", "apply", *legacy_db.targets)
    assert approved.returncode == 0, approved.stderr
    assert "Apply complete" in approved.stdout
    assert legacy_db.query("SELECT to_regclass('dna.entity') IS NOT NULL") == [[True]]
