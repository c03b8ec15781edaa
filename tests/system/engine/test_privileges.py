"""Issue 10: privileges as code, against the emulation (direct logins; the Connector's turn
is tests/system/connector/test_privileges_connector.py)."""

from __future__ import annotations

import pg8000.native
import pytest
from test_apply import SCENARIOS, count_ddl, legacy_fingerprint
from test_safety import migrations_copy, state

from helpers import APP_PASSWORD, assert_clean_error, cli, config_replacing
from provision.local.cloudsql_api import create_iam_role

NEW_SCHEMAS = ("dna", "tasks", "agents", "results", "memory", "assembly", "execution")
RW, RO, APP = "nucleus_readwrite", "nucleus_readonly", "nucleus_app"
API_SA = "nucleus-api@local-project.iam"
ANALYSTS = "nucleus-analysts@local-project.example"


def as_app(db) -> pg8000.native.Connection:
    return pg8000.native.Connection(
        APP, host=db.instance.host, port=db.instance.port, database=db.name, password=APP_PASSWORD
    )


PRIVILEGES_OF = """
SELECT bool_and(has_table_privilege(:role, c.oid, 'SELECT')
                AND has_table_privilege(:role, c.oid, 'INSERT')
                AND has_table_privilege(:role, c.oid, 'UPDATE')
                AND has_table_privilege(:role, c.oid, 'DELETE'))
         FILTER (WHERE c.relkind IN ('r', 'p')) AS write,
       bool_and(has_table_privilege(:role, c.oid, 'SELECT'))
         FILTER (WHERE c.relkind IN ('r', 'p')) AS read,
       bool_or(has_table_privilege(:role, c.oid, 'INSERT') OR has_table_privilege(:role, c.oid, 'DELETE'))
         FILTER (WHERE c.relkind IN ('r', 'p')) AS any_write,
       bool_and(has_sequence_privilege(:role, c.oid, 'USAGE')
                AND has_sequence_privilege(:role, c.oid, 'SELECT'))
         FILTER (WHERE c.relkind = 'S') AS sequences,
       bool_or(has_schema_privilege(:role, n.oid, 'CREATE')) AS create_in_schema,
       bool_and(has_schema_privilege(:role, n.oid, 'USAGE')) AS usage,
       has_database_privilege(:role, current_database(), 'CREATE') AS create_schema
FROM pg_namespace n LEFT JOIN pg_class c ON c.relnamespace = n.oid
WHERE n.nspname = ANY(CAST(:schemas AS text[]))
"""


def privileges_of(db, role: str) -> dict[str, bool]:
    conn = db.connect()
    try:
        (row,) = conn.run(PRIVILEGES_OF, role=role, schemas=list(NEW_SCHEMAS))
        return dict(zip([c["name"] for c in conn.columns], row, strict=True))
    finally:
        conn.close()


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_after_apply_the_app_login_reads_and_writes_every_table_and_changes_no_structure(
    make_db, scenario
):
    db = make_db(scenario)
    before = legacy_fingerprint(db) if scenario != "empty" else None
    # Roles are the server's, shared by the test databases: the first apply creates the login.
    new_login = db.query("SELECT count(*) FROM pg_roles WHERE rolname = 'nucleus_app'") == [[0]]
    run = cli("apply", "--auto-approve", *db.targets)
    assert run.code == 0, run.err
    if new_login:
        assert "CREATE ROLE nucleus_app LOGIN PASSWORD <SCRAM-SHA-256 verifier" in run.out
    assert APP_PASSWORD not in run.out + run.err

    for role in (APP, API_SA):
        assert privileges_of(db, role) == {
            "write": True,
            "read": True,
            "any_write": True,
            "sequences": True,
            "create_in_schema": False,
            "usage": True,
            "create_schema": False,
        }, role
    assert privileges_of(db, ANALYSTS) == {
        "write": False,
        "read": True,
        "any_write": False,
        "sequences": False,
        "create_in_schema": False,
        "usage": True,
        "create_schema": False,
    }
    # For real, as the login: rows yes; structure no.
    conn = as_app(db)
    try:
        conn.run("INSERT INTO dna.entity (name) VALUES ('app')")
        conn.run("UPDATE dna.entity SET email = 'a@b' WHERE name = 'app'")
        conn.run("DELETE FROM dna.entity WHERE name = 'app'")
        for ddl in (
            "CREATE TABLE dna.sneaky (id int)",
            "ALTER TABLE dna.entity ADD COLUMN sneaky int",
            "DROP TABLE dna.goals",
            "CREATE SCHEMA sneaky",
        ):
            with pytest.raises(pg8000.native.DatabaseError) as refused:
                conn.run(ddl)
            assert refused.value.args[0]["C"] == "42501", ddl
    finally:
        conn.close()
    # The password was sent as a verifier, never in clear.
    assert db.query(
        "SELECT rolpassword LIKE 'SCRAM-SHA-256$4096:%' FROM pg_authid WHERE rolname = 'nucleus_app'"
    ) == [[True]]
    assert db.query("SELECT pg_has_role('nucleus_app', 'cloudsqlsuperuser', 'MEMBER')") == [[False]]
    if before is not None:
        assert legacy_fingerprint(db) == before


