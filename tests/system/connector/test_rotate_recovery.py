"""Rotations of a built-in user that fail between `users.update` and the store.

A rotation of the admin killed there leaves `postgres` with a password that is in no secret
(the secret's latest version no longer works). The documented recovery is to run `rotate`
again; that run must not need `postgres`'s lost password. The state the crash leaves is made
as the crash makes it: the Admin API's users.update sets a password nobody stores.

A store Secret Manager refuses cannot be undone by setting the previous password back when the
policy has a `reuse_interval` (prod's, inherited by `local`: Cloud SQL refuses the last N
passwords, and so does the emulated Admin API): the error must say so, and `rotate` again must
repair it. The refusing Secret Manager is a local fake speaking the REST protocol."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from connector_support import SCENARIO, Emulation, local_environment, nucleus

from provision import credentials, passwords
from provision.connector_plugin import overrides_for
from provision.errors import ProvisionError
from provision.local.server import Server
from provision.rotate import rotate
from provision.sqladmin import SqlAdmin


@pytest.fixture(scope="module")
def own_emulation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulation]:
    """An emulation of its own: a failing test here leaves postgres's password lost."""
    server = Server(Path(tmp_path_factory.mktemp("rotate-recovery")))
    instance = server.start(SCENARIO)
    try:
        yield Emulation(instance)
    finally:
        server.stop()


def _lose_admin_password(emulation: Emulation) -> None:
    environment = local_environment()
    overrides = overrides_for(environment, state_dir=emulation.state_dir)
    assert overrides is not None
    api = SqlAdmin(overrides.google_credentials, overrides.sqladmin_api_endpoint)
    try:
        api.set_password(
            environment.project,
            environment.instance,
            environment.users.admin.name,
            passwords.generate(environment.password_validation_policy, "postgres"),
        )
    finally:
        api.close()


def test_rotate_again_repairs_an_admin_rotation_killed_before_the_store(
    own_emulation: Emulation,
) -> None:
    env = own_emulation.env()
    assert nucleus("apply", "--auto-approve", "--env", "local", env=env).code == 0
    _lose_admin_password(own_emulation)
    lost = nucleus("verify", "--env", "local", env=env)
    assert lost.code != 0 and "password authentication failed" in lost.err

    again = nucleus("rotate", "--env", "local", "--user", "admin", env=env)

    assert again.code == 0, again.err
    assert nucleus("verify", "--env", "local", env=env).code == 0


@pytest.fixture
def refusing_secret_manager() -> Iterator[tuple[str, dict[str, str]]]:
    """Secret Manager's REST API answering `access` from a dict and refusing every
    `addVersion` with PERMISSION_DENIED (no roles/secretmanager.secretVersionAdder)."""
    secrets: dict[str, str] = {}

    async def access(request: web.Request) -> web.Response:
        secret = request.match_info["name"].split("/versions/")[0]
        data = base64.b64encode(secrets[secret].encode()).decode()
        return web.json_response({"name": f"{secret}/versions/1", "payload": {"data": data}})

    async def add(request: web.Request) -> web.Response:
        message = f"Permission denied on resource {request.match_info['name']}."
        body = {"error": {"code": 403, "message": message, "status": "PERMISSION_DENIED"}}
        return web.json_response(body, status=403)

    app = web.Application()
    app.router.add_get("/v1/{name:projects/.+/versions/latest}:access", access)
    app.router.add_post("/v1/{name:projects/[^/]+/secrets/[^/:]+}:addVersion", add)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    loop.run_until_complete(web.SockSite(runner, sock).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", secrets
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_a_refused_store_under_a_reuse_interval_says_the_password_is_in_no_secret(
    own_emulation: Emulation, refusing_secret_manager: tuple[str, dict[str, str]]
) -> None:
    environment = local_environment()
    assert environment.password_validation_policy.reuse_interval > 0
    # A first rotation, so that the current password is one the policy accepts (the scenario's
    # own may not be) and only its reuse can be refused.
    first = nucleus("rotate", "--env", "local", "--user", "owner", env=own_emulation.env())
    assert first.code == 0, first.err
    overrides = overrides_for(environment, state_dir=own_emulation.state_dir)
    assert overrides is not None
    owner = environment.users.owner
    assert owner.secret is not None
    real = credentials.secret_store_for(overrides)
    assert real is not None
    endpoint, served = refusing_secret_manager
    try:
        for user in (environment.users.admin, owner):  # rotate logs in as both
            assert user.secret is not None
            served[f"projects/{environment.project}/secrets/{user.secret}"] = real(
                environment.project, user.secret
            )
        current = real(environment.project, owner.secret)
    finally:
        real.close()
    # The emulated Admin API refuses the current password again, as Cloud SQL does.
    api = SqlAdmin(overrides.google_credentials, overrides.sqladmin_api_endpoint)
    try:
        with pytest.raises(ProvisionError, match="last 5 passwords"):
            api.set_password(environment.project, environment.instance, owner.name, current)
    finally:
        api.close()

    with pytest.raises(ProvisionError) as failed:
        rotate(
            environment,
            "owner",
            overrides=dataclasses.replace(overrides, secret_manager_endpoint=endpoint),
        )

    message = f"{failed.value.message} {failed.value.hint}"
    assert "now has a new password that is in no secret" in message
    assert "reuse_interval" in message and "rotate --env local --user owner` again" in message
    assert "set back" not in message and current not in message
    repaired = nucleus("rotate", "--env", "local", "--user", "owner", env=own_emulation.env())
    assert repaired.code == 0, repaired.err
