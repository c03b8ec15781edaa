"""The state of the emulated Google side, shared by the process that starts it, its daemons and
the connector plug-in: `<state dir>/emulator/`.

- `emulator.json`: the emulated instance's identity, addresses, daemon pids, the static
  API token (`EmulatorState`);
- the CA and proxy keys (`certs`): `server-ca` (the per-instance CA, or the root of a CA
  Service pool), `server-intermediate-ca` (CA Service modes only), `client-ca`, `proxy`
  (its certificate followed by the intermediate, the chain it presents);
- `iam.json`: the emulated IAM service accounts, with the token the emulation accepts for
  each (`IamUser`);
- `secrets.json`: the emulated Secret Manager's secrets and versions;
- `records.jsonl`: the emulator's own log of Admin API and Secret Manager calls (never a
  payload) and client certificates presented, which tests read to prove the Connector went the real way (`RecordLog`).

Every file is written owner-only and atomically.
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from provision.errors import LocalInstanceError
from provision.local.gcp import certs

PROXY_PORT = 3307  # fixed in the Connector (SERVER_PROXY_PORT)
EMULATOR_DIR = "emulator"
STATE_FILE = "emulator.json"
RECORDS_FILE = "records.jsonl"
IAM_FILE = "iam.json"
SERVER_INTERMEDIATE_CA = "server-intermediate-ca"


def emulator_dir(state_dir: Path | str) -> Path:
    return Path(state_dir) / EMULATOR_DIR


def write_private(path: Path, text: str) -> None:
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
    # `serverCaMode` and, in the CA Service modes, the DNS names of the proxy's certificate
    # (provision.local.gcp.server_ca).
    server_ca_mode: str = "GOOGLE_MANAGED_INTERNAL_CA"
    dns_name: str | None = None
    custom_sans: list[str] = field(default_factory=list)
    # The instance's password validation policy (PasswordValidationPolicy's fields), which
    # the emulated users.update enforces as Cloud SQL does.
    password_policy: dict[str, Any] = field(default_factory=dict)
    # The emulated Secret Manager's port (provision.local.gcp.secret_manager).
    secret_manager_port: int = 0
    # The instance's addresses by `ipAddresses` type and whether PSC is on, as configured.
    ip_types: list[str] = field(default_factory=lambda: ["PRIMARY"])
    psc_enabled: bool = False

    @property
    def connection_name(self) -> str:
        return f"{self.project}:{self.region}:{self.instance}"

    @property
    def admin_api(self) -> str:
        """The value for the Connector's `sqladmin_api_endpoint`."""
        return f"http://127.0.0.1:{self.admin_api_port}"

    @property
    def secret_manager(self) -> str:
        """The endpoint of the emulated Secret Manager (the real client's REST transport)."""
        return f"http://127.0.0.1:{self.secret_manager_port}"

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

    def server_ca_certs(self) -> str:
        """What `connectSettings` reports as `serverCaCert.cert`: the per-instance CA, or for
        CA Service the intermediate then the root (PEM), the chain a client must trust."""
        intermediate = self.path(SERVER_INTERMEDIATE_CA + ".pem")
        root = self.path("server-ca.pem").read_text()
        return intermediate.read_text() + root if intermediate.exists() else root

    def save(self) -> None:
        write_private(self.path(STATE_FILE), json.dumps(asdict(self), indent=2))

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
            "server_ca_mode": self.server_ca_mode,
            "secret_manager": self.secret_manager,
            **({"dns_name": self.dns_name} if self.dns_name else {}),
            **({"custom_sans": list(self.custom_sans)} if self.custom_sans else {}),
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


def register_iam_user(state_dir: Path | str, email: str) -> IamUser:
    """The emulated IAM side of a service account: the token the emulation will accept for it
    and the internal password of its database role. Idempotent: a known account keeps both."""
    known = iam_users(state_dir)
    user = known.get(email) or IamUser(
        email=email,
        token=f"local-iam-{secrets.token_urlsafe(24)}",
        password=secrets.token_urlsafe(24),
    )
    known[email] = user
    write_private(
        emulator_dir(state_dir) / IAM_FILE,
        json.dumps(
            {e: {"token": u.token, "password": u.password} for e, u in known.items()}, indent=2
        ),
    )
    return user


def unregister_iam_user(state_dir: Path | str, email: str) -> None:
    """Forget a service account: its token is no longer accepted. Idempotent."""
    known = iam_users(state_dir)
    if known.pop(email, None) is None:
        return
    write_private(
        emulator_dir(state_dir) / IAM_FILE,
        json.dumps(
            {e: {"token": u.token, "password": u.password} for e, u in known.items()}, indent=2
        ),
    )
