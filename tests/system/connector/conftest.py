"""Fixtures of the connector tests: local Cloud SQL emulations and a fake Secret Manager.

Each emulation is started the way `local up` starts one (`Server(dir).start(...)`: embedded
PostgreSQL plus the emulated Admin API and mTLS proxy as daemons) in a temporary state
directory, and stopped at the end. `emulation` is shared by the tests that only read;
`fragile_emulation` is for the tests that take parts of it down, and brings them back
after each test.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from connector_support import SCENARIO, Emulation, iam_environment

from provision.config import Environment
from provision.local.gcp import emulator
from provision.local.server import Server


def _start(state_dir: Path, environment: Environment | None = None) -> Iterator[Emulation]:
    server = Server(state_dir)
    instance = server.start(SCENARIO, environment=environment)
    try:
        yield Emulation(instance)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def emulation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulation]:
    """A running emulation of the `local` environment, with one IAM service account."""
    yield from _start(tmp_path_factory.mktemp("emulation"), iam_environment())


@pytest.fixture(scope="module")
def _fragile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulation]:
    yield from _start(tmp_path_factory.mktemp("fragile"))


@pytest.fixture
def fragile_emulation(_fragile: Emulation) -> Iterator[Emulation]:
    """An emulation a test may break; any stopped part is started again afterwards."""
    yield _fragile
    state = _fragile.state
    for pid in state.pids.values():
        try:
            os.kill(pid, signal.SIGCONT)  # for a test that froze a daemon
        except ProcessLookupError:
            pass
    if not all(emulator.running(_fragile.state_dir).values()):
        Server(_fragile.state_dir).start(SCENARIO)


# -- a fake Secret Manager --------------------------------------------------------------------


@dataclass
class FakeSecretManager:
    """Secret Manager's REST `versions/latest:access`, for the real client over HTTP."""

    endpoint: str
    secrets: dict[str, str]
    denied: set[str]
    calls: list[str]


@pytest.fixture
def secret_manager() -> Iterator[FakeSecretManager]:
    secrets: dict[str, str] = {}
    denied: set[str] = set()
    calls: list[str] = []

    async def access(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        calls.append(name)
        if request.headers.get("Authorization") != "Bearer test-token":
            return _google_error(
                401, "Request had invalid authentication credentials.", "UNAUTHENTICATED"
            )
        secret = name.split("/versions/")[0]
        if secret in denied:
            return _google_error(
                403, f"Permission denied on resource {secret}.", "PERMISSION_DENIED"
            )
        if secret not in secrets:
            return _google_error(
                404, f"Secret [{secret}] not found or has no versions.", "NOT_FOUND"
            )
        data = base64.b64encode(secrets[secret].encode()).decode()
        return web.json_response({"name": f"{secret}/versions/1", "payload": {"data": data}})

    app = web.Application()
    app.router.add_get("/v1/{name:projects/.+/versions/latest}:access", access)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    loop.run_until_complete(web.SockSite(runner, sock).start())
    port = sock.getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield FakeSecretManager(f"http://127.0.0.1:{port}", secrets, denied, calls)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def _google_error(code: int, message: str, status: str) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message, "status": status}}, status=code
    )
