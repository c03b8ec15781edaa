"""The Cloud SQL side of the local emulation: Admin API, CAs and the mTLS proxy, started beside
the embedded PostgreSQL by `local up` and stopped by `local down`.

The Cloud SQL Python Connector never talks to PostgreSQL's port (shared/docs/cloudsql.md,
section 4). It asks the Admin API for the instance's addresses and server CA
(`connectSettings`), has its public key signed (`generateEphemeralCert`), then opens TLS 1.3
with that client certificate to `<ip>:3307`. This module sets up the same pieces on loopback:

- a server CA and a client CA made for this emulation (`provision.local.certs`);
- an Admin API on `http://127.0.0.1:<port>` (`provision.local.admin_api`);
- a TLS 1.3 proxy with CERT_REQUIRED on `<127.x.y.z>:3307` forwarding to PostgreSQL
  (`provision.local.proxy`). Every emulation takes its own 127.x.y.z address, so several can
  run at once although the Connector always dials port 3307.

Both servers run as detached daemons (`provision.local.daemon`), one process each, so a test
can take one of them down on its own. Their sockets are bound here, before they start, and
handed over as file descriptors: once `start` returns they accept connections, and two
emulations starting at the same moment cannot pick the same address.

Everything lives in `<state dir>/emulator/`: `emulator.json` (addresses, pids, the static
API token), the CA and proxy keys, `iam.json` (emulated IAM service accounts) and
`records.jsonl`, the emulator's own log of Admin API calls and client certificates presented,
which tests read to prove the Connector went the real way.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import random
import secrets
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provision.errors import ConfigError, LocalInstanceError
from provision.local import certs

if TYPE_CHECKING:
    from provision.config import Environment
    from provision.local.server import LocalInstance

PROXY_PORT = 3307  # fixed in the Connector (SERVER_PROXY_PORT)
EMULATOR_DIR = "emulator"
STATE_FILE = "emulator.json"
RECORDS_FILE = "records.jsonl"
IAM_FILE = "iam.json"
COMPONENTS = ("admin-api", "proxy")
LOCAL_ENVIRONMENT = "local"
# Used only when no environments.toml can be found (e.g. `local up` run outside the checkout);
# they repeat environments.toml's `local` environment.
_FALLBACK_IDENTITY = ("local-project", "europe-west1", "nucleus-prototype-db", "POSTGRES_16")
_DAEMON_MODULE = "provision.local.daemon"
_START_TIMEOUT = 20.0
_STOP_TIMEOUT = 5.0


def emulator_dir(state_dir: Path | str) -> Path:
    return Path(state_dir) / EMULATOR_DIR


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, atomically (readers never see half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    tmp.replace(path)


@dataclass(frozen=True)
class EmulatorState:
    """What the emulator daemons and the connection layer need to know about one emulation."""

    state_dir: str
    project: str
    region: str
    instance: str
    database_version: str
    address: str
    admin_api_port: int
    api_token: str
    pg_host: str
    pg_port: int
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def connection_name(self) -> str:
        return f"{self.project}:{self.region}:{self.instance}"

    @property
    def admin_api(self) -> str:
        """The value for the Connector's `sqladmin_api_endpoint`."""
        return f"http://127.0.0.1:{self.admin_api_port}"

    @property
    def proxy(self) -> str:
        return f"{self.address}:{PROXY_PORT}"

    @property
    def directory(self) -> Path:
        return emulator_dir(self.state_dir)

    def path(self, name: str) -> Path:
        return self.directory / name

    def keypair(self, stem: str) -> certs.KeyPair:
        return certs.KeyPair(
            self.path(f"{stem}.pem").read_text(), self.path(f"{stem}.key").read_text()
        )

    def save(self) -> None:
        _write_private(self.path(STATE_FILE), json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, state_dir: Path | str) -> EmulatorState | None:
        path = emulator_dir(state_dir) / STATE_FILE
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            raise LocalInstanceError(
                f"{path} is not a state file of this tool ({exc})",
                hint="run `nucleus-provision local down` and `local up` again",
            ) from None

    def summary(self) -> dict[str, object]:
        """The fields `local up` / `local status` print about the emulated Cloud SQL side."""
        return {
            "connection_name": self.connection_name,
            "admin_api": self.admin_api,
            "proxy": self.proxy,
            "emulator": {
                "pids": dict(self.pids),
                "server_ca": str(self.path("server-ca.pem")),
                "records": str(self.path(RECORDS_FILE)),
            },
        }


