"""Phase 4: `move run | status | verify` against the emulation, through the real CLI.

The move runs as `postgres` (the owner of the legacy tables, so it reads them) and writes the
new tables through membership in `nucleus_readwrite`, which `apply` grants it (privileges as
code: `users.admin.member_of`).
"""

from __future__ import annotations

import json
import shutil
import signal
import threading
from pathlib import Path

import pytest

from helpers import assert_clean_error, cli, start
from tests.system.engine.test_apply import legacy_fingerprint

MOVES = Path(__file__).resolve().parents[2] / "moves"
KINDS = ("person", "organization", "agent")


@pytest.fixture
def moved_db(legacy_db):
    """The legacy scenario with the new layout and the declared privileges applied: postgres
    writes the new tables through its membership in nucleus_readwrite (users.admin.member_of)."""
    applied = cli("apply", "--auto-approve", *legacy_db.targets)
    assert applied.code == 0, applied.err
    assert legacy_db.query("SELECT has_table_privilege('postgres', 'dna.entity', 'INSERT')") == [
        [True]
    ]
    return legacy_db


def move(db, verb: str, *args: str, moves: Path = MOVES):
    return cli("move", verb, "--dsn", db.admin_dsn, "--moves", str(moves), *args, timeout=300)


def expected_entities(db):
    """The declared mapping of 10_entities.toml, computed independently in SQL."""
    return db.query(
        "SELECT external_id::text, name, lower(entity_type), email, "
        "(created_at AT TIME ZONE 'UTC')::text, "
        "(coalesce(updated_at, created_at) AT TIME ZONE 'UTC')::text "
        "FROM dna_schema.entities WHERE lower(entity_type) IN ('person', 'organization', 'agent') "
        "ORDER BY 1"
    )


def actual_entities(db):
    return db.query(
        "SELECT id::text, name, kind, email, created_at::text, updated_at::text "
        "FROM dna.entity ORDER BY 1"
    )


def test_run_then_verify_moves_every_row_with_the_declared_mapping(moved_db):
    db = moved_db
    before = legacy_fingerprint(db)

    run = move(db, "run", "--batch-size", "700")
    assert run.code == 0, run.err
    verify = move(db, "verify")
    assert verify.code == 0, verify.out + verify.err
    assert verify.out.count(": equal") == 5

    assert actual_entities(db) == expected_entities(db)
    # interests: entity_id through external_id, one row per (entity, topic): the lowest id.
    assert db.query(
        "SELECT i.entity_id::text, i.topic, i.weight, i.created_at::text FROM dna.interests i "
        "ORDER BY 1, 2"
    ) == db.query(
        "SELECT DISTINCT ON (e.external_id, s.topic) e.external_id::text, s.topic, "
        "s.weight::real, (s.created_at AT TIME ZONE 'UTC')::text "
        "FROM dna_schema.interests s JOIN dna_schema.entities e ON e.id = s.entity_id "
        "ORDER BY e.external_id, s.topic, s.id"
    )
    # tasks and results: ids derived from the legacy ids; foreign keys follow.
    assert db.query("SELECT count(*) FROM tasks.task")[0][0] == 5000
    assert (
        db.query(
            "SELECT count(*) FROM tasks_schema.tasks s JOIN tasks.task t "
            "ON t.id = md5('tasks_schema.tasks:' || s.id)::uuid "
            "JOIN dna_schema.entities e ON e.id = s.entity_id "
            "WHERE t.entity_id = e.external_id AND t.title = s.title AND t.status = s.status"
        )[0][0]
        == 5000
    )
    assert (
        db.query(
            "SELECT count(*) FROM results_schema.results s JOIN results.result r "
            "ON r.id = md5('results_schema.results:' || s.id)::uuid "
            "WHERE r.task_id = md5('tasks_schema.tasks:' || s.task_id)::uuid "
            "AND r.agent_id IS NOT DISTINCT FROM md5('agents_schema.agents:' || s.agent_id)::uuid "
            "AND r.score = s.score::real AND r.output = s.output"
        )[0][0]
        == 8000
    )
    assert db.query("SELECT count(*) FROM agents.agent")[0][0] == 24
    # The duplicates are reported with their reason, never silently dropped.
    status = move(db, "status")
    assert status.code == 0, status.err
    assert "interests: 4,000 row(s) not moved by rule: duplicate (entity, topic)" in status.out

    # Legacy rows, columns, owners and ACLs: byte-identical.
    assert legacy_fingerprint(db) == before
    # The move's bookkeeping schema is the tool's: the layout still verifies.
    assert cli("verify", "--dsn", db.admin_dsn).code == 0
    # A rerun of a finished move is a catch-up pass that finds nothing: no legacy range
    # changed since the last pass, so nothing is compared again.
    again = move(db, "run", "--format", "json")
    assert again.code == 0, again.err
    events = [json.loads(line) for line in again.out.splitlines()]
    assert [e["move"] for e in events if e["event"] == "unchanged"] == [
        "entities", "agents", "interests", "tasks", "results",
    ]  # fmt: skip
    assert not [e for e in events if e["event"] in ("diff", "repair", "batch")]
    assert legacy_fingerprint(db) == before


