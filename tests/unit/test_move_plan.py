"""The SQL of a move, composed without a database."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from provision.move import declare, plan, runner
from provision.move.plan import ForeignKey, TargetInfo

MOVES = Path(__file__).resolve().parents[2] / "moves"
INTERESTS = next(m for m in declare.load(MOVES).moves if m.name == "interests")
INFO = TargetInfo(
    types={"entity_id": "uuid", "topic": "text", "weight": "real", "created_at": "timestamp with time zone"},
    unique_keys=(("id",), ("entity_id", "topic")),
    foreign_keys=(ForeignKey(("entity_id",), ("dna", "entity"), ("id",)),),
)  # fmt: skip


def test_expressions_are_cast_to_the_target_types_and_rules_applied():
    sql = plan.mapped(INTERESTS, INFO)
    assert "CAST((s.weight) AS real) AS weight" in sql
    assert sql.count("NOT coalesce((") == len(INTERESTS.skip)


def test_rows_wait_for_their_parent_instead_of_failing_the_batch():
    sql = plan.ready(INTERESTS, INFO)
    assert "EXISTS (SELECT 1 FROM dna.entity p WHERE p.id = m.entity_id)" in sql


def test_a_batch_advances_its_cursor_in_the_same_statement():
    sql = plan.copy_batch(INTERESTS, INFO)
    assert "ORDER BY s.id LIMIT :n" in sql
    assert "ON CONFLICT (entity_id, topic) DO NOTHING" in sql
    assert sql.rstrip().endswith("RETURNING st.cursor, counted.copied, bound.scanned")
    assert "UPDATE nucleus_move.state" in sql


def test_the_comparison_is_against_what_the_move_wrote_not_the_target():
    diff = plan.diff(INTERESTS, INFO)
    assert "src FULL JOIN prov ON src.entity_id = prov.entity_id AND src.topic = prov.topic" in diff
    assert "FROM nucleus_move.written_interests p WHERE p.legacy_key BETWEEN" in diff
    assert "dna.interests t" not in diff  # the target is read only by the repair


def test_a_repair_writes_only_rows_the_move_wrote_that_still_hold_what_it_wrote():
    statements = plan.repair(INTERESTS, INFO)
    write = next(s for s in statements if s.startswith("WITH ins AS"))
    # update and delete both re-check, in their WHERE, the hash of the row as written
    assert write.count("md5(ROW(t.entity_id, t.topic, t.weight, t.created_at)::text) = w.ph") == 2
    assert "ON CONFLICT (entity_id, topic) DO NOTHING" in write
    lock = next(s for s in statements if "FOR UPDATE OF t" in s)
    assert lock.startswith("SELECT 1 FROM dna.interests t JOIN")


def test_a_delete_checks_every_table_that_references_the_target():
    info = TargetInfo(
        types={"id": "uuid", "name": "text"},
        unique_keys=(("id",),),
        foreign_keys=(),
        referenced_by=(ForeignKey(("entity_id",), ("dna", "goals"), ("id",)),),
    )
    entities = next(m for m in declare.load(MOVES).moves if m.name == "entities")
    entities = dataclasses.replace(entities, columns=(("id", "s.external_id"), ("name", "s.name")))
    write = next(s for s in plan.repair(entities, info) if s.startswith("WITH ins AS"))
    assert "AND NOT (EXISTS (SELECT 1 FROM dna.goals c WHERE c.entity_id = t.id))" in write


def test_changed_ranges_reads_only_what_changed():
    entities = next(m for m in declare.load(MOVES).moves if m.name == "entities")
    interests = INTERESTS
    now = {"dna_schema.entities": {0: (10, 1), 1: (10, 2)}}
    assert runner.changed_ranges(entities, now, {}) is None  # never compared: everything
    assert runner.changed_ranges(entities, now, now) == []
    assert runner.changed_ranges(
        entities, now, {"dna_schema.entities": {0: (10, 1), 1: (10, 3)}}
    ) == [1]
    # a range left dirty (a conflict, a row waiting for its parent) is compared again
    assert runner.changed_ranges(
        entities, now, {"dna_schema.entities": {0: (10, 1), 1: (10, None)}}
    ) == [1]
    # a rule reading the source again (duplicates): any change means everything
    both = {"dna_schema.interests": {0: (5, 5)}, "dna_schema.entities": {0: (1, 1)}}
    changed = {"dna_schema.interests": {0: (5, 6)}, "dna_schema.entities": {0: (1, 1)}}
    assert interests.self_reference
    assert runner.changed_ranges(interests, changed, both) is None
    assert runner.changed_ranges(interests, both, both) == []


def test_a_key_s_range_is_a_floor_division_negatives_included():
    assert plan.bucket_of("k") == "(k >> 13)"
    assert [k >> plan.RANGE_BITS for k in (-1, 0, 8191, 8192)] == [-1, 0, 0, 1]
    assert runner._bounds([-1, 1]) == [(-8192, -1), (8192, 16383)]


def test_colons_of_a_fragment_are_never_taken_for_parameters():
    from sqlalchemy import text

    sql = plan.fragment("md5('a:b' || s.id)::uuid")
    assert str(text(sql).compile()) == "md5('a:b' || s.id)::uuid"
    assert text(sql).compile().params == {}


def test_skipped_counts_each_row_under_its_first_rule():
    sql = plan.skipped(INTERESTS)
    assert sql.count("count(*) FILTER") == len(INTERESTS.skip)


def test_writes_beyond_what_a_batch_reported_are_named_per_table():
    before = {"dna.entity": (10, 0, 0), "nucleus_move.written_entities": (10, 0, 0)}
    after = {"dna.entity": (12, 0, 1), "nucleus_move.written_entities": (13, 0, 0)}
    reported = {"dna.entity": (2, 0, 0), "nucleus_move.written_entities": (2, 0, 0)}
    assert runner.unreported_writes(before, after, reported) == [
        "rows of dna.entity: 1 deleted (the move's statements: 0)",
        "rows of nucleus_move.written_entities: 3 inserted (the move's statements: 2)",
    ]
    assert runner.unreported_writes(before, before, {}) == []
    # A table first written in the batch, and a reported write that did not happen.
    assert runner.unreported_writes(
        {}, {"nucleus_move.written_tasks": (0, 1, 0)}, {"dna.entity": (1, 0, 0)}
    ) == [
        "rows of dna.entity: 0 inserted (the move's statements: 1)",
        "rows of nucleus_move.written_tasks: 1 updated (the move's statements: 0)",
    ]