# -- records ----------------------------------------------------------------------------------


class RecordLog:
    """The emulator's own JSON-lines log (`records.jsonl`), shared by its daemons.

    Each record is one `write` of one line to a file opened with O_APPEND, so lines from the
    two daemons never interleave. Records never hold tokens, passwords or keys.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, component: str, event: str, **fields: Any) -> None:
        record = {
            "ts": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
            "component": component,
            "event": event,
            **fields,
        }
        line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def records(state_dir: Path | str) -> list[dict[str, Any]]:
    """Every record the emulation of `state_dir` has written so far, oldest first."""
    path = emulator_dir(state_dir) / RECORDS_FILE
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


# -- emulated IAM -----------------------------------------------------------------------------


@dataclass(frozen=True)
class IamUser:
    """An emulated service account with an IAM database user.

    `token` is the OAuth access token the emulation accepts for it (Admin API calls and the
    `access_token` of generateEphemeralCert). `password` is the internal password of its
    database role: only the proxy uses it, to complete PostgreSQL's SCRAM exchange for a
    client whose certificate proves the identity; clients never see it.
    """

    email: str
    token: str = field(repr=False)
    password: str = field(repr=False)

    @property
    def db_user(self) -> str:
        """The role name Cloud SQL gives an IAM service account on PostgreSQL."""
        return self.email.removesuffix(".gserviceaccount.com")


def iam_users(state_dir: Path | str) -> dict[str, IamUser]:
    path = emulator_dir(state_dir) / IAM_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    return {email: IamUser(email=email, **entry) for email, entry in data.items()}


def create_iam_user(instance: LocalInstance, email: str) -> IamUser:
    """What `gcloud sql users create EMAIL --type=cloud_iam_service_account` does, plus the
    access token the emulation will accept for that service account.

    The role is created by `cloudsqladmin` as a LOGIN member of `cloudsqlsuperuser` and of
    `cloudsqliamserviceaccount`, like every user created through Cloud SQL's API. Idempotent.
    """
    from pg8000.native import identifier, literal

    from provision.local.server import SUPERUSER_GROUP, superuser_connection

    existing = iam_users(instance.state_dir)
    user = existing.get(email) or IamUser(
        email=email,
        token=f"local-iam-{secrets.token_urlsafe(24)}",
        password=secrets.token_urlsafe(24),
    )
    conn = superuser_connection(instance)
    try:
        if not conn.run("SELECT 1 FROM pg_roles WHERE rolname = 'cloudsqliamserviceaccount'"):
            conn.run("CREATE ROLE cloudsqliamserviceaccount NOLOGIN")
        role = identifier(user.db_user)
        if conn.run("SELECT 1 FROM pg_roles WHERE rolname = :name", name=user.db_user):
            conn.run(f"ALTER ROLE {role} LOGIN PASSWORD {literal(user.password)}")
        else:
            conn.run(
                f"CREATE ROLE {role} LOGIN CREATEROLE CREATEDB PASSWORD {literal(user.password)} "
                f"IN ROLE {identifier(SUPERUSER_GROUP)}, cloudsqliamserviceaccount"
            )
    finally:
        conn.close()
    existing[email] = user
    _write_private(
        emulator_dir(instance.state_dir) / IAM_FILE,
        json.dumps(
            {e: {"token": u.token, "password": u.password} for e, u in existing.items()}, indent=2
        ),
    )
    return user


# -- addresses --------------------------------------------------------------------------------


def _candidate_addresses(state_dir: str) -> list[str]:
    """127.x.y.z addresses to try for the proxy: first one derived from the state directory
    (the same emulation gets the same address again), then random ones."""
    digest = hashlib.sha256(state_dir.encode()).digest()
    first = f"127.{1 + digest[0] % 254}.{digest[1]}.{1 + digest[2] % 254}"
    rng = random.SystemRandom()
    others = [
        f"127.{rng.randint(1, 254)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}" for _ in range(40)
    ]
    return [first, *others]


def _bind_proxy_socket(state_dir: str) -> socket.socket:
    # No SO_REUSEADDR: a bind must fail while another emulation listens on the address, so the
    # address becomes ours alone (the socket stays bound until the proxy daemon exits).
    last: OSError | None = None
    for address in _candidate_addresses(state_dir):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((address, PROXY_PORT))
            sock.listen(128)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise LocalInstanceError(
        f"no free 127.x.y.z address for the proxy on port {PROXY_PORT} ({last})",
        hint="stop other emulations with `nucleus-provision local down --state-dir DIR`",
    )


def _bind_api_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


# -- daemons ----------------------------------------------------------------------------------


def _identity(environment: Environment | None) -> tuple[str, str, str, str, tuple[str, ...]]:
    if environment is None:
        from provision.config import load_environment

        try:
            environment = load_environment(LOCAL_ENVIRONMENT)
        except ConfigError as exc:
            if "no environments.toml" not in exc.message:
                raise
            return (*_FALLBACK_IDENTITY, ())
    iam = environment.iam_users if environment.iam_auth else ()
    return (
        environment.project,
        environment.region,
        environment.instance,
        environment.database_version,
        iam,
    )


def _spawn(
    state: EmulatorState, component: str, sock: socket.socket
) -> tuple[subprocess.Popen[bytes], int]:
    read_fd, write_fd = os.pipe()
    log_path = state.path(f"{component}.log")
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                _DAEMON_MODULE,
                "--component",
                component,
                "--state-dir",
                state.state_dir,
                "--listen-fd",
                str(sock.fileno()),
                "--ready-fd",
                str(write_fd),
            ],
            pass_fds=(sock.fileno(), write_fd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # not killed with the terminal or the test run that started it
            cwd="/",
        )
    os.close(write_fd)
    return process, read_fd


def _await_ready(component: str, process: subprocess.Popen[bytes], read_fd: int, log: Path) -> int:
    """Wait for the daemon's "ready PID" line; the launcher process exits as soon as it forked."""
    deadline = time.monotonic() + _START_TIMEOUT
    buffer = b""
    try:
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            readable, _, _ = select.select([read_fd], [], [], remaining)
            if not readable:
                break
            chunk = os.read(read_fd, 64)
            if not chunk:
                break
            buffer += chunk
    finally:
        os.close(read_fd)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
    line = buffer.decode(errors="replace").strip()
    if not line.startswith("ready "):
        tail = log.read_text(errors="replace").strip()[-1500:] if log.exists() else ""
        raise LocalInstanceError(
            f"the emulator's {component} did not start: {tail or 'no output'}",
            hint=f"see {log}; `nucleus-provision local down` cleans up",
        )
    return int(line.split()[1])


