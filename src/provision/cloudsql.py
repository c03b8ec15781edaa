"""Connection layer for Cloud SQL targets: SQLAlchemy engines whose connections come from the
Cloud SQL Python Connector.

`target_for_environment("prod")` reads the environment from environments.toml and returns a
`provision.db.Target` with an admin engine (users.admin, `postgres`) and, when the owner's
credentials exist, an owner engine (users.owner, `nucleus`). Both engines draw their
connections from ONE `google.cloud.sql.connector.Connector` per run, through `creator=`, so
the instance metadata and the ephemeral certificate are fetched once and shared; NullPool
means every `engine.connect()` opens exactly one Connector connection and nothing lingers.
`Target.dispose()` closes the Connector.

The Connector runs on an event loop of our own, in a daemon thread, and every connection
attempt is bounded by `connect_timeout`: the Connector itself puts no limit on the Admin API
calls or on the TLS handshake with the server proxy, so a dead or hung endpoint would
otherwise block the run. Every failure becomes one `ConnectionFailed` / `CredentialsMissing`
line that says what to fix; the Connector's own log output (tracebacks at ERROR level) is
kept out of the terminal unless logging is configured.

An environment with a connector plug-in (`connector = "local"`: the local emulation, see
`provision.connector_plugin`) gets its Admin API endpoint, Google credentials and passwords
from the plug-in's `ConnectorOverrides`; the Connector is the same, only given
`sqladmin_api_endpoint` and those credentials, and Secret Manager is never asked.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import os
import re
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy
from sqlalchemy import Engine
from sqlalchemy.engine import URL

from provision import __version__, credentials, db
from provision.config import Environment, load_environment
from provision.connector_plugin import ConnectorOverrides, overrides_for
from provision.errors import (
    ConnectionFailed,
    CredentialsMissing,
    InstanceAbsent,
    ProvisionError,
)
from provision.sql import error_fields

if TYPE_CHECKING:
    import google.auth.credentials
    from google.cloud.sql.connector import Connector

logger = logging.getLogger(__name__)
# The Connector logs failed certificate refreshes with a traceback at ERROR level; without a
# handler Python would print them to stderr next to our one-line error. Records still reach
# handlers configured by the application (e.g. for --debug).
logging.getLogger("google.cloud.sql.connector").addHandler(logging.NullHandler())

_CLOSE_TIMEOUT = 5.0
_PROBE_TIMEOUT = 0.5
_REGION_MISMATCH = re.compile(r"got region (\S+), expected (\S+?)\.?$")


class _DaemonThreadExecutor(concurrent.futures.ThreadPoolExecutor):
    """Runs each job on a fresh daemon thread.

    The Connector hands pg8000's blocking login to the loop's default executor. If a server
    never answers, that thread blocks forever; ThreadPoolExecutor's workers are joined at
    interpreter exit, so a timed-out run could never end. Daemon threads do not hold it up.
    """

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # handed to whoever waits on the future
                future.set_exception(exc)

        threading.Thread(target=run, name="cloudsql-connector-io", daemon=True).start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        return None


def _loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # E.g. "Task exception was never retrieved" for a refresh that failed after we gave up.
    logger.debug(
        "Connector event loop: %s", context.get("message"), exc_info=context.get("exception")
    )


class ConnectorSession:
    """One Cloud SQL Python Connector for one run, on an event loop of its own.

    Only public API of the Connector is used: `create_async_connector`, `connect_async`
    and `close_async`, run on our loop so that we can put a deadline on each of them.
    """

    def __init__(
        self,
        *,
        google_credentials: google.auth.credentials.Credentials,
        ip_type: str,
        lazy_refresh: bool,
        connect_timeout: float,
        sqladmin_api_endpoint: str | None = None,
    ) -> None:
        from google.cloud.sql.connector import create_async_connector

        self.connect_timeout = connect_timeout
        self.sqladmin_api_endpoint = sqladmin_api_endpoint
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._loop.set_default_executor(_DaemonThreadExecutor())
        self._loop.set_exception_handler(_loop_exception)
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="cloudsql-connector", daemon=True
        )
        self._thread.start()
        try:
            self.connector: Connector = asyncio.run_coroutine_threadsafe(
                create_async_connector(
                    ip_type=ip_type,
                    credentials=google_credentials,
                    sqladmin_api_endpoint=sqladmin_api_endpoint,
                    refresh_strategy="lazy" if lazy_refresh else "background",
                    # The Connector passes this to the driver as its timeout; ours bounds the rest.
                    timeout=max(1, math.ceil(connect_timeout)),
                    user_agent=f"nucleus-provision/{__version__}",
                ),
                self._loop,
            ).result(connect_timeout)
        except BaseException:
            self._stop_loop()
            raise

    def connect(self, connection_name: str, login: credentials.Login, database: str) -> Any:
        """A pg8000 DB-API connection through the Connector, or the Connector's exception.

        Raises TimeoutError when the deadline passes first."""
        future = asyncio.run_coroutine_threadsafe(
            self.connector.connect_async(
                connection_name,
                "pg8000",
                user=login.user,
                password=login.password,
                db=database,
                enable_iam_auth=login.iam,
                application_name="nucleus-provision",
            ),
            self._loop,
        )
        try:
            connection = future.result(self.connect_timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no connection within {self.connect_timeout:g}s") from None
        return connection

    def close(self) -> None:
        """Close the Connector (its HTTP session and refresh tasks) and stop the loop. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if not self._responsive():
            # The Connector does its TLS handshake with a blocking socket on the loop's thread,
            # so a hung server proxy wedges the loop: nothing can run there any more. Leave it;
            # it is a daemon thread and ends with the process.
            logger.debug("the Connector's event loop is blocked; not waiting for it")
            return
        try:
            asyncio.run_coroutine_threadsafe(self._close_async(), self._loop).result(_CLOSE_TIMEOUT)
        except Exception as exc:
            logger.debug("closing the Connector: %r", exc)
        self._stop_loop()

    def _responsive(self) -> bool:
        try:
            asyncio.run_coroutine_threadsafe(asyncio.sleep(0), self._loop).result(_PROBE_TIMEOUT)
        except (concurrent.futures.TimeoutError, RuntimeError):
            return False
        return True

    async def _close_async(self) -> None:
        await self.connector.close_async()
        # Whatever the Connector left scheduled would be reported as "destroyed but pending".
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_CLOSE_TIMEOUT)
        if not self._thread.is_alive():
            self._loop.close()


