"""The post-provision hook: what it runs, from where, after what, and when it re-runs."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from stack_support import REAL_STACKS, REPO_ROOT

from provision.config import Environment, load_environment
from stacks import hook


@pytest.mark.parametrize("name", REAL_STACKS)
def test_hook_runs_the_cli_for_its_environment_after_instance_database_users_and_secrets(
    name: str, stacks: dict[str, Any], synth_dir: Path
) -> None:
    data = stacks[name]["resource"]["terraform_data"]["post_provision"]
    # Created users' first secret versions; prod's adopted users have none (their secrets
    # start empty: README, "First deploy of prod").
    created = [
        "google_secret_manager_secret_version.admin_secret_version",
        "google_secret_manager_secret_version.owner_secret_version",
    ]
    assert data["depends_on"] == [
        "google_sql_database_instance.instance",
        "google_sql_database.database",
        "google_sql_user.admin_user",
        "google_sql_user.owner_user",
        *(created if name == "staging" else []),
        # The hook's apply creates the app login from this secret.
        "google_secret_manager_secret_version.app_secret_version",
    ]
    stack_dir = synth_dir / "stacks" / name
    assert data["provisioner"] == [
        {
            "local-exec": {
                "command": f"nucleus-provision apply --env {name} --auto-approve",
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
    stacks: dict[str, Any], environments: dict[str, Environment]
) -> None:
    for name, stack in stacks.items():
        expected = hook.desired_state_sha256(environments[name], REPO_ROOT)
        triggers = stack["resource"]["terraform_data"]["post_provision"]["triggers_replace"]
        assert triggers == {
            "desired_state_sha256": expected,
            "instance": "${google_sql_database_instance.instance.id}",
            "live_plan_digest": '${data.external.live_plan.result["digest"]}',
        }, name


def _repo(root: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


def test_desired_state_hash_follows_the_declared_state_and_the_migration_files_only(
    tmp_path: Path,
) -> None:
    prod = load_environment("prod")
    base = {"bootstrap_sql/001_schemas.sql": "CREATE SCHEMA dna;\n"}
    original = hook.desired_state_sha256(prod, _repo(tmp_path / "a", base))
    assert original == hook.desired_state_sha256(prod, _repo(tmp_path / "b", base))

    edited = {"bootstrap_sql/001_schemas.sql": "CREATE SCHEMA dna; -- edited\n"}
    assert hook.desired_state_sha256(prod, _repo(tmp_path / "c", edited)) != original

    renamed = {"bootstrap_sql/002_schemas.sql": base["bootstrap_sql/001_schemas.sql"]}
    assert hook.desired_state_sha256(prod, _repo(tmp_path / "d", renamed)) != original

    added = {**base, "bootstrap_sql/003_more.sql": "CREATE SCHEMA more;\n"}
    assert hook.desired_state_sha256(prod, _repo(tmp_path / "e", added)) != original

    other_owner = prod.model_copy(
        update={"users": prod.users.model_copy(update={"owner": prod.users.admin})}
    )
    assert hook.desired_state_sha256(other_owner, _repo(tmp_path / "f", base)) != original

    # Python source is not the desired state: editing the planner re-runs nothing.
    unrelated = {
        **base,
        "bootstrap_sql/README.md": "notes",
        "src/provision/planner.py": "GRANTS = 1\n",
    }
    assert hook.desired_state_sha256(prod, _repo(tmp_path / "g", unrelated)) == original


def test_staging_and_prod_hooks_share_one_desired_state() -> None:
    assert hook.desired_state_sha256(
        load_environment("prod"), REPO_ROOT
    ) == hook.desired_state_sha256(load_environment("staging"), REPO_ROOT)


def test_the_hook_command_is_one_the_cli_accepts(stacks: dict[str, Any]) -> None:
    local_exec = stacks["prod"]["resource"]["terraform_data"]["post_provision"]["provisioner"][0][
        "local-exec"
    ]
    program, verb, *options = shlex.split(local_exec["command"])
    assert (program, verb, options) == (
        "nucleus-provision",
        "apply",
        ["--env", "prod", "--auto-approve"],
    )
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


@pytest.mark.parametrize("name", REAL_STACKS)
def test_the_live_plan_digest_is_read_by_the_external_data_source_and_triggers_the_hook(
    name: str, stacks: dict[str, Any], synth_dir: Path
) -> None:
    """Terraform sees the database: `cdktf diff` shows the hook re-running when the digest of
    the live pending plan changed (a hand-made drift)."""
    stack = stacks[name]
    assert "external" in stack["provider"]
    # "external" is the registry's short form of hashicorp/external (as "google" is).
    assert stack["terraform"]["required_providers"]["external"]["source"] == "external"
    live = stack["data"]["external"]["live_plan"]
    assert live["program"] == [
        "nucleus-provision",
        "--config",
        "environments.toml",
        "digest",
        "--migrations",
        "bootstrap_sql",
    ]
    assert live["query"] == {"env": name}
    assert live["working_dir"] == os.path.relpath(REPO_ROOT, synth_dir / "stacks" / name)
    hook_data = stack["resource"]["terraform_data"]["post_provision"]
    # Read after what the hook needs exists (deferred to apply on a first deploy).
    assert live["depends_on"] == hook_data["depends_on"]
    assert hook_data["triggers_replace"]["live_plan_digest"] == (
        '${data.external.live_plan.result["digest"]}'
    )


def test_the_digest_program_is_one_the_cli_accepts() -> None:
    program, *args = hook.digest_program("prod")
    result = subprocess.run(
        [sys.executable, "-m", "provision", *args, "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert program == "nucleus-provision" and result.returncode == 0, result.stderr
    assert "external" in result.stdout