def start(instance: LocalInstance, environment: Environment | None = None) -> EmulatorState:
    """Start the Admin API and the proxy for `instance`; returns their state (also saved).

    `environment` gives the emulated project, region and instance (and IAM users when
    iam_auth is on); by default the `local` environment of environments.toml.
    """
    project, region, name, version, iam = _identity(environment)
    directory = emulator_dir(instance.state_dir)
    directory.mkdir(mode=0o700, exist_ok=True)
    for stale in (STATE_FILE, RECORDS_FILE, IAM_FILE):
        (directory / stale).unlink(missing_ok=True)

    proxy_sock = _bind_proxy_socket(instance.state_dir)
    api_sock = _bind_api_socket()
    try:
        address = proxy_sock.getsockname()[0]
        server_ca = certs.new_ca(f"Server CA for {project}:{name}")
        client_ca = certs.new_ca(f"Client CA for {project}:{name}")
        proxy_cert = certs.issue_server_cert(server_ca, f"{project}:{name}", address)
        for stem, pair in (
            ("server-ca", server_ca),
            ("client-ca", client_ca),
            ("proxy", proxy_cert),
        ):
            _write_private(directory / f"{stem}.pem", pair.cert_pem)
            _write_private(directory / f"{stem}.key", pair.key_pem)
        state = EmulatorState(
            state_dir=instance.state_dir,
            project=project,
            region=region,
            instance=name,
            database_version=version,
            address=address,
            admin_api_port=api_sock.getsockname()[1],
            api_token=f"local-{secrets.token_urlsafe(24)}",
            pg_host=instance.host,
            pg_port=instance.port,
        )
        state.save()
        for email in iam:
            create_iam_user(instance, email)

        launched = {
            component: _spawn(state, component, sock)
            for component, sock in (("admin-api", api_sock), ("proxy", proxy_sock))
        }
        pids: dict[str, int] = {}
        try:
            for component, (process, read_fd) in launched.items():
                pids[component] = _await_ready(
                    component, process, read_fd, state.path(f"{component}.log")
                )
        finally:
            # Record whatever started, so that a failure part-way is cleaned up by `stop`.
            state = EmulatorState(**{**asdict(state), "pids": pids})
            state.save()
    finally:
        proxy_sock.close()  # the daemons hold their own copies
        api_sock.close()
    return state


