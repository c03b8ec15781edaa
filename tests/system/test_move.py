"""Phase 4: `move run | status | verify` against the emulation, through the real CLI.

The move runs as `postgres` (the owner of the legacy tables, so it reads them) and writes the
new tables through membership in `nucleus_readwrite`. Until `apply` creates that group
(privileges as code), `declared_privileges` sets it up as the emulated superuser.
"""

from __future__ import annotations

import shutil
import signal
import threading
from pathlib import Path

import pytest
from helpers import assert_clean_error, cli, start

from tests.system.engine.test_apply import legacy_fingerprint

MOVES = Path(__file__).resolve().parents[2] / "moves"
KINDS = ("person", "organization", "agent")


def declared_privileges(db) -> None:
    """What `apply` will declare (issue 10): the group the move writes through, granted to
    postgres. One helper, so that it is replaced by `apply` in one place."""
    db.query(
        "DO $$ BEGIN CREATE ROLE nucleus_readwrite NOLOGIN; "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )
    schemas = "dna, tasks, agents, results"
    db.query(f"GRANT USAGE ON SCHEMA {schemas} TO nucleus_readwrite")
    db.query(
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schemas} "
        "TO nucleus_readwrite"
    )
    db.query("GRANT nucleus_readwrite TO postgres")


@pytest.fixture
def moved_db(legacy_db):
    """The legacy scenario with the new layout applied and the declared privileges."""
    applied = cli("apply", *legacy_db.targets)
    assert applied.code == 0, applied.err
    declared_privileges(legacy_db)
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
    assert db.query(
        "SELECT count(*) FROM tasks_schema.tasks s JOIN tasks.task t "
        "ON t.id = md5('tasks_schema.tasks:' || s.id)::uuid "
        "JOIN dna_schema.entities e ON e.id = s.entity_id "
        "WHERE t.entity_id = e.external_id AND t.title = s.title AND t.status = s.status"
    )[0][0] == 5000
    assert db.query(
        "SELECT count(*) FROM results_schema.results s JOIN results.result r "
        "ON r.id = md5('results_schema.results:' || s.id)::uuid "
        "WHERE r.task_id = md5('tasks_schema.tasks:' || s.task_id)::uuid "
        "AND r.agent_id IS NOT DISTINCT FROM md5('agents_schema.agents:' || s.agent_id)::uuid "
        "AND r.score = s.score::real AND r.output = s.output"
    )[0][0] == 8000
    assert db.query("SELECT count(*) FROM agents.agent")[0][0] == 24
    # The duplicates are reported with their reason, never silently dropped.
    status = move(db, "status")
    assert status.code == 0, status.err
    assert "interests: 4,000 row(s) not moved by rule: duplicate (entity, topic)" in status.out

    # Legacy rows, columns, owners and ACLs: byte-identical.
    assert legacy_fingerprint(db) == before
    # A rerun of a finished move is a catch-up pass that finds nothing.
    again = move(db, "run", "--format", "json")
    assert again.code == 0, again.err
    diffs = [line for line in again.out.splitlines() if '"event": "diff"' in line]
    assert len(diffs) == 5 and all('"rows": 0' in line for line in diffs)
    assert legacy_fingerprint(db) == before
