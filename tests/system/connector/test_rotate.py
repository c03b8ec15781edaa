"""`rotate`: new passwords for the app login (two logins, alternating), postgres and nucleus
(through the Admin API), stored as new versions of their secrets in the emulated Secret
Manager, under a live workload, with no password in any output or log.

Every test here runs against an emulation of its own (rotations change passwords the other
connector tests rely on), through the real CLI, the real Cloud SQL Connector and the real
Secret Manager client.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pg8000.native
import pytest
from connector_support import CONFIG, SCENARIO, Emulation, nucleus

from provision import credentials
from provision.config import load_environment
from provision.errors import ProvisionError
from provision.local.plugin import StaticTokenCredentials
from provision.local.server import Server
from provision.locks import ROTATE_KEY
from provision.sqladmin import SqlAdmin

APP_SECRET = "nucleus-prototype-db-nucleus-app-password"
ADMIN_SECRET = "nucleus-prototype-db-postgres-password"
OWNER_SECRET = "nucleus-prototype-db-nucleus-password"
# The workload's bounds: how many new connections each worker opens at most, and at least
# after the last rotation. Counts, never durations.
MAX_CONNECTIONS_PER_WORKER = 4000
AFTER_LAST_ROTATION = 25
WORKERS = 4
HELD = 3


@pytest.fixture(scope="module")
def rotation_emulation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulation]:
    server = Server(tmp_path_factory.mktemp("rotation"))
    instance = server.start(SCENARIO, environment=load_environment("local", CONFIG))
    try:
        yield Emulation(instance)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def applied(rotation_emulation: Emulation) -> Emulation:
    run = nucleus("apply", "--auto-approve", "--env", "local", env=rotation_emulation.env())
    assert run.code == 0, run.err
    return rotation_emulation


def _store(emulation: Emulation) -> credentials.SecretStore:
    state = emulation.state
    return credentials.SecretStore(
        StaticTokenCredentials(state.api_token), endpoint=state.secret_manager
    )


def _versions(emulation: Emulation, secret: str) -> list[str]:
    """Every version's payload of a secret, oldest first, as the emulation stores them."""
    stored = json.loads(emulation.state.path("secrets.json").read_text())
    return [base64.b64decode(v["data"]).decode() for v in stored[secret]["versions"]]


def _every_password(emulation: Emulation) -> set[str]:
    found = set(emulation.instance.passwords.values())
    stored = json.loads(emulation.state.path("secrets.json").read_text())
    for secret in stored:
        for payload in _versions(emulation, secret):
            found.add(json.loads(payload)["password"] if payload.startswith("{") else payload)
    return found


def _connect(emulation: Emulation, user: str, password: str) -> pg8000.native.Connection:
    instance = emulation.instance
    return pg8000.native.Connection(
        user,
        password=password,
        host=instance.host,
        port=instance.port,
        database=instance.database,
        timeout=10,
    )


def test_rotating_the_app_login_before_apply_says_to_apply_and_changes_nothing(
    rotation_emulation: Emulation,
) -> None:
    before = _versions(rotation_emulation, APP_SECRET)
    run = nucleus("rotate", "--env", "local", "--user", "app", env=rotation_emulation.env())
    assert run.code == 1
    assert "login nucleus_app_b, which takes over from nucleus_app at this rotation" in run.err
    assert (
        "run `nucleus-provision apply --env local` first" in run.err and "Traceback" not in run.err
    )
    assert _versions(rotation_emulation, APP_SECRET) == before


