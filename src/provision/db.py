"""Database connections: SQLAlchemy engines over pg8000, with bounded timeouts and clear errors.

A `Target` names the two sessions a run may need: the admin session (`postgres`) and,
optionally, the owner session (`nucleus`). This module builds engines for plain DSNs;
Cloud SQL targets reached through the Cloud SQL Python Connector build theirs in
`provision.cloudsql` with the same shape.
"""

from __future__ import annotations

import os
import re
import socket
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pg8000.dbapi
import pg8000.legacy
import sqlalchemy
from sqlalchemy import Connection, Engine, event
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.postgresql.pg8000 import PGDialect_pg8000
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError

from provision.errors import ConfigError, ConnectionFailed, ProvisionError
from provision.sql import error_fields, server_message

DEFAULT_CONNECT_TIMEOUT = 10.0

# libpq's sslmode values a direct DSN may carry (`?sslmode=require`); `prefer` is libpq's
# default. `allow` (plain text first) is not offered.
SSL_MODES = ("disable", "prefer", "require", "verify-ca", "verify-full")
_SSL_REQUEST = struct.pack("!ii", 8, 80877103)  # PostgreSQL's SSLRequest message


class Pg8000Dialect(PGDialect_pg8000):
    """SQLAlchemy's pg8000 dialect, minus three of the four statements it sends when an engine
    first connects (`select pg_catalog.version()`, `select current_schema()`, `show
    standard_conforming_strings`): the server reports its version and
    standard_conforming_strings in the ParameterStatus messages of every login, which pg8000
    keeps, and the default schema only matters to reflection, which nothing here uses (it is
    taken to be `public`). The
    default isolation level is still read (`show transaction isolation level`): the server does
    not report it, and a database may change it."""

    # Nothing here changes how statements compile: SQLAlchemy's statement cache stays on.
    supports_statement_cache = True

    def _get_server_version_info(self, connection: Any) -> tuple[int, ...]:
        reported = connection.connection.dbapi_connection.parameter_statuses.get("server_version")
        found = re.match(r"(\d+)(?:\.(\d+))?", reported or "")
        if found is None:  # not reported (never seen from PostgreSQL): ask, as SQLAlchemy does
            version: tuple[int, ...] = super()._get_server_version_info(connection)  # type: ignore[no-untyped-call]
            return version
        return tuple(int(part) for part in found.groups() if part is not None)

    def _get_default_schema_name(self, connection: Any) -> str:
        # Only reflection reads it (nothing here reflects): PostgreSQL's own default.
        return "public"

    def _set_backslash_escapes(self, connection: Any) -> None:
        reported = connection.connection.dbapi_connection.parameter_statuses.get(
            "standard_conforming_strings"
        )
        if reported is None:
            super()._set_backslash_escapes(connection)  # type: ignore[no-untyped-call]
        else:
            self._backslash_escapes = reported == "off"


# Engines name it as their driver: "postgresql+nucleus_pg8000" (mask() shows it as pg8000).
DRIVER = "postgresql+nucleus_pg8000"
registry.register("postgresql.nucleus_pg8000", __name__, "Pg8000Dialect")


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


# The libpq parameters a DSN may carry here (and pg8000's unix_sock); SSL_MODES is above.
_QUERY_PARAMETERS = ("password", "sslmode", "sslrootcert", "unix_sock")