def state(db, where: str = "true") -> list:
    """Rows of the move's bookkeeping (as the superuser), or [] before it exists."""
    if db.query("SELECT to_regclass('nucleus_move.state') IS NULL")[0][0]:
        return []
    return db.query(f"SELECT name, phase, copied FROM nucleus_move.state WHERE {where}")


def wait_until(condition, what: str, bound: float = 120.0) -> None:
    """Poll until `condition()` holds; `bound` only keeps a broken run from hanging the suite."""
    import time

    deadline = time.monotonic() + bound
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


def test_verify_says_unfinished_before_the_move_and_names_missing_privileges(legacy_db):
    db = legacy_db
    applied = cli("apply", "--auto-approve", *db.targets)
    assert applied.code == 0, applied.err
    # Without the declared membership (revoked by hand): a clear error before anything is
    # written; apply repairs it (an undeclared change to a declared membership).
    db.query("REVOKE nucleus_readwrite FROM postgres", user="postgres")
    refused = move(db, "run")
    assert_clean_error(refused, "lacks USAGE on schema", "nucleus_readwrite")
    assert state(db) == []
    assert cli("apply", "--auto-approve", *db.targets).code == 0
    unfinished = move(db, "verify")
    assert unfinished.code == 2, unfinished.out + unfinished.err
    assert "entities: not finished (not started)" in unfinished.out
    status = move(db, "status", "--format", "json")
    assert status.code == 0, status.err
    assert {s["name"]: (s["phase"], s["pending"]) for s in status.json}["entities"] == (
        "not started",
        2000,
    )


def test_verify_locates_differences_and_run_never_overwrites_them(moved_db):
    db = moved_db
    assert move(db, "run").code == 0
    # Someone writes into the new tables behind the move's back.
    victim = db.query("SELECT external_id::text FROM dna_schema.entities WHERE id = 1234")[0][0]
    db.query("UPDATE dna.entity SET name = 'changed' WHERE id = :v::uuid", v=victim)
    db.query(
        "DELETE FROM dna.interests WHERE id = (SELECT min(id) FROM dna.interests "
        "WHERE topic = 'chess')"
    )
    db.query("INSERT INTO dna.entity (name) VALUES ('stray')")

    verify = move(db, "verify", "--range-size", "100", "--format", "json")
    assert verify.code == 3, verify.out + verify.err  # a person decides: never overwritten
    verdicts = {v["name"]: v for v in verify.json}
    entities = verdicts["entities"]
    assert entities["outcome"] == "different"
    located = {tuple(r["legacy_keys"] or ()): r for r in entities["differing_ranges"]}
    assert list(located) == [(1200, 1299)] and located[(1200, 1299)]["sample"] == ["1234"]
    # The row nobody moved is a service's: counted, never a difference.
    assert entities["service_rows"] == 1
    assert verdicts["interests"]["outcome"] == "different"
    assert verdicts["tasks"]["outcome"] == "equal"
    text = move(db, "verify", "--range-size", "100")
    assert "legacy keys 1200..1299: 100 vs 100 rows" in text.out and "(e.g. 1234)" in text.out
    assert "1 row(s) of dna.entity written by services (not compared)" in text.out

    # The move never overwrites what it did not write as it is now: the changed row stays
    # changed, the deleted one deleted, the stray row stays.
    assert move(db, "run").code == 0
    assert db.query("SELECT name FROM dna.entity WHERE id = :v::uuid", v=victim) == [["changed"]]
    assert db.query("SELECT count(*) FROM dna.entity WHERE name = 'stray'") == [[1]]
    # When the legacy row changes, the move would update it: a conflict, reported with its key.
    kept = db.query("SELECT name, email FROM dna.entity WHERE id = :v::uuid", v=victim)
    db.query("UPDATE dna_schema.entities SET email = 'new@example.org' WHERE id = 1234")
    again = move(db, "run", "--only", "entities", "--format", "json")
    assert again.code == 0, again.err
    conflict = [json.loads(x) for x in again.out.splitlines() if '"event": "conflict"' in x]
    assert conflict and conflict[0]["keys"] == [f"changed-in-target: {victim}"]
    assert db.query("SELECT name, email FROM dna.entity WHERE id = :v::uuid", v=victim) == kept
    status = move(db, "status", "--only", "entities", "--format", "json")
    assert status.json[0]["conflicts"] == {"changed-in-target": 1}


