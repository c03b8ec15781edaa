"""`nucleus-provision local up | status | down` as a user runs them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pg8000.native
from sqlalchemy.engine import make_url

from helpers import assert_clean_error, cli


def alive(pid: int) -> bool:
    """Running, and not a zombie (this sandbox's init does not reap orphans)."""
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        return False
    state = next(line for line in status.read_text().splitlines() if line.startswith("State:"))
    return "Z" not in state.split()[1]


def test_up_status_down_round_trip_leaves_no_process_behind(tmp_path):
    state_dir = tmp_path / "state"
    up = cli("local", "up", "--scenario", "legacy-nucleus-v12", "--state-dir", str(state_dir))
    assert up.code == 0, up.err
    info = up.json
    pid = info["pid"]
    daemons = json.loads((state_dir / "emulator" / "emulator.json").read_text())["pids"]
    assert set(daemons) == {"admin-api", "proxy", "secret-manager"} and all(
        alive(p) for p in daemons.values()
    )
    try:
        for key, user in (("admin_dsn", "postgres"), ("owner_dsn", "nucleus")):
            url = make_url(info[key])
            assert (url.username, url.host, url.database) == (user, "127.0.0.1", "nucleus_v12")
            conn = pg8000.native.Connection(
                url.username,
                host=url.host,
                port=url.port,
                database=url.database,
                password=url.password,
            )
            assert conn.run("SELECT current_user") == [[user]]
            conn.close()
        status = cli("local", "status", "--state-dir", str(state_dir))
        assert status.code == 0 and status.json["pid"] == pid
        again = cli(
            "local", "up", "--scenario", "legacy-nucleus-v12", "--state-dir", str(state_dir)
        )
        assert again.code == 0 and again.json["pid"] == pid  # idempotent: the running instance
        other = cli("local", "up", "--scenario", "empty", "--state-dir", str(state_dir))
        assert_clean_error(other, "already running", "local down")
    finally:
        down = cli("local", "down", "--state-dir", str(state_dir))
    assert down.code == 0
    assert not alive(pid)
    assert not any(alive(p) for p in daemons.values())
    assert_clean_error(cli("local", "status", "--state-dir", str(state_dir)), "no local instance")


def test_the_state_dir_comes_from_the_environment(tmp_path):
    env = {**os.environ, "NUCLEUS_LOCAL_STATE_DIR": str(tmp_path / "from-env")}
    up = cli("local", "up", "--scenario", "empty", env=env)
    try:
        assert up.code == 0, up.err
        assert up.json["state_dir"] == str(tmp_path / "from-env")
        assert (
            tmp_path / "from-env" / "instance.json"
        ).stat().st_mode & 0o077 == 0  # passwords: owner-only
    finally:
        assert cli("local", "down", env=env).code == 0


def test_an_unknown_scenario_is_refused_with_the_valid_names(tmp_path):
    run = cli("local", "up", "--scenario", "prod-copy", "--state-dir", str(tmp_path))
    assert run.code == 1 and "legacy-nucleus-v12-partial" in run.err
    assert not (tmp_path / "instance.json").exists()


def test_the_cli_offers_exactly_the_known_scenarios():
    from provision.cli import SCENARIO_NAMES
    from provision.local.scenarios import SCENARIOS

    assert SCENARIO_NAMES == list(SCENARIOS)


def test_demo_never_touches_an_instance_the_user_is_running(tmp_path):
    env = {**os.environ, "NUCLEUS_LOCAL_STATE_DIR": str(tmp_path / "mine")}
    mine = cli("local", "up", "--scenario", "legacy-nucleus-v12", env=env)
    try:
        demo = cli("demo", env=env, timeout=300)
        assert demo.code == 0, demo.err
        assert (
            "schema-name-mismatch" in demo.out and "findings: none, the layout matches" in demo.out
        )
        assert "No changes." in demo.out
        status = cli("local", "status", env=env)
        assert status.code == 0 and status.json["pid"] == mine.json["pid"]
    finally:
        cli("local", "down", env=env)


def test_up_says_what_a_dsn_run_needs_and_env_exports_it_without_the_app_password(tmp_path):
    state_dir = tmp_path / "state"
    up = cli("local", "up", "--scenario", "empty", "--state-dir", str(state_dir))
    try:
        assert up.code == 0, up.err
        needs = up.json["dsn_run"]
        assert needs["env"] == "local"
        assert needs["state_dir_variable"] == f"NUCLEUS_LOCAL_STATE_DIR={state_dir}"
        assert "NUCLEUS_APP_PASSWORD" in needs["app_password"]
        exports = cli("local", "env", "--state-dir", str(state_dir))
        assert exports.code == 0, exports.err
        assert exports.out.splitlines() == [
            f"export NUCLEUS_LOCAL_STATE_DIR={state_dir}",
            f"export ADMIN_DSN={up.json['admin_dsn']}",
            f"export OWNER_DSN={up.json['owner_dsn']}",
        ]
        staging = cli("local", "env", "--state-dir", str(state_dir), "--prefix", "STAGING_")
        assert [line.split("=")[0] for line in staging.out.splitlines()] == [
            "export STAGING_ADMIN_DSN",
            "export STAGING_OWNER_DSN",
        ]
        # The app login's password is in the emulation's Secret Manager, never printed.
        app_secret = cli(
            "apply",
            "--auto-approve",
            "--env",
            "local",
            "--dsn",
            up.json["admin_dsn"],
            "--owner-dsn",
            up.json["owner_dsn"],
            env={
                **os.environ,
                "NUCLEUS_LOCAL_STATE_DIR": str(state_dir),
                "NUCLEUS_APP_PASSWORD": "",
            },
        )
        assert app_secret.code == 0, app_secret.err
        assert_clean_error(
            cli("local", "env", "--state-dir", str(state_dir), "--prefix", "1x"), "--prefix"
        )
    finally:
        assert cli("local", "down", "--state-dir", str(state_dir)).code == 0
    # The hint starts the instance it looked for, not one in the default directory.
    assert_clean_error(
        cli("local", "env", "--state-dir", str(state_dir)),
        "no local instance",
        f"`nucleus-provision local up --state-dir {state_dir}`",
    )
