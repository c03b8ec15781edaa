"""docs/environments.md is generated from the config models and kept in step with them."""

from __future__ import annotations

from pathlib import Path

from provision import config_reference
from provision.config import Environment

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_reference_is_current():
    committed = (ROOT / config_reference.OUTPUT).read_text()
    assert committed == config_reference.render(), (
        f"{config_reference.OUTPUT} is stale: refresh it with `{config_reference.COMMAND}` "
        "and commit it"
    )


def test_every_key_of_every_table_is_described():
    undescribed = [
        f"{model.__name__}.{name}"
        for _, model, _ in config_reference._SECTIONS
        for name in model.model_fields
        if not config_reference.description(model, name)
    ]
    assert undescribed == [], "add a docstring (or Field(description=...)) to each"
    text = config_reference.render()
    for name in Environment.model_fields:
        if name != "name":  # the table's own name, not a key
            assert f"| `{name}` |" in text


def test_the_check_command_fails_on_a_stale_file_and_names_the_refresh(tmp_path, capsys):
    (tmp_path / "docs").mkdir()
    (tmp_path / config_reference.OUTPUT).write_text("# an old reference\n")
    assert config_reference.main(["--check"], root=tmp_path) == 1
    assert config_reference.COMMAND in capsys.readouterr().err
    assert config_reference.main([], root=tmp_path) == 0
    assert config_reference.main(["--check"], root=tmp_path) == 0
