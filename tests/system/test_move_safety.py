"""The move owns only the rows it moved, and never changes legacy state: against the
emulation, through the real CLI, with services writing through their own logins.

- rows services write into the new tables (as `nucleus_app`, the switched services' login)
  are never deleted or overwritten; a key clash or a row changed since the move wrote it is
  a conflict, reported with its key;
- a moved row whose legacy row no longer maps is deleted only while nothing references it:
  never a cascade into a service's rows;
- hostile move files and migrations (setval in a rule, volatile functions, an "immutable"
  function with a side effect, a trigger on a target that deletes legacy rows) are refused
  early or rolled back by the proof, and the legacy rows and sequences, fingerprinted by the
  superuser, stay the same;
- every verb waits like `apply` and names the blocker when it gives up;
- the README's cut-over guide, step by step, with services writing between every step.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pg8000.native
import pytest

from helpers import APP_PASSWORD, assert_clean_error, cli
from tests.system.engine.test_apply import legacy_fingerprint

MOVES = Path(__file__).resolve().parents[2] / "moves"


@pytest.fixture
def moved_db(legacy_db):
    applied = cli("apply", "--auto-approve", *legacy_db.targets)
    assert applied.code == 0, applied.err
    return legacy_db


def move(db, verb: str, *args: str, moves: Path = MOVES, options: tuple[str, ...] = ()):
    return cli(
        *options, "move", verb, *args, "--dsn", db.admin_dsn, "--moves", str(moves), timeout=300
    )


def events(run) -> list[dict]:
    return [json.loads(line) for line in run.out.splitlines() if line.startswith("{")]


def app(db) -> pg8000.native.Connection:
    """A switched service: the least-privilege login nucleus_app (member of nucleus_readwrite)."""
    return pg8000.native.Connection(
        "nucleus_app",
        host=db.instance.host,
        port=db.instance.port,
        database=db.name,
        password=APP_PASSWORD,
        timeout=30,
    )


def as_app(db, sql: str, **params):
    conn = app(db)
    try:
        return conn.run(sql, **params)
    finally:
        conn.close()


def legacy_write(db, sql: str, **params):
    """A legacy service (it logs in as nucleus)."""
    return db.query(sql, user="nucleus", **params)


def sequences(db) -> list:
    """Every legacy sequence's state, read by the superuser."""
    names = db.query(
        "SELECT schemaname || '.' || sequencename FROM pg_sequences "
        "WHERE schemaname LIKE '%\\_schema' ORDER BY 1"
    )
    return [[n, *db.query(f"SELECT last_value, is_called FROM {n}")[0]] for (n,) in names]


def fingerprint(db) -> tuple:
    return legacy_fingerprint(db), sequences(db)


def external_id(db, legacy_id: int) -> str:
    return db.query("SELECT external_id::text FROM dna_schema.entities WHERE id = :i", i=legacy_id)[
        0
    ][0]


def test_rows_services_write_are_never_deleted_or_overwritten(moved_db):
    db = moved_db
    assert move(db, "run").code == 0
    # A switched service writes a new entity and its goal; someone adds an agent by hand.
    (entity,) = as_app(
        db, "INSERT INTO dna.entity (name, kind) VALUES ('switched', 'person') RETURNING id::text"
    )[0]
    as_app(db, "INSERT INTO dna.goals (entity_id, title) VALUES (CAST(:e AS uuid), 'g')", e=entity)
    as_app(db, "INSERT INTO agents.agent (name, model) VALUES ('by hand', 'm')")
    # A legacy row and a service row with the same key: a clash, whoever came first.
    clash = db.query("SELECT gen_random_uuid()::text")[0][0]
    as_app(
        db,
        "INSERT INTO dna.entity (id, name, kind) VALUES (CAST(:i AS uuid), 'service', 'agent')",
        i=clash,
    )
    legacy_write(
        db,
        "INSERT INTO dna_schema.entities (external_id, name, entity_type) "
        "VALUES (CAST(:i AS uuid), 'legacy', 'person')",
        i=clash,
    )

    for _ in range(2):  # the second pass is the no-op kind: nothing changed
        run = move(db, "run", "--format", "json")
        assert run.code == 0, run.err
    # Each pass checks the clash again (and reports it), and writes nothing.
    last = events(move(db, "run", "--format", "json"))
    assert [e["counts"] for e in last if e["event"] == "synced"] == [{"clash": 1}]
    assert as_app(db, "SELECT name FROM dna.entity WHERE id = CAST(:e AS uuid)", e=entity) == [
        ["switched"]
    ]
    assert as_app(db, "SELECT count(*) FROM dna.goals") == [[1]]
    assert as_app(db, "SELECT count(*) FROM agents.agent WHERE name = 'by hand'") == [[1]]
    assert as_app(db, "SELECT name FROM dna.entity WHERE id = CAST(:i AS uuid)", i=clash) == [
        ["service"]
    ]
    status = move(db, "status", "--only", "entities", "--format", "json")
    assert status.json[0]["conflicts"] == {"clash": 1}
    assert db.query("SELECT target_key, kind FROM nucleus_move.conflicts") == [[clash, "clash"]]


