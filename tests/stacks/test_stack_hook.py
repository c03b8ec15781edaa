"""The post-provision hook: what it runs, from where, after what, and when it re-runs."""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from stack_support import REAL_STACKS, REPO_ROOT

from provision.config import load_environment
from stacks import hook


@pytest.mark.parametrize("name", REAL_STACKS)
def test_hook_runs_the_cli_for_its_environment_after_instance_database_users_and_secrets(
    name: str, stacks: dict[str, Any], synth_dir: Path
) -> None:
    data = stacks[name]["resource"]["terraform_data"]["post_provision"]
    assert data["depends_on"] == [
        "google_sql_database_instance.instance",
        "google_sql_database.database",
        "google_sql_user.admin_user",
        "google_sql_user.owner_user",
        "google_secret_manager_secret_version.admin_secret_version",
        "google_secret_manager_secret_version.owner_secret_version",
    ]
    stack_dir = synth_dir / "stacks" / name
    assert data["provisioner"] == [
        {
            "local-exec": {
                "command": f"nucleus-provision apply --env {name}",
                "working_dir": os.path.relpath(REPO_ROOT, stack_dir),
                "environment": {
                    "NUCLEUS_PROVISION_CONFIG": "environments.toml",
                    "NUCLEUS_BOOTSTRAP_SQL": "bootstrap_sql",
                },
            }
        }
    ]


def test_hook_working_dir_is_relative_and_leads_from_the_stack_to_this_repository(
    stacks: dict[str, Any], synth_dir: Path
) -> None:
    for name, stack in stacks.items():
        local_exec = stack["resource"]["terraform_data"]["post_provision"]["provisioner"][0][
            "local-exec"
        ]
        working_dir = local_exec["working_dir"]
        assert not os.path.isabs(working_dir), name
        resolved = (synth_dir / "stacks" / name / working_dir).resolve()
        assert resolved == REPO_ROOT
        assert (resolved / local_exec["environment"]["NUCLEUS_PROVISION_CONFIG"]).is_file()
        # The migrations the hook applies are the ones the trigger hash covers.
        assert (resolved / local_exec["environment"]["NUCLEUS_BOOTSTRAP_SQL"]).is_dir()


def test_in_the_default_layout_the_hook_runs_from_three_levels_up() -> None:
    stack_dir = REPO_ROOT / "cdktf.out" / "stacks" / "prod"
    assert hook.hook_working_dir(REPO_ROOT, stack_dir) == "../../.."


def test_hook_is_retriggered_by_the_content_hash_of_the_desired_state(
    stacks: dict[str, Any],
) -> None:
    expected = hook.desired_state_sha256(REPO_ROOT)
    for name, stack in stacks.items():
        triggers = stack["resource"]["terraform_data"]["post_provision"]["triggers_replace"]
        assert triggers == {
            "desired_state_sha256": expected,
            "instance": "${google_sql_database_instance.instance.id}",
        }, name


def test_desired_state_hash_covers_every_bootstrap_sql_file_the_layout_and_the_planner_in_path_order() -> (
    None
):
    files = hook.desired_state_files(REPO_ROOT)
    relative = [path.relative_to(REPO_ROOT).as_posix() for path in files]
    expected_files = sorted(
        [p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "bootstrap_sql").glob("*.sql")]
        + ["src/provision/layout.py", "src/provision/planner.py"]
    )
    assert relative == expected_files
    digest = hashlib.sha256()
    for name in relative:
        content = hashlib.sha256((REPO_ROOT / name).read_bytes()).hexdigest()
        digest.update(f"{name}\0{content}\n".encode())
    assert hook.desired_state_sha256(REPO_ROOT) == digest.hexdigest()


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


def test_desired_state_hash_changes_with_content_and_names_but_not_with_unrelated_files(
    tmp_path: Path,
) -> None:
    base = {
        "bootstrap_sql/001_schemas.sql": "CREATE SCHEMA dna;\n",
        "src/provision/layout.py": "X = 1\n",
    }
    original = hook.desired_state_sha256(_tree(tmp_path / "a", base))
    assert original == hook.desired_state_sha256(_tree(tmp_path / "b", base))

    edited = {**base, "bootstrap_sql/001_schemas.sql": "CREATE SCHEMA dna; -- edited\n"}
    assert hook.desired_state_sha256(_tree(tmp_path / "c", edited)) != original

    renamed = {"bootstrap_sql/002_schemas.sql": base["bootstrap_sql/001_schemas.sql"], **base}
    del renamed["bootstrap_sql/001_schemas.sql"]
    assert hook.desired_state_sha256(_tree(tmp_path / "d", renamed)) != original

    layout_changed = {**base, "src/provision/layout.py": "X = 2\n"}
    assert hook.desired_state_sha256(_tree(tmp_path / "e", layout_changed)) != original

    planner_added = {**base, "src/provision/planner.py": "GRANTS = 1\n"}
    assert hook.desired_state_sha256(_tree(tmp_path / "g", planner_added)) != original

    unrelated = {**base, "bootstrap_sql/README.md": "notes", "src/provision/cli.py": "pass\n"}
    assert hook.desired_state_sha256(_tree(tmp_path / "f", unrelated)) == original


def test_desired_state_hash_is_defined_when_the_layout_does_not_exist_yet(tmp_path: Path) -> None:
    only_sql = _tree(tmp_path / "a", {"bootstrap_sql/001.sql": "SELECT 1;\n"})
    assert [p.name for p in hook.desired_state_files(only_sql)] == ["001.sql"]
    assert len(hook.desired_state_sha256(only_sql)) == 64
    empty = tmp_path / "empty"
    empty.mkdir()
    assert hook.desired_state_sha256(empty) == hashlib.sha256().hexdigest()


def test_the_hook_command_is_one_the_cli_accepts(stacks: dict[str, Any]) -> None:
    local_exec = stacks["prod"]["resource"]["terraform_data"]["post_provision"]["provisioner"][0][
        "local-exec"
    ]
    program, verb, *options = shlex.split(local_exec["command"])
    assert (program, verb, options) == ("nucleus-provision", "apply", ["--env", "prod"])
    result = subprocess.run(
        [sys.executable, "-m", "provision", verb, "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "--env" in result.stdout


def test_from_its_working_dir_the_hook_reads_the_configuration_the_stack_came_from(
    stacks: dict[str, Any], synth_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local_exec = stacks["staging"]["resource"]["terraform_data"]["post_provision"]["provisioner"][
        0
    ]["local-exec"]
    monkeypatch.chdir(synth_dir / "stacks" / "staging" / local_exec["working_dir"])
    # An operator's own setting is overridden by the hook's environment.
    monkeypatch.setenv("NUCLEUS_PROVISION_CONFIG", "/nonexistent/environments.toml")
    for name, value in local_exec["environment"].items():
        monkeypatch.setenv(name, value)
    assert (
        load_environment("staging").connection_name
        == "nucleus-staging:europe-west1:nucleus-staging-db"
    )
