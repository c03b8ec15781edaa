"""An embedded PostgreSQL 16 + pgvector that behaves like a Cloud SQL instance.

The binaries come from the `pgserver` wheel. What makes the server Cloud-SQL-like (see
shared/docs/cloudsql.md, sections 1 to 3):

- the bootstrap superuser is `cloudsqladmin`, which no customer connection uses;
- `cloudsqlsuperuser` is a NOLOGIN CREATEROLE CREATEDB group; `postgres` is LOGIN CREATEROLE
  CREATEDB NOSUPERUSER and a member of it; users "created through the API" (`nucleus`) are
  created by `cloudsqladmin` as members of it, so `postgres` holds no ADMIN OPTION on them;
- databases "created through the API" are owned by `cloudsqlsuperuser`;
- every connection needs a password (scram-sha-256), over TCP on 127.0.0.1 only;
- `vector` is creatable by members of `cloudsqlsuperuser` and nobody else: the server runs
  from a private copy of the installation tree whose `vector.control` says `trusted = true`
  (Cloud SQL's allow-list), and only the database owner has CREATE on the database.

PostgreSQL refuses to run as root, so under root the server runs as the unprivileged user
`nobody` from a directory that user can reach (under the system temp dir).

Beside PostgreSQL, `Server.start` starts the Cloud SQL side of the emulation (Admin API,
CAs, mTLS proxy on 127.x.y.z:3307: `provision.local.emulator`), and `Server.stop` stops it,
so that `--env local` reaches this server through the Cloud SQL Python Connector.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs

from provision.errors import LocalInstanceError
from provision.local import emulator

if TYPE_CHECKING:
    from provision.config import Environment

STATE_ENV_VAR = "NUCLEUS_LOCAL_STATE_DIR"
STATE_FILE = "instance.json"
BOOTSTRAP_SUPERUSER = "cloudsqladmin"
SUPERUSER_GROUP = "cloudsqlsuperuser"
ADMIN_USER = "postgres"
OWNER_USER = "nucleus"
DATABASE = "nucleus_v12"
SERVICE_USER_WHEN_ROOT = "nobody"
# Marks the private installation tree as ours and patched; bump when the patch changes.
_INSTALL_PATCH_VERSION = "1"


def default_state_dir() -> Path:
    """`$NUCLEUS_LOCAL_STATE_DIR`, else a per-user state directory."""
    configured = os.environ.get(STATE_ENV_VAR)
    if configured:
        return Path(configured).expanduser()
    return Path(platformdirs.user_state_dir("nucleus-provision")) / "local"


def _running_as_root() -> bool:
    return os.geteuid() == 0


def _shared_base() -> Path:
    """A directory every local user can traverse: used when PostgreSQL must run as another user."""
    base = Path(tempfile.gettempdir()) / "nucleus-provision"
    base.mkdir(mode=0o755, exist_ok=True)
    base.chmod(0o755)
    return base


def _pgserver_package() -> Path:
    # Located without importing pgserver: its import has side effects (runtime dirs, warnings).
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise LocalInstanceError(
            "the pgserver package is not installed", hint="pip install -e '.[dev]'"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def private_install() -> Path:
    """A copy of pgserver's installation tree in which pgvector is a trusted extension.

    PostgreSQL finds its share/ and lib/ directories relative to the real path of its
    executable, so the tree is copied (a symlink farm would resolve back to the original),
    together with the wheel's pgserver.libs/ that the binaries' RPATH points to
    ($ORIGIN/../../../pgserver.libs). The copy is made once per pgserver build and reused.
    """
    source = _pgserver_package()
    key = hashlib.sha256(
        f"{source}:{source.stat().st_mtime_ns}:{_INSTALL_PATCH_VERSION}".encode()
    ).hexdigest()[:12]
    cache = (
        _shared_base()
        if _running_as_root()
        else Path(platformdirs.user_cache_dir("nucleus-provision"))
    )
    target = cache / f"pginstall-{key}"
    install = target / "pgserver" / "pginstall"
    if (install / "bin" / "postgres").exists():
        return install
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="pginstall-", dir=cache))
    try:
        shutil.copytree(
            source / "pginstall", staging / "tree" / "pgserver" / "pginstall", symlinks=True
        )
        shutil.copytree(
            source.parent / "pgserver.libs", staging / "tree" / "pgserver.libs", symlinks=True
        )
        control = (
            staging
            / "tree"
            / "pgserver"
            / "pginstall"
            / "share"
            / "postgresql"
            / "extension"
            / "vector.control"
        )
        control.write_text(
            control.read_text().rstrip("\n")
            + "\n# Cloud SQL allow-list emulation\ntrusted = true\n"
        )
        for path in (staging, *staging.rglob("*")):
            if path.is_dir():
                path.chmod(0o755)
        try:
            (staging / "tree").rename(target)
        except OSError:
            if not (install / "bin" / "postgres").exists():  # another process won the race: fine
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return install


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


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

    def summary(self) -> dict[str, object]:
        """The JSON `local up` and `local status` print."""
        return {
            "scenario": self.scenario,
            "database": self.database,
            "host": self.host,
            "port": self.port,
            "pid": self.pid,
            "running": self.is_running(),
            "admin_dsn": self.admin_dsn,
            "owner_dsn": self.owner_dsn,
            "state_dir": self.state_dir,
            **(self.extra or {}),
            **({"emulator_running": emulator.running(self.state_dir)} if self.extra else {}),
        }

    def save(self) -> None:
        path = Path(self.state_dir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.chmod(0o600)
        tmp.replace(path)

    @classmethod
    def load(cls, state_dir: Path) -> LocalInstance | None:
        path = state_dir / STATE_FILE
        if not path.exists():
            return None
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise LocalInstanceError(
                f"{path} is not a state file of this tool ({exc})",
                hint=f"remove {state_dir} or choose another --state-dir",
            ) from None


class Server:
    """Start and stop one embedded instance; everything it owns lives in its state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir.expanduser().resolve()

    # -- process management -------------------------------------------------------------------

    def _runtime_dir(self) -> Path:
        if not _running_as_root():
            return self.state_dir / "pg"
        digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:12]
        return _shared_base() / f"instance-{digest}"

    def _run(self, install: Path, args: list[str], run_as: str | None, timeout: float = 60) -> None:
        user_kwargs: dict[str, object] = {}
        if run_as is not None:
            entry = pwd.getpwnam(run_as)
            user_kwargs = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        with tempfile.TemporaryFile("w+") as output:
            # Output goes to a file, not a pipe: pg_ctl's background postmaster keeps pipes open.
            result = subprocess.run(
                [str(install / "bin" / args[0]), *args[1:]],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                start_new_session=True,
                cwd="/",
                **user_kwargs,  # type: ignore[arg-type]
            )
            if result.returncode != 0:
                output.seek(0)
                raise LocalInstanceError(
                    f"{args[0]} failed (exit {result.returncode}): {output.read().strip()[-2000:]}",
                    hint="see the server log in the state directory; `local down` cleans up",
                )

    def start(
        self, scenario: str, *, host: str = "127.0.0.1", environment: Environment | None = None
    ) -> LocalInstance:
        """Create a fresh cluster, start it, set up the Cloud SQL roles and load a scenario,
        then start the emulated Admin API and proxy in front of it.

        `environment` names the emulated instance (project, region, instance, IAM users); by
        default the `local` environment of environments.toml.
        """
        from provision.local import scenarios

        scenarios.get(scenario)  # unknown names fail before anything is created
        existing = LocalInstance.load(self.state_dir)
        if existing is not None and existing.is_running():
            if existing.scenario == scenario:
                if existing.extra and all(emulator.running(self.state_dir).values()):
                    return existing
                # PostgreSQL survived but the emulator did not (or predates it): restart that part.
                emulator.stop(self.state_dir)
                return self._start_emulator(existing, environment)
            raise LocalInstanceError(
                f"an instance with scenario {existing.scenario!r} is already running from {self.state_dir}",
                hint="run `nucleus-provision local down` first, or pass another --state-dir",
            )
        if existing is not None:
            self._cleanup(existing)

        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o700)
        install = private_install()
        runtime = self._runtime_dir()
        shutil.rmtree(runtime, ignore_errors=True)
        runtime.mkdir(parents=True, mode=0o700)
        run_as = SERVICE_USER_WHEN_ROOT if _running_as_root() else None
        if run_as is not None:
            entry = pwd.getpwnam(run_as)
            os.chown(runtime, entry.pw_uid, entry.pw_gid)
        pgdata = runtime / "data"
        passwords = {
            user: secrets.token_urlsafe(18)
            for user in (BOOTSTRAP_SUPERUSER, ADMIN_USER, OWNER_USER)
        }

        pwfile = runtime / "pwfile"
        pwfile.write_text(passwords[BOOTSTRAP_SUPERUSER] + "\n")
        if run_as is not None:
            os.chown(pwfile, pwd.getpwnam(run_as).pw_uid, -1)
        pwfile.chmod(0o600)
        try:
            self._run(
                install,
                [
                    "initdb",
                    "-D",
                    str(pgdata),
                    "-U",
                    BOOTSTRAP_SUPERUSER,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                    "--no-sync",
                ],
                run_as,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        (pgdata / "pg_hba.conf").write_text(
            "# Cloud SQL emulation: passwords over TCP on loopback, nothing else.\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
        )
        with (pgdata / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# nucleus-provision local emulation\n"
                f"listen_addresses = '{host}'\n"
                "unix_socket_directories = ''\n"
                "password_encryption = 'scram-sha-256'\n"
                "max_connections = 200\n"
                "shared_buffers = 64MB\n"
                # A throwaway test server: durability is not needed, speed is.
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "log_min_messages = warning\n"
            )

        instance = LocalInstance(
            state_dir=str(self.state_dir),
            pgdata=str(pgdata),
            install=str(install),
            host=host,
            port=0,
            scenario=scenario,
            database=DATABASE,
            passwords=passwords,
            run_as=run_as,
        )
        for attempt in range(5):  # a free port can be taken between probing and binding
            port = _free_port(host)
            instance = LocalInstance(**{**asdict(instance), "port": port})
            try:
                self._run(
                    install,
                    [
                        "pg_ctl",
                        "-D",
                        str(pgdata),
                        "-l",
                        str(pgdata / "server.log"),
                        "-o",
                        f"-p {port}",
                        "-w",
                        "-t",
                        "60",
                        "start",
                    ],
                    run_as,
                    timeout=90,
                )
                break
            except LocalInstanceError:
                if attempt == 4:
                    self._cleanup(instance)
                    raise
        instance.save()
        try:
            _bootstrap_cloudsql(instance)
            scenarios.load(instance, scenario)
            return self._start_emulator(instance, environment)
        except BaseException:
            self._cleanup(instance)
            raise

    def _start_emulator(
        self, instance: LocalInstance, environment: Environment | None
    ) -> LocalInstance:
        state = emulator.start(instance, environment)
        instance = LocalInstance(**{**asdict(instance), "extra": state.summary()})
        instance.save()
        return instance

    def status(self) -> LocalInstance | None:
        return LocalInstance.load(self.state_dir)

    def stop(self) -> bool:
        """Stop the instance and delete its data. Returns False when nothing was running."""
        instance = LocalInstance.load(self.state_dir)
        if instance is None:
            return False
        self._cleanup(instance)
        return True

    def _cleanup(self, instance: LocalInstance) -> None:
        emulator.stop(instance.state_dir)
        pgdata = Path(instance.pgdata)
        if instance.is_running():
            try:
                self._run(
                    Path(instance.install),
                    ["pg_ctl", "-D", str(pgdata), "-m", "fast", "-w", "-t", "30", "stop"],
                    instance.run_as,
                    timeout=60,
                )
            except (LocalInstanceError, subprocess.TimeoutExpired):
                pid = instance.pid
                if pid is not None:
                    try:
                        os.kill(pid, signal.SIGQUIT)
                    except ProcessLookupError:
                        pass
                    deadline = time.monotonic() + 10
                    while instance.is_running() and time.monotonic() < deadline:
                        time.sleep(0.05)
        shutil.rmtree(pgdata.parent, ignore_errors=True)
        (Path(instance.state_dir) / STATE_FILE).unlink(missing_ok=True)


# The statements below run as the emulated `cloudsqladmin`: they are what Cloud SQL itself
# does when an instance is created and when users/databases are created through its API.
_CLOUDSQL_ROLES = f"""
CREATE ROLE {SUPERUSER_GROUP} NOLOGIN CREATEROLE CREATEDB;
CREATE ROLE {ADMIN_USER} LOGIN CREATEROLE CREATEDB NOSUPERUSER IN ROLE {SUPERUSER_GROUP};
"""


def api_create_user(conn, name: str, password: str) -> None:
    """What `google_sql_user` / `gcloud sql users create` do: a LOGIN member of cloudsqlsuperuser,
    created by cloudsqladmin (so `postgres` gets no ADMIN OPTION on it)."""
    from pg8000.native import identifier, literal

    conn.run(
        f"CREATE ROLE {identifier(name)} LOGIN CREATEROLE CREATEDB PASSWORD {literal(password)} IN ROLE {SUPERUSER_GROUP}"
    )


def api_create_database(conn, name: str) -> None:
    """What `google_sql_database` does: a database owned by cloudsqlsuperuser."""
    from pg8000.native import identifier

    conn.run(f"CREATE DATABASE {identifier(name)} OWNER {SUPERUSER_GROUP}")


def connect_as(
    instance: LocalInstance, user: str, database: str | None = None, timeout: float = 60
):
    """A direct pg8000 connection to the embedded server as one of its built-in users."""
    import pg8000.native

    return pg8000.native.Connection(
        user,
        host=instance.host,
        port=instance.port,
        database=database or instance.database,
        password=instance.passwords[user],
        timeout=timeout,
    )


def superuser_connection(instance: LocalInstance, database: str = "postgres"):
    """The emulated `cloudsqladmin`: what Cloud SQL itself does, never what the tool does."""
    return connect_as(instance, BOOTSTRAP_SUPERUSER, database, timeout=30)


def _bootstrap_cloudsql(instance: LocalInstance) -> None:
    from pg8000.native import identifier, literal

    conn = superuser_connection(instance)
    try:
        for statement in filter(None, (s.strip() for s in _CLOUDSQL_ROLES.split(";"))):
            conn.run(statement)
        conn.run(
            f"ALTER ROLE {identifier(ADMIN_USER)} PASSWORD {literal(instance.passwords[ADMIN_USER])}"
        )
        api_create_user(conn, OWNER_USER, instance.passwords[OWNER_USER])
    finally:
        conn.close()
