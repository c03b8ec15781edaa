"""Move files are validated without a database: every error names the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from provision.errors import ConfigError, MoveFileError
from provision.move import declare

MOVES = Path(__file__).resolve().parents[2] / "moves"

GOOD = b"""
source = "dna_schema.entities"
key = "id"
target = "dna.entity"
target_key = ["id"]
[columns]
id = "s.external_id"
name = "s.name"
[[skip]]
when = "s.entity_type = 'robot'"
reason = "no robots"
"""


def parse(data: bytes) -> declare.Move:
    return declare.parse_move("10_entities.toml", data, "entities")


def test_the_repository_moves_cover_every_legacy_table_of_the_scenario():
    declaration = declare.load(MOVES)
    assert [m.name for m in declaration.moves] == [
        "entities", "agents", "interests", "tasks", "results",
    ]  # fmt: skip
    legacy = [
        ("dna_schema", t) for t in ("entities", "interests", "capabilities", "dna_profiles")
    ] + [("agents_schema", "agents"), ("tasks_schema", "tasks"), ("results_schema", "results")]
    assert declaration.uncovered(legacy) == []
    assert declaration.uncovered([*legacy, ("dna_schema", "new_one")]) == ["dna_schema.new_one"]
    assert all(n.reason for n in declaration.not_moved)


def test_a_good_file_reads_only_legacy_tables():
    move = parse(GOOD)
    assert move.reads == (("dna_schema", "entities"),)
    assert move.from_clause == "dna_schema.entities s"
    assert move.skip == (declare.Rule("s.entity_type = 'robot'", "no robots"),)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (b'key = "id"\n', b"", "10_entities.toml: key is missing"),
        (b'key = "id"', b'key = "id"\nkeys = 1', "10_entities.toml: unknown key 'keys'"),
        (b'"dna_schema.entities"', b'"public.migrations"', "source public.migrations is not in"),
        (b'target = "dna.entity"', b'target = "dna_schema.entities"', "target dna_schema.entities is not in"),
        (b'target = "dna.entity"', b'target = "dna.nothing"', "not a table of the new layout"),
        (b'target_key = ["id"]', b'target_key = ["kind"]', "target_key column kind has no expression"),
        (b'"s.name"', b'"s.name FROM"', "columns.name is not valid SQL"),
        (b'"s.name"', b'"s.name); DROP TABLE dna.entity; SELECT (1"', "columns.name must be a single"),
        (b'"s.name"', b'"(SELECT name FROM dna.entity LIMIT 1)"', "reads dna.entity, not a table of a legacy schema"),
        (b'"s.name"', b'"(WITH d AS (DELETE FROM dna_schema.entities RETURNING name) SELECT name FROM d)"', "columns.name writes"),
        (b'reason = "no robots"', b"", "[[skip]] number 1 needs exactly 'when' and 'reason'"),
        (b'key = "id"', b'key = "id"\nfrom = "dna_schema.entities e"', "from must name the source"),
        (b"[columns]", b"[columns", "not valid TOML"),
    ],
)  # fmt: skip
def test_a_bad_file_is_refused_naming_the_file(old, new, message):
    assert old in GOOD
    with pytest.raises(MoveFileError) as raised:
        parse(GOOD.replace(old, new))
    assert raised.value.message.startswith("10_entities.toml: ")
    assert message in raised.value.message


def test_two_moves_of_one_target_and_a_misnamed_file_are_refused(tmp_path):
    (tmp_path / "10_entities.toml").write_bytes(GOOD)
    (tmp_path / "11_again.toml").write_bytes(GOOD)
    with pytest.raises(MoveFileError, match="11_again.toml: target dna.entity is already"):
        declare.load(tmp_path)
    (tmp_path / "11_again.toml").unlink()
    (tmp_path / "entities-2.toml").write_bytes(GOOD)
    with pytest.raises(MoveFileError, match="entities-2.toml: a move file is named"):
        declare.load(tmp_path)


def test_a_table_both_moved_and_listed_as_not_moved_is_refused(tmp_path):
    (tmp_path / "10_entities.toml").write_bytes(GOOD)
    (tmp_path / "not-moved.toml").write_text(
        '[[table]]\nname = "dna_schema.entities"\nreason = "r"\n'
    )
    with pytest.raises(MoveFileError, match="not-moved.toml: dna_schema.entities is listed"):
        declare.load(tmp_path)


def test_only_names_an_existing_move():
    declaration = declare.load(MOVES)
    assert [m.name for m in declaration.only("tasks")] == ["tasks"]
    with pytest.raises(ConfigError, match="no move named 'task'"):
        declaration.only("task")


def test_the_functions_a_move_file_calls_and_its_triggers_are_declared():
    move = parse(
        GOOD.replace(b'name = "s.name"', b'name = "lower(pg_catalog.btrim(s.name))"')
        + b'[[trigger]]\nname = "audit"\nreason = "writes only dna.entity_audit"\n'
    )
    assert (None, "lower") in move.functions and ("pg_catalog", "btrim") in move.functions
    assert [(t.name, t.reason) for t in move.triggers] == [
        ("audit", "writes only dna.entity_audit")
    ]
    assert not move.self_reference


def test_a_trigger_entry_needs_a_name_and_a_reason():
    with pytest.raises(MoveFileError, match=r"\[\[trigger\]\] number 1 needs exactly"):
        parse(GOOD + b'[[trigger]]\nname = "audit"\n')
