"""The engine over `--env local`: the production path (Cloud SQL Python Connector, Admin API,
mTLS proxy) against the local emulation, as the demo and `cdktf deploy`'s hook use it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers import assert_clean_error, cli
from provision.local.gcp import state
from provision.local.server import Server


@pytest.fixture
def local_env(tmp_path):
    state_dir = tmp_path / "emulation"
    server = Server(state_dir)
    server.start("legacy-nucleus-v12-partial")
    yield {**os.environ, "NUCLEUS_LOCAL_STATE_DIR": str(state_dir)}, state_dir
    server.stop()


def records(state_dir: Path) -> list[dict]:
    return state.records(state_dir)


def test_apply_and_verify_over_env_local_go_through_the_connector(local_env):
    env, state_dir = local_env
    before = len(records(state_dir))
    assert cli("plan", "--env", "local", env=env).code == 2
    applied = cli("apply", "--auto-approve", "--env", "local", env=env)
    assert applied.code == 0, applied.err
    assert "two-step-via-cloudsqlsuperuser" in applied.out
    assert cli("verify", "--env", "local", env=env).code == 0
    assert cli("plan", "--env", "local", env=env).code == 0
    assert (
        len(records(state_dir)) > before
    )  # the emulator saw the Connector's calls and certificates
    for secret in json.loads((state_dir / "instance.json").read_text())["passwords"].values():
        assert secret not in applied.out + applied.err


def test_after_local_down_verify_over_env_local_fails_fast_with_one_line(local_env):
    env, state_dir = local_env
    Server(state_dir).stop()
    run = cli("verify", "--env", "local", env=env, timeout=30)
    assert_clean_error(run, "local")
