"""The lock file's text: a faithful round trip, and staleness found without a database."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from provision.config import load_environment
from provision.desired import desired_state
from provision.diff.snapshot import Rule
from provision.errors import ConfigError
from provision.lockfile import LOCK_NAME, REFRESH, load, parse, render, stale
from provision.migrations import load_migrations

ROOT = Path(__file__).resolve().parents[2]
LOCK_PATH = ROOT / "bootstrap_sql" / LOCK_NAME


def test_the_checked_in_lock_matches_the_migration_files_and_the_declaration():
    lock = load(LOCK_PATH)
    assert lock is not None, f"bootstrap_sql/{LOCK_NAME} is missing: run `{REFRESH}`"
    desired = desired_state(load_environment("prod"), load_migrations(ROOT / "bootstrap_sql"))
    problems = stale(lock, desired.migrations, desired.declaration)
    assert not problems, f"{'; '.join(problems)}: run `{REFRESH}` and commit {LOCK_NAME}"


def test_render_and_parse_are_inverse():
    text = LOCK_PATH.read_text(encoding="utf-8")
    lock = parse(text)
    assert render(lock) == text
    assert ("dna", "entity") in lock.tables and lock.created_by["dna.entity_integrations"] == "002"


def test_a_rule_survives_the_round_trip():
    lock = parse(LOCK_PATH.read_text(encoding="utf-8"))
    rule = Rule(
        "dna",
        "goals",
        "keep",
        "CREATE RULE keep AS ON DELETE TO dna.goals DO INSTEAD NOTHING",
        "enabled",
    )
    with_rule = replace(
        lock, snapshot=replace(lock.snapshot, rules={("dna", "goals", "keep"): rule})
    )
    text = render(with_rule)
    assert "rule dna.goals.keep " in text
    assert parse(text).snapshot.rules == {("dna", "goals", "keep"): rule}


def test_an_edited_added_or_deleted_file_makes_the_lock_stale():
    lock = load(LOCK_PATH)
    assert lock is not None
    migrations = load_migrations(ROOT / "bootstrap_sql")
    edited = [replace(migrations[0], checksum="0" * 64), *migrations[1:]]
    assert stale(lock, edited, "") == ["001_init_schemas.sql changed since the lock was made"]
    assert stale(lock, migrations[:1], "") == [
        "002_add_entity_integrations.sql is in the lock but not in the directory"
    ]
    extra = replace(migrations[1], path=migrations[1].path.with_name("003_more.sql"))
    assert stale(lock, [*migrations, extra], "") == ["003_more.sql is not in the lock"]
    assert stale(lock, migrations, "another") == [
        "the privileges declaration changed since the lock was made"
    ]


def test_a_hand_edited_lock_is_refused_with_the_command_that_makes_it():
    with pytest.raises(ConfigError) as error:
        parse(
            'format {"version": 1}\nscope {"schemas": [], "version_table": "public.m"}\nrow oops\n'
        )
    assert REFRESH in (error.value.hint or "")


@pytest.mark.parametrize(
    ("kind", "left", "right", "code"),
    [
        ("column", None, "text", "column-missing"),
        ("column", "text", None, "column-unexpected"),
        ("column-type", "text", "varchar(200)", "column-type-changed"),
        ("column-position", "2", "3", "column-order-changed"),
        ("index", None, "CREATE INDEX ...", "index-missing"),
        ("index-validity", "INVALID", "valid", "index-invalid"),
        ("constraint", None, "check: ...", "constraint-missing"),
        ("constraint-definition", "a", "b", "constraint-changed"),
        ("materialized view", None, "owner x", "view-missing"),
        ("type-definition", "enum 'a'", "enum 'a', 'b'", "type-changed"),
    ],
)
def test_each_kind_of_difference_has_its_own_finding_code(kind, left, right, code):
    from provision.concerns.structure import code as finding_code
    from provision.diff.compare import Difference

    assert finding_code(Difference(kind, "x", left, right)) == code


def test_storage_parameters_replica_identity_and_column_storage_survive_the_round_trip():
    from provision.diff.compare import compare

    lock = parse(LOCK_PATH.read_text(encoding="utf-8"))
    s = lock.snapshot
    rel = s.relations[("dna", "entity")]._replace(
        options=("fillfactor=70",), replica_identity="full"
    )
    col = s.columns[("dna", "entity", "email")]._replace(storage="external", statistics=500)
    changed = replace(
        s,
        relations={**s.relations, ("dna", "entity"): rel},
        columns={**s.columns, ("dna", "entity", "email"): col},
    )
    text = render(replace(lock, snapshot=changed))
    assert parse(text).snapshot == changed
    kinds = {d.kind: d.object for d in compare(changed, s)}
    assert kinds == {
        "table-options": "table dna.entity",
        "replica-identity": "table dna.entity",
        "column-storage": "column dna.entity.email",
        "column-statistics": "column dna.entity.email",
    }


def test_the_managed_schemas_are_the_lock_s_and_a_new_file_s_create_schema(tmp_path):
    """No schema is named in Python: the lock's, plus what a file it does not know creates."""
    import shutil

    from provision.desired import managed_schemas

    shutil.copytree(ROOT / "bootstrap_sql", tmp_path / "m")
    (tmp_path / "m" / "003_billing.sql").write_text("CREATE SCHEMA billing;\n")
    migrations = load_migrations(tmp_path / "m")
    lock = load(LOCK_PATH)
    found = managed_schemas(migrations, lock, ("public", "dna_schema"))
    assert found == {
        **{s: "001" for s in ("agents", "assembly", "dna", "execution", "memory")},
        **{s: "001" for s in ("results", "tasks")},
        "billing": "003",
    }
    # Without a lock, the files say it; the legacy schemas and public are never managed.
    assert set(managed_schemas(migrations, None, ("public",))) == set(found)
    prod = desired_state(load_environment("prod"), migrations, expected=lock)
    assert prod.layout.protected_schemas == (
        "dna_schema",
        "tasks_schema",
        "agents_schema",
        "results_schema",
    )
    assert {s.name: s.legacy for s in prod.layout.schemas}["dna"] == "dna_schema"
    assert next(t for t in prod.layout.tables if t.qualified == "dna.entity").legacy == (
        "dna_schema",
        "entities",
    )
