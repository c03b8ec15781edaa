"""`diff`'s renderers: text grouped by object, markdown like the seed's analysis, JSON list."""

from __future__ import annotations

import json

from provision.diff import Result
from provision.diff.compare import Difference
from provision.diff.render import markdown, text, to_json

DIFFS = (
    Difference(
        "column-type", "column dna.goals.title", "text", "character varying(200)", "table dna.goals"
    ),
    Difference("privilege", "table dna.goals to app", [], ["SELECT"], "table dna.goals"),
    Difference("index", "index dna.goals_status_idx", None, "CREATE INDEX ...", "table dna.goals"),
    Difference(
        "view-definition",
        "view dna.open_goals",
        " SELECT id\n   FROM dna.goals\n  WHERE status = 'open';",
        " SELECT id\n   FROM dna.goals\n  WHERE status = 'achieved';",
    ),
)


def result(diffs=DIFFS) -> Result:
    return Result(
        "postgresql://postgres:***@a/db", "postgresql://postgres:***@b/db", ("dna",), (), diffs
    )


def test_json_is_one_entry_per_difference_with_kind_object_left_right():
    entries = json.loads(to_json(result()))
    assert len(entries) == 4
    assert entries[0] == {
        "kind": "column-type",
        "object": "column dna.goals.title",
        "left": "text",
        "right": "character varying(200)",
    }
    assert entries[2]["left"] is None
    assert json.loads(to_json(result(()))) == []


def test_text_groups_differences_under_their_object():
    out = text(result())
    block = out.split("table dna.goals\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert block == [
        "  column-type column dna.goals.title: left text | right character varying(200)",
        "  privilege table dna.goals to app: left (none) | right SELECT",
        "  index index dna.goals_status_idx: only on the right (CREATE INDEX ...)",
    ]
    # A definition is shown as a unified diff of the two sides, not twice in full.
    assert "-  WHERE status = 'open';" in out and "+  WHERE status = 'achieved';" in out
    assert out.rstrip().endswith("4 differences (columns 1, indexes 1, views 1, privileges 1).")


def test_markdown_reads_like_the_seed_analysis():
    out = markdown(result())
    assert out.startswith("# Schema Comparison\n")
    assert "## Summary" in out and "## Differences Found" in out
    assert "| column dna.goals.title | column-type | text | character varying(200) |" in out
    assert "### 1. Columns ❌" in out
    assert "```diff" in out
    assert "**Status:** 4 differences" in out


def test_identical_says_so_in_every_format():
    assert text(result(())).endswith("Identical: no differences.")
    assert "no differences" in markdown(result(()))
    assert to_json(result(())) == "[]"