def test_a_legacy_row_that_no_longer_maps_never_cascades_into_rows_the_move_did_not_write(
    moved_db,
):
    db = moved_db
    assert move(db, "run").code == 0
    # Entity 7 has interests and tasks the move wrote; a service adds a goal for it.
    target = external_id(db, 7)
    as_app(db, "INSERT INTO dna.goals (entity_id, title) VALUES (CAST(:e AS uuid), 'g')", e=target)
    moved_interests = db.query(
        "SELECT count(*) FROM dna.interests WHERE entity_id = CAST(:e AS uuid)", e=target
    )[0][0]
    assert moved_interests > 0
    # Entity 8 has only rows the move wrote: it goes, with them, once they are gone.
    other = external_id(db, 8)
    before = fingerprint(db)
    legacy_write(db, "UPDATE dna_schema.entities SET entity_type = 'robot' WHERE id IN (7, 8)")
    before = fingerprint(db)

    run = move(db, "run", "--format", "json")
    assert run.code == 0, run.err
    assert fingerprint(db) == before  # the move changed no legacy row, no sequence
    # The service's goal and its entity stay; the move's own dependants of entity 7 went.
    assert db.query(
        "SELECT count(*) FROM dna.goals WHERE entity_id = CAST(:e AS uuid)", e=target
    ) == [[1]]
    assert db.query("SELECT count(*) FROM dna.entity WHERE id = CAST(:e AS uuid)", e=target) == [
        [1]
    ]
    assert db.query(
        "SELECT count(*) FROM dna.interests WHERE entity_id = CAST(:e AS uuid)", e=target
    ) == [[0]]
    assert db.query("SELECT count(*) FROM dna.entity WHERE id = CAST(:e AS uuid)", e=other) == [[0]]
    conflicts = [e for e in events(run) if e["event"] == "conflict" and e["move"] == "entities"]
    assert conflicts and f"referenced: {target}" in conflicts[-1]["keys"]

    # The legacy row maps again: the move's rows come back, the conflict is gone.
    legacy_write(db, "UPDATE dna_schema.entities SET entity_type = 'person' WHERE id IN (7, 8)")
    assert move(db, "run").code == 0
    assert db.query(
        "SELECT count(*) FROM dna.interests WHERE entity_id = CAST(:e AS uuid)", e=target
    ) == [[moved_interests]]
    assert db.query("SELECT name, target_key, kind FROM nucleus_move.conflicts") == []
    assert move(db, "verify").code == 0


def _edited(tmp_path, filename: str, old: str, new: str) -> Path:
    directory = tmp_path / "moves"
    if not directory.exists():
        shutil.copytree(MOVES, directory)
    path = directory / filename
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    return directory


@pytest.mark.parametrize(
    ("new", "message"),
    [
        (
            "when = \"setval('dna_schema.entities_id_seq', 1) > 0\"",
            "10_entities.toml: calls setval(regclass,bigint), which is volatile",
        ),
        ('when = "random() < 0.5"', "10_entities.toml: calls random(), which is volatile"),
        ('when = "now() < s.created_at"', "10_entities.toml: calls now(), which is stable"),
    ],
)
def test_a_move_file_calling_a_function_with_side_effects_is_refused_before_anything_runs(
    moved_db, tmp_path, new, message
):
    db = moved_db
    moves = _edited(
        tmp_path,
        "10_entities.toml",
        "when = \"lower(s.entity_type) NOT IN ('person', 'organization', 'agent')\"",
        new,
    )
    before = fingerprint(db)
    assert_clean_error(move(db, "run", moves=moves), message, "only immutable functions")
    assert fingerprint(db) == before
    assert db.query("SELECT count(*) FROM dna.entity") == [[0]]