# -- errors -----------------------------------------------------------------------------------


def describe_connector_error(
    exc: BaseException,
    *,
    where: str,
    login: credentials.Login,
    environment: Environment,
    session: ConnectorSession,
    overrides: ConnectorOverrides | None = None,
) -> ProvisionError:
    """One clear line for a failed Connector connection (never with a password or token).

    With a connector plug-in, its `unreachable_hint` replaces the hints about Google's side
    for whatever did not answer."""
    import aiohttp
    import pg8000.exceptions
    from google.auth.exceptions import GoogleAuthError
    from google.cloud.sql.connector.exceptions import CloudSQLIPTypeError

    api = session.sqladmin_api_endpoint or "sqladmin.googleapis.com"
    section = f"[environments.{environment.name}] in environments.toml"
    unreachable = overrides.unreachable_hint if overrides is not None else None

    if isinstance(exc, TimeoutError):
        return ConnectionFailed(
            f"{where}: {exc} through the Cloud SQL Connector (Admin API {api}, then the instance's "
            "server proxy on port 3307)",
            hint=unreachable
            or "check that the Admin API and the instance's address are reachable from here",
        )
    if isinstance(exc, aiohttp.ClientResponseError):
        detail = exc.message or "no details"
        if exc.status == 404:
            served = (
                f"; {overrides.label} serves {', '.join(overrides.serves)}"
                if overrides is not None and overrides.serves
                else ""
            )
            return InstanceAbsent(
                f"{where}: the Cloud SQL Admin API does not know this instance (404: {detail})",
                hint=f"check project, region and instance in {section}{served}",
            )
        if exc.status == 401:
            return CredentialsMissing(
                f"{where}: the Cloud SQL Admin API rejected the Google credentials (401: {detail})",
                hint=unreachable
                or "run `gcloud auth application-default login` or check GOOGLE_APPLICATION_CREDENTIALS",
            )
        if exc.status == 403:
            return ConnectionFailed(
                f"{where}: not allowed to connect (403: {detail})",
                hint="grant roles/cloudsql.client to the caller (and roles/cloudsql.instanceUser for IAM logins)",
            )
        return ConnectionFailed(
            f"{where}: the Cloud SQL Admin API answered {exc.status} ({detail})"
        )
    if isinstance(exc, aiohttp.ClientError):
        return ConnectionFailed(
            f"{where}: cannot reach the Cloud SQL Admin API at {api} ({_reason(exc)})",
            hint=unreachable
            or "check the network path to sqladmin.googleapis.com (proxy, firewall)",
        )
    if isinstance(exc, ValueError) and "region was mismatched" in str(exc):
        match = _REGION_MISMATCH.search(str(exc))
        if match:
            got, expected = match.groups()
            return ConnectionFailed(
                f"{where}: region mismatch: environments.toml says {got}, the instance is in {expected}",
                hint=f'set region = "{expected}" in {section}',
            )
        return ConnectionFailed(
            f"{where}: region mismatch ({exc})", hint=f"check region in {section}"
        )
    if isinstance(exc, CloudSQLIPTypeError):
        return ConnectionFailed(
            f"{where}: the instance has no {environment.ip_type.value} IP address",
            hint=f"set ip_type in {section} to one the instance has (public, private, psc)",
        )
    if isinstance(exc, GoogleAuthError):
        return CredentialsMissing(
            f"{where}: the Google credentials could not be used ({type(exc).__name__})",
            hint="run `gcloud auth application-default login` or check GOOGLE_APPLICATION_CREDENTIALS",
        )
    if isinstance(exc, pg8000.exceptions.Error):
        described = db.describe_connect_error(exc, where)
        fields = error_fields(exc)
        if fields.get("C") in ("28P01", "28000"):
            if login.iam:
                hint = f"check that {login.user} has an IAM database user on the instance and roles/cloudsql.instanceUser"
            else:
                hint = f"check the password from {login.source}"
            return ConnectionFailed(described.message, hint=hint)
        if not fields and unreachable is not None:
            return ConnectionFailed(described.message, hint=unreachable)
        return described
    if isinstance(exc, ssl.SSLError):
        return ConnectionFailed(
            f"{where}: TLS handshake with the instance's server proxy failed ({exc.reason or exc})",
            hint=unreachable
            or "the instance's server CA or the ephemeral certificate was refused; retry",
        )
    if isinstance(exc, OSError):
        return ConnectionFailed(
            f"{where}: cannot reach the instance's server proxy on port 3307 ({exc.strerror or exc})",
            hint=unreachable
            or f"check that the instance's {environment.ip_type.value} address is reachable from here",
        )
    if login.password is None and isinstance(exc, AttributeError):
        # pg8000 trips over the missing password when the server asks an IAM login for one.
        return ConnectionFailed(
            f"{where}: the server asked for a password, but this is an IAM login (it has none)",
            hint="check that the instance has iam_auth = true and an IAM database user for "
            f"{login.user} (iam_users in environments.toml)",
        )
    return ConnectionFailed(f"{where}: {type(exc).__name__}: {exc}")


