"""The embedded server behaves like Cloud SQL in every way our code relies on
(shared/docs/cloudsql.md, sections 1 to 3)."""

from __future__ import annotations

import pg8000.native
import pytest

from provision.errors import MigrationFileError
from provision.local.instance import SUPERUSER_GROUP
from provision.local.scenarios import statements_before_stop_marker
from provision.migrations import load_migrations


def _error(exc: pg8000.native.DatabaseError) -> dict:
    return exc.args[0]


def test_postgres_is_not_a_superuser_but_a_member_of_cloudsqlsuperuser(empty_db):
    rows = empty_db.query(
        "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolcanlogin, pg_has_role(rolname, :g, 'MEMBER') "
        "FROM pg_roles WHERE rolname IN ('postgres', 'nucleus', 'cloudsqlsuperuser', 'cloudsqladmin') ORDER BY 1",
        g=SUPERUSER_GROUP,
    )
    assert rows == [
        ["cloudsqladmin", True, True, True, True, True],
        ["cloudsqlsuperuser", False, True, True, False, True],
        ["nucleus", False, True, True, True, True],
        ["postgres", False, True, True, True, True],
    ]


def test_databases_created_through_the_api_belong_to_cloudsqlsuperuser(empty_db):
    owner = empty_db.query(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
    )
    assert owner == [[SUPERUSER_GROUP]]


def test_postgres_may_create_vector_but_a_plain_role_may_not(empty_db):
    conn = empty_db.connect("postgres")
    try:
        conn.run("CREATE ROLE plain_app LOGIN PASSWORD 'x-plain-pass'")
    except pg8000.native.DatabaseError:
        pass  # roles are cluster-wide: another test created it already
    finally:
        conn.close()
    plain = pg8000.native.Connection(
        "plain_app",
        host=empty_db.instance.host,
        port=empty_db.instance.port,
        database=empty_db.name,
        password="x-plain-pass",
    )
    with pytest.raises(pg8000.native.DatabaseError) as refused:
        plain.run("CREATE EXTENSION vector")
    plain.close()
    assert _error(refused.value)["C"] == "42501"  # insufficient_privilege

    conn = empty_db.connect("postgres")
    conn.run("CREATE EXTENSION vector")
    assert conn.run(
        "SELECT pg_get_userbyid(extowner) FROM pg_extension WHERE extname = 'vector'"
    ) == [["postgres"]]
    assert conn.run("SELECT '[1,2,3]'::vector <-> '[1,2,4]'::vector") == [[1.0]]
    conn.close()


def test_a_wrong_password_is_refused(empty_db):
    with pytest.raises(pg8000.native.DatabaseError) as refused:
        pg8000.native.Connection(
            "postgres",
            host=empty_db.instance.host,
            port=empty_db.instance.port,
            database=empty_db.name,
            password="not-the-password",
        )
    assert _error(refused.value)["C"] == "28P01"  # invalid_password


def test_postgres_cannot_grant_itself_an_api_created_user_on_pg16(empty_db):
    conn = empty_db.connect("postgres")
    try:
        assert int(conn.run("SHOW server_version_num")[0][0]) >= 160000
        with pytest.raises(pg8000.native.DatabaseError) as refused:
            conn.run("GRANT nucleus TO postgres")
        assert _error(refused.value)["M"] == 'permission denied to grant role "nucleus"'
    finally:
        conn.close()


def test_postgres_cannot_alter_what_it_does_not_own(legacy_db):
    legacy_db.query("CREATE TABLE public.admin_only (id int)")  # as cloudsqladmin
    conn = legacy_db.connect("postgres")
    with pytest.raises(pg8000.native.DatabaseError) as refused:
        conn.run("ALTER TABLE public.admin_only OWNER TO nucleus")
    conn.close()
    assert _error(refused.value)["C"] == "42501"


def test_empty_scenario_is_a_fresh_terraform_deploy(empty_db):
    schemas = empty_db.query(
        "SELECT nspname FROM pg_namespace WHERE nspname !~ '^pg_' AND nspname <> 'information_schema'"
    )
    tables = empty_db.query(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'"
    )
    assert schemas == [["public"]] and tables == [[0]]
    assert empty_db.query("SELECT extname FROM pg_extension") == [["plpgsql"]]


def test_legacy_scenario_is_the_seeds_production_state(legacy_db):
    owners = legacy_db.query(
        "SELECT n.nspname, c.relname, pg_get_userbyid(c.relowner) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname !~ '^pg_' "
        "AND n.nspname <> 'information_schema' ORDER BY 1, 2"
    )
    assert [(s, t) for s, t, _ in owners] == [
        ("agents_schema", "agents"),
        ("dna_schema", "capabilities"),
        ("dna_schema", "dna_profiles"),
        ("dna_schema", "entities"),
        ("dna_schema", "interests"),
        ("public", "migrations"),
        ("results_schema", "results"),
        ("tasks_schema", "tasks"),
    ]
    assert {owner for _, _, owner in owners} == {"postgres"}
    columns = legacy_db.query(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'public.migrations'::regclass "
        "AND attnum > 0 ORDER BY attnum"
    )
    assert columns == [["id"], ["migration_name"], ["applied_at"]]
    counts = legacy_db.query(
        "SELECT (SELECT count(*) FROM dna_schema.entities), (SELECT count(*) FROM "
        "dna_schema.interests), (SELECT count(*) FROM results_schema.results), "
        "(SELECT count(*) FROM public.migrations)"
    )
    assert counts == [[2000, 6000, 8000, 4]]
    assert legacy_db.query("SELECT count(*) FROM pg_extension WHERE extname = 'vector'") == [[0]]
    assert legacy_db.query("SELECT count(*) FROM pg_namespace WHERE nspname = 'dna'") == [[0]]


def test_partial_scenario_has_half_of_001_owned_by_postgres_and_unrecorded(partial_db):
    tables = partial_db.query(
        "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c JOIN pg_namespace n "
        "ON n.oid = c.relnamespace WHERE n.nspname = 'dna' AND c.relkind = 'r' ORDER BY 1"
    )
    assert tables == [["entity", "postgres"], ["goals", "postgres"], ["interests", "postgres"]]
    assert partial_db.query(
        "SELECT count(*) FROM pg_namespace WHERE nspname IN ('tasks', 'memory')"
    ) == [[0]]
    assert partial_db.query("SELECT migration_name FROM public.migrations ORDER BY id") == [
        ["000_initial_schema"],
        ["001_add_dna_profiles"],
        ["002_add_results_score"],
        ["003_tasks_due_at"],
    ]


def test_the_partial_scenario_stops_at_the_marked_line_of_001_not_at_a_searched_text():
    first, second = load_migrations()[:2]
    before = statements_before_stop_marker(first)
    assert len(before) == 4 and before[-1].startswith("CREATE TABLE IF NOT EXISTS dna.goals")
    with pytest.raises(MigrationFileError, match="has no line '-- nucleus-provision: the prod"):
        statements_before_stop_marker(second)
