"""What a local Cloud SQL instance is once started, and how to reach its PostgreSQL directly.

`LocalInstance` is the state `local up` leaves in its state directory (`instance.json`,
mode 0600): the server's address, the data directory, and the throwaway passwords of the
built-in users. The names of those users and of the Cloud SQL roles live here too, because
every part of the emulation (the PostgreSQL process, the Cloud SQL API acts, the scenarios,
the connector plug-in) refers to them. This module is the bottom of `provision.local`: it
imports nothing else of it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import pg8000.native
import platformdirs

from provision.errors import LocalInstanceError

STATE_ENV_VAR = "NUCLEUS_LOCAL_STATE_DIR"
STATE_FILE = "instance.json"
# Cloud SQL's own superuser: the emulation bootstraps the cluster with it; no customer
# connection ever uses it (shared/docs/cloudsql.md, section 1).
BOOTSTRAP_SUPERUSER = "cloudsqladmin"
SUPERUSER_GROUP = "cloudsqlsuperuser"
IAM_SERVICE_ACCOUNT_GROUP = "cloudsqliamserviceaccount"
ADMIN_USER = "postgres"
OWNER_USER = "nucleus"
DATABASE = "nucleus_v12"


def default_state_dir() -> Path:
    """`$NUCLEUS_LOCAL_STATE_DIR`, else a per-user state directory."""
    configured = os.environ.get(STATE_ENV_VAR)
    if configured:
        return Path(configured).expanduser()
    return Path(platformdirs.user_state_dir("nucleus-provision")) / "local"


@dataclass(frozen=True)
class LocalInstance:
    """What `local up` started: enough to reach it, stop it, and print its DSNs.

    Stored as JSON (mode 0600) in the state directory. The passwords are throwaway values
    generated for this instance only.
    """

    state_dir: str
    pgdata: str
    install: str
    host: str
    port: int
    scenario: str
    database: str
    passwords: dict[str, str]
    run_as: str | None = None
    extra: dict[str, object] | None = None

    def dsn(self, user: str, database: str | None = None, password: str | None = None) -> str:
        """A direct DSN; `password` overrides the user's own (tests of wrong passwords)."""
        password = self.passwords[user] if password is None else password
        return f"postgresql://{user}:{password}@{self.host}:{self.port}/{database or self.database}"

    @property
    def admin_dsn(self) -> str:
        return self.dsn(ADMIN_USER)

    @property
    def owner_dsn(self) -> str:
        return self.dsn(OWNER_USER)

    @property
    def pid(self) -> int | None:
        try:
            return int((Path(self.pgdata) / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def is_running(self) -> bool:
        pid = self.pid
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, owned by the service user
            return True
        return True

    def save(self) -> None:
        path = Path(self.state_dir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.chmod(0o600)
        tmp.replace(path)

    @classmethod
    def load(cls, state_dir: Path | str) -> LocalInstance | None:
        path = Path(state_dir) / STATE_FILE
        if not path.exists():
            return None
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise LocalInstanceError(
                f"{path} is not a state file of this tool ({exc})",
                hint=f"remove {state_dir} or choose another --state-dir",
            ) from None


def connect_as(
    instance: LocalInstance, user: str, database: str | None = None, timeout: float = 60
) -> pg8000.native.Connection:
    """A direct pg8000 connection to the embedded server as one of its built-in users."""
    return pg8000.native.Connection(
        user,
        host=instance.host,
        port=instance.port,
        database=database or instance.database,
        password=instance.passwords[user],
        timeout=timeout,
    )


def superuser_connection(
    instance: LocalInstance, database: str = "postgres"
) -> pg8000.native.Connection:
    """The emulated `cloudsqladmin`: what Cloud SQL itself does, never what the tool does."""
    return connect_as(instance, BOOTSTRAP_SUPERUSER, database, timeout=30)
