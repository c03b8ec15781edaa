"""Issue 18's held-out check, as a loop: drift made by hand, one kind at a time, each on a fresh
copy of one converged database. Each kind must fail `verify` naming the object and show in
`plan` (as an action, or as what a person must do); where `apply` repairs it, `apply` then
`verify` is clean. A converged copy verifies clean (the first case), so every failure below is
the drift's.

Exit codes are issue 19's: a failing verify or a plan with work or a manual step is only
asserted non-zero here.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import cli
from provision.local.cloudsql_api import create_iam_role
from provision.local.instance import ADMIN_USER, BOOTSTRAP_SUPERUSER, OWNER_USER

ROOT = Path(__file__).resolve().parents[3]
ANALYSTS = "nucleus-analysts@local-project.example"  # local's declared IAM group
API_SA = "nucleus-api@local-project.iam"  # local's declared service account


@dataclass(frozen=True)
class Drift:
    sql: str  # statements, `;`-separated, run as `user`
    user: str
    code: str  # the finding code verify reports
    named: str  # the object, as verify's line names it
    repaired: bool  # apply repairs it (else: plan lists it among what a person must do)
    # Server-wide state (roles, memberships) a case must put back, whatever happened.
    cleanup: str = ""


OWNER, ADMIN, SUPER = OWNER_USER, ADMIN_USER, BOOTSTRAP_SUPERUSER

DRIFTS = {
    # -- structure: the lock's objects (a new migration is the remedy) --
    "drop column": Drift(
        "ALTER TABLE dna.entity DROP COLUMN email",
        OWNER,
        "column-missing",
        "column dna.entity.email",
        False,
    ),
    "change type": Drift(
        "ALTER TABLE dna.entity ALTER COLUMN name TYPE varchar(200)",
        OWNER,
        "column-type-changed",
        "column dna.entity.name",
        False,
    ),
    "add column": Drift(
        "ALTER TABLE dna.goals ADD COLUMN note text",
        OWNER,
        "column-unexpected",
        "column dna.goals.note",
        False,
    ),
    "change default": Drift(
        "ALTER TABLE dna.entity ALTER COLUMN kind SET DEFAULT 'agent'",
        OWNER,
        "column-default-changed",
        "column dna.entity.kind",
        False,
    ),
    "nullability": Drift(
        "ALTER TABLE dna.entity ALTER COLUMN email SET NOT NULL",
        OWNER,
        "column-nullable-changed",
        "column dna.entity.email",
        False,
    ),
    "drop index": Drift(
        "DROP INDEX dna.raw_data_entity_id_idx",
        OWNER,
        "index-missing",
        "index dna.raw_data_entity_id_idx",
        False,
    ),
    "drop constraint": Drift(
        "ALTER TABLE dna.entity DROP CONSTRAINT entity_kind_check",
        OWNER,
        "constraint-missing",
        "constraint entity_kind_check on dna.entity",
        False,
    ),
    "storage parameters": Drift(
        "ALTER TABLE dna.entity SET (fillfactor = 50, autovacuum_enabled = false)",
        OWNER,
        "table-options-changed",
        "table dna.entity",
        False,
    ),
    "replica identity": Drift(
        "ALTER TABLE dna.goals REPLICA IDENTITY FULL",
        OWNER,
        "replica-identity-changed",
        "table dna.goals",
        False,
    ),
    "column storage": Drift(
        "ALTER TABLE dna.entity ALTER COLUMN email SET STORAGE EXTERNAL",
        OWNER,
        "column-storage-changed",
        "column dna.entity.email",
        False,
    ),
    "column statistics": Drift(
        "ALTER TABLE dna.entity ALTER COLUMN name SET STATISTICS 500",
        OWNER,
        "column-statistics-changed",
        "column dna.entity.name",
        False,
    ),
    "new table": Drift(
        "CREATE TABLE dna.scratch (id int)", OWNER, "table-unexpected", "table dna.scratch", False
    ),
    "trigger": Drift(
        "CREATE FUNCTION dna.touch() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN RETURN NEW; END$$; "
        "CREATE TRIGGER touch BEFORE UPDATE ON dna.goals FOR EACH ROW EXECUTE FUNCTION dna.touch()",
        OWNER,
        "trigger-unexpected",
        "trigger touch on dna.goals",
        False,
    ),
    "rewrite rule": Drift(
        "CREATE RULE keep_goals AS ON DELETE TO dna.goals DO INSTEAD NOTHING",
        OWNER,
        "rule-unexpected",
        "rule keep_goals on dna.goals",
        False,
    ),
    "extra schema": Drift("CREATE SCHEMA scratch", OWNER, "schema-unexpected", "scratch", False),
    # -- privileges in the new schemas and the version table: apply revokes them --
    "column grant": Drift(
        "GRANT UPDATE (email) ON dna.entity TO nucleus_readonly",
        OWNER,
        "privilege-unexpected",
        "column dna.entity.email",
        True,
    ),
    "grant option": Drift(
        "GRANT SELECT ON dna.goals TO nucleus_readonly WITH GRANT OPTION",
        OWNER,
        "privilege-unexpected",
        "GRANT OPTION FOR SELECT on table dna.goals",
        True,
    ),
    "cloudsqliamgroup grant": Drift(
        "GRANT DELETE ON dna.entity TO cloudsqliamgroup",
        OWNER,
        "privilege-unexpected",
        "cloudsqliamgroup: DELETE on table dna.entity",
        True,
    ),
    "version table to PUBLIC": Drift(
        "GRANT INSERT ON public.migrations TO PUBLIC",
        OWNER,
        "privilege-unexpected",
        "PUBLIC: INSERT on table public.migrations",
        True,
    ),
    "membership chain": Drift(
        "GRANT nucleus_readwrite TO cloudsqliamgroup",
        ADMIN,
        "membership-chain",
        f"{ANALYSTS} is a member of nucleus_readwrite",
        True,
        cleanup="REVOKE nucleus_readwrite FROM cloudsqliamgroup",
    ),
    # -- what only a person may change: named with its remedy --
    "PUBLIC select on legacy": Drift(
        "GRANT SELECT ON dna_schema.entities TO PUBLIC",
        ADMIN,
        "access-unexpected",
        "SELECT on table dna_schema.entities",
        False,
    ),
    "owner granted to the app login": Drift(
        "GRANT nucleus TO nucleus_app",
        SUPER,
        "membership-granted-by-another-role",
        "nucleus_app",
        False,
        cleanup="REVOKE nucleus FROM nucleus_app",
    ),
}


@pytest.fixture(scope="module")
def converged_template(instance, database_from):
    """One converged database (the seed's production state, applied), copied per case."""
    create_iam_role(instance, ANALYSTS, group=True)
    janitor, db = database_from(instance, "tmpl_legacy_nucleus_v12")
    assert cli("apply", "--auto-approve", *db.targets).code == 0
    yield db.name
    janitor.drop()


@pytest.fixture
def converged(instance, database_from, converged_template):
    janitor, db = database_from(instance, converged_template)
    yield db
    janitor.drop()


def test_a_converged_copy_verifies_clean(converged):
    run = cli("verify", *converged.targets)
    assert run.code == 0, run.out


def _named_in(differences: list[dict[str, str]], code: str, named: str) -> bool:
    """verify's JSON lists each difference (code, object, expected, actual)."""
    # The item names the object and what differs in its own fields (object: "table
    # public.migrations", actual: "INSERT to PUBLIC"): every word of `named` is in the item.
    words = [w for w in re.findall(r"[\w.]+", named) if w not in {"on", "to", "of", "in"}]
    return any(d["code"] == code and all(w in json.dumps(d) for w in words) for d in differences)


@pytest.mark.parametrize("kind", list(DRIFTS), ids=list(DRIFTS))
def test_hand_made_drift_fails_verify_naming_it_and_shows_in_plan(converged, kind):
    drift = DRIFTS[kind]
    try:
        converged.query(drift.sql, user=drift.user)
        verify = cli("verify", *converged.targets, "--format", "json")
        assert verify.code != 0
        assert _named_in(verify.json["differences"], drift.code, drift.named), verify.json

        plan = cli("plan", *converged.targets, "--format", "json")
        assert plan.code != 0
        manual = {m["code"] for m in plan.json["manual"]}
        if drift.repaired:
            assert plan.json["actions"] and drift.code not in manual, plan.json
            assert cli("apply", "--auto-approve", *converged.targets).code == 0
            run = cli("verify", *converged.targets)
            assert run.code == 0, run.out
        else:
            assert drift.code in manual, plan.json
    finally:
        if drift.cleanup:
            converged.query(drift.cleanup, user=SUPER)


def test_a_deleted_migration_file_fails_verify_naming_it(converged, tmp_path):
    migrations = tmp_path / "bootstrap_sql"
    shutil.copytree(ROOT / "bootstrap_sql", migrations)
    (migrations / "002_add_entity_integrations.sql").unlink()
    verify = cli("verify", *converged.targets, "--migrations", str(migrations), "--format", "json")
    assert verify.code != 0
    assert _named_in(
        verify.json["differences"], "migration-file-missing", "002_add_entity_integrations"
    )
    plan = cli("plan", *converged.targets, "--migrations", str(migrations), "--format", "json")
    assert plan.code != 0
    assert "migration-file-missing" in {m["code"] for m in plan.json["manual"]}