def _query_parameters(url: URL, usage: str) -> URL:
    """`?password=` (libpq's spelling) becomes the URL's password; `sslmode` and
    `sslrootcert` are checked here and honoured by `_open_socket` (libpq's semantics);
    anything else is refused by name (pg8000 would take it for a keyword argument and fail
    with a TypeError). No value is ever quoted: a password may be among them."""
    raw = dict(url.query.items())
    unknown = sorted(set(raw) - set(_QUERY_PARAMETERS))
    if unknown:
        raise ConfigError(
            f"the DSN has unsupported parameter(s) {', '.join(unknown)}",
            hint="supported: password, sslmode (" + ", ".join(SSL_MODES) + "), sslrootcert, "
            "unix_sock",
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
    if "sslrootcert" in query and not os.access(query["sslrootcert"], os.R_OK):
        raise ConfigError(
            "the DSN's sslrootcert cannot be read",
            hint="sslrootcert names a PEM file of the CA that signed the server's certificate",
        )
    return url.set(query={k: v for k, v in query.items() if k != "password"})


def mask(url: URL | str) -> str:
    """A URL safe to print: the password replaced by ***, wherever it was written."""
    if isinstance(url, str):
        try:
            url = make_url(url)
        except ArgumentError:
            return "<unparseable DSN>"
    if url.drivername == DRIVER:
        url = url.set(drivername="postgresql+pg8000")
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


def _tls_context(sslmode: str, rootcert: str | None) -> Any:
    import ssl

    if sslmode in ("verify-ca", "verify-full"):
        context = ssl.create_default_context(cafile=rootcert)
        context.check_hostname = sslmode == "verify-full"
        return context
    # prefer and require, as libpq: encrypted, the server's certificate not checked.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _open_socket(
    host: str, port: int, timeout: float | None, sslmode: str, rootcert: str | None
) -> socket.socket:
    """The connection's socket, with libpq's sslmode semantics, for pg8000 to log in over.

    pg8000 left to itself behaves as `prefer` but builds a TLS context (loading the system's
    CA store: about 20 ms) before it knows whether the server speaks TLS at all, and for
    nothing when it does not (a local server, a Cloud SQL Auth Proxy's local port). Here the
    SSLRequest is sent first and a context is built only when the server accepts it;
    `disable` sends no SSLRequest. Failures are pg8000's own InterfaceError, as pg8000 raises
    them, so that describe_connect_error words them the same."""
    try:
        sock = socket.create_connection((host, port), timeout)
    except OSError as exc:
        raise pg8000.dbapi.InterfaceError(
            f"Can't create a connection to host {host} and port {port} (timeout is {timeout})"
        ) from exc
    if sslmode == "disable":
        return sock
    try:
        sock.sendall(_SSL_REQUEST)
        accepted = sock.recv(1) == b"S"
        if accepted:
            wrapped: socket.socket = _tls_context(sslmode, rootcert).wrap_socket(
                sock, server_hostname=host
            )
            return wrapped
    except OSError as exc:
        sock.close()
        raise pg8000.dbapi.InterfaceError(f"TLS negotiation with {host}:{port} failed") from exc
    if sslmode != "prefer":
        sock.close()
        raise pg8000.dbapi.InterfaceError(
            f"the server at {host}:{port} does not accept TLS (sslmode={sslmode})"
        )
    return sock


def engine_for_dsn(dsn: str | URL, *, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> Engine:
    url = parse_dsn(dsn) if isinstance(dsn, str) else dsn
    sslmode = str(url.query.get("sslmode", "prefer"))
    rootcert = url.query.get("sslrootcert")
    engine = sqlalchemy.create_engine(
        url.difference_update_query(["sslmode", "sslrootcert"]).set(drivername=DRIVER),
        connect_args={"timeout": connect_timeout, "application_name": "nucleus-provision"},
        pool_pre_ping=False,
        poolclass=sqlalchemy.pool.NullPool,
    )

    def socket_first(
        _dialect: object, _record: object, cargs: list[Any], cparams: dict[str, Any]
    ) -> object:
        if cparams.get("unix_sock") is None:
            host, port = cparams.pop("host", "localhost"), int(cparams.pop("port", 5432))
            cparams["sock"] = _open_socket(
                host, port, connect_timeout, sslmode, str(rootcert) if rootcert else None
            )
        # The socket is already what sslmode asks for (a Unix socket never has TLS). The
        # module-level pg8000.connect SQLAlchemy calls takes no socket; its class does.
        return pg8000.legacy.Connection(*cargs, **cparams, ssl_context=False)

    event.listen(engine, "do_connect", socket_first)
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
    if "does not accept TLS" in text:
        return ConnectionFailed(
            f"{where}: cannot connect ({text})",
            hint="this server offers no TLS: use sslmode=prefer or disable for it, or reach the "
            "instance through the Cloud SQL Connector (--env NAME)",
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
