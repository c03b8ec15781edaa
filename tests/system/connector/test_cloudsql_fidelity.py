"""The emulation behaves as Cloud SQL where a configuration mistake would otherwise pass
locally and fail in production, proven with the real Cloud SQL Python Connector:

- an instance has only the addresses its environment configures (a public IP for ip_type
  public, a private IP where private_network is set, PSC for ip_type psc), so a Connector
  asking for another one fails here as it would on Cloud SQL;
- GOOGLE_MANAGED_CAS_CA instances of one region share the region's CA pool;
- the customer's CA pool is required, as the config layer requires it, never invented.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from connector_support import (
    SCENARIO,
    Emulation,
    assert_one_clear_line,
    emulated_target,
    local_environment,
    nucleus,
)
from sqlalchemy import text

from provision.config import Environment
from provision.errors import ConnectionFailed
from provision.local.gcp import emulator
from provision.local.instance import LocalInstance
from provision.local.server import Server

PRIVATE_NETWORK = "projects/local-project/global/networks/nucleus"


def _emulation(state_dir: Path, environment: Environment) -> Iterator[Emulation]:
    server = Server(state_dir)
    instance = server.start(SCENARIO, environment=environment)
    try:
        yield Emulation(instance)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def private_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulation]:
    """An instance with a private IP and no public one (ip_type private)."""
    environment = local_environment(ip_type="private", private_network=PRIVATE_NETWORK)
    yield from _emulation(tmp_path_factory.mktemp("private"), environment)


@pytest.fixture(scope="module")
def psc_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulation]:
    """A Private Service Connect instance."""
    yield from _emulation(tmp_path_factory.mktemp("psc"), local_environment(ip_type="psc"))


def _connect_settings(emulation: Emulation) -> dict:
    state = emulation.state
    request = urllib.request.Request(
        f"{state.admin_api}/sql/v1beta4/projects/{state.project}/instances/{state.instance}"
        "/connectSettings",
        headers={"Authorization": f"Bearer {state.api_token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _select_one(environment: Environment, emulation: Emulation) -> object:
    target = emulated_target(environment, emulation.state_dir)
    try:
        with target.admin.connect() as conn:
            return conn.execute(text("SELECT 1")).scalar()
    finally:
        target.dispose()


# -- addresses --------------------------------------------------------------------------------


@pytest.mark.parametrize("ip_type", ["private", "psc"])
def test_a_public_instance_refuses_the_connector_asking_for_another_address(emulation, ip_type):
    # The shared emulation is the `local` environment: ip_type public, no private network.
    with pytest.raises(ConnectionFailed, match=f"the instance has no {ip_type} IP address"):
        _select_one(local_environment(ip_type=ip_type), emulation)


def test_a_private_instance_reports_and_serves_its_private_ip_only(private_only):
    body = _connect_settings(private_only)
    assert [a["type"] for a in body["ipAddresses"]] == ["PRIVATE"]
    assert "pscEnabled" not in body
    private = local_environment(ip_type="private", private_network=PRIVATE_NETWORK)
    assert _select_one(private, private_only) == 1
    for ip_type in ("public", "psc"):
        with pytest.raises(ConnectionFailed, match=f"the instance has no {ip_type} IP address"):
            _select_one(local_environment(ip_type=ip_type), private_only)


def test_a_psc_instance_reports_psc_and_no_ip_address(psc_only):
    body = _connect_settings(psc_only)
    assert body["pscEnabled"] is True
    assert body["ipAddresses"] == []
    assert _select_one(local_environment(ip_type="psc"), psc_only) == 1
    with pytest.raises(ConnectionFailed, match="the instance has no public IP address"):
        _select_one(local_environment(ip_type="public"), psc_only)


# -- Google's CA Service pool is regional -----------------------------------------------------


def test_google_managed_cas_instances_of_one_region_share_the_regional_ca(tmp_path):
    environment = local_environment(server_ca_mode="GOOGLE_MANAGED_CAS_CA")
    first = _emulation(tmp_path / "first", environment)
    second = _emulation(tmp_path / "second", environment)
    a, b = next(first), next(second)
    try:
        assert a.state.address != b.state.address
        bundle = a.state.server_ca_certs()
        # One pool: the same root and intermediate in both instances' serverCaCert.
        assert bundle == b.state.server_ca_certs()
        assert _connect_settings(a)["serverCaCert"]["cert"] == bundle
        assert _connect_settings(b)["serverCaCert"]["cert"] == bundle
        assert emulator.regional_ca_dir(str(a.state_dir), "europe-west1").is_dir()
        # The real Connector reaches each through the shared chain.
        public = local_environment()
        assert _select_one(public, a) == 1
        assert _select_one(public, b) == 1
    finally:
        for started in (first, second):
            started.close()  # runs each fixture's `finally`: local down


def test_a_customer_managed_ca_needs_the_environments_pool(tmp_path):
    env = {"NUCLEUS_LOCAL_STATE_DIR": str(tmp_path / "customer")}
    run = nucleus(
        "local",
        "up",
        "--server-ca-mode",
        "customer-managed-cas-ca",
        env={**os.environ, **env},
    )
    assert_one_clear_line(run, "server_ca_pool", "customer-managed-cas-ca")
    # Refused before anything started.
    assert LocalInstance.load(tmp_path / "customer") is None