def _write_legacy(db, stop: threading.Event, done: list[int]) -> None:
    """A legacy service (logged in as nucleus): inserts, updates and deletes, until stopped."""
    conn = db.connect("nucleus")
    try:
        i = 0
        while True:
            i += 1
            conn.run("BEGIN")
            (entity,) = conn.run(
                "INSERT INTO dna_schema.entities (external_id, name, entity_type, email) "
                "VALUES (gen_random_uuid(), :n, :k, :e) RETURNING id",
                n=f"writer {i}",
                k=KINDS[i % 3],
                e=f"w{i}@example.org",
            )[0]
            conn.run(
                "INSERT INTO dna_schema.interests (entity_id, topic, weight) "
                "VALUES (:e, 'music', 0.25), (:e, 'music', 0.75), (:e, 'chess', 0.5)",
                e=entity,
            )
            # An entity without tasks, deleted (with its interests) a few rounds later.
            conn.run(
                "INSERT INTO dna_schema.entities (external_id, name) VALUES (gen_random_uuid(), 'x')"
            )
            (task,) = conn.run(
                "INSERT INTO tasks_schema.tasks (entity_id, title) VALUES (:e, :t) RETURNING id",
                e=entity,
                t=f"task of writer {i}",
            )[0]
            conn.run(
                "INSERT INTO results_schema.results (task_id, agent_id, output, score) "
                "VALUES (:t, 1 + :i % 24, '{}', 1.5)",
                t=task,
                i=i,
            )
            conn.run(
                "UPDATE dna_schema.entities SET name = name || '+', updated_at = now() "
                "WHERE id = 1 + (:i * 37) % 2000",
                i=i,
            )
            conn.run(
                "UPDATE dna_schema.interests SET weight = 0.125 WHERE id = 1 + (:i * 53) % 6000",
                i=i,
            )
            # Deleting the lowest id of a duplicate group: the next one becomes the moved row.
            conn.run("DELETE FROM dna_schema.interests WHERE id = 1 + (:i * 11) % 6000", i=i)
            conn.run(
                "UPDATE tasks_schema.tasks SET status = 'cancelled' WHERE id = 1 + (:i * 7) % 5000",
                i=i,
            )
            if i % 3 == 0:  # an entity inserted earlier, with its interests (cascade)
                conn.run(
                    "DELETE FROM dna_schema.entities WHERE id = (SELECT min(id) FROM "
                    "dna_schema.entities e WHERE name = 'x' AND NOT EXISTS (SELECT 1 FROM "
                    "tasks_schema.tasks t WHERE t.entity_id = e.id))"
                )
            conn.run("COMMIT")
            done.append(i)
            if stop.is_set():
                return
    finally:
        conn.close()


def test_a_concurrent_writer_is_caught_up_by_the_next_run(moved_db):
    db = moved_db
    # The rate keeps the run going for seconds (about 21,000 rows at 4,000 a second), long
    # enough for the writer to commit during it; batches of 500 keys, not 100, so that the
    # run is not mostly the proof of 200 tiny batches.
    proc = start(
        "move", "run", "--dsn", db.admin_dsn, "--moves", str(MOVES),
        "--batch-size", "500", "--rate", "4000", "--format", "json",
    )  # fmt: skip
    wait_until(lambda: bool(state(db, "copied > 0")), "the copy began")
    stop, done = threading.Event(), []
    writer = threading.Thread(target=_write_legacy, args=(db, stop, done))
    writer.start()
    out, err = proc.communicate(timeout=300)
    during = len(done)
    stop.set()
    writer.join(60)
    assert proc.returncode == 0, err
    assert during >= 1  # the writer committed while `run` was running

    catch_up = move(db, "run")
    assert catch_up.code == 0, catch_up.err
    verify = move(db, "verify")
    assert verify.code == 0, verify.out + verify.err
    assert actual_entities(db) == expected_entities(db)
    assert db.query("SELECT count(*) FROM dna.entity WHERE name LIKE 'writer %'")[0][0] == len(done)


