"""The JSON plan is what docs/plans.md documents: real `plan --format json` output (and a
saved plan) validates against the JSON Schema printed there."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest

from helpers import cli

DOC = Path(__file__).resolve().parents[3] / "docs" / "plans.md"


@pytest.fixture(scope="module")
def schema() -> dict:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## The JSON plan format") :]
    (block,) = re.findall(r"```json\n(.*?)```", section, flags=re.S)
    loaded = json.loads(block)
    jsonschema.Draft202012Validator.check_schema(loaded)
    return loaded


def test_plan_json_validates_against_the_documented_schema(legacy_db, schema, tmp_path):
    pending = cli("plan", *legacy_db.targets, "--format", "json", "--out", str(tmp_path / "p"))
    assert pending.code == 2, pending.err
    jsonschema.validate(pending.json, schema)
    assert any(a["known_after_apply"] for a in pending.json["actions"])
    saved = json.loads((tmp_path / "p").read_text())
    jsonschema.validate(saved, schema)
    assert saved["environment"] is None  # a --dsn run names no environment

    assert cli("apply", "--auto-approve", *legacy_db.targets).code == 0
    converged = cli("plan", *legacy_db.targets, "--format", "json")
    assert converged.code == 0
    jsonschema.validate(converged.json, schema)
    assert converged.json["actions"] == []


def test_the_schema_refuses_what_the_format_is_not(schema):
    """A schema that accepts anything would prove nothing."""
    bad = {"format": "nucleus-provision-plan", "format_version": 2}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
