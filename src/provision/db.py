"""Database connections: SQLAlchemy engines over pg8000, with bounded timeouts and clear errors.

A `Target` names the two sessions a run may need: the admin session (`postgres`) and,
optionally, the owner session (`nucleus`). This module builds engines for plain DSNs;
Cloud SQL targets reached through the Cloud SQL Python Connector build theirs in
`provision.cloudsql` with the same shape.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import sqlalchemy
from sqlalchemy import Connection, Engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError

from provision.errors import ConfigError, ConnectionFailed, ProvisionError
from provision.sql import error_fields, server_message

DEFAULT_CONNECT_TIMEOUT = 10.0


def _check_shape(dsn: str, usage: str) -> None:
    """Refuse, before any parser guesses, a DSN whose password was not percent-encoded: an
    unencoded `@`, `/`, `?` or `#` would make a parser take part of the password for the host
    (which is then looked up in DNS and printed) or the database. Nothing of the DSN is quoted
    in the message."""
    _scheme, sep, rest = dsn.partition("://")
    if not sep:
        raise ConfigError("the DSN is not a URL", hint=usage)
    if "#" in rest:
        raise ConfigError("the DSN contains '#' (unencoded in the password?)", hint=usage)
    authority, _, tail = rest.partition("/")
    path = tail.partition("?")[0]
    if authority.count("@") > 1 or "@" in tail or ("/" in path):
        raise ConfigError(
            "the DSN has an unencoded '@' or '/' in its password (or a malformed database)",
            hint=usage,
        )


def parse_dsn(dsn: str) -> URL:
    """`postgresql://user:password@host:port/db` (or with +pg8000) as a SQLAlchemy URL for pg8000."""
    usage = (
        "use postgresql://USER:PASSWORD@HOST:PORT/DATABASE, percent-encoding special characters "
        "in the password (@ as %40, / as %2F, # as %23, ? as %3F)"
    )
    _check_shape(dsn, usage)
    try:
        url = make_url(dsn)
        url.port  # noqa: B018 - a non-numeric port raises here
    except (ArgumentError, ValueError):
        raise ConfigError("the DSN is not a valid URL", hint=usage) from None
    if url.host and "@" in url.host:
        # An unencoded @ in the password: part of it would be taken for the host (and printed).
        raise ConfigError("the DSN has an unencoded '@' in its password", hint=usage)
    url = _query_parameters(url, usage)
    if url.get_backend_name() not in ("postgresql", "postgres"):
        raise ConfigError(
            f"unsupported DSN scheme {url.drivername!r}",
            hint="use postgresql://USER:PASSWORD@HOST:PORT/DATABASE",
        )
    if not url.username or not url.database or url.password is None:
        raise ConfigError(
            f"the DSN {mask(url)} lacks a user, a password or a database",
            hint=usage + " (Cloud SQL requires a password for built-in users)",
        )
    return url.set(drivername="postgresql+pg8000")


# The libpq parameters a DSN may carry here, and the sslmode values pg8000 can honour.
SSL_MODES = ("disable", "require", "verify-ca", "verify-full")
_QUERY_PARAMETERS = ("password", "sslmode", "sslrootcert")


def _query_parameters(url: URL, usage: str) -> URL:
    """`?password=` (libpq's spelling) becomes the URL's password; `sslmode` and
    `sslrootcert` are checked here and turned into pg8000's ssl_context by `engine_for_dsn`;
    anything else is refused by name (pg8000 would take it for a keyword argument and fail
    with a TypeError). No value is ever quoted: a password may be among them."""
    raw = dict(url.query.items())
    unknown = sorted(set(raw) - set(_QUERY_PARAMETERS))
    if unknown:
        raise ConfigError(
            f"the DSN has unsupported parameter(s) {', '.join(unknown)}",
            hint="supported: password, sslmode (" + ", ".join(SSL_MODES) + "), sslrootcert",
        )
    if any(not isinstance(value, str) for value in raw.values()):
        raise ConfigError("the DSN repeats a parameter", hint=usage)
    query = {key: str(value) for key, value in raw.items()}
    if "password" in query:
        if url.password is not None:
            raise ConfigError(
                "the DSN has two passwords (before the @ and in ?password=)", hint=usage
            )
        url = url.set(password=query["password"])
    mode = query.get("sslmode")
    if mode is not None and mode not in SSL_MODES:
        raise ConfigError(
            f"the DSN's sslmode {mode!r} is not supported",
            hint="use one of: " + ", ".join(SSL_MODES),
        )
    if "sslrootcert" in query and mode not in ("verify-ca", "verify-full"):
        raise ConfigError(
            "the DSN's sslrootcert needs sslmode=verify-ca or verify-full", hint=usage
        )
    return url.set(query={k: v for k, v in query.items() if k != "password"})


def _ssl_context(url: URL) -> ssl.SSLContext | None:
    """pg8000's ssl_context for the DSN's sslmode: require encrypts without checking the
    server (as libpq's require), verify-ca checks the chain, verify-full the name too."""
    mode = url.query.get("sslmode")
    if mode in (None, "disable"):
        return None
    root = url.query.get("sslrootcert")
    if mode == "require":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        context = ssl.create_default_context(cafile=str(root) if root else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"the DSN's sslrootcert cannot be read ({exc.__class__.__name__})",
            hint="sslrootcert names a PEM file of the CA that signed the server's certificate",
        ) from None
    context.check_hostname = mode == "verify-full"
    return context


def mask(url: URL | str) -> str:
    """A URL safe to print: the password replaced by ***, wherever it was written."""
    if isinstance(url, str):
        try:
            url = make_url(url)
        except ArgumentError:
            return "<unparseable DSN>"
    if "password" in url.query:
        url = url.set(query={k: v for k, v in url.query.items() if k != "password"})
    return url.render_as_string(hide_password=True)


def _unblock_after_connect(dbapi_connection: object, _record: object) -> None:
    # pg8000 applies its `timeout` to connecting *and* to every later read on the socket. We
    # want the bound on connecting (an unreachable host must fail fast) but not on statements
    # (a migration may legitimately run long; PostgreSQL's statement_timeout bounds those).
    sock = getattr(dbapi_connection, "_usock", None)
    if isinstance(sock, socket.socket):
        sock.settimeout(None)


def engine_for_dsn(dsn: str | URL, *, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> Engine:
    url = parse_dsn(dsn) if isinstance(dsn, str) else dsn
    connect_args: dict[str, object] = {
        "timeout": connect_timeout,
        "application_name": "nucleus-provision",
    }
    context = _ssl_context(url)
    if context is not None:
        connect_args["ssl_context"] = context
    # The query's parameters are ours (checked in parse_dsn), never pg8000 keyword arguments.
    url = url.set(query={})
    engine = sqlalchemy.create_engine(
        url,
        connect_args=connect_args,
        pool_pre_ping=False,
        poolclass=sqlalchemy.pool.NullPool,
    )
    event.listen(engine, "connect", _unblock_after_connect)
    return engine


def describe_connect_error(exc: BaseException, where: str) -> ConnectionFailed:
    """Turn a driver error into one clear line (never with the password)."""
    original = getattr(exc, "orig", exc)
    fields = error_fields(exc)
    if fields:
        code, message = fields.get("C"), fields.get("M", "")
        if code == "28P01":
            return ConnectionFailed(
                f"{where}: password authentication failed for user {_user_in(message)}",
                hint="check the password (environment variable or Secret Manager secret)",
            )
        if code == "3D000":
            return ConnectionFailed(
                f"{where}: {message}", hint="check the database name in the DSN or environment"
            )
        if code == "28000":
            return ConnectionFailed(
                f"{where}: {message}", hint="check that the user exists and may log in"
            )
        return ConnectionFailed(f"{where}: {server_message(exc)}")
    text = str(original)
    if (
        isinstance(original, TimeoutError)
        or "timed out" in text
        or isinstance(getattr(original, "__cause__", None), TimeoutError)
    ):
        return ConnectionFailed(
            f"{where}: timed out connecting", hint="check the host, port and network path"
        )
    cause = original.__cause__
    reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else text
    return ConnectionFailed(
        f"{where}: cannot connect ({reason})",
        hint="check the host and port, and that the server runs",
    )


def _user_in(message: str) -> str:
    return message.rsplit(" ", 1)[-1] if message else "?"


@contextmanager
def connect(engine: Engine, where: str) -> Iterator[Connection]:
    """A connection whose failures become ProvisionErrors: at connect time ConnectionFailed,
    later a lost connection or a failing statement that no step handled itself."""
    try:
        conn = engine.connect()
    except (OperationalError, InterfaceError, DBAPIError, OSError) as exc:
        # OSError: pg8000 lets a socket timeout during its startup handshake through unwrapped.
        raise describe_connect_error(exc, where) from None
    try:
        yield conn
    except (OperationalError, InterfaceError) as exc:
        raise ConnectionFailed(
            f"{where}: the connection was lost ({first_line(exc)})",
            hint="run again: every step is a transaction of its own",
        ) from None
    except DBAPIError as exc:
        raise ProvisionError(f"{where}: {server_message(exc)}") from None
    finally:
        conn.close()


def first_line(exc: BaseException) -> str:
    return str(getattr(exc, "orig", exc)).splitlines()[0][:200]


@dataclass
class Target:
    """Where a run goes: the admin engine and, if given, the owner engine.

    `closers` release what the engines share (the Cloud SQL Connector of a `--env` target);
    they run once, after the engines are disposed. `owner_unavailable` says why there is no
    owner engine, when the environment has no credentials for the owner.
    """

    admin: Engine
    owner: Engine | None
    description: str
    closers: list[Callable[[], None]] = field(default_factory=list)
    owner_unavailable: str | None = None
    # The role the admin session logs in as when it is not the layout's admin (an IAM login).
    admin_role: str | None = None
    # The app login's password (users.app), asked only when apply must create the login; it
    # raises CredentialsMissing naming where it looked.
    app_password: Callable[[], str] | None = None

    def dispose(self) -> None:
        self.admin.dispose()
        if self.owner is not None:
            self.owner.dispose()
        while self.closers:
            self.closers.pop()()