def test_an_immutable_function_with_a_side_effect_is_caught_by_the_proof(moved_db, tmp_path):
    db = moved_db
    # A function that claims to be immutable and resets a legacy sequence (non-volatile
    # functions may not run DML, but setval is a function call).
    db.query(
        "CREATE FUNCTION public.looks_harmless(x int) RETURNS boolean IMMUTABLE LANGUAGE plpgsql "
        "AS $$ BEGIN PERFORM setval('dna_schema.entities_id_seq', 1); RETURN false; END $$"
    )
    moves = _edited(
        tmp_path,
        "10_entities.toml",
        "when = \"lower(s.entity_type) NOT IN ('person', 'organization', 'agent')\"",
        'when = "public.looks_harmless(s.id) OR lower(s.entity_type) NOT IN '
        "('person', 'organization', 'agent')\"",
    )
    rows_before = legacy_fingerprint(db)
    (value,) = db.query("SELECT last_value FROM dna_schema.entities_id_seq")[0]
    run = move(db, "run", "--only", "entities", moves=moves)
    assert_clean_error(
        run,
        "rolled back",
        f"sequence dna_schema.entities_id_seq moved from {value} to 1",
        f"SELECT setval('dna_schema.entities_id_seq', {value})",
    )
    assert legacy_fingerprint(db) == rows_before
    assert db.query("SELECT count(*) FROM dna.entity") == [[0]]  # the batch was rolled back
    # The hint works when followed (a sequence change is not undone by a rollback).
    db.query(f"SELECT setval('dna_schema.entities_id_seq', {value})", user="postgres")
    assert db.query("SELECT last_value FROM dna_schema.entities_id_seq") == [[value]]


def test_a_trigger_on_a_target_that_deletes_legacy_rows_never_loses_legacy_rows(moved_db, tmp_path):
    db = moved_db
    # A later migration (as the owner) adds a trigger on dna.entity that deletes legacy rows;
    # it would run with the move's privileges: postgres owns the legacy tables.
    db.query(
        "CREATE FUNCTION dna.forget_legacy() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "DELETE FROM dna_schema.interests WHERE id = (SELECT min(id) FROM dna_schema.interests); "
        "RETURN NEW; END $$",
        user="nucleus",
    )
    db.query(
        "CREATE TRIGGER forget_legacy AFTER INSERT ON dna.entity FOR EACH ROW "
        "EXECUTE FUNCTION dna.forget_legacy()",
        user="nucleus",
    )
    before = fingerprint(db)
    refused = move(db, "run")
    assert_clean_error(
        refused, "10_entities.toml: dna.entity has trigger forget_legacy", "[[trigger]]"
    )
    assert fingerprint(db) == before and db.query("SELECT count(*) FROM dna.entity") == [[0]]

    # Listed (someone believed it harmless): it fires, and the proof rolls the batch back.
    moves = _edited(
        tmp_path,
        "10_entities.toml",
        "[[skip]]",
        '[[trigger]]\nname = "forget_legacy"\nreason = "audits"\n\n[[skip]]',
    )
    run = move(db, "run", "--only", "entities", moves=moves)
    assert_clean_error(run, "rolled back", "rows of dna_schema.interests:", "deleted")
    assert fingerprint(db) == before
    assert db.query("SELECT count(*) FROM dna.entity") == [[0]]


@pytest.mark.parametrize("verb", ["status", "verify", "run", "cutover"])
def test_every_verb_waits_boundedly_and_names_the_blocker(moved_db, verb):
    db = moved_db
    assert move(db, "run").code == 0
    blocker = db.connect()
    try:
        blocker.run("BEGIN")
        blocker.run("LOCK TABLE dna_schema.entities IN ACCESS EXCLUSIVE MODE")
        (pid,) = blocker.run("SELECT pg_backend_pid()")[0]
        args = ("entities",) if verb == "cutover" else ()
        waited = move(db, verb, *args, options=("--lock-timeout", "0.05", "--lock-budget", "1"))
        assert_clean_error(waited, "gave up after", f"pid {pid}", f"pg_terminate_backend({pid})")
    finally:
        blocker.run("ROLLBACK")
        blocker.close()