def _is_our_daemon(pid: int, state_dir: str) -> bool:
    """Guard against pid reuse: only signal a process that runs our daemon for this state dir."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: fall back to "it exists"
        return _alive(pid)
    return _DAEMON_MODULE.encode() in argv and state_dir.encode() in argv


def _alive(pid: int) -> bool:
    # A daemon started by this very process (tests) is our child: reap it, or it would linger
    # as a zombie that still answers kill(pid, 0).
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "\nState:\tZ" not in status


def _terminate(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)  # a stopped (SIGSTOP) daemon must be able to act on TERM
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_TIMEOUT
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + _STOP_TIMEOUT
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)


def stop_component(state_dir: Path | str, component: str) -> bool:
    """Stop one daemon (an outage drill: "the proxy is down"). False if it was not running."""
    if component not in COMPONENTS:
        raise ConfigError(
            f"unknown emulator component {component!r}", hint=f"one of {', '.join(COMPONENTS)}"
        )
    state = EmulatorState.load(state_dir)
    if state is None or component not in state.pids:
        return False
    pid = state.pids[component]
    running = _is_our_daemon(pid, state.state_dir) and _alive(pid)
    if running:
        _terminate(pid)
    return running


def running(state_dir: Path | str) -> dict[str, bool]:
    """Which daemons of the emulation in `state_dir` are alive."""
    state = EmulatorState.load(state_dir)
    if state is None:
        return {}
    return {
        component: component in state.pids
        and _is_our_daemon(state.pids[component], state.state_dir)
        and _alive(state.pids[component])
        for component in COMPONENTS
    }


def stop(state_dir: Path | str) -> bool:
    """Stop both daemons and delete the emulator's files. False if there was no emulator."""
    state = EmulatorState.load(state_dir)
    directory = emulator_dir(state_dir)
    if state is not None:
        for component in COMPONENTS:
            stop_component(state_dir, component)
    if directory.exists():
        for path in directory.iterdir():
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            directory.rmdir()
    return state is not None
