"""apply/plan/verify on the embedded Cloud SQL emulation, through the real CLI."""

from __future__ import annotations

import pytest

from helpers import MIGRATIONS, VERSIONS, cli, config_with_owner

SCENARIOS = ["empty", "legacy-nucleus-v12", "legacy-nucleus-v12-partial"]

LEGACY_STATE = """
SELECT n.nspname || '.' || coalesce(c.relname, ''), pg_get_userbyid(coalesce(c.relowner, n.nspowner)),
       coalesce(CAST(c.relacl AS text), CAST(n.nspacl AS text), '')
FROM pg_namespace n LEFT JOIN pg_class c ON c.relnamespace = n.oid
WHERE n.nspname IN ('dna_schema', 'tasks_schema', 'agents_schema', 'results_schema')
ORDER BY 1
"""
LEGACY_TABLES = [
    "dna_schema.entities",
    "dna_schema.interests",
    "dna_schema.capabilities",
    "dna_schema.dna_profiles",
    "tasks_schema.tasks",
    "agents_schema.agents",
    "results_schema.results",
]


def _legacy_rows(db) -> list:
    """The version table's legacy rows: all of them before adoption, then those without a
    version (this tool's records have one; legacy tooling's never do)."""
    adopted = db.query(
        "SELECT count(*) FROM pg_attribute WHERE attrelid = 'public.migrations'::regclass "
        "AND attname = 'version' AND NOT attisdropped"
    ) == [[1]]
    where = "WHERE version IS NULL " if adopted else ""
    return db.query(
        f"SELECT id, migration_name, applied_at FROM public.migrations {where}ORDER BY id"
    )


def legacy_fingerprint(db) -> dict[str, object]:
    """Owners, grants and a checksum of every row of every legacy table."""
    sums = {
        t: db.query(
            f"SELECT count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM {t} x"
        )[0]
        for t in LEGACY_TABLES
    }
    return {
        "objects": db.query(LEGACY_STATE),
        "rows": sums,
        "migrations": _legacy_rows(db),
    }


def count_ddl(db):
    """An event trigger (as the emulated cloudsqladmin) that counts every DDL command."""
    # No grant: the function runs as its owner, the superuser (a table in public that
    # PUBLIC may write would itself be access-unexpected for the runtime logins).
    db.query("CREATE TABLE public.ddl_seen (tag text)")
    db.query(
        "CREATE FUNCTION public.note_ddl() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER AS "
        "$$ BEGIN INSERT INTO public.ddl_seen VALUES (tg_tag); END $$"
    )
    db.query(
        "CREATE EVENT TRIGGER note_ddl ON ddl_command_start EXECUTE FUNCTION public.note_ddl()"
    )
    return lambda: db.query("SELECT count(*) FROM public.ddl_seen")[0][0]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_apply_converges_and_a_rerun_changes_nothing(make_db, scenario):
    db = make_db(scenario)
    before = legacy_fingerprint(db) if scenario != "empty" else None

    first = cli("apply", "--auto-approve", *db.targets)
    assert first.code == 0, first.err
    assert "Apply complete" in first.out
    assert cli("verify", "--dsn", db.admin_dsn).code == 0

    ddl = count_ddl(db)
    plan = cli("plan", *db.targets, "--format", "json")
    assert plan.code == 0 and plan.json["changes"] == 0
    again = cli("apply", "--auto-approve", *db.targets, "--format", "json")
    assert again.code == 0 and again.json["applied"] == []
    assert ddl() == 0

    inspect = cli("inspect", "--dsn", db.admin_dsn, "--format", "json")
    assert inspect.json["findings"] == []
    records = db.query(
        "SELECT version, count(*) FROM public.migrations WHERE version IS NOT NULL GROUP BY 1 ORDER BY 1"
    )
    assert records == [[v, 1] for v in VERSIONS]
    owners = db.query(
        "SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c JOIN pg_namespace n "
        "ON n.oid = c.relnamespace WHERE n.nspname IN ('dna', 'tasks', 'agents', 'results', 'memory', "
        "'assembly', 'execution') OR (n.nspname, c.relname) = ('public', 'migrations')"
    )
    assert owners == [["nucleus"]]
    if before is not None:
        assert legacy_fingerprint(db) == before