def test_the_cut_over_guide_end_to_end_with_services_writing_between_every_step(moved_db):
    """README "Cut-over guide", the commands as written, a service writing between steps."""
    db = moved_db
    n = iter(range(1_000_000))

    def legacy_service():
        i = next(n)
        legacy_write(
            db,
            "INSERT INTO dna_schema.entities (external_id, name, entity_type) "
            "VALUES (gen_random_uuid(), :n, 'person')",
            n=f"legacy {i}",
        )
        legacy_write(db, "UPDATE dna_schema.entities SET name = name || '+' WHERE id = :i", i=1 + i)

    def switched_service():
        i = next(n)
        (entity,) = as_app(
            db, "INSERT INTO dna.entity (name) VALUES (:n) RETURNING id::text", n=f"app {i}"
        )[0]
        as_app(
            db, "INSERT INTO dna.goals (entity_id, title) VALUES (CAST(:e AS uuid), 't')", e=entity
        )
        return entity

    # 1. move run, repeated while the services write to the legacy tables; status shows lag.
    assert move(db, "run").code == 0
    legacy_service()
    status = move(db, "status", "--only", "entities", "--format", "json")
    assert status.code == 0 and status.json[0]["behind_ranges"] == 1
    assert move(db, "run").code == 0
    legacy_service()
    # 2. services switch to the new tables, one at a time.
    app_rows = [switched_service()]
    legacy_service()  # another service still writes the legacy table
    assert move(db, "run").code == 0
    app_rows.append(switched_service())
    # 3./4. the legacy writers are gone: one last run, then verify.
    assert move(db, "run").code == 0
    app_rows.append(switched_service())
    verify = move(db, "verify", "--only", "entities")
    assert verify.code == 0, verify.out + verify.err
    assert "3 row(s) of dna.entity written by services (not compared)" in verify.out
    # 5. move cutover NAME: services own the target from now on.
    cut = move(db, "cutover", "entities")
    assert cut.code == 0, cut.err
    assert "cut over at" in cut.out
    app_rows.append(switched_service())
    # A forgotten legacy writer: its rows are reported with their keys, never copied.
    legacy_service()
    (late,) = db.query("SELECT max(id) FROM dna_schema.entities")[0]
    run = move(db, "run", "--only", "entities", "--format", "json")
    assert run.code == 0, run.err
    after = [e for e in events(run) if e["event"] == "cutover"]
    assert after and after[0]["rows"] == 2  # the insert and the update
    assert f"inserted {late}" in after[0]["keys"]
    late_external = external_id(db, late)
    assert db.query(
        "SELECT count(*) FROM dna.entity WHERE id = CAST(:e AS uuid)", e=late_external
    ) == [[0]]
    # Every row the services wrote is there, with its goal.
    for entity in app_rows:
        assert db.query(
            "SELECT count(*) FROM dna.entity e JOIN dna.goals g ON g.entity_id = e.id "
            "WHERE e.id = CAST(:e AS uuid)",
            e=entity,
        ) == [[1]]
    status = move(db, "status", "--only", "entities")
    assert "cut over" in status.out
    assert move(db, "verify", "--only", "entities").code == 0


