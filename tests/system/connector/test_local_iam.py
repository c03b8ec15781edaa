"""IAM identities in the emulation, as a user works with them: `local up` on a running
instance brings its IAM database users to iam_members (creating and deleting them as the
Admin API does for the stacks), keeping the data; `local connect --as IDENTITY -c SQL` runs
SQL as one of them through the real Cloud SQL Python Connector with IAM authentication."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from connector_support import ROOT, Emulation, Run, assert_one_clear_line, nucleus

from provision.local.gcp import state as gcp_state
from provision.local.instance import ADMIN_USER, LocalInstance, connect_as

API_SA = "nucleus-api@local-project.iam.gserviceaccount.com"  # local's iam_members
API_ROLE = "nucleus-api@local-project.iam"
ANALYST_GROUP = "group:nucleus-analysts@local-project.example"
ANA = "ana@local-project.example"
MEMBERS_LINE = f'"{ANALYST_GROUP}" = "nucleus_readonly"'


def _write_config(directory: Path, members: str) -> Path:
    """environments.toml with local's iam_members replaced by `members` (TOML lines)."""
    text = (ROOT / "environments.toml").read_text()
    declared = f'"serviceAccount:{API_SA}" = "nucleus_readwrite"\n{MEMBERS_LINE}\n'
    assert declared in text  # the file this test is about still declares them
    path = directory / "environments.toml"
    path.write_text(text.replace(declared, members))
    (directory / "privileges.toml").write_text((ROOT / "privileges.toml").read_text())
    return path


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Emulation, Path]]:
    directory = tmp_path_factory.mktemp("local-iam")
    config = _write_config(
        directory, f'"serviceAccount:{API_SA}" = "nucleus_readwrite"\n{MEMBERS_LINE}\n'
    )
    env = _env(directory / "state", config)
    up = nucleus("local", "up", env=env)
    assert up.code == 0, up.err
    instance = LocalInstance.load(directory / "state")
    assert instance is not None
    try:
        yield Emulation(instance), config
    finally:
        assert nucleus("local", "down", env=env).code == 0


def _env(state_dir: Path, config: Path) -> dict[str, str]:
    return {
        **os.environ,
        "NUCLEUS_LOCAL_STATE_DIR": str(state_dir),
        "NUCLEUS_PROVISION_CONFIG": str(config),
    }


def _connect(emulation: Emulation, config: Path, identity: str, sql: str) -> Run:
    return nucleus(
        "local", "connect", "--as", identity, "-c", sql, env=_env(emulation.state_dir, config)
    )


def _roles(instance: LocalInstance) -> set[str]:
    conn = connect_as(instance, ADMIN_USER)
    try:
        return {row[0] for row in conn.run("SELECT rolname FROM pg_roles")}
    finally:
        conn.close()


def test_connect_as_a_service_account_goes_through_the_connector_with_iam(running):
    emulation, config = running
    before = len(emulation.records())
    run = _connect(emulation, config, f"serviceAccount:{API_SA}", "SELECT current_user, 1 + 1")
    assert run.code == 0, run.err
    assert run.out.splitlines() == ["current_user\t?column?", f"{API_ROLE}\t2"]
    records = emulation.records(before)
    # Its own token and an IAM certificate, then the proxy's IAM login: the Cloud SQL way.
    assert any(
        r["event"] == "generateEphemeralCert" and r["certificate"]["iam_user"] == API_SA
        for r in records
    )
    assert any(r["event"] == "iam_login" and r["db_user"] == API_ROLE for r in records)


def test_local_up_on_a_running_instance_reconciles_iam_members_and_keeps_the_data(running):
    emulation, config = running
    instance = emulation.instance
    pid = instance.pid
    conn = connect_as(instance, ADMIN_USER)
    try:
        conn.run("CREATE TABLE public.kept (note text)")
        conn.run("INSERT INTO public.kept VALUES ('before the second local up')")
    finally:
        conn.close()
    assert API_ROLE in _roles(instance) and ANA not in _roles(instance)

    # The service account leaves iam_members; a person joins.
    _write_config(config.parent, f'"user:{ANA}" = "nucleus_readonly"\n{MEMBERS_LINE}\n')
    up = nucleus("local", "up", env=_env(emulation.state_dir, config))
    assert up.code == 0, up.err
    assert f"created IAM database user {ANA} (iam_members)" in up.err
    assert f"deleted IAM database user {API_ROLE} (no longer in iam_members)" in up.err
    assert json.loads(up.out)["pid"] == pid  # the same server: nothing restarted
    roles = _roles(instance)
    assert ANA in roles and API_ROLE not in roles
    assert "nucleus-analysts@local-project.example" in roles  # still declared: kept
    assert API_SA not in gcp_state.iam_users(emulation.state_dir)  # its token is revoked
    conn = connect_as(instance, ADMIN_USER)
    try:
        assert conn.run("SELECT note FROM public.kept") == [["before the second local up"]]
    finally:
        conn.close()

    # The new identity logs in through the Connector; the deleted one cannot.
    before = len(emulation.records())
    run = _connect(emulation, config, f"user:{ANA}", "SELECT current_user")
    assert run.code == 0, run.err
    assert run.out.splitlines() == ["current_user", ANA]
    # The Admin API saw the person's own token.
    assert f"user:{ANA}" in {r.get("caller") for r in emulation.records(before)}
    gone = _connect(emulation, config, f"serviceAccount:{API_SA}", "SELECT 1")
    assert_one_clear_line(gone, f"the emulation has no IAM database user for {API_SA}", "local up")

    # A rerun with nothing changed changes nothing.
    again = nucleus("local", "up", env=_env(emulation.state_dir, config))
    assert again.code == 0, again.err
    assert "IAM database user" not in again.err


def test_an_identity_may_do_only_what_its_grants_allow(running):
    emulation, config = running
    run = _connect(emulation, config, ANALYST_GROUP, "SELECT 1")
    assert_one_clear_line(run, "is not one identity")
    run = _connect(emulation, config, f"user:{ANA}", "CREATE TABLE public.not_yours (i int)")
    assert_one_clear_line(run, f"as {ANA}: permission denied for schema public", "privileges")
