"""A rotation of the admin killed between `users.update` and the store leaves `postgres` with a
password that is in no secret (the secret's latest version no longer works). The documented
recovery is to run `rotate` again; that run must not need `postgres`'s lost password.

The state the crash leaves is made as the crash makes it: the Admin API's users.update sets a
password nobody stores (no patch of our code)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from connector_support import SCENARIO, Emulation, local_environment, nucleus

from provision import passwords
from provision.connector_plugin import overrides_for
from provision.local.server import Server
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
    assert nucleus("apply", "--env", "local", env=env).code == 0
    _lose_admin_password(own_emulation)
    lost = nucleus("verify", "--env", "local", env=env)
    assert lost.code != 0 and "password authentication failed" in lost.err

    again = nucleus("rotate", "--env", "local", "--user", "admin", env=env)

    assert again.code == 0, again.err
    assert nucleus("verify", "--env", "local", env=env).code == 0