def _reason(exc: BaseException) -> str:
    cause = getattr(exc, "os_error", None) or exc.__cause__
    if isinstance(cause, OSError) and cause.errno:
        return os.strerror(cause.errno)
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return str(exc) or type(exc).__name__


# -- engines and targets ----------------------------------------------------------------------


def _engine(
    session: ConnectorSession,
    environment: Environment,
    login: credentials.Login,
    overrides: ConnectorOverrides | None,
) -> Engine:
    where = f"{environment.connection_name} as {login.user}"

    def creator() -> Any:
        try:
            return session.connect(environment.connection_name, login, environment.database)
        except ProvisionError:
            raise
        except Exception as exc:
            raise describe_connector_error(
                exc,
                where=where,
                login=login,
                environment=environment,
                session=session,
                overrides=overrides,
            ) from None

    # The URL only names the role and the database (for messages and introspection); the
    # connection itself comes from the creator, and no password is ever put in it.
    url = URL.create(db.DRIVER, username=login.user, database=environment.database)
    return sqlalchemy.create_engine(url, creator=creator, poolclass=sqlalchemy.pool.NullPool)


def login_engine(
    environment: Environment,
    login: credentials.Login,
    *,
    overrides: ConnectorOverrides,
    connect_timeout: float = db.DEFAULT_CONNECT_TIMEOUT,
) -> tuple[Engine, Callable[[], None]]:
    """An engine logging in as `login` through the Connector with a plug-in's overrides, and
    the function that closes both (`local connect --as`: one identity, its own token)."""
    session = ConnectorSession(
        google_credentials=overrides.google_credentials,
        ip_type=environment.ip_type.value,
        lazy_refresh=environment.lazy_refresh,
        connect_timeout=connect_timeout,
        sqladmin_api_endpoint=overrides.sqladmin_api_endpoint,
    )
    try:
        engine = _engine(session, environment, login, overrides)
    except BaseException:
        session.close()
        raise

    def close() -> None:
        engine.dispose()
        session.close()

    return engine, close