def test_the_app_login_rotates_under_a_live_workload_without_one_failed_connection(
    applied: Emulation,
) -> None:
    emulation = applied
    store = _store(emulation)
    try:
        first = credentials.parse_app_secret(store("local-project", APP_SECRET), "nucleus_app", "")
    finally:
        store.close()
    assert first.username == "nucleus_app"
    # Connections opened before any rotation, held open throughout (a service's pool).
    held = [_connect(emulation, first.username, first.password) for _ in range(HELD)]

    failures: list[str] = []
    logins: Counter[str] = Counter()
    after_last: Counter[int] = Counter()
    last_done = threading.Event()
    stop = threading.Event()

    def worker(number: int) -> None:
        # A service that reads the secret for every new connection: the strictest reader.
        reader = _store(emulation)
        try:
            for _ in range(MAX_CONNECTIONS_PER_WORKER):
                if stop.is_set():
                    return
                done_before = last_done.is_set()
                try:
                    app = credentials.parse_app_secret(
                        reader("local-project", APP_SECRET), "nucleus_app", APP_SECRET
                    )
                    conn = _connect(emulation, app.username, app.password)
                    try:
                        conn.run("SELECT count(*) FROM dna.entity")
                    finally:
                        conn.close()
                except Exception as exc:  # every failure is a finding; none may happen
                    failures.append(f"worker {number}: {type(exc).__name__}: {exc}")
                    continue
                logins[app.username] += 1
                if done_before:
                    after_last[number] += 1
                    if after_last[number] >= AFTER_LAST_ROTATION:
                        return
        finally:
            reader.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(WORKERS)]
    for thread in threads:
        thread.start()
    try:
        # Rotation 1 (nucleus_app -> nucleus_app_b), then, with the credentials a slow reader
        # cached before it, a new connection still works; rotation 2 (back to nucleus_app).
        runs = []
        for rotation in (1, 2):
            proc = subprocess.run(
                [sys.executable, "-m", "provision", "rotate", "--env", "local", "--user", "app"],
                capture_output=True,
                text=True,
                timeout=120,
                env=emulation.env(),
            )
            runs.append(proc)
            assert proc.returncode == 0, proc.stderr
            if rotation == 1:
                stale = _connect(emulation, first.username, first.password)
                assert stale.run("SELECT current_user") == [["nucleus_app"]]
                stale.close()
        last_done.set()
        for thread in threads:
            thread.join(300)
    finally:
        stop.set()

    assert failures == []
    assert all(after_last[n] >= AFTER_LAST_ROTATION for n in range(WORKERS)), after_last
    # Both logins served the workload: the rotation really switched it over, and back.
    assert logins["nucleus_app"] > 0 and logins["nucleus_app_b"] > 0, logins
    # The pool opened before the first rotation works after both.
    for conn in held:
        assert conn.run("SELECT count(*) >= 0 FROM dna.entity") == [[True]]
        conn.close()
    payloads = [json.loads(p) for p in _versions(emulation, APP_SECRET)]
    assert [p["username"] for p in payloads][-3:] == ["nucleus_app", "nucleus_app_b", "nucleus_app"]
    assert "nucleus_app_b keeps its password until the next rotation" in runs[1].stdout
    # After rotation 2, nucleus_app_b (current after rotation 1) still opens new connections.
    previous = payloads[-2]
    conn = _connect(emulation, previous["username"], previous["password"])
    assert conn.run("SELECT current_user") == [["nucleus_app_b"]]
    conn.close()
    # The app logins' password was set as a verifier: rotate never sends it, apply stays a no-op.
    for run in runs:
        assert not {p for p in _every_password(emulation) if p in run.stdout + run.stderr}
    verify = nucleus("verify", "--env", "local", env=emulation.env())
    assert verify.code == 0, verify.out + verify.err