def test_an_undeclared_iam_user_can_do_nothing_in_the_new_schemas(legacy_db):
    # What Cloud SQL's API does for an IAM service account nobody declared.
    create_iam_role(legacy_db.instance, "stranger@local-project.iam", group=False)
    assert cli("apply", "--auto-approve", *legacy_db.targets).code == 0
    assert privileges_of(legacy_db, "stranger@local-project.iam") == {
        "write": False,
        "read": False,
        "any_write": False,
        "sequences": False,
        "create_in_schema": False,
        "usage": False,
        "create_schema": False,
    }


def test_a_table_a_later_migration_creates_is_granted_by_default_privileges(legacy_db, tmp_path):
    assert cli("apply", "--auto-approve", *legacy_db.targets).code == 0
    # Created by the owner, outside apply: only default privileges can give the groups access.
    legacy_db.query(
        "CREATE TABLE dna.later (id bigint GENERATED ALWAYS AS IDENTITY, note text)",
        user="nucleus",
    )
    assert legacy_db.query(
        "SELECT has_table_privilege('nucleus_app', 'dna.later', 'SELECT') "
        "AND has_table_privilege('nucleus_app', 'dna.later', 'INSERT') "
        "AND has_table_privilege('nucleus_app', 'dna.later', 'UPDATE') "
        "AND has_table_privilege('nucleus_app', 'dna.later', 'DELETE'), "
        "has_table_privilege('nucleus_readonly', 'dna.later', 'SELECT'), "
        "has_table_privilege('nucleus_readonly', 'dna.later', 'INSERT')"
    ) == [[True, True, False]]
    # And through a fixture migration 900, apply plans no GRANT for it.
    extra = migrations_copy(
        tmp_path, {"900_more.sql": "CREATE TABLE dna.more (id serial PRIMARY KEY, v text);\n"}
    )
    run = cli(
        "apply",
        "--auto-approve",
        *legacy_db.targets,
        "--migrations",
        str(extra),
        "--format",
        "json",
    )
    assert run.code == 0, run.err
    applied = run.json["applied"]
    assert [a["kind"] for a in applied if not a["known_after_apply"]] == ["migrate"]
    # The plan's known-after-apply actions ran, and found nothing left to grant.
    assert [a["sql"] for a in applied if a["known_after_apply"]] == [[], []]
    conn = as_app(legacy_db)
    try:
        conn.run("INSERT INTO dna.more (v) VALUES ('x')")  # the serial's sequence too
    finally:
        conn.close()


