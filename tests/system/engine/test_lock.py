"""The expected schema (bootstrap_sql/schema.lock): fresh, and the gate that sees hand-made
drift one kind at a time on a converged database."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from helpers import cli
from provision.commands import load_desired
from provision.local.instance import OWNER_USER
from provision.local.lock import build
from provision.lockfile import LOCK_NAME, REFRESH, render

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def converged(legacy_db):
    assert cli("apply", "--auto-approve", *legacy_db.targets).code == 0
    assert cli("verify", *legacy_db.targets).code == 0
    return legacy_db


def test_the_checked_in_lock_is_what_the_migrations_make(instance):
    """`make test` fails when the lock is stale, and says how to refresh it."""
    made = render(build(instance, load_desired("local"), database="lock_fresh_check"))
    checked_in = (ROOT / "bootstrap_sql" / LOCK_NAME).read_text(encoding="utf-8")
    assert made == checked_in, f"bootstrap_sql/{LOCK_NAME} is stale: run `{REFRESH}` and commit it"


# One kind of drift at a time, each made by hand as the owner would: (SQL, code, object).
DRIFT = {
    "drop column": (
        "ALTER TABLE dna.entity DROP COLUMN email",
        "column-missing",
        "column dna.entity.email",
    ),
    "add column": (
        "ALTER TABLE dna.goals ADD COLUMN note text",
        "column-unexpected",
        "column dna.goals.note",
    ),
    "type change": (
        "ALTER TABLE dna.entity ALTER COLUMN name TYPE varchar(200)",
        "column-type-changed",
        "column dna.entity.name",
    ),
    "drop index": (
        "DROP INDEX dna.raw_data_entity_id_idx",
        "index-missing",
        "index dna.raw_data_entity_id_idx",
    ),
    "dropped constraint": (
        "ALTER TABLE dna.entity DROP CONSTRAINT entity_kind_check",
        "constraint-missing",
        "constraint entity_kind_check on dna.entity",
    ),
    "nullability": (
        "ALTER TABLE dna.entity ALTER COLUMN email SET NOT NULL",
        "column-nullable-changed",
        "column dna.entity.email",
    ),
    "new table": (
        "CREATE TABLE dna.scratch (id int)",
        "table-unexpected",
        "table dna.scratch",
    ),
    "enum type": (
        "CREATE TYPE dna.mood AS ENUM ('ok')",
        "type-unexpected",
        "enum dna.mood",
    ),
    # A rule changes what a write does, as a trigger does: this one swallows every DELETE.
    "rewrite rule": (
        "CREATE RULE keep_goals AS ON DELETE TO dna.goals DO INSTEAD NOTHING",
        "rule-unexpected",
        "rule keep_goals on dna.goals",
    ),
}


@pytest.mark.parametrize("drift", list(DRIFT), ids=list(DRIFT))
def test_hand_made_drift_fails_verify_naming_the_object_and_shows_in_plan(converged, drift):
    sql, code, obj = DRIFT[drift]
    converged.query(sql, user=OWNER_USER)

    verify = cli("verify", *converged.targets, "--format", "json")
    assert verify.code == 3  # only a person can fix it (a new migration)
    # Itemised: the code, the object, what the lock expects and what is there.
    assert any(
        d["code"] == code and obj in d["object"] and d["manual"] and d["expected"] != d["actual"]
        for d in verify.json["differences"]
    ), verify.out

    plan = cli("plan", *converged.targets, "--format", "json")
    assert plan.code == 3, plan.out + plan.err  # apply cannot fix it: a person must
    manual = {f["code"]: f for f in plan.json["manual"]}
    assert code in manual and any(obj in d for d in manual[code]["details"]), plan.out
    assert "new migration" in manual[code]["remedy"]


def test_a_converged_empty_database_verifies_clean(empty_db):
    assert cli("apply", "--auto-approve", *empty_db.targets).code == 0
    run = cli("verify", *empty_db.targets)
    assert run.code == 0, run.out


def test_an_invalid_index_is_rebuilt_concurrently(converged):
    # What a failed REINDEX CONCURRENTLY or CREATE INDEX CONCURRENTLY leaves behind.
    converged.query(
        "UPDATE pg_index SET indisvalid = false "
        "WHERE indexrelid = 'dna.raw_data_entity_id_idx'::regclass"
    )
    verify = cli("verify", *converged.targets)
    assert verify.code == 2 and "index-invalid" in verify.out
    plan = cli("plan", *converged.targets)
    assert plan.code == 2 and "REINDEX INDEX CONCURRENTLY dna.raw_data_entity_id_idx" in plan.out
    assert cli("apply", "--auto-approve", *converged.targets).code == 0
    assert cli("verify", *converged.targets).code == 0


def test_a_deleted_migration_file_is_named(converged, tmp_path):
    migrations = tmp_path / "bootstrap_sql"
    shutil.copytree(ROOT / "bootstrap_sql", migrations)
    (migrations / "002_add_entity_integrations.sql").unlink()
    verify = cli("verify", *converged.targets, "--migrations", str(migrations))
    assert verify.code == 3
    assert "migration-file-missing" in verify.out and "002_add_entity_integrations" in verify.out
    assert "lock-stale" in verify.out


def test_following_the_remedy_of_a_dropped_index_clears_it(converged, instance, tmp_path):
    """The hint says: a new migration, then `nucleus-provision lock`, then apply."""
    converged.query("DROP INDEX dna.raw_data_entity_id_idx", user=OWNER_USER)
    migrations = tmp_path / "bootstrap_sql"
    shutil.copytree(ROOT / "bootstrap_sql", migrations)
    (migrations / "003_restore_raw_data_index.sql").write_text(
        "CREATE INDEX IF NOT EXISTS raw_data_entity_id_idx ON dna.raw_data (entity_id);\n"
    )
    desired = load_desired("local", migrations_dir=migrations)
    (migrations / LOCK_NAME).write_text(
        render(build(instance, desired, database="lock_remedy")), encoding="utf-8"
    )
    assert (
        cli("apply", "--auto-approve", *converged.targets, "--migrations", str(migrations)).code
        == 0
    )
    run = cli("verify", *converged.targets, "--migrations", str(migrations))
    assert run.code == 0, run.out


def test_diff_takes_the_lock_as_a_side(converged):
    lock = str(ROOT / "bootstrap_sql" / LOCK_NAME)
    same = cli("diff", "--from-dsn", converged.admin_dsn, "--to-lock", lock)
    assert same.code == 0, same.out + same.err
    converged.query("ALTER TABLE dna.entity DROP COLUMN email", user=OWNER_USER)
    run = cli("diff", "--from-lock", lock, "--to-dsn", converged.admin_dsn, "--format", "json")
    assert run.code == 2
    assert {
        "kind": "column",
        "object": "column dna.entity.email",
        "left": "text",
        "right": None,
    } in run.json


def test_a_migration_that_adds_a_schema_and_a_table_needs_no_python_edit(converged, tmp_path):
    """The managed schemas and tables are the migrations' (through the lock): a new one is a
    file and `lock`, then apply manages it (grants, drift) like the others."""
    migrations = tmp_path / "bootstrap_sql"
    shutil.copytree(ROOT / "bootstrap_sql", migrations)
    (migrations / "003_add_billing.sql").write_text(
        "CREATE SCHEMA IF NOT EXISTS billing;\n"
        "CREATE TABLE IF NOT EXISTS billing.invoice (\n"
        "    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n"
        "    total numeric NOT NULL\n);\n"
    )
    stale = cli("verify", *converged.targets, "--migrations", str(migrations))
    assert stale.code != 0 and "lock-stale" in stale.out
    made = cli("lock", "--migrations", str(migrations))
    assert made.code == 0, made.err
    lock_text = (migrations / LOCK_NAME).read_text(encoding="utf-8")
    assert "schema billing " in lock_text and "relation billing.invoice " in lock_text

    applied = cli("apply", "--auto-approve", *converged.targets, "--migrations", str(migrations))
    assert applied.code == 0, applied.err
    run = cli("verify", *converged.targets, "--migrations", str(migrations))
    assert run.code == 0, run.out
    assert converged.query(
        "SELECT has_table_privilege('nucleus_readonly', 'billing.invoice', 'SELECT'), "
        "has_table_privilege('nucleus_readonly', 'billing.invoice', 'INSERT')"
    ) == [[True, False]]

    converged.query("ALTER TABLE billing.invoice ADD COLUMN note text", user=OWNER_USER)
    drift = cli("verify", *converged.targets, "--migrations", str(migrations))
    assert drift.code != 0 and "column billing.invoice.note" in drift.out
