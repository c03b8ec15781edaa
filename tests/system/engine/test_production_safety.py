"""Issue 9: each class of defect a hostile review found, reproduced against the emulation.

Legacy data is compared by the emulated superuser (`cloudsqladmin`), never by the tool itself.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from test_apply import legacy_fingerprint
from test_safety import migrations_copy, state

from helpers import assert_clean_error, cli, start

# -- proof, not parse: what a migration did is proven by the database --------------------------

WALK_AROUNDS = {
    "an auto-updatable view": (
        "CREATE VIEW dna.ev AS SELECT * FROM dna_schema.entities;\n"
        "UPDATE dna.ev SET name = name || ' (changed)';\n",
        "dna_schema.entities",
    ),
    "a function called in the same file": (
        "CREATE FUNCTION dna.forget() RETURNS void LANGUAGE sql AS\n"
        "$$ DELETE FROM public.migrations WHERE version IS NULL $$;\n"
        "SELECT dna.forget();\n",
        "public.migrations",
    ),
    "a trigger fired in the same file": (
        "CREATE TABLE dna.audit (x int);\n"
        "CREATE FUNCTION dna.touch() RETURNS trigger LANGUAGE plpgsql AS\n"
        "$$ BEGIN UPDATE dna_schema.interests SET topic = topic; RETURN NEW; END $$;\n"
        "CREATE TRIGGER touch AFTER INSERT ON dna.audit FOR EACH ROW EXECUTE FUNCTION dna.touch();\n"
        "INSERT INTO dna.audit VALUES (1);\n",
        "dna_schema.interests",
    ),
    "dropping the public schema": (
        "DROP SCHEMA public CASCADE;\n",
        "",
    ),
    "a rule on a new table calling dynamic SQL": (
        "CREATE TABLE dna.sink (x int);\n"
        "CREATE FUNCTION dna.clear() RETURNS int LANGUAGE plpgsql AS\n"
        "$$ BEGIN EXECUTE 'DELETE FROM ' || 'dna_schema' || '.capabilities'; RETURN 0; END $$;\n"
        "CREATE RULE r AS ON INSERT TO dna.sink DO ALSO SELECT dna.clear();\n"
        "INSERT INTO dna.sink VALUES (1);\n",
        "dna_schema.capabilities",
    ),
}


@pytest.mark.parametrize("case", sorted(WALK_AROUNDS))
def test_a_migration_that_changes_legacy_data_by_any_path_is_rolled_back_naming_it(
    legacy_db, tmp_path, case
):
    sql, named = WALK_AROUNDS[case]
    extra = migrations_copy(tmp_path, {"900_walk_around.sql": sql})
    assert (
        cli("apply", "--auto-approve", *legacy_db.targets).code == 0
    )  # the repository's files first
    before = legacy_fingerprint(legacy_db)
    run = cli("apply", "--auto-approve", *legacy_db.targets, "--migrations", str(extra))
    # Named by the proof before COMMIT (rows, objects) or, if the lock guard cancelled the
    # statement first, by the lock the write took: either way the object is named.
    assert_clean_error(
        run, "900_walk_around.sql changed or locked what is outside the managed schemas", named
    )
    assert legacy_fingerprint(legacy_db) == before
    assert legacy_db.query("SELECT count(*) FROM public.migrations WHERE version = '900'") == [[0]]
    assert legacy_db.query("SELECT count(*) FROM pg_namespace WHERE nspname = 'public'") == [[1]]
    assert legacy_db.query("SELECT count(*) FROM pg_extension WHERE extname = 'vector'") == [[1]]


def test_a_truncate_of_a_legacy_table_through_a_function_is_rolled_back(legacy_db, tmp_path):
    extra = migrations_copy(
        tmp_path,
        {
            "900_truncate.sql": "CREATE FUNCTION dna.wipe() RETURNS void LANGUAGE plpgsql AS\n"
            "$$ BEGIN EXECUTE 'TRUNCATE dna_schema.dna_profiles'; END $$;\n"
            "SELECT dna.wipe();\n"
        },
    )
    assert cli("apply", "--auto-approve", *legacy_db.targets).code == 0
    # Some production grants are broad: with TRUNCATE, no row counter moves, but the table
    # gets new storage, which the fingerprint sees.
    legacy_db.query("GRANT TRUNCATE ON dna_schema.dna_profiles TO nucleus")
    before = legacy_fingerprint(legacy_db)
    run = cli("apply", "--auto-approve", *legacy_db.targets, "--migrations", str(extra))
    assert_clean_error(run, "outside the managed schemas", "dna_schema.dna_profiles")
    assert legacy_fingerprint(legacy_db) == before


def test_a_migration_that_only_touches_new_schemas_passes_the_proof(legacy_db, tmp_path):
    extra = migrations_copy(
        tmp_path,
        {
            "900_fine.sql": "CREATE SCHEMA IF NOT EXISTS memory;\n"
            "CREATE TABLE memory.invoice (id int PRIMARY KEY, note text);\n"
            "COMMENT ON TABLE memory.invoice IS 'fine: a managed table';\n"
            "CREATE TABLE memory.line (id int REFERENCES memory.invoice);\n"
            "CREATE FUNCTION memory.total() RETURNS int LANGUAGE sql AS 'SELECT 1';\n"
            "INSERT INTO memory.invoice VALUES (1);\n"
            "INSERT INTO dna.entity (name) SELECT name FROM dna_schema.entities LIMIT 3;\n"
        },
    )
    before = legacy_fingerprint(legacy_db)
    run = cli("apply", "--auto-approve", *legacy_db.targets, "--migrations", str(extra))
    assert run.code == 0, run.err
    assert legacy_fingerprint(legacy_db) == before
    assert legacy_db.query("SELECT count(*) FROM dna.entity") == [[3]]


@pytest.mark.parametrize(
    ("sql", "why"),
    [
        ("DROP SCHEMA public CASCADE;", "in a no-transaction file"),
        ("DELETE FROM dna.entity;", "in a no-transaction file"),
        ("CREATE INDEX CONCURRENTLY unqualified_idx ON entity (name);", "schema-qualified"),
        # The guard rail speaks first for a legacy table.
        ("CREATE INDEX CONCURRENTLY e_name ON dna_schema.entities (name);", "protected schema"),
    ],
)
def test_a_no_transaction_file_may_hold_only_concurrent_index_work_on_new_schemas(
    legacy_db, tmp_path, sql, why
):
    extra = migrations_copy(
        tmp_path, {"900_outside.sql": f"-- nucleus-provision: no-transaction\n{sql}\n"}
    )
    before = state(legacy_db)
    run = cli("apply", "--auto-approve", *legacy_db.targets, "--migrations", str(extra))
    assert_clean_error(run, "900_outside.sql:2: refused", why)
    assert state(legacy_db) == before


def test_an_index_a_failed_concurrent_build_left_invalid_fails_the_step_and_is_rebuilt(
    legacy_db, tmp_path
):
    assert cli("apply", "--auto-approve", *legacy_db.targets).code == 0
    legacy_db.query("INSERT INTO dna.entity (name) VALUES ('twin'), ('twin')", user="nucleus")
    extra = migrations_copy(
        tmp_path,
        {
            "900_unique_name.sql": "-- nucleus-provision: no-transaction\n"
            "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS entity_name_key ON dna.entity (name);\n"
        },
    )
    failed = cli("apply", "--auto-approve", *legacy_db.targets, "--migrations", str(extra))
    assert failed.code == 1 and "900_unique_name.sql" in failed.err
    assert legacy_db.query("SELECT count(*) FROM public.migrations WHERE version = '900'") == [[0]]
    assert legacy_db.query(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = 'dna.entity_name_key'::regclass"
    ) == [[False]]
    # Once the data allows it, the rerun drops the invalid index and builds it again.
    legacy_db.query("DELETE FROM dna.entity WHERE ctid IN (SELECT max(ctid) FROM dna.entity)")
    rerun = cli("apply", "--auto-approve", *legacy_db.targets, "--migrations", str(extra))
    assert rerun.code == 0, rerun.err
    assert legacy_db.query(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = 'dna.entity_name_key'::regclass"
    ) == [[True]]
    assert legacy_db.query("SELECT count(*) FROM public.migrations WHERE version = '900'") == [[1]]


# -- one lock for every session that writes ---------------------------------------------------


def test_an_owner_dsn_on_another_database_is_refused_before_anything_runs(make_db):
    here, elsewhere = make_db("legacy-nucleus-v12"), make_db("empty")
    before_here, before_elsewhere = state(here), state(elsewhere)
    run = cli(
        "apply", "--auto-approve", "--dsn", here.admin_dsn, "--owner-dsn", elsewhere.owner_dsn
    )
    assert_clean_error(run, "another server or database")
    assert state(here) == before_here and state(elsewhere) == before_elsewhere


def test_a_rerun_waits_for_a_killed_runs_orphan_backend_instead_of_running_twice(
    legacy_db, tmp_path
):
    assert cli("apply", "--auto-approve", *legacy_db.targets).code == 0
    # An index build that waits a few seconds for a session's SHARE lock on its table (a
    # concurrent build's SHARE UPDATE EXCLUSIVE conflicts with it; its lock waits may last the
    # whole budget). Only built-in functions: a no-transaction file may call nothing else.
    legacy_db.query("INSERT INTO dna.entity (name) VALUES ('one')", user="nucleus")
    extra = migrations_copy(
        tmp_path,
        {
            "900_slow_index.sql": "-- nucleus-provision: no-transaction\n"
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS entity_slow_idx ON dna.entity (lower(name));\n"
        },
    )
    holder = _hold(legacy_db, "LOCK TABLE dna.entity IN SHARE MODE", 4, user="nucleus")
    args = ("apply", "--auto-approve", *legacy_db.targets, "--migrations", str(extra))
    first = start(*args)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not legacy_db.query(
        "SELECT pid FROM pg_stat_activity WHERE query LIKE 'CREATE INDEX CONCURRENTLY%'"
    ):
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)  # the client dies; its owner backend keeps building
    first.wait(timeout=30)
    rerun = cli(*args)
    assert rerun.code == 0, rerun.err
    assert "a backend of an earlier nucleus-provision run is still working" in rerun.err
    assert legacy_db.query("SELECT version FROM public.migrations WHERE version = '900'") == [
        ["900"]
    ]
    assert legacy_db.query(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = 'dna.entity_slow_idx'::regclass"
    ) == [[True]]
    holder.thread.join()


# -- never stall live traffic -----------------------------------------------------------------


class _Holder:
    """A session that takes a lock and keeps its transaction open for `seconds`, or until
    `release()` (so that a test waits no longer than it needs)."""

    def __init__(self, db, sql: str, seconds: float, user: str) -> None:
        self.ready, self.released = threading.Event(), threading.Event()

        def hold() -> None:
            conn = db.connect(user)
            try:
                conn.run("SET application_name = 'lock-holder'")
                conn.run("BEGIN")
                conn.run(sql)
                self.ready.set()
                self.released.wait(seconds)
                conn.run("ROLLBACK")
            finally:
                conn.close()

        self.thread = threading.Thread(target=hold, daemon=True)
        self.thread.start()
        assert self.ready.wait(30)

    def join(self) -> None:
        """Wait for the hold to end by itself (its `seconds`)."""
        self.thread.join()

    def release(self) -> None:
        self.released.set()
        self.thread.join()


def _hold(db, sql: str, seconds: float, user: str = "postgres") -> _Holder:
    return _Holder(db, sql, seconds, user)


@pytest.mark.parametrize("verb", ["plan", "verify", "apply"])
def test_a_lock_held_on_the_version_table_bounds_the_wait_and_names_the_holder(legacy_db, verb):
    assert cli("apply", "--auto-approve", *legacy_db.targets).code == 0
    # The table's owner (a stuck migration of another tool, a VACUUM FULL) holds it.
    holder = _hold(
        legacy_db, "LOCK TABLE public.migrations IN ACCESS EXCLUSIVE MODE", 20, user="nucleus"
    )
    pid = legacy_db.query(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'lock-holder'"
    )[0][0]
    run = cli("--lock-budget", "1", verb, *legacy_db.targets)
    assert_clean_error(run, "reading the catalog: gave up", f"pid {pid} (user nucleus")
    assert "pg_terminate_backend" in run.err
    # Bounded: the run gave up while the lock was still held (unbounded, it would have waited
    # for the holder's 20 s to end).
    assert holder.thread.is_alive()
    holder.release()


def test_ddl_waits_short_retries_and_names_the_blocker_then_changes_nothing(legacy_db, tmp_path):
    assert cli("apply", "--auto-approve", *legacy_db.targets).code == 0
    extra = migrations_copy(
        tmp_path, {"900_note.sql": "ALTER TABLE dna.entity ADD COLUMN IF NOT EXISTS note text;\n"}
    )
    # A service's long transaction, logged in as the owner role like the migration: the
    # watcher (on the owner's login) sees its application and query.
    holder = _hold(legacy_db, "SELECT * FROM dna.entity LIMIT 1", 20, user="nucleus")
    run = cli(
        "--lock-budget",
        "1",
        "apply",
        "--auto-approve",
        *legacy_db.targets,
        "--migrations",
        str(extra),
    )
    assert_clean_error(
        run, "900_note.sql: gave up after", "lock-holder", "SELECT * FROM dna.entity"
    )
    assert "retrying" in run.err  # several short attempts, not one long wait
    assert legacy_db.query(
        "SELECT count(*) FROM pg_attribute WHERE attrelid = 'dna.entity'::regclass "
        "AND attname = 'note'"
    ) == [[0]]
    holder.release()
    assert cli("apply", "--auto-approve", *legacy_db.targets, "--migrations", str(extra)).code == 0


def test_a_lock_released_within_the_budget_lets_apply_converge(legacy_db, tmp_path):
    assert cli("apply", "--auto-approve", *legacy_db.targets).code == 0
    extra = migrations_copy(
        tmp_path, {"900_note.sql": "ALTER TABLE dna.entity ADD COLUMN IF NOT EXISTS note text;\n"}
    )
    holder = _hold(legacy_db, "SELECT * FROM dna.entity LIMIT 1", 60, user="nucleus")
    proc = start(
        "--lock-budget",
        "30",
        "apply",
        "--auto-approve",
        *legacy_db.targets,
        "--migrations",
        str(extra),
    )
    # The lock is released once apply says it retries (not after a fixed time, which a slow
    # start-up could outlast): apply must then converge within its budget.
    assert proc.stderr is not None
    said = []
    for line in proc.stderr:
        said.append(line)
        if "retrying" in line:
            break
    holder.release()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, "".join(said) + err
    assert any("retrying" in line for line in said), said


# -- drift apply cannot fix is said by plan too -------------------------------------------------


def test_a_table_dropped_by_hand_is_reported_by_plan_verify_and_apply_with_what_to_do(legacy_db):
    assert cli("apply", "--auto-approve", *legacy_db.targets).code == 0
    legacy_db.query("DROP TABLE dna.goals", user="nucleus")
    plan = cli("plan", *legacy_db.targets)
    assert_clean_error(plan, "apply cannot fix", "table-missing", code=3)
    assert "No changes. The database matches" not in plan.out
    assert "what to do:" in plan.out and "dna.goals" in plan.out
    assert cli("plan", *legacy_db.targets, "--format", "json").json["manual"][0]["code"] == (
        "table-missing"
    )
    assert cli("verify", *legacy_db.targets).code == 3
    apply = cli("apply", "--auto-approve", *legacy_db.targets)
    assert_clean_error(apply, "apply cannot fix", "dna.goals", code=3)


# -- inputs -----------------------------------------------------------------------------------


def test_a_nul_byte_is_a_clear_error_and_nothing_runs(legacy_db, tmp_path):
    extra = migrations_copy(tmp_path)
    (extra / "900_nul.sql").write_bytes(b"CREATE TABLE dna.a (id int);\n\x00DROP SCHEMA dna;\n")
    before = state(legacy_db)
    run = cli("apply", "--auto-approve", *legacy_db.targets, "--migrations", str(extra))
    assert_clean_error(run, "900_nul.sql:2: contains a NUL byte")
    assert state(legacy_db) == before


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("900_upper.SQL", "SELECT 1;"),
        ("900-dash.sql", "SELECT 1;"),
        ("900_Mixed.sql", "SELECT 1;"),
        ("900_latin1.sql", b"SELECT '\xe9';"),
        ("900_marker.sql", "SELECT 1;\n-- nucleus-provision: no-transaction\n"),
    ],
)
def test_near_miss_files_are_reported_not_skipped(legacy_db, tmp_path, name, content):
    extra = migrations_copy(tmp_path)
    path = extra / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = state(legacy_db)
    run = cli("plan", *legacy_db.targets, "--migrations", str(extra))
    assert_clean_error(run, name)
    assert state(legacy_db) == before


def test_a_renumbered_file_is_the_same_migration(legacy_db, tmp_path):
    assert cli("apply", "--auto-approve", *legacy_db.targets).code == 0
    extra = migrations_copy(tmp_path)
    first = sorted(extra.glob("001_*.sql"))[0]
    first.rename(extra / first.name.replace("001_", "1_", 1))
    run = cli("plan", *legacy_db.targets, "--migrations", str(extra), "--format", "json")
    assert run.code == 0, run.err
    assert run.json["changes"] == 0


def test_two_branches_adding_one_version_is_a_clash_never_accepted(legacy_db, tmp_path):
    branch_a = migrations_copy(
        tmp_path / "a", {"900_branch_a.sql": "CREATE TABLE dna.a (id int);\n"}
    )
    branch_b = migrations_copy(
        tmp_path / "b", {"900_branch_b.sql": "CREATE TABLE dna.b (id int);\n"}
    )
    assert (
        cli("apply", "--auto-approve", *legacy_db.targets, "--migrations", str(branch_a)).code == 0
    )
    run = cli("plan", *legacy_db.targets, "--migrations", str(branch_b))
    assert_clean_error(run, "version 900 is recorded for another migration (900_branch_a)")
    assert "changed after it was applied" not in run.err
    accepted = cli(
        "apply",
        "--auto-approve",
        *legacy_db.targets,
        "--migrations",
        str(branch_b),
        "--accept-changed",
        "900",
    )
    assert_clean_error(accepted, "two files claim one version")
    assert legacy_db.query("SELECT count(*) FROM pg_class WHERE relname = 'b'") == [[0]]


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://postgres:pa@ss/word@127.0.0.1:5432/nucleus_v12",
        "postgresql://postgres:se/cret-fragment@127.0.0.1:5432/nucleus_v12",
        "postgresql://postgres:pass#frag@127.0.0.1:5432/nucleus_v12",
    ],
)
def test_an_unencoded_password_never_appears_in_a_message_nor_reaches_a_resolver(dsn):
    run = cli("--connect-timeout", "2", "plan", "--dsn", dsn)
    assert_clean_error(run, "percent-encod")
    for fragment in ("ss/word", "pa@ss", "cret-fragment", "pass#", "#frag"):
        assert fragment not in run.err + run.out


@pytest.mark.parametrize(
    "toml",
    [
        "[environments]\nprod = 1\n",
        '[environments.prod]\nextends = 5\nproject = "p"\n',
        "environments = [1, 2]\n",
        '[environments.prod]\nusers = "postgres"\n',
        '[environments.prod]\nproject = "p"\nregion = "r"\ninstance = "i"\n[environments.prod.users.owner]\nname = 3\n',
    ],
)
def test_malformed_environments_toml_shapes_are_one_line(tmp_path, toml):
    config = tmp_path / "environments.toml"
    config.write_text(toml)
    run = cli("--config", str(config), "plan", "--env", "prod")
    assert_clean_error(run, str(config))