DRIFT = {
    "grant to PUBLIC": (
        "GRANT ALL ON dna.entity TO PUBLIC",
        "nucleus",
        "privilege-unexpected",
        "REVOKE",
    ),
    "revoked read": (
        "REVOKE SELECT ON dna.goals FROM nucleus_readonly",
        "nucleus",
        "privilege-missing",
        "GRANT SELECT ON TABLE dna.goals TO nucleus_readonly",
    ),
    "undeclared member": (
        "CREATE ROLE intruder LOGIN; GRANT nucleus_readwrite TO intruder",
        "postgres",
        "membership-unexpected",
        "REVOKE nucleus_readwrite FROM intruder",
    ),
    "revoked default privilege": (
        "ALTER DEFAULT PRIVILEGES FOR ROLE nucleus IN SCHEMA dna REVOKE SELECT ON TABLES FROM "
        "nucleus_readonly",
        "nucleus",
        "default-privileges-missing",
        "ALTER DEFAULT PRIVILEGES FOR ROLE nucleus IN SCHEMA dna GRANT SELECT ON TABLES TO "
        "nucleus_readonly",
    ),
}


@pytest.mark.parametrize("case", sorted(DRIFT))
def test_drift_made_by_hand_is_verified_planned_and_repaired(legacy_db, case):
    sql, user, code, statement = DRIFT[case]
    assert cli("apply", "--auto-approve", *legacy_db.targets).code == 0
    for part in sql.split("; "):
        legacy_db.query(part, user=user)
    verify = cli("verify", *legacy_db.targets)
    assert verify.code == 2 and code in verify.out, verify.out
    plan = cli("plan", *legacy_db.targets, "--format", "json")
    assert plan.code == 2, plan.err
    sql_planned = [s for a in plan.json["actions"] for s in a["sql"]]
    assert any(statement in s for s in sql_planned), sql_planned
    assert cli("apply", "--auto-approve", *legacy_db.targets).code == 0
    assert cli("verify", *legacy_db.targets).code == 0


def test_a_rerun_sends_no_grant_revoke_or_ddl_and_legacy_acls_stay(legacy_db):
    before = legacy_fingerprint(legacy_db)
    assert cli("apply", "--auto-approve", *legacy_db.targets).code == 0
    ddl = count_ddl(legacy_db)
    plan = cli("plan", *legacy_db.targets, "--format", "json")
    assert plan.code == 0 and plan.json["changes"] == 0
    again = cli("apply", "--auto-approve", *legacy_db.targets, "--format", "json")
    assert again.code == 0 and again.json["applied"] == []
    assert ddl() == 0
    assert legacy_fingerprint(legacy_db) == before


def test_inspect_shows_who_can_do_what(legacy_db):
    assert cli("apply", "--auto-approve", *legacy_db.targets).code == 0
    report = cli("inspect", *legacy_db.targets, "--format", "json").json
    matrix = {(a["role"], a["schema"]): a for a in report["privileges"]}
    assert matrix[(APP, "dna")] == {
        "role": APP,
        "schema": "dna",
        "usage": True,
        "read": True,
        "write": True,
        "create": False,
        "owner": False,
    }
    assert matrix[(RO, "dna")]["write"] is False and matrix[(RO, "dna")]["read"] is True
    assert matrix[("nucleus", "dna")]["owner"] is True
    assert matrix[("PUBLIC", "dna")]["usage"] is False
    # Legacy schemas are reported, never changed.
    assert matrix[(APP, "dna_schema")]["usage"] is False
    text = cli("inspect", *legacy_db.targets).out
    assert "who can do what" in text and "nucleus_readwrite" in text
    markdown = cli("inspect", *legacy_db.targets, "--format", "markdown").out
    assert (
        "### Who Can Do What" in markdown
        and "| nucleus_app | dna | yes | yes | yes | no | no |" in markdown
    )


def test_without_the_app_password_creating_the_login_is_a_clear_error_and_nothing_changes(
    legacy_db, tmp_path, monkeypatch
):
    # Roles are the server's, shared by every test database: a login of this test's own.
    login = f"app_{legacy_db.name}"
    config = config_replacing(tmp_path, 'name = "nucleus_app"', f'name = "{login}"')
    monkeypatch.delenv("NUCLEUS_APP_PASSWORD")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json")
    before = state(legacy_db)
    run = cli("--config", config, "apply", "--auto-approve", *legacy_db.targets)
    assert_clean_error(run, login, "NUCLEUS_APP_PASSWORD")
    assert legacy_db.query("SELECT count(*) FROM pg_roles WHERE rolname = :r", r=login) == [[0]]
    assert state(legacy_db) == before
