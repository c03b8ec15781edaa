"""Helpers of the connector tests (imported by their conftest and test modules; the name is
unique so that it cannot clash with another test directory's helpers on sys.path)."""

from __future__ import annotations

import os
import socketserver
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
from google.cloud.sql.connector import DnsResolver

from provision import cloudsql, db
from provision.config import Environment, load_environment
from provision.local import plugin
from provision.local.gcp import state as gcp_state
from provision.local.instance import LocalInstance

ROOT = Path(__file__).resolve().parents[3]
CONFIG = ROOT / "environments.toml"
SCENARIO = "legacy-nucleus-v12"
IAM_ACCOUNT = "runner@local-project.iam.gserviceaccount.com"


@dataclass(frozen=True)
class Emulation:
    instance: LocalInstance

    @property
    def state_dir(self) -> Path:
        return Path(self.instance.state_dir)

    @property
    def state(self) -> gcp_state.EmulatorState:
        loaded = gcp_state.EmulatorState.load(self.state_dir)
        assert loaded is not None
        return loaded

    def records(self, since: int = 0) -> list[dict]:
        return gcp_state.records(self.state_dir)[since:]

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a CLI run against this emulation."""
        return {**os.environ, "NUCLEUS_LOCAL_STATE_DIR": str(self.state_dir), **extra}


@dataclass
class Run:
    code: int
    out: str
    err: str
    seconds: float


def nucleus(*args: str, env: dict[str, str], timeout: float = 60) -> Run:
    """`nucleus-provision ARGS` in a subprocess, as users and CI run it."""
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "provision", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


def config_variant(tmp_path: Path, name: str, **local: object) -> Path:
    """environments.toml with the `local` environment's top-level keys replaced or added."""
    lines = CONFIG.read_text().splitlines()
    out: list[str] = []
    in_local = False
    for line in lines:
        if line.startswith("["):
            in_local = line.strip() == "[environments.local]"
        key = line.split("=", 1)[0].strip()
        if in_local and key in local:
            continue
        out.append(line)
        if line.strip() == "[environments.local]":
            out += [f"{k} = {_toml(v)}" for k, v in local.items()]
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(out) + "\n")
    # environments.toml names its privileges file, beside it.
    (tmp_path / "privileges.toml").write_text((ROOT / "privileges.toml").read_text())
    return path


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, int | float):
        return str(value)
    return '"' + str(value) + '"'


def local_environment(**changes: object) -> Environment:
    """The `local` environment of environments.toml with some fields changed (validated)."""
    local = load_environment("local", CONFIG)
    return Environment.model_validate({**local.model_dump(), **changes})


def emulated_target(environment: Environment, state_dir: Path, **options: float) -> db.Target:
    """`cloudsql.target_for` with the `local` connector plug-in's overrides for `state_dir`."""
    return cloudsql.target_for(
        environment, overrides=plugin.overrides(environment, state_dir=state_dir), **options
    )


def iam_environment() -> Environment:
    """The `local` environment with IAM database authentication for one service account."""
    return local_environment(iam_auth=True, iam_users=[IAM_ACCOUNT], iam_login=IAM_ACCOUNT)


def alive(pid: int) -> bool:
    """Running, and not a zombie (this sandbox's init does not reap orphans)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def assert_one_clear_line(run: Run, *fragments: str) -> None:
    """Exit 1, one `error:` line (plus at most a `hint:` line), no traceback. (A run that hung
    instead would have hit `nucleus`'s subprocess timeout and failed the test there.)"""
    assert run.code == 1, (run.code, run.out, run.err)
    assert "Traceback" not in run.err and "Traceback" not in run.out, run.err
    lines = run.err.strip().splitlines()
    assert lines and lines[0].startswith("error: "), run.err
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("hint: ")), run.err
    for fragment in fragments:
        assert fragment in run.err, (fragment, run.err)


# -- a DNS server on loopback, for the Connector's DnsResolver -------------------------------


class LocalDns:
    """A tiny authoritative DNS server on 127.0.0.1 (UDP) answering from a dict, so that the
    Connector's `DnsResolver` can resolve domain names with no network: `records` maps
    (name with trailing dot, type) to the answers, e.g. ("db.example.", "TXT") ->
    ['"project:region:instance"']. Other names get NXDOMAIN. Every question is kept."""

    def __init__(self, records: dict[tuple[str, str], list[str]]) -> None:
        self.records = records
        self.questions: list[tuple[str, str]] = []
        dns_server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                query = dns.message.from_wire(data)
                response = dns.message.make_response(query)
                question = query.question[0]
                name = question.name.to_text().lower()
                rdtype = dns.rdatatype.to_text(question.rdtype)
                dns_server.questions.append((name, rdtype))
                answers = dns_server.records.get((name, rdtype))
                if answers:
                    response.answer.append(
                        dns.rrset.from_text_list(question.name, 60, "IN", rdtype, answers)
                    )
                elif not any(known == name for known, _ in dns_server.records):
                    response.set_rcode(dns.rcode.NXDOMAIN)
                sock.sendto(response.to_wire(), self.client_address)

        self.server = socketserver.UDPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def resolver(self) -> type[DnsResolver]:
        """The Connector's own `DnsResolver`, asking this server instead of /etc/resolv.conf
        (the Connector instantiates the class it is given, with `client=`)."""
        port = self.port

        class LocalDnsResolver(DnsResolver):
            def __init__(self, *args: Any, client: Any | None = None, **kwargs: Any) -> None:
                super().__init__(configure=False, client=client)
                self.nameservers = ["127.0.0.1"]
                self.port = port

        return LocalDnsResolver

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
