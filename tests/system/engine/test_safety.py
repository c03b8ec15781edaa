"""Concurrency, faults and bad input: clear errors, non-zero exits, nothing changed."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import pytest

from helpers import VERSIONS, assert_clean_error, cli, config_with_owner, start

ROOT = Path(__file__).resolve().parents[3]


def migrations_copy(tmp_path: Path, extra: dict[str, str] | None = None) -> Path:
    target = tmp_path / "bootstrap_sql"
    # Without the lock: these files are not what it was made from (a stale lock is its own
    # finding, tested in test_lock.py).
    shutil.copytree(ROOT / "bootstrap_sql", target, ignore=shutil.ignore_patterns("schema.lock"))
    for name, sql in (extra or {}).items():
        (target / name).write_text(sql)
    return target


def state(db):
    return db.query(
        "SELECT n.nspname, c.relname, pg_get_userbyid(c.relowner) FROM pg_class c JOIN pg_namespace n "
        "ON n.oid = c.relnamespace WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema' "
        "ORDER BY 1, 2"
    ) + db.query("SELECT extname FROM pg_extension ORDER BY 1")


def test_eight_concurrent_applies_apply_each_migration_once(legacy_db):
    procs = [start("apply", "--auto-approve", *legacy_db.targets) for _ in range(8)]
    outputs = [p.communicate(timeout=180) for p in procs]
    results = [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs, strict=True)]
    for code, _, err in results:
        assert code == 0, err
        assert "Traceback" not in err
    assert sum("Apply complete" in out for _, out, _ in results) == 1
    assert any(
        "waiting: another nucleus-provision run holds the lock" in err for _, _, err in results
    )
    assert legacy_db.query(
        "SELECT version, count(*) FROM public.migrations WHERE version IS NOT NULL "
        "GROUP BY 1 ORDER BY 1"
    ) == [[v, 1] for v in VERSIONS]
    assert cli("verify", "--dsn", legacy_db.admin_dsn).code == 0


def test_a_session_killed_mid_migration_leaves_nothing_half_applied(legacy_db, tmp_path):
    slow = migrations_copy(
        tmp_path, {"900_slow.sql": "CREATE TABLE dna.slow_step (id int);\nSELECT pg_sleep(2);\n"}
    )
    args = (
        "apply",
        "--auto-approve",
        *legacy_db.targets,
        "--migrations",
        str(slow),
    )
    proc = start(*args)
    deadline = time.monotonic() + 60
    killed = []
    while not killed and time.monotonic() < deadline:
        killed = legacy_db.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query LIKE 'SELECT pg_sleep(2)%' AND pid <> pg_backend_pid()"
        )
        time.sleep(0.05)
    assert killed, "the migration never reached its sleep"
    code = proc.wait(timeout=60)
    err = proc.stderr.read()
    assert code == 1 and "900_slow.sql" in err and "rolled back" in err and "Traceback" not in err
    assert legacy_db.query("SELECT count(*) FROM pg_class WHERE relname = 'slow_step'") == [[0]]
    assert legacy_db.query("SELECT count(*) FROM public.migrations WHERE version = '900'") == [[0]]
    # The repository's migrations committed before 900 started; the rerun converges.
    assert cli(*args).code == 0
    assert legacy_db.query(
        "SELECT version FROM public.migrations WHERE version IS NOT NULL ORDER BY 1"
    ) == [[v] for v in [*VERSIONS, "900"]]


def test_an_edited_applied_migration_stops_the_run_until_accepted(legacy_db, tmp_path):
    dsns = legacy_db.targets
    assert cli("apply", "--auto-approve", *dsns).code == 0
    edited = migrations_copy(tmp_path)
    (edited / "002_add_entity_integrations.sql").write_text(
        (edited / "002_add_entity_integrations.sql").read_text() + "\n-- edited after it ran\n"
    )
    run = cli("apply", "--auto-approve", *dsns, "--migrations", str(edited))
    assert_clean_error(
        run, "002_add_entity_integrations.sql changed after it was applied", "--accept-changed 002"
    )
    accepted = cli(
        "apply", "--auto-approve", *dsns, "--migrations", str(edited), "--accept-changed", "002"
    )
    assert accepted.code == 0, accepted.err
    assert cli("plan", *dsns, "--migrations", str(edited)).code == 0


def test_a_malformed_file_is_named_with_its_position_and_nothing_runs(legacy_db, tmp_path):
    bad = migrations_copy(
        tmp_path,
        {"900_broken.sql": "CREATE TABLE dna.ok (id int);\n\nCREATE TABL dna.nope (id int);\n"},
    )
    before = state(legacy_db)
    run = cli(
        "apply",
        "--auto-approve",
        *legacy_db.targets,
        "--migrations",
        str(bad),
    )
    assert_clean_error(run, '900_broken.sql:3:8: syntax error at or near "TABL"')
    assert state(legacy_db) == before


@pytest.mark.parametrize(
    "sql",
    [
        "DROP SCHEMA dna_schema CASCADE;",
        "ALTER TABLE dna_schema.entities RENAME TO entity;",
        "ALTER SCHEMA tasks_schema RENAME TO tasks_old;",
        "DELETE FROM results_schema.results;",
        "WITH gone AS (DELETE FROM dna_schema.interests RETURNING 1) SELECT count(*) FROM gone;",
        "SET search_path TO dna_schema;",
    ],
)
def test_a_migration_touching_a_legacy_schema_is_refused_before_anything_runs(
    legacy_db, tmp_path, sql
):
    bad = migrations_copy(
        tmp_path, {"900_dangerous.sql": f"CREATE TABLE dna.fine (id int);\n{sql}\n"}
    )
    before = state(legacy_db)
    run = cli(
        "apply",
        "--auto-approve",
        *legacy_db.targets,
        "--migrations",
        str(bad),
    )
    assert_clean_error(run, "900_dangerous.sql:2: refused")
    assert state(legacy_db) == before


def test_a_missing_owner_role_is_a_clear_error(legacy_db, tmp_path):
    before = state(legacy_db)
    config = config_with_owner(tmp_path, "nucleus_gone")
    run = cli("--config", config, "apply", "--auto-approve", "--dsn", legacy_db.admin_dsn)
    assert_clean_error(
        run, "role nucleus_gone does not exist", "gcloud sql users create nucleus_gone"
    )
    assert state(legacy_db) == before


def test_a_wrong_password_is_one_line_and_never_printed(legacy_db):
    run = cli("apply", "--auto-approve", "--dsn", legacy_db.dsn("postgres", "wrong-secret-pw"))
    assert_clean_error(run, "password authentication failed for user", secrets=("wrong-secret-pw",))


def test_an_unreachable_host_fails_within_the_connect_timeout():
    with socket.socket() as blackhole:  # accepts connections, never answers
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(8)
        port = blackhole.getsockname()[1]
        # Without the connect timeout the run would hang on the silent server: the
        # subprocess's own timeout would then fail the test (TimeoutExpired).
        run = cli(
            "--connect-timeout",
            "1",
            "plan",
            "--dsn",
            f"postgresql://postgres:pw@127.0.0.1:{port}/nucleus_v12",
            timeout=60,
        )
    assert_clean_error(run, "127.0.0.1", "timed out")


def test_a_closed_port_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = cli("verify", "--dsn", f"postgresql://postgres:pw@127.0.0.1:{port}/nucleus_v12")
    assert_clean_error(run, "cannot connect")


def test_usage_errors_exit_1_so_that_2_always_means_changes_pending():
    run = cli("plan")
    assert_clean_error(run, "give --dsn URL or --env NAME")
    assert cli("plan", "--no-such-flag").code == 1


def test_an_owner_dsn_that_logs_in_as_someone_else_is_refused_before_anything_runs(empty_db):
    before = state(empty_db)
    run = cli(
        "apply", "--auto-approve", "--dsn", empty_db.admin_dsn, "--owner-dsn", empty_db.admin_dsn
    )
    assert_clean_error(run, "the owner session logs in as postgres, not nucleus")
    assert state(empty_db) == before


def test_a_non_transactional_migration_runs_between_transactional_ones(legacy_db, tmp_path):
    extra = migrations_copy(
        tmp_path,
        {
            "900_concurrent_index.sql": "-- nucleus-provision: no-transaction\n"
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS entity_name_idx ON dna.entity (name);\n",
            "901_after.sql": "CREATE TABLE IF NOT EXISTS dna.after_concurrent (id int);\n",
        },
    )
    dsns = (
        *legacy_db.targets,
        "--migrations",
        str(extra),
    )
    run = cli("apply", "--auto-approve", *dsns)
    assert run.code == 0, run.err
    assert "NOT transactional" in run.out
    assert legacy_db.query(
        "SELECT relname, pg_get_userbyid(relowner) FROM pg_class "
        "WHERE relname IN ('entity_name_idx', 'after_concurrent') ORDER BY 1"
    ) == [["after_concurrent", "nucleus"], ["entity_name_idx", "nucleus"]]
    assert cli("plan", *dsns).code == 0


def test_a_version_table_the_admin_cannot_read_is_read_through_the_owner_session(legacy_db):
    dsns = legacy_db.targets
    assert cli("apply", "--auto-approve", *dsns).code == 0
    legacy_db.query("REVOKE SELECT ON public.migrations FROM postgres", user="nucleus")
    alone = cli("plan", "--dsn", legacy_db.admin_dsn)
    assert_clean_error(alone, "cannot read public.migrations", "--owner-dsn")
    plan = cli("plan", *dsns, "--format", "json")
    assert plan.code == 2 and plan.json["pending_migrations"] == []
    assert [a["kind"] for a in plan.json["actions"]] == ["adopt-migrations-table"]
    assert cli("apply", "--auto-approve", *dsns).code == 0
    assert cli("verify", "--dsn", legacy_db.admin_dsn).code == 0


def test_accepting_an_edited_file_without_an_owner_session_is_a_clear_error(legacy_db, tmp_path):
    assert cli("apply", "--auto-approve", *legacy_db.targets).code == 0
    edited = migrations_copy(tmp_path)
    path = edited / "002_add_entity_integrations.sql"
    path.write_text(path.read_text() + "\n-- edited\n")
    run = cli(
        "apply",
        "--auto-approve",
        "--dsn",
        legacy_db.admin_dsn,
        "--migrations",
        str(edited),
        "--accept-changed",
        "002",
    )
    assert_clean_error(run, "needs a session logged in as nucleus", "--owner-dsn")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (
            ("plan", "--dsn", "postgresql://postgres:pw@127.0.0.1:abc/nucleus_v12"),
            "not a valid URL",
        ),
        (
            ("plan", "--dsn", "postgresql://postgres@127.0.0.1:5432/nucleus_v12"),
            "lacks a user, a password",
        ),
        (("plan", "--dsn", "postgresql://postgres:se@cret@127.0.0.1:5432/db"), "unencoded '@'"),
        (("--connect-timeout", "-5", "plan", "--dsn", "postgresql://p:w@127.0.0.1:1/db"), "-5"),
        (("local", "up", "--state-dir", "/proc/no-such-place"), "/proc/no-such-place"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_1(args, fragment):
    run = cli(*args)
    assert run.code == 1, (run.out, run.err)
    assert "Traceback" not in run.err and fragment in run.err
    assert "cret" not in run.err


def test_sequence_values_see_a_nextval_the_other_session_rolled_back(legacy_db):
    # Sequences are not transactional: a nextval rolled back is still seen by a second
    # session, so reading there before and after a transaction shows what it advanced.
    from provision import db as provision_db
    from provision.safety import changed_sequences, sequence_values

    legacy_db.query("CREATE SCHEMA dna AUTHORIZATION postgres")
    legacy_db.query("CREATE SEQUENCE dna.own_seq", user="postgres")
    engine = provision_db.engine_for_dsn(legacy_db.admin_dsn)
    try:
        with engine.connect() as watcher:
            before = sequence_values(watcher, ["dna"])
            assert before, "the legacy scenario has sequences"
            assert "dna.own_seq" not in before
            legacy = legacy_db.query(
                "SELECT schemaname || '.' || sequencename FROM pg_sequences "
                "WHERE schemaname = 'dna_schema' ORDER BY 1 LIMIT 1"
            )[0][0]
            mover = legacy_db.connect("postgres")
            try:
                mover.run("BEGIN")
                mover.run("SELECT nextval(CAST(:s AS regclass))", s=legacy)
                mover.run("SELECT nextval('dna.own_seq')")  # an excluded schema: not reported
                mover.run("ROLLBACK")
            finally:
                mover.close()
            after = sequence_values(watcher, ["dna"])
    finally:
        engine.dispose()
    assert changed_sequences(before, after) == [legacy]
    assert changed_sequences(after, after) == []


def test_changed_sequences_counts_a_created_or_dropped_sequence():
    from provision.safety import changed_sequences

    assert changed_sequences({"a.s": None}, {"a.s": None, "b.t": None}) == ["b.t"]
    assert changed_sequences({"a.s": 3, "b.t": 1}, {"a.s": 4}) == ["a.s", "b.t"]
    assert changed_sequences({"a.s": None}, {"a.s": 1}) == ["a.s"]
