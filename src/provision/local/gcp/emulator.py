"""The emulated Google side's processes: an Admin API and an mTLS proxy in front of the local
PostgreSQL, started by `local up` and stopped by `local down`.

The Cloud SQL Python Connector never talks to PostgreSQL's port (shared/docs/cloudsql.md,
section 4). It asks the Admin API for the instance's addresses and server CA
(`connectSettings`), has its public key signed (`generateEphemeralCert`), then opens TLS 1.3
with that client certificate to `<ip>:3307`. This module sets up the same pieces on loopback:

- a server CA and a client CA made for this emulation (`provision.local.gcp.certs`); the
  server CA is per-instance or a CA Service hierarchy, as the instance's server CA mode says
  (`provision.local.gcp.server_ca`);
- an Admin API on `http://127.0.0.1:<port>` (`provision.local.gcp.admin_api`);
- a Secret Manager on `http://127.0.0.1:<port>` (`provision.local.gcp.secret_manager`), where
  `local up` stores the users' passwords as the stacks would;
- a TLS 1.3 proxy with CERT_REQUIRED on `<127.x.y.z>:3307` forwarding to PostgreSQL
  (`provision.local.gcp.proxy`). Every emulation takes its own 127.x.y.z address, so several
  can run at once although the Connector always dials port 3307.

The servers run as detached daemons (`provision.local.gcp.daemon`), one process each, so a
test can take one of them down on its own. Their sockets are bound here, before they start,
and handed over as file descriptors: once `start` returns they accept connections, and two
emulations starting at the same moment cannot pick the same address. Their shared state is
`provision.local.gcp.state`.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import random
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from provision.config import ServerCaMode
from provision.errors import ConfigError, LocalInstanceError
from provision.local.gcp import certs
from provision.local.gcp.server_ca import ServerCa, ca_names
from provision.local.gcp.state import (
    IAM_FILE,
    PROXY_PORT,
    RECORDS_FILE,
    SERVER_INTERMEDIATE_CA,
    STATE_FILE,
    EmulatorState,
    emulator_dir,
    write_private,
)
from provision.local.instance import LocalInstance

COMPONENTS = ("admin-api", "proxy", "secret-manager")
_DAEMON_MODULE = "provision.local.gcp.daemon"
_START_TIMEOUT = 20.0
_STOP_TIMEOUT = 5.0


@dataclass(frozen=True)
class Identity:
    """Which Cloud SQL instance the emulation answers for."""

    project: str
    region: str
    instance: str
    database_version: str
    server_ca: ServerCa = field(default_factory=ServerCa)
    # PasswordValidationPolicy's fields: what the emulated users.update accepts.
    password_policy: dict[str, object] = field(default_factory=dict)
    # The addresses the instance has (`ipAddresses` types: PRIMARY, PRIVATE) and whether
    # Private Service Connect is on: what the environment configures, nothing more, so that
    # a Connector asking for an address the instance lacks fails here as on Cloud SQL.
    ip_types: tuple[str, ...] = ("PRIMARY",)
    psc_enabled: bool = False


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


REGIONAL_CAS_DIR = "regional-cas"


def regional_ca_dir(state_dir: str, region: str) -> Path:
    """Where the emulation keeps Google's CA Service pool of `region`: beside the state
    directories (`<parent of state dir>/regional-cas/<region>/`), so every emulated instance
    of the region started next to this one shares it, as Cloud SQL's GOOGLE_MANAGED_CAS_CA
    instances of a region share one pool. `local down` leaves it (Google's pool outlives any
    one instance)."""
    return Path(state_dir).parent / REGIONAL_CAS_DIR / region


def _regional_ca(
    state_dir: str, region: str, settings: ServerCa
) -> tuple[certs.KeyPair, certs.KeyPair]:
    """The region's shared root and intermediate, made by the first instance that needs them.
    Created in a private temporary directory and renamed into place, so two `local up` at
    the same moment end with one CA (the loser of the rename reads the winner's)."""
    directory = regional_ca_dir(state_dir, region)
    stems = ("server-ca", SERVER_INTERMEDIATE_CA)
    if directory.exists() and _expires_soon(directory / f"{SERVER_INTERMEDIATE_CA}.pem"):
        # Google rotates its pool's CAs; here an expiring pool is replaced by a new one
        # (instances started before keep serving their old chain until restarted).
        shutil.rmtree(directory, ignore_errors=True)
    if not directory.exists():
        directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{region}-", dir=directory.parent))
        for stem, pair in zip(stems, certs.ca_hierarchy(*ca_names(settings, region)), strict=True):
            write_private(staging / f"{stem}.pem", pair.cert_pem)
            write_private(staging / f"{stem}.key", pair.key_pem)
        try:
            staging.rename(directory)
        except OSError:  # another emulation made the region's CA first: use that one
            shutil.rmtree(staging, ignore_errors=True)
    root, intermediate = (
        certs.KeyPair(
            (directory / f"{stem}.pem").read_text(), (directory / f"{stem}.key").read_text()
        )
        for stem in stems
    )
    return root, intermediate


def _expires_soon(cert_path: Path) -> bool:
    """Whether the certificate is unreadable or expires within a day."""
    try:
        cert = certs.load(cert_path.read_text())
    except (OSError, ValueError):
        return True
    remaining = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    return remaining < datetime.timedelta(days=1)


def _server_certificates(
    identity: Identity, address: str, instance_state_dir: str
) -> dict[str, certs.KeyPair]:
    """The CAs and the proxy's certificate, by file stem. For CA Service the proxy's file
    holds its certificate and then the intermediate: the chain it presents."""
    project, name, settings = identity.project, identity.instance, identity.server_ca
    client_ca = certs.new_ca(f"Client CA for {project}:{name}")
    if not settings.uses_cas:
        server_ca = certs.new_ca(f"Server CA for {project}:{name}")
        proxy = certs.issue_server_cert(server_ca, f"{project}:{name}", address)
        return {"server-ca": server_ca, "client-ca": client_ca, "proxy": proxy}
    if settings.mode is ServerCaMode.GOOGLE_MANAGED_CAS_CA:
        root, intermediate = _regional_ca(instance_state_dir, identity.region, settings)
    else:
        root, intermediate = certs.ca_hierarchy(*ca_names(settings, identity.region))
    leaf = certs.issue_server_cert(
        intermediate, f"{project}:{name}", address, settings.certificate_names
    )
    return {
        "server-ca": root,
        SERVER_INTERMEDIATE_CA: intermediate,
        "client-ca": client_ca,
        "proxy": certs.KeyPair(leaf.cert_pem + intermediate.cert_pem, leaf.key_pem),
    }


def start(instance: LocalInstance, identity: Identity) -> EmulatorState:
    """Start the Admin API and the proxy for `instance`; returns their state (also saved)."""
    project, name = identity.project, identity.instance
    directory = emulator_dir(instance.state_dir)
    directory.mkdir(mode=0o700, exist_ok=True)
    for stale in (
        STATE_FILE,
        RECORDS_FILE,
        IAM_FILE,
        f"{SERVER_INTERMEDIATE_CA}.pem",
        f"{SERVER_INTERMEDIATE_CA}.key",
    ):
        (directory / stale).unlink(missing_ok=True)

    proxy_sock = _bind_proxy_socket(instance.state_dir)
    api_sock = _bind_api_socket()
    secrets_sock = _bind_api_socket()
    try:
        address = proxy_sock.getsockname()[0]
        for stem, pair in _server_certificates(identity, address, instance.state_dir).items():
            write_private(directory / f"{stem}.pem", pair.cert_pem)
            write_private(directory / f"{stem}.key", pair.key_pem)
        state = EmulatorState(
            state_dir=instance.state_dir,
            project=project,
            region=identity.region,
            instance=name,
            database_version=identity.database_version,
            address=address,
            admin_api_port=api_sock.getsockname()[1],
            secret_manager_port=secrets_sock.getsockname()[1],
            api_token=f"local-{secrets.token_urlsafe(24)}",
            pg_host=instance.host,
            pg_port=instance.port,
            server_ca_mode=identity.server_ca.mode.value,
            dns_name=identity.server_ca.dns_name,
            custom_sans=list(identity.server_ca.custom_sans),
            password_policy=dict(identity.password_policy),
            ip_types=list(identity.ip_types),
            psc_enabled=identity.psc_enabled,
        )
        state.save()

        launched = {
            component: _spawn(state, component, sock)
            for component, sock in (
                ("admin-api", api_sock),
                ("proxy", proxy_sock),
                ("secret-manager", secrets_sock),
            )
        }
        pids: dict[str, int] = {}
        try:
            for component, (process, read_fd) in launched.items():
                pids[component] = _await_ready(
                    component, process, read_fd, state.path(f"{component}.log")
                )
        finally:
            # Record whatever started, so that a failure part-way is cleaned up by `stop`.
            state = replace(state, pids=pids)
            state.save()
    finally:
        proxy_sock.close()  # the daemons hold their own copies
        api_sock.close()
        secrets_sock.close()
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