def prove_login(
    environment: Environment,
    login: credentials.Login,
    *,
    overrides: ConnectorOverrides | None = None,
    connect_timeout: float = db.DEFAULT_CONNECT_TIMEOUT,
) -> None:
    """Log in once as `login` through the Connector and run `SELECT 1` (rotate proves a new
    password before any reader can see it), or raise the connection's one-line error."""
    google_credentials = (
        overrides.google_credentials
        if overrides is not None
        else credentials.application_default_credentials()
    )
    session = ConnectorSession(
        google_credentials=google_credentials,
        ip_type=environment.ip_type.value,
        lazy_refresh=environment.lazy_refresh,
        connect_timeout=connect_timeout,
        sqladmin_api_endpoint=overrides.sqladmin_api_endpoint if overrides is not None else None,
    )
    try:
        engine = _engine(session, environment, login, overrides)
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT 1"))
        finally:
            engine.dispose()
    finally:
        session.close()


def target_for(
    environment: Environment,
    *,
    connect_timeout: float = db.DEFAULT_CONNECT_TIMEOUT,
    secrets: credentials.SecretReader | None = None,
    overrides: ConnectorOverrides | None = None,
) -> db.Target:
    """The Target of an environment already loaded (see `target_for_environment`).

    `secrets` replaces the Secret Manager reader (tests). `overrides` are what a connector
    plug-in hands over; by default those of the environment's `connector`, if it names one.
    """
    if overrides is None:
        overrides = overrides_for(environment)
    injected = secrets
    own_reader = None
    if overrides is not None:
        google_credentials = overrides.google_credentials
        endpoint: str | None = overrides.sqladmin_api_endpoint
        secrets = None  # the plug-in's passwords or the variables: never Secret Manager
    else:
        google_credentials = credentials.application_default_credentials()
        endpoint = None
        if secrets is None:
            secrets = own_reader = credentials.SecretStore(google_credentials)

    owner_login: credentials.Login | None = None
    owner_unavailable: str | None = None
    try:
        admin_login = credentials.login_for(
            environment, "admin", secrets=secrets, overrides=overrides
        )
        try:
            owner_login = credentials.login_for(
                environment, "owner", secrets=secrets, overrides=overrides
            )
        except CredentialsMissing as exc:
            # Not an error yet: only runs that hand objects over or run migrations need the owner.
            owner_unavailable = f"{exc.message} (hint: {exc.hint})" if exc.hint else exc.message
    finally:
        if own_reader is not None:
            own_reader.close()

    session = ConnectorSession(
        google_credentials=google_credentials,
        ip_type=environment.ip_type.value,
        lazy_refresh=environment.lazy_refresh,
        connect_timeout=connect_timeout,
        sqladmin_api_endpoint=endpoint,
    )
    try:
        admin = _engine(session, environment, admin_login, overrides)
        owner = _engine(session, environment, owner_login, overrides) if owner_login else None
    except BaseException:
        session.close()
        raise
    via = f", {overrides.label}, Admin API {endpoint}" if overrides is not None else ""
    return db.Target(
        admin=admin,
        owner=owner,
        description=(
            f"Cloud SQL {environment.connection_name}/{environment.database} "
            f"via the Cloud SQL Python Connector ({environment.ip_type.value} IP{via})"
        ),
        closers=[session.close],
        owner_unavailable=owner_unavailable,
        # Cloud SQL names an IAM service account's database role after the email, less its domain.
        admin_role=admin_login.user.removesuffix(".gserviceaccount.com")
        if admin_login.iam
        else None,
        app_password=credentials.app_password_source(
            environment, secrets=injected if overrides is None else None, overrides=overrides
        ),
    )


def target_for_environment(
    env_name: str,
    config_path: str | None = None,
    *,
    connect_timeout: float = db.DEFAULT_CONNECT_TIMEOUT,
    state_dir: Path | None = None,
) -> db.Target:
    """The Target for `--env NAME`: admin and owner engines over one Cloud SQL Connector.

    `state_dir` is handed to the environment's connector plug-in, if it has one (where its
    state lives; the demo names its own emulation's)."""
    environment = load_environment(env_name, config_path)
    return target_for(
        environment,
        connect_timeout=connect_timeout,
        overrides=overrides_for(environment, state_dir=state_dir),
    )