def test_legacy_migration_rows_are_kept_and_backfilled_without_a_version(legacy_db):
    assert cli("apply", "--auto-approve", *legacy_db.targets).code == 0
    rows = legacy_db.query(
        "SELECT migration_name, version, description, executed_at = applied_at "
        "FROM public.migrations ORDER BY id"
    )
    assert rows[:4] == [
        [name, None, name, True]
        for name in (
            "000_initial_schema",
            "001_add_dna_profiles",
            "002_add_results_score",
            "003_tasks_due_at",
        )
    ]
    assert [r[:2] for r in rows[4:]] == [[m.name, m.version] for m in MIGRATIONS]
    # Old services keep inserting the old way.
    legacy_db.query(
        "INSERT INTO public.migrations (migration_name) VALUES ('004_legacy_service')",
        user="nucleus",
    )


def test_a_hand_written_row_claiming_001_does_not_stop_001_from_converging(partial_db):
    partial_db.query(
        "INSERT INTO public.migrations (migration_name, applied_at) VALUES ('001_init_schemas', now())"
    )
    plan = cli(
        "plan",
        *partial_db.targets,
        "--format",
        "json",
    )
    assert plan.code == 2 and plan.json["pending_migrations"] == VERSIONS
    assert cli("apply", "--auto-approve", *partial_db.targets).code == 0
    assert partial_db.query(
        "SELECT count(*) FROM pg_class WHERE relname IN ('values', 'raw_data', 'memory')"
    ) == [[3]]
    assert partial_db.query(
        "SELECT migration_name, version FROM public.migrations WHERE version IS NOT NULL "
        "OR migration_name = '001_init_schemas' ORDER BY id"
    ) == [[m.name, m.version] for m in MIGRATIONS]


def test_pg16_two_step_route_is_chosen_when_postgres_holds_no_admin_on_nucleus(legacy_db):
    plan = cli("plan", *legacy_db.targets, "--format", "json")
    assert plan.json["route"]["name"] == "two-step-via-cloudsqlsuperuser"
    kinds = [a["kind"] for a in plan.json["actions"]]
    # In this order; privilege actions may come between (the groups exist or not, the
    # owner's default privileges are set before the first migration).
    steps = ["create-extension", "handoff-to-group", "handoff-to-owner", "adopt-migrations-table"]
    assert [k for k in kinds if k in steps] == steps
    assert kinds.index("adopt-migrations-table") < kinds.index("migrate")
    assert legacy_db.query(
        "SELECT pg_has_role('postgres', 'nucleus', 'MEMBER WITH ADMIN OPTION')"
    ) == [[False]]
    assert cli("apply", "--auto-approve", *legacy_db.targets).code == 0


def test_without_an_owner_session_the_two_step_route_asks_for_one_and_changes_nothing(legacy_db):
    before = legacy_db.query(LEGACY_STATE)
    run = cli("apply", "--auto-approve", "--dsn", legacy_db.admin_dsn)
    assert (
        run.code == 1
        and "needs a session logged in as nucleus" in run.err
        and "--owner-dsn" in run.err
    )
    assert legacy_db.query(LEGACY_STATE) == before
    assert legacy_db.query("SELECT count(*) FROM pg_extension WHERE extname = 'vector'") == [[0]]


def test_an_owner_role_postgres_created_is_granted_then_handed_objects_directly(
    partial_db, tmp_path
):
    owner = f"app_owner_{partial_db.name}"
    partial_db.query(f"CREATE ROLE {owner} LOGIN PASSWORD 'owner-pass-1'", user="postgres")
    config = ("--config", config_with_owner(tmp_path, owner))
    plan = cli(*config, "plan", "--dsn", partial_db.admin_dsn, "--format", "json")
    assert plan.json["route"]["name"] == "grant-then-direct"
    assert cli(*config, "apply", "--auto-approve", "--dsn", partial_db.admin_dsn).code == 0
    assert cli(*config, "verify", "--dsn", partial_db.admin_dsn).code == 0
    # inspect reads the same desired state: no --owner-role to drift from the others.
    assert (
        cli(*config, "inspect", "--dsn", partial_db.admin_dsn, "--format", "json").json["findings"]
        == []
    )
    assert partial_db.query(
        "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'dna'"
    ) == [[owner]]
