"""The SQL of a move, composed without a database."""

from __future__ import annotations

from pathlib import Path

from provision.move import declare, plan
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


def test_the_comparison_joins_on_the_target_key_and_repairs_by_key():
    diff = plan.diff(INTERESTS, INFO)
    assert "src FULL JOIN tgt ON src.entity_id = tgt.entity_id AND src.topic = tgt.topic" in diff
    assert "WHERE src.h IS DISTINCT FROM tgt.h" in diff
    repair = plan.repair_batch(INTERESTS, INFO)
    assert "jsonb_populate_record(NULL::dna.interests" in repair
    assert "s.id IN (SELECT legacy_key FROM taken" in repair


def test_colons_of_a_fragment_are_never_taken_for_parameters():
    from sqlalchemy import text

    sql = plan.fragment("md5('a:b' || s.id)::uuid")
    assert str(text(sql).compile()) == "md5('a:b' || s.id)::uuid"
    assert text(sql).compile().params == {}


def test_skipped_counts_each_row_under_its_first_rule():
    sql = plan.skipped(INTERESTS)
    assert sql.count("count(*) FILTER") == len(INTERESTS.skip)
