"""The PostgreSQL process of the emulation: PostgreSQL 16 + pgvector from the `pgserver` wheel,
run from a private installation tree, created with initdb and started and stopped with pg_ctl.

What is Cloud-SQL-like at this level (shared/docs/cloudsql.md, sections 1 and 3):

- the cluster's bootstrap superuser is `cloudsqladmin`, which no customer connection uses;
- every connection needs a password (scram-sha-256), over TCP on loopback only;
- `vector` is a trusted extension: the server runs from a private copy of the installation
  tree whose `vector.control` says `trusted = true` (Cloud SQL's allow-list).

PostgreSQL refuses to run as root, so under root the server runs as the unprivileged user
`nobody` from a directory that user can reach (under the system temp dir).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import platformdirs

from provision.errors import LocalInstanceError
from provision.local.instance import BOOTSTRAP_SUPERUSER, STATE_FILE, LocalInstance

SERVICE_USER_WHEN_ROOT = "nobody"
EMULATION_EXTRA_HINT = "pip install 'nucleus-provision[emulation]'"
# Marks the private installation tree as ours and patched; bump when the patch changes.
_INSTALL_PATCH_VERSION = "1"
_PORT_ATTEMPTS = 5


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
            "the pgserver package (PostgreSQL 16 + pgvector) is not installed",
            hint=EMULATION_EXTRA_HINT,
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
        port: int = sock.getsockname()[1]
        return port


def _runtime_dir(state_dir: Path) -> Path:
    if not _running_as_root():
        return state_dir / "pg"
    digest = hashlib.sha256(str(state_dir).encode()).hexdigest()[:12]
    return _shared_base() / f"instance-{digest}"


def _run(install: Path, args: list[str], run_as: str | None, timeout: float = 60) -> None:
    """Run one of the installation's programs (initdb, pg_ctl), as `run_as` when given."""
    user: int | None = None
    group: int | None = None
    extra_groups: list[int] | None = None
    if run_as is not None:
        entry = pwd.getpwnam(run_as)
        user, group, extra_groups = entry.pw_uid, entry.pw_gid, []
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
            user=user,
            group=group,
            extra_groups=extra_groups,
        )
        if result.returncode != 0:
            output.seek(0)
            raise LocalInstanceError(
                f"{args[0]} failed (exit {result.returncode}): {output.read().strip()[-2000:]}",
                hint="see the server log in the state directory; `local down` cleans up",
            )


def _initdb(install: Path, pgdata: Path, superuser_password: str, run_as: str | None) -> None:
    runtime = pgdata.parent
    pwfile = runtime / "pwfile"
    pwfile.write_text(superuser_password + "\n")
    if run_as is not None:
        os.chown(pwfile, pwd.getpwnam(run_as).pw_uid, -1)
    pwfile.chmod(0o600)
    try:
        _run(
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


def _configure(pgdata: Path, host: str) -> None:
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
            # Cloud SQL's CIS flag of prod: every DDL statement is logged, so a password sent
            # in clear (CREATE/ALTER ROLE ... PASSWORD) would land here; tests check it never does.
            "log_statement = 'ddl'\n"
        )


def start(
    state_dir: Path,
    *,
    host: str,
    scenario: str,
    database: str,
    passwords: dict[str, str],
) -> LocalInstance:
    """Create a fresh cluster for `state_dir` and start it on a free port of `host`.

    The cluster's only role is the bootstrap superuser, with `passwords[BOOTSTRAP_SUPERUSER]`;
    the returned instance (also saved) carries every password given, for the layers above.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o700)
    install = private_install()
    runtime = _runtime_dir(state_dir)
    shutil.rmtree(runtime, ignore_errors=True)
    runtime.mkdir(parents=True, mode=0o700)
    run_as = SERVICE_USER_WHEN_ROOT if _running_as_root() else None
    if run_as is not None:
        entry = pwd.getpwnam(run_as)
        os.chown(runtime, entry.pw_uid, entry.pw_gid)
    pgdata = runtime / "data"
    _initdb(install, pgdata, passwords[BOOTSTRAP_SUPERUSER], run_as)
    _configure(pgdata, host)

    instance = LocalInstance(
        state_dir=str(state_dir),
        pgdata=str(pgdata),
        install=str(install),
        host=host,
        port=0,
        scenario=scenario,
        database=database,
        passwords=passwords,
        run_as=run_as,
    )
    for attempt in range(_PORT_ATTEMPTS):  # a free port can be taken between probing and binding
        instance = dataclasses.replace(instance, port=_free_port(host))
        # Saved before the server starts: whatever happens next (a timeout, an interrupt),
        # `local down` finds what may be running and stops it.
        instance.save()
        try:
            _run(
                install,
                [
                    "pg_ctl",
                    "-D",
                    str(pgdata),
                    "-l",
                    str(pgdata / "server.log"),
                    "-o",
                    f"-p {instance.port}",
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
            if attempt == _PORT_ATTEMPTS - 1:
                stop(instance)
                raise
        except BaseException:
            stop(instance)  # a timeout or an interrupt: nothing may be left running
            raise
    return instance


def stop(instance: LocalInstance) -> None:
    """Stop the server (fast shutdown, else SIGQUIT) and delete its data and state file."""
    pgdata = Path(instance.pgdata)
    if instance.is_running():
        try:
            _run(
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