def test_kill_9_in_the_middle_of_run_then_run_completes_without_duplicates(moved_db):
    db = moved_db
    proc = start(
        "move", "run", "--dsn", db.admin_dsn, "--moves", str(MOVES),
        "--batch-size", "200", "--rate", "3000",
    )  # fmt: skip
    wait_until(lambda: bool(state(db, "name = 'interests' AND copied > 0")), "interests began")
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert state(db, "phase = 'copying'")  # killed in the middle of a copy

    rerun = move(db, "run")
    assert rerun.code == 0, rerun.err
    assert move(db, "verify").code == 0
    counts = db.query(
        "SELECT (SELECT count(*) FROM dna.entity), (SELECT count(*) FROM dna.interests), "
        "(SELECT count(*) FROM agents.agent), (SELECT count(*) FROM tasks.task), "
        "(SELECT count(*) FROM results.result)"
    )[0]
    assert counts == [2000, 2000, 24, 5000, 8000]
    copied = dict(db.query("SELECT name, copied FROM nucleus_move.state"))
    assert copied["interests"] == 2000 and copied["results"] == 8000


def _broken(tmp_path, filename: str, old: str, new: str) -> Path:
    directory = tmp_path / "moves"
    shutil.copytree(MOVES, directory)
    path = directory / filename
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    return directory


@pytest.mark.parametrize(
    ("filename", "old", "new", "message"),
    [
        (
            "10_entities.toml",
            'email = "s.email"',
            'nickname = "s.email"',
            "10_entities.toml: dna.entity has no column nickname",
        ),
        (
            "50_results.toml",
            'score = "s.score"',
            'score = "s.no_such_column"',
            "50_results.toml: the mapping does not run: column s.no_such_column does not exist",
        ),
        (
            "30_interests.toml",
            'topic = "s.topic"',
            'topic = "s.topic); DELETE FROM dna_schema.interests; SELECT (1"',
            "30_interests.toml: columns.topic must be a single expression",
        ),
        (
            "40_tasks.toml",
            'title = "s.title"',
            'title = "(WITH x AS (DELETE FROM dna_schema.entities RETURNING name) '
            'SELECT name FROM x LIMIT 1)"',
            "40_tasks.toml: columns.title writes",
        ),
        (
            "10_entities.toml",
            'target_key = ["id"]',
            'target_key = ["name"]',
            "10_entities.toml: target_key (name) is not a unique key of dna.entity",
        ),
        (
            "not-moved.toml",
            'name = "dna_schema.capabilities"',
            'name = "dna_schema.dna_profiles"\n#',
            "legacy table dna_schema.capabilities is neither moved nor listed",
        ),
        ("20_agents.toml", "[columns]", "[columns", "20_agents.toml: not valid TOML"),
    ],
)
def test_a_bad_move_file_fails_naming_it_and_nothing_is_copied(
    moved_db, tmp_path, filename, old, new, message
):
    db = moved_db
    moves = _broken(tmp_path, filename, old, new)
    before = legacy_fingerprint(db)
    run = move(db, "run", moves=moves)
    assert_clean_error(run, message)
    assert state(db) == []
    assert db.query("SELECT count(*) FROM dna.entity")[0][0] == 0
    assert legacy_fingerprint(db) == before


_TRAP = (
    "CREATE FUNCTION dna.trap() RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN "
    "IF current_user <> 'nucleus' THEN "
    "EXECUTE 'DELETE FROM ' || 'dna' || '_schema.capabilities'; END IF; RETURN true; END $$; "
    "CREATE FUNCTION dna.trap_trigger() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "PERFORM dna.trap(); RETURN NULL; END $$; "
)


@pytest.mark.parametrize(
    ("code", "named"),
    [
        (
            "CREATE TRIGGER trap AFTER INSERT ON dna.entity "
            "FOR EACH STATEMENT EXECUTE FUNCTION dna.trap_trigger()",
            "dna.entity has trigger trap",
        ),
        (
            "CREATE DOMAIN dna.checked AS text CHECK (dna.trap()); "
            "ALTER TABLE dna.entity ADD COLUMN note dna.checked",
            "dna.entity: constraint checked_check calls dna.trap()",
        ),
    ],
    ids=["trigger", "domain check"],
)
def test_code_left_on_a_target_never_runs_with_the_legacy_owners_rights(moved_db, code, named):
    # The move writes as postgres, owner of the legacy tables: code a migration left on a
    # target (its text naming no legacy schema) would delete legacy rows with those rights.
    db = moved_db
    db.query(_TRAP + code, user="nucleus")
    before = legacy_fingerprint(db)
    run = move(db, "run")
    assert_clean_error(run, named, "owner of the legacy tables")
    assert legacy_fingerprint(db) == before
    assert db.query("SELECT count(*) FROM dna.entity") == [[0]]
