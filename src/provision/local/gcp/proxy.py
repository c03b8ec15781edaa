"""The emulated Cloud SQL server-side proxy: TLS 1.3 with client certificates on `<ip>:3307`.

Like Cloud SQL's, it requires a client certificate signed by the instance's client CA
(CERT_REQUIRED; the ephemeral certificates of the emulated Admin API are), presents a
certificate signed by the server CA, and then carries the PostgreSQL protocol unchanged to
the embedded PostgreSQL, which asks for the password (scram-sha-256) as Cloud SQL does for
built-in users. Each accepted connection is recorded with the certificate that was presented.

IAM database authentication. On Cloud SQL, a client logged in with `enable_iam_auth` sends
no password: the server trusts the OAuth token behind its ephemeral certificate. The
emulation reproduces that: the Admin API issues a certificate that names the service
account (an email SAN) only for a token the emulation knows, and when such a certificate
opens a session for that service account's database user, this proxy answers PostgreSQL's
SCRAM challenge itself with the role's internal password (kept in the emulator's `iam.json`,
never given to clients). The client sees AuthenticationOk without sending a password; without
such a certificate the role cannot log in at all, as with a real IAM user.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from cryptography import x509
from scramp import ScramClient

from provision.local.gcp import certs
from provision.local.gcp.state import EmulatorState, RecordLog, iam_users

COMPONENT = "proxy"
_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_PROTOCOL_3 = 196608
_MAX_STARTUP = 10_000
_UPSTREAM_TIMEOUT = 10.0
_HANDSHAKE_TIMEOUT = 10.0


class LoginRefused(Exception):
    """The proxy could not complete an IAM login; the client has been told why."""


def server_context(state: EmulatorState) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(state.path("proxy.pem"), state.path("proxy.key"))
    context.load_verify_locations(cafile=state.path("client-ca.pem"))
    return context


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def _error_response(code: str, text: str) -> bytes:
    fields = b"SFATAL\0VFATAL\0C" + code.encode() + b"\0M" + text.encode() + b"\0\0"
    return _message(b"E", fields)


async def _read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    header = await reader.readexactly(5)
    length = struct.unpack("!i", header[1:])[0]
    return header[:1], await reader.readexactly(length - 4)


async def _read_startup(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """The client's StartupMessage, after declining SSL/GSS encryption inside the tunnel (the
    tunnel is already TLS; pg8000 asks and carries on in plain text when told "N")."""
    while True:
        length = struct.unpack("!i", await reader.readexactly(4))[0]
        if not 8 <= length <= _MAX_STARTUP:
            raise ConnectionError(f"not a PostgreSQL startup packet (length {length})")
        body = await reader.readexactly(length - 4)
        code = struct.unpack("!i", body[:4])[0]
        if code in (_SSL_REQUEST, _GSSENC_REQUEST):
            writer.write(b"N")
            await writer.drain()
            continue
        return struct.pack("!i", length) + body


def _startup_params(startup: bytes) -> dict[str, str]:
    """user, database, application_name... of a StartupMessage (after length and version)."""
    if struct.unpack("!i", startup[4:8])[0] != _PROTOCOL_3:  # e.g. a CancelRequest
        return {}
    parts = startup[8:].split(b"\0")
    return {
        k.decode(errors="replace"): v.decode(errors="replace")
        for k, v in zip(parts[0::2], parts[1::2], strict=False)
        if k
    }


async def _login_for_iam_user(
    client_writer: asyncio.StreamWriter,
    upstream_reader: asyncio.StreamReader,
    upstream_writer: asyncio.StreamWriter,
    user: str,
    password: str,
) -> None:
    """Run PostgreSQL's authentication with the upstream server on the client's behalf,
    forwarding only the final AuthenticationOk (or the error) to the client."""
    scram: ScramClient | None = None
    while True:
        kind, body = await _read_message(upstream_reader)
        if kind == b"E":
            client_writer.write(_message(kind, body))
            raise LoginRefused("upstream refused the login")
        if kind != b"R":
            client_writer.write(
                _error_response("08P01", f"unexpected message {kind!r} during login")
            )
            raise LoginRefused("protocol error")
        code = struct.unpack("!i", body[:4])[0]
        if code == 0:  # AuthenticationOk
            client_writer.write(_message(kind, body))
            return
        if code == 10:  # AuthenticationSASL
            mechanisms = [m.decode() for m in body[4:].split(b"\0") if m]
            scram = ScramClient(mechanisms, user, password)
            first = scram.get_client_first().encode()
            mechanism = scram.mechanism_name.encode() + b"\0"
            upstream_writer.write(_message(b"p", mechanism + struct.pack("!i", len(first)) + first))
        elif code == 11 and scram is not None:  # AuthenticationSASLContinue
            scram.set_server_first(body[4:].decode())
            upstream_writer.write(_message(b"p", scram.get_client_final().encode()))
        elif code == 12 and scram is not None:  # AuthenticationSASLFinal
            scram.set_server_final(body[4:].decode())
        elif code == 3:  # AuthenticationCleartextPassword (a server not set up for SCRAM)
            upstream_writer.write(_message(b"p", password.encode() + b"\0"))
        else:
            client_writer.write(
                _error_response("28000", f"unsupported authentication request {code}")
            )
            raise LoginRefused(f"authentication request {code}")
        await upstream_writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


async def _splice(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    upstream_reader: asyncio.StreamReader,
    upstream_writer: asyncio.StreamWriter,
) -> None:
    """Copy both ways until either side closes, then stop the other direction too (a TLS
    stream cannot be half-closed, so waiting for both would leave sessions open)."""
    pipes = [
        asyncio.create_task(_pipe(client_reader, upstream_writer)),
        asyncio.create_task(_pipe(upstream_reader, client_writer)),
    ]
    try:
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pipe in pipes:
            pipe.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)


class Proxy:
    def __init__(self, state: EmulatorState, records: RecordLog) -> None:
        self.state = state
        self.records = records
        self.context = server_context(state)
        self.client_ca = state.keypair("client-ca").cert.subject.rfc4514_string()
        self.connections: set[asyncio.Task[Any]] = set()

    async def _accept(
        self, transport: asyncio.Transport
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """TLS on a fresh connection, as streams; None (and a record) when the client is refused.

        The handshake is run here rather than by `asyncio.start_server(ssl=...)`, which drops
        handshake failures silently: the records must show refused certificates too.
        """
        loop = asyncio.get_running_loop()
        peer = "{}:{}".format(*transport.get_extra_info("peername")[:2])
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            tls = await loop.start_tls(
                transport,
                protocol,
                self.context,
                server_side=True,
                ssl_handshake_timeout=_HANDSHAKE_TIMEOUT,
            )
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            self.records.write(COMPONENT, "handshake_failed", peer=peer, error=reason)
            transport.close()
            return None
        if tls is None:  # the client went away during the handshake
            transport.close()
            return None
        protocol.connection_made(tls)
        return reader, asyncio.StreamWriter(tls, protocol, reader, loop)

    async def handle(self, transport: asyncio.Transport) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        writer: asyncio.StreamWriter | None = None
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            accepted = await self._accept(transport)
            if accepted is None:
                return
            reader, writer = accepted
            ssl_object = writer.get_extra_info("ssl_object")
            cert = x509.load_der_x509_certificate(ssl_object.getpeercert(binary_form=True))
            described = certs.describe(cert)
            self.records.write(
                COMPONENT,
                "connection",
                peer="{}:{}".format(*writer.get_extra_info("peername")[:2]),
                tls_version=ssl_object.version(),
                client_cert=described,
                verified_by=self.client_ca,
            )
            try:
                upstream_reader, upstream = await asyncio.wait_for(
                    asyncio.open_connection(self.state.pg_host, self.state.pg_port),
                    _UPSTREAM_TIMEOUT,
                )
            except (OSError, TimeoutError) as exc:
                self.records.write(COMPONENT, "upstream_unreachable", error=str(exc))
                return
            upstream_writer = upstream  # closed in `finally`
            # The StartupMessage is read here (not just piped) to record who logs in, and
            # because an IAM login needs the user name.
            startup = await _read_startup(reader, writer)
            params = _startup_params(startup)
            self.records.write(
                COMPONENT, "startup", db_user=params.get("user"), database=params.get("database")
            )
            upstream.write(startup)
            iam_email = described["iam_user"]
            if isinstance(iam_email, str):
                user = iam_users(self.state.state_dir).get(iam_email)
                if user is not None and params.get("user") == user.db_user:
                    try:
                        await _login_for_iam_user(
                            writer, upstream_reader, upstream, user.db_user, user.password
                        )
                    except LoginRefused as exc:
                        self.records.write(
                            COMPONENT, "iam_login_refused", iam_user=iam_email, reason=str(exc)
                        )
                        await writer.drain()
                        return
                    self.records.write(
                        COMPONENT, "iam_login", iam_user=iam_email, db_user=user.db_user
                    )
            await _splice(reader, writer, upstream_reader, upstream)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            self.connections.discard(task)
            for stream in (writer, upstream_writer):
                if stream is not None:
                    stream.close()


class _HoldUntilTls(asyncio.Protocol):
    """Accepts a connection and stops reading at once, so that the client's TLS ClientHello
    stays in the socket for `loop.start_tls` instead of being read as plain data."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()
        asyncio.get_running_loop().create_task(self.proxy.handle(transport))


async def start(
    state: EmulatorState, sock: Any, records: RecordLog
) -> Callable[[], Awaitable[None]]:
    """Serve the proxy on the given listening socket; returns the coroutine that stops it."""
    proxy = Proxy(state, records)
    server = await asyncio.get_running_loop().create_server(lambda: _HoldUntilTls(proxy), sock=sock)

    async def close() -> None:
        server.close()
        for task in list(proxy.connections):
            task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 3)

    return close