@pytest.mark.parametrize(
    ("role", "user", "secret"),
    [("admin", "postgres", ADMIN_SECRET), ("owner", "nucleus", OWNER_SECRET)],
)
def test_built_in_users_rotate_through_the_admin_api_then_the_secret(
    applied: Emulation, role: str, user: str, secret: str
) -> None:
    emulation = applied
    old = _versions(emulation, secret)[-1]
    before = len(emulation.records())
    run = nucleus(
        "rotate", "--env", "local", "--user", role, "--format", "json", env=emulation.env()
    )
    assert run.code == 0, run.err
    result = json.loads(run.out)
    assert result["login"] == user and result["set_through"] == "Cloud SQL Admin API users.update"
    new = _versions(emulation, secret)[-1]
    assert new != old and result["version"].endswith(
        f"/versions/{len(_versions(emulation, secret))}"
    )
    # Set where the user lives first, proven by a login, and only then shown to readers.
    events = [
        (r["event"], r.get("user") or r.get("path", ""))
        for r in emulation.records(before)
        if r["event"] in ("users.update", "addSecretVersion", "startup")
    ]
    update = events.index(("users.update", user))
    proof = next(i for i, e in enumerate(events) if i > update and e[0] == "startup")
    added = next(i for i, e in enumerate(events) if e[0] == "addSecretVersion" and secret in e[1])
    assert update < proof < added, events
    conn = _connect(emulation, user, new)
    assert conn.run("SELECT current_user") == [[user]]
    conn.close()
    with pytest.raises(pg8000.native.DatabaseError):
        _connect(emulation, user, old)
    # The next run reads the new version and finds nothing to do.
    verify = nucleus("verify", "--env", "local", env=emulation.env())
    assert verify.code == 0, verify.out + verify.err


def test_the_emulated_admin_api_refuses_a_password_the_policy_refuses(applied: Emulation) -> None:
    state = applied.state
    api = SqlAdmin(StaticTokenCredentials(state.api_token), state.admin_api, timeout=10)
    try:
        with pytest.raises(ProvisionError) as refused:
            api.set_password(state.project, state.instance, "nucleus", "nucleus-Weak-Password-1!")
    finally:
        api.close()
    assert "does not meet the password validation policy: contains the user name" in str(
        refused.value
    )
    assert "Weak-Password" not in str(refused.value)
    # Nothing changed: the password in the secret still opens a session.
    _connect(applied, "nucleus", _versions(applied, OWNER_SECRET)[-1]).close()


def test_a_second_rotation_at_the_same_time_stops_and_names_the_first(applied: Emulation) -> None:
    emulation = applied
    password = _versions(emulation, ADMIN_SECRET)[-1]
    holder = _connect(emulation, "postgres", password)
    before = _versions(emulation, APP_SECRET)
    try:
        holder.run("SET application_name = 'the-other-rotation'")
        holder.run("SELECT pg_advisory_lock(:k)", k=ROTATE_KEY)
        run = nucleus("rotate", "--env", "local", "--user", "app", env=emulation.env())
    finally:
        holder.close()
    assert run.code == 1
    assert "another rotation is running on this database" in run.err
    assert "the-other-rotation" in run.err
    assert _versions(emulation, APP_SECRET) == before


def test_no_password_reaches_output_records_daemon_logs_or_the_server_log(
    applied: Emulation,
) -> None:
    emulation = applied
    runs = [
        nucleus("rotate", "--env", "local", "--user", role, env=emulation.env())
        for role in ("app", "owner")
    ]
    assert all(run.code == 0 for run in runs), [run.err for run in runs]
    passwords = _every_password(emulation)
    assert len(passwords) >= 6
    texts = {f"run {i}": run.out + run.err for i, run in enumerate(runs)}
    server_log = Path(emulation.instance.pgdata) / "server.log"
    texts["server.log"] = server_log.read_text()
    # The server log is a real witness: it logs DDL, the rotations' ALTER ROLE included.
    assert "ALTER ROLE nucleus_app" in texts["server.log"]
    assert "SCRAM-SHA-256$" in texts["server.log"]
    for path in emulation.state.directory.glob("*.log*"):
        texts[path.name] = path.read_text()
    texts["records.jsonl"] = emulation.state.path("records.jsonl").read_text()
    leaked = {name for name, text in texts.items() for p in passwords if p in text}
    assert leaked == set()
