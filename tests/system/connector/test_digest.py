"""`digest`, Terraform's `external` data source program, against the emulation through the
real Connector: the protocol (JSON object in, JSON object of strings out, errors on stderr
with a non-zero exit), a hand-made drift changes the digest, apply restores it, an instance
the Admin API does not know is "absent", and any other failure is an error, never "absent"."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from connector_support import SCENARIO, Emulation, config_variant, nucleus

from provision.local import server
from provision.local.instance import superuser_connection


def _digest(
    emulation: Emulation, query: dict[str, str], *extra: str
) -> subprocess.CompletedProcess:
    """As Terraform runs it: the query as a JSON object on stdin."""
    return subprocess.run(
        [sys.executable, "-m", "provision", *extra, "digest"],
        input=json.dumps(query),
        capture_output=True,
        text=True,
        timeout=120,
        env=emulation.env(),
    )


def _result(run: subprocess.CompletedProcess) -> dict[str, str]:
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    # The protocol: one JSON object whose values are all strings.
    assert isinstance(result, dict) and all(isinstance(v, str) for v in result.values())
    return result


@pytest.fixture(scope="module")
def emulated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulation]:
    srv = server.Server(tmp_path_factory.mktemp("digest"))
    instance = srv.start(SCENARIO)
    try:
        yield Emulation(instance)
    finally:
        srv.stop()


def test_drift_by_hand_changes_the_digest_and_apply_restores_it(emulated):
    pending = _result(_digest(emulated, {"env": "local"}))
    assert pending["instance"] == "present" and int(pending["pending_actions"]) > 0
    assert nucleus("apply", "--auto-approve", "--env", "local", env=emulated.env()).code == 0
    converged = _result(_digest(emulated, {"env": "local"}))
    assert converged["pending_actions"] == "0"
    assert converged["digest"] not in (pending["digest"], "absent")
    # Stable: the same database, the same digest.
    assert _result(_digest(emulated, {"env": "local"})) == converged

    conn = superuser_connection(emulated.instance, "nucleus_v12")
    try:
        conn.run("GRANT DELETE ON dna.entity TO nucleus_readonly")
    finally:
        conn.close()
    drifted = _result(_digest(emulated, {"env": "local"}))
    assert drifted["digest"] != converged["digest"] and drifted["pending_actions"] == "1"

    assert nucleus("apply", "--auto-approve", "--env", "local", env=emulated.env()).code == 0
    assert _result(_digest(emulated, {"env": "local"})) == converged
    # Nothing secret: only the three documented keys, and no password of the emulation.
    assert set(converged) == {"digest", "instance", "pending_actions"}
    for password in emulated.instance.passwords.values():
        assert password not in json.dumps(drifted)


def test_an_instance_the_admin_api_does_not_know_is_absent(emulated, tmp_path):
    config = config_variant(tmp_path, "missing", instance="nucleus-missing")
    result = _result(_digest(emulated, {"env": "local"}, "--config", str(config)))
    assert result == {"digest": "absent", "instance": "absent", "pending_actions": "0"}


def test_a_failure_that_is_not_absence_is_an_error_on_stderr(emulated, tmp_path):
    env = emulated.env(NUCLEUS_LOCAL_STATE_DIR=str(tmp_path / "nothing-here"))
    run = subprocess.run(
        [sys.executable, "-m", "provision", "digest"],
        input='{"env": "local"}',
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.startswith("error: ") and "Traceback" not in run.stderr


def test_a_query_that_is_not_a_json_object_is_refused(emulated):
    run = subprocess.run(
        [sys.executable, "-m", "provision", "digest"],
        input="[1, 2]",
        capture_output=True,
        text=True,
        timeout=60,
        env=emulated.env(),
    )
    assert run.returncode == 1 and "JSON object" in run.stderr and run.stdout == ""