def test_kill_9_in_the_middle_of_a_catch_up_leaves_nothing_half_owned(moved_db):
    """A repair batch writes the target and the provenance in one transaction: after a kill,
    the next run neither reports the move's own rows as conflicts nor writes twice."""
    import signal
    import time

    from helpers import start

    db = moved_db
    assert move(db, "run").code == 0
    legacy_write(db, "UPDATE dna_schema.entities SET name = name || ' (renamed)' WHERE id <= 1500")
    legacy_write(db, "DELETE FROM dna_schema.interests WHERE id % 7 = 0")
    proc = start(
        "move", "run", "--dsn", db.admin_dsn, "--moves", str(MOVES),
        "--batch-size", "50", "--rate", "400",
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not db.query(
        "SELECT repaired > 0 OR EXISTS (SELECT 1 FROM nucleus_move.written_entities w "
        "JOIN dna.entity e USING (id) WHERE e.name LIKE '% (renamed)') "
        "FROM nucleus_move.state WHERE name = 'entities'"
    )[0][0]:
        assert time.monotonic() < deadline, "no repair batch committed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert db.query("SELECT count(*) FROM dna.entity WHERE name LIKE '% (renamed)'")[0][0] < 1500

    rerun = move(db, "run", "--format", "json")
    assert rerun.code == 0, rerun.err
    assert db.query("SELECT count(*) FROM nucleus_move.conflicts") == [[0]]
    assert move(db, "verify").code == 0
    assert db.query("SELECT count(*) FROM dna.entity WHERE name LIKE '% (renamed)'") == [[1500]]
    # What the move wrote and what the target holds agree, row for row.
    assert db.query(
        "SELECT count(*) FROM nucleus_move.written_entities w JOIN dna.entity t USING (id) "
        "WHERE w.h <> md5(ROW(t.id, t.name, t.kind, t.email, t.created_at, t.updated_at)::text)"
    ) == [[0]]


def test_the_readme_s_resolution_of_a_conflict_lets_the_legacy_row_win(moved_db):
    db = moved_db
    assert move(db, "run").code == 0
    victim = external_id(db, 42)
    as_app(db, "UPDATE dna.entity SET name = 'service' WHERE id = CAST(:v AS uuid)", v=victim)
    legacy_write(db, "UPDATE dna_schema.entities SET name = 'legacy' WHERE id = 42")
    assert move(db, "run", "--only", "entities").code == 0
    assert db.query("SELECT kind FROM nucleus_move.conflicts") == [["changed-in-target"]]
    # README: delete the target row and the move's record of it; the next run inserts it.
    db.query("DELETE FROM dna.entity WHERE id = CAST(:v AS uuid)", v=victim)
    db.query("DELETE FROM nucleus_move.written_entities WHERE id = CAST(:v AS uuid)", v=victim)
    assert move(db, "run", "--only", "entities").code == 0
    assert db.query("SELECT name FROM dna.entity WHERE id = CAST(:v AS uuid)", v=victim) == [
        ["legacy"]
    ]
    assert db.query("SELECT count(*) FROM nucleus_move.conflicts") == [[0]]


@pytest.mark.parametrize(
    ("side_effect", "message"),
    [
        # Deletes a service's row from the move's own target (whose counters the proof of
        # "everything but the target" leaves out).
        (
            "DELETE FROM dna.entity WHERE name = 'a service''s entity'",
            "rows of dna.entity: 1 deleted (the move's statements: 0)",
        ),
        # Forges the move's record of a service's row, so that a later pass would delete it.
        (
            "INSERT INTO nucleus_move.written_entities (id, legacy_key, h) "
            "SELECT t.id, 1, md5(ROW(t.id, t.name, t.kind, t.email, t.created_at, t.updated_at)::text) "
            "FROM dna.entity t WHERE t.name = 'a service''s entity' ON CONFLICT DO NOTHING",
            "rows of nucleus_move.written_entities: 1 inserted (the move's statements: 0)",
        ),
        # Lets a second `move run` in beside this one, and holds a lock of its own.
        (
            "PERFORM pg_advisory_unlock_all(); PERFORM pg_advisory_lock(42)",
            "advisory locks of the move's session changed",
        ),
    ],
    ids=["deletes-from-the-target", "forges-provenance", "releases-the-move-lock"],
)
def test_an_immutable_wrapper_s_side_effect_on_the_target_bookkeeping_or_locks_is_caught(
    moved_db, tmp_path, side_effect, message
):
    db = moved_db
    assert move(db, "run").code == 0
    as_app(db, "INSERT INTO dna.entity (name, kind) VALUES ('a service''s entity', 'person')")
    # A volatile function behind an IMMUTABLE SQL wrapper: the early check sees an immutable
    # function; only the proof can see what it does.
    db.query(
        "CREATE FUNCTION public.side_effect() RETURNS int VOLATILE LANGUAGE plpgsql "
        f"AS $$ BEGIN {side_effect}; RETURN 0; END $$"
    )
    db.query(
        "CREATE FUNCTION public.tidy(text) RETURNS text IMMUTABLE LANGUAGE sql "
        "AS $$ SELECT $1 || repeat('', public.side_effect()) $$"
    )
    db.query("GRANT EXECUTE ON FUNCTION public.side_effect(), public.tidy(text) TO PUBLIC")
    moves = _edited(tmp_path, "10_entities.toml", 'name = "s.name"', 'name = "public.tidy(s.name)"')
    before = fingerprint(db)
    run = move(db, "run", "--only", "entities", moves=moves)
    assert_clean_error(run, "rolled back", message)
    assert fingerprint(db) == before
    # The original file then finds the service's row still the service's: never deleted.
    assert move(db, "run", "--only", "entities").code == 0
    assert db.query("SELECT count(*) FROM dna.entity WHERE name = 'a service''s entity'") == [[1]]
