"""Output a person reads at a glance, through the real CLI on the emulation: every hint that
names a command repeats the target flags of the command that printed it, and following it
works (a DSN's password is the one word the reader fills in); `inspect --role/--schema`;
yes/no, never Python's True/False; a failed step says on its own line what was rolled back
and that a rerun resumes."""

from __future__ import annotations

import re
import shlex

from helpers import cli
from provision.local.instance import ADMIN_USER, OWNER_USER
from tests.system.engine.test_safety import migrations_copy

HINTED = re.compile(r"`(nucleus-provision [^`]+)`")


def follow(db, command: str):
    """Run a hinted command as a reader would: the password is theirs to type."""
    args = shlex.split(command)
    assert args[0] == "nucleus-provision"
    filled = [
        a.replace("postgres:PASSWORD@", f"postgres:{db.instance.passwords[ADMIN_USER]}@").replace(
            "nucleus:PASSWORD@", f"nucleus:{db.instance.passwords[OWNER_USER]}@"
        )
        for a in args[1:]
    ]
    return cli(*filled, timeout=300)


def test_plan_names_the_apply_of_the_same_target_and_following_it_converges(legacy_db):
    plan = cli("plan", *legacy_db.targets)
    assert plan.code == 2, plan.err
    (hinted,) = [c for c in HINTED.findall(plan.out) if " apply" in c]
    assert f":{legacy_db.instance.port}/{legacy_db.name}" in hinted  # this database, not prod's
    assert "--owner-dsn" in hinted and "PASSWORD@" in hinted
    for password in legacy_db.instance.passwords.values():
        assert password not in plan.out + plan.err
    applied = follow(legacy_db, hinted)
    # Without a terminal (as here) apply asks for no yes but refuses, and its own hint names
    # the approved run of the same target: following that converges.
    assert applied.code == 1 and "not a terminal" in applied.err, applied.err
    (approved,) = [c for c in HINTED.findall(applied.err) if "--auto-approve" in c]
    assert f":{legacy_db.instance.port}/{legacy_db.name}" in approved
    applied = follow(legacy_db, approved)
    assert applied.code == 0, applied.err
    assert cli("plan", *legacy_db.targets).code == 0


def test_move_verify_names_move_run_of_the_same_target_and_following_it_finishes(legacy_db):
    assert cli("apply", "--auto-approve", *legacy_db.targets).code == 0
    verify = cli("move", "verify", "--dsn", legacy_db.admin_dsn)
    assert verify.code == 2, verify.out + verify.err
    hinted = HINTED.findall(verify.out)
    assert len(hinted) == 5 and all(
        c.startswith("nucleus-provision move run --only ") for c in hinted
    )
    assert all(f":{legacy_db.instance.port}/{legacy_db.name}" in c for c in hinted)
    for command in hinted:
        ran = follow(legacy_db, command)
        assert ran.code == 0, (command, ran.err)
    assert cli("move", "verify", "--dsn", legacy_db.admin_dsn).code == 0


def test_inspect_narrows_to_a_role_and_a_schema_and_says_yes_or_no(legacy_db):
    assert cli("apply", "--auto-approve", *legacy_db.targets).code == 0
    full = cli("inspect", *legacy_db.targets)
    narrow = cli("inspect", *legacy_db.targets, "--role", "nucleus_app", "--schema", "dna")
    assert full.code == 0 and narrow.code == 0, narrow.err
    for run in (full, narrow):
        assert not re.search(r"\b(True|False)\b", run.out), run.out
    assert "admin_is_superuser: no" in narrow.out
    matrix = narrow.out.split("who can do what (inherited included):\n")[1].split("\n\n")[0]
    rows = [line.split() for line in matrix.splitlines()[1:]]
    assert rows == [["nucleus_app", "dna", "yes", "yes", "yes", "no", "no"]], matrix
    schemas = narrow.out.split("schemas:\n")[1].split("\n  expected")[0].splitlines()
    assert [line.split()[0] for line in schemas] == ["dna"]
    assert "dna_schema" in full.out and "dna_schema" not in narrow.out.split("migrations table")[0]
    as_json = cli("inspect", *legacy_db.targets, "--schema", "tasks", "--format", "json").json
    assert {a["schema"] for a in as_json["privileges"]} == {"tasks"}


def test_a_failed_step_says_on_its_own_line_what_was_rolled_back_and_how_to_resume(
    legacy_db, tmp_path
):
    failing = migrations_copy(
        tmp_path, {"900_fails.sql": "CREATE TABLE dna.half (id int);\nSELECT 1 / 0;\n"}
    )
    run = cli("apply", "--auto-approve", *legacy_db.targets, "--migrations", str(failing))
    assert run.code == 1
    lines = run.err.splitlines()
    error = next(i for i, line in enumerate(lines) if line.startswith("error: "))
    assert "900_fails.sql" in lines[error] and "division by zero" in lines[error]
    rolled_back = lines[error + 1]
    assert rolled_back.startswith("rolled back: ") and "900_fails.sql" in rolled_back
    assert "resumes" in rolled_back and f":{legacy_db.instance.port}/" in rolled_back
    assert legacy_db.query("SELECT count(*) FROM pg_class WHERE relname = 'half'") == [[0]]
