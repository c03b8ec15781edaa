"""The real Cloud SQL Python Connector against the emulation in each server CA mode
(`serverCaMode`, shared/docs/cloudsql.md section 7): the per-instance CA, Google's CA
Service, and the customer's CA pool with a DNS name of its own.

What the Connector 1.23 checks, read from its code: the server certificate must chain to
`serverCaCert` (it loads that PEM, root and intermediate, as its trust store), but with
`check_hostname = False` it does not compare any name with the certificate. Names are checked
where it resolves them: an instance DNS name (`*.sql.goog`) through the Admin API's
`resolveConnectSettings`, any other domain through a DNS TXT record holding the connection
name (`resolver=DnsResolver`). A wrong name is refused there; clients that check hostnames
(the Go and Java Connectors, psql with verify-full) refuse it in the TLS handshake too.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from connector_support import (
    SCENARIO,
    Emulation,
    LocalDns,
    assert_one_clear_line,
    emulated_target,
    local_environment,
    nucleus,
)
from cryptography import x509
from google.cloud.sql.connector import Connector
from google.cloud.sql.connector.exceptions import DnsResolutionError
from sqlalchemy import text

from provision.local import plugin
from provision.local.gcp import certs
from provision.local.gcp import state as gcp_state
from provision.local.instance import LocalInstance
from provision.local.server import Server

CAS_DNS_NAME = "nucleus-prototype-db.local-project.europe-west1.sql.goog."
CUSTOM_SAN = "db.nucleus.test"
CONNECTION_NAME = "local-project:europe-west1:nucleus-prototype-db"


@pytest.fixture(scope="module")
def cas_emulation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulation]:
    """GOOGLE_MANAGED_CAS_CA, started with the command line (`local up --server-ca-mode`)."""
    state_dir = tmp_path_factory.mktemp("cas")
    env = {"NUCLEUS_LOCAL_STATE_DIR": str(state_dir)}
    up = nucleus("local", "up", "--server-ca-mode", "google-managed-cas-ca", env=_env(env))
    assert up.code == 0, up.err
    try:
        summary = json.loads(up.out)
        assert (summary["server_ca_mode"], summary["dns_name"]) == (
            "GOOGLE_MANAGED_CAS_CA",
            CAS_DNS_NAME,
        )
        instance = LocalInstance.load(state_dir)
        assert instance is not None
        yield Emulation(instance)
    finally:
        down = nucleus("local", "down", env=_env(env))
        assert down.code == 0, down.err


@pytest.fixture(scope="module")
def customer_cas_emulation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulation]:
    """CUSTOMER_MANAGED_CAS_CA from the environment (`server_ca_mode`, `server_ca_pool`),
    with a custom subject alternative name."""
    server = Server(tmp_path_factory.mktemp("customer-cas"))
    environment = local_environment(
        server_ca_mode="CUSTOMER_MANAGED_CAS_CA",
        server_ca_pool="projects/local-project/locations/europe-west1/caPools/nucleus-pool",
    )
    instance = server.start(SCENARIO, environment=environment, custom_sans=(CUSTOM_SAN,))
    try:
        yield Emulation(instance)
    finally:
        server.stop()


@pytest.fixture
def local_dns() -> Iterator[LocalDns]:
    dns_server = LocalDns({})
    try:
        yield dns_server
    finally:
        dns_server.close()


def _env(extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **extra}


MODES = {
    "GOOGLE_MANAGED_INTERNAL_CA": "emulation",
    "GOOGLE_MANAGED_CAS_CA": "cas_emulation",
    "CUSTOMER_MANAGED_CAS_CA": "customer_cas_emulation",
}


@pytest.fixture(params=list(MODES))
def any_mode(request: pytest.FixtureRequest) -> tuple[str, Emulation]:
    return request.param, request.getfixturevalue(MODES[request.param])


def _connect_settings(emulation: Emulation) -> dict:
    state = emulation.state
    request = urllib.request.Request(
        f"{state.admin_api}/sql/v1beta4/projects/{state.project}/instances/{state.instance}"
        "/connectSettings",
        headers={"Authorization": f"Bearer {state.api_token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _served_leaf(
    emulation: Emulation, server_hostname: str | None = None, *, trust: str | None = None
) -> x509.Certificate:
    """The proxy's certificate, received by a TLS client that trusts `trust` (by default
    `serverCaCert`) and so verifies the chain; with `server_hostname`, the client also checks
    that name, as hostname-checking clients do."""
    context = ssl.create_default_context(
        cadata=trust or _connect_settings(emulation)["serverCaCert"]["cert"]
    )
    context.check_hostname = server_hostname is not None
    state = emulation.state
    with socket.create_connection((state.address, gcp_state.PROXY_PORT), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=server_hostname) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def _dns_connector(emulation: Emulation, dns_server: LocalDns) -> Connector:
    state = emulation.state
    return Connector(
        credentials=plugin.StaticTokenCredentials(state.api_token),
        sqladmin_api_endpoint=state.admin_api,
        resolver=dns_server.resolver(),
        timeout=10,
        # No background refresh left running when a test closes the Connector after an error.
        refresh_strategy="lazy",
    )


def _select_current_user(connector: Connector, name: str, emulation: Emulation) -> str:
    connection = connector.connect(
        name,
        "pg8000",
        user="postgres",
        password=emulation.instance.passwords["postgres"],
        db="nucleus_v12",
    )
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT current_user")
        return str(cursor.fetchone()[0])
    finally:
        connection.close()


def _events(records: list[dict]) -> list[tuple[str, str]]:
    return [(r["component"], r["event"]) for r in records]


# -- what the Admin API reports, and the certificate the proxy presents ----------------------


def test_connect_settings_report_the_mode_and_the_proxy_presents_a_matching_chain(any_mode):
    mode, emulation = any_mode
    body = _connect_settings(emulation)
    assert body["serverCaMode"] == mode
    trusted = certs.load_all(body["serverCaCert"]["cert"])
    leaf = _served_leaf(emulation)
    assert leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == (
        "local-project:nucleus-prototype-db"
    )
    if mode == "GOOGLE_MANAGED_INTERNAL_CA":
        # The per-instance CA signs the proxy's certificate itself; no DNS name anywhere.
        (ca,) = trusted
        leaf.verify_directly_issued_by(ca)
        assert certs.dns_names(leaf) == []
        # No PSC on this instance: no PSC DNS name, no pscEnabled (as Cloud SQL).
        assert "dnsName" not in body and "pscEnabled" not in body
        assert "dnsNames" not in body
        return
    # CA Service: serverCaCert is the intermediate then the root; the root signed the
    # intermediate, which signed the proxy's certificate, which carries the DNS name.
    intermediate, root = trusted
    leaf.verify_directly_issued_by(intermediate)
    intermediate.verify_directly_issued_by(root)
    # The proxy presents the intermediate too: trusting the root alone is enough.
    _served_leaf(emulation, trust=certs.pem(root))
    assert body["dnsName"] == CAS_DNS_NAME
    assert {(d["name"], d["connectionType"]) for d in body["dnsNames"]} == {
        (CAS_DNS_NAME, "PUBLIC"),
    }
    expected = [CAS_DNS_NAME.rstrip(".")]
    if mode == "CUSTOMER_MANAGED_CAS_CA":
        expected.append(CUSTOM_SAN)
        # The environment's pool signs.
        assert "CN=nucleus-pool root CA" in root.subject.rfc4514_string()
    assert certs.dns_names(leaf) == expected


# -- the real Connector, by connection name -------------------------------------------------


# These instances have a public IP only; other ip_types: test_cloudsql_fidelity.py.
@pytest.mark.parametrize("ip_type", ["public"])
def test_the_connector_connects_in_every_server_ca_mode(any_mode, ip_type):
    mode, emulation = any_mode
    before = len(emulation.records())
    target = emulated_target(local_environment(ip_type=ip_type), emulation.state_dir)
    try:
        with target.admin.connect() as conn:
            assert conn.execute(text("SELECT current_user")).scalar() == "postgres"
    finally:
        target.dispose()
    events = _events(emulation.records(before))
    assert ("admin-api", "connectSettings") in events
    assert ("proxy", "connection") in events


def test_inspect_env_local_in_a_cas_mode(cas_emulation):
    before = len(cas_emulation.records())
    run = nucleus(
        "inspect", "--exit-zero", "--env", "local", "--format", "json", env=cas_emulation.env()
    )
    assert run.code == 0, run.err
    assert json.loads(run.out)["connected_as"] == "postgres"
    assert sorted(_events(cas_emulation.records(before))) == [
        ("admin-api", "connectSettings"),
        ("admin-api", "generateEphemeralCert"),
        ("proxy", "connection"),
        ("proxy", "startup"),
        # The admin's and the owner's passwords, from the emulated Secret Manager.
        ("secret-manager", "accessSecretVersion"),
        ("secret-manager", "accessSecretVersion"),
    ]


# -- names: the instance DNS name, a custom name, and wrong ones ----------------------------


def test_the_instance_dns_name_resolves_through_the_admin_api(cas_emulation, local_dns):
    before = len(cas_emulation.records())
    connector = _dns_connector(cas_emulation, local_dns)
    try:
        assert _select_current_user(connector, CAS_DNS_NAME.rstrip("."), cas_emulation) == (
            "postgres"
        )
    finally:
        connector.close()
    records = cas_emulation.records(before)
    (resolved,) = [r for r in records if r["event"] == "resolveConnectSettings"]
    assert (resolved["status"], resolved["dns_name"]) == (200, CAS_DNS_NAME)
    assert ("proxy", "connection") in _events(records)


def test_a_wrong_instance_dns_name_is_refused(cas_emulation, local_dns):
    before = len(cas_emulation.records())
    wrong = "retired-db.local-project.europe-west1.sql.goog"
    connector = _dns_connector(cas_emulation, local_dns)
    try:
        with pytest.raises(aiohttp.ClientResponseError) as refused:
            _select_current_user(connector, wrong, cas_emulation)
    finally:
        connector.close()
    assert refused.value.status == 404
    assert f"{wrong}. does not name a Cloud SQL instance" in refused.value.message
    events = _events(cas_emulation.records(before))
    assert events == [("admin-api", "resolveConnectSettings")]  # nothing went further


def test_a_custom_name_resolved_by_dns_connects(customer_cas_emulation, local_dns):
    address = customer_cas_emulation.state.address
    local_dns.records[(f"{CUSTOM_SAN}.", "TXT")] = [f'"{CONNECTION_NAME}"']
    local_dns.records[(f"{CUSTOM_SAN}.", "A")] = [address]
    before = len(customer_cas_emulation.records())
    connector = _dns_connector(customer_cas_emulation, local_dns)
    try:
        assert _select_current_user(connector, CUSTOM_SAN, customer_cas_emulation) == "postgres"
    finally:
        connector.close()
    # The Connector read the TXT record, then dialled the address of the A record.
    assert (f"{CUSTOM_SAN}.", "TXT") in local_dns.questions
    assert (f"{CUSTOM_SAN}.", "A") in local_dns.questions
    (connection,) = [
        r for r in customer_cas_emulation.records(before) if r["event"] == "connection"
    ]
    assert connection["tls_version"] == "TLSv1.3"
    # And the name is the certificate's: a hostname-checking client accepts it.
    assert certs.dns_names(_served_leaf(customer_cas_emulation, CUSTOM_SAN))[-1] == CUSTOM_SAN


def test_a_name_without_txt_record_is_refused(customer_cas_emulation, local_dns):
    before = len(customer_cas_emulation.records())
    connector = _dns_connector(customer_cas_emulation, local_dns)
    try:
        with pytest.raises(DnsResolutionError, match="Unable to resolve TXT record for `x.test`"):
            _select_current_user(connector, "x.test", customer_cas_emulation)
    finally:
        connector.close()
    assert customer_cas_emulation.records(before) == []


def test_a_name_whose_txt_record_names_another_instance_is_refused(
    customer_cas_emulation, local_dns
):
    local_dns.records[("old.nucleus.test.", "TXT")] = ['"local-project:europe-west1:retired-db"']
    connector = _dns_connector(customer_cas_emulation, local_dns)
    try:
        with pytest.raises(aiohttp.ClientResponseError) as refused:
            _select_current_user(connector, "old.nucleus.test", customer_cas_emulation)
    finally:
        connector.close()
    assert refused.value.status == 404


@pytest.mark.parametrize("mode", ["GOOGLE_MANAGED_CAS_CA", "CUSTOMER_MANAGED_CAS_CA"])
def test_a_hostname_checking_client_refuses_a_name_the_certificate_does_not_carry(mode, request):
    emulation = request.getfixturevalue(MODES[mode])
    _served_leaf(emulation, CAS_DNS_NAME.rstrip("."))  # the reported name passes
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        _served_leaf(emulation, "retired-db.local-project.europe-west1.sql.goog")


def test_the_connector_checks_the_chain_not_the_name(cas_emulation, local_dns):
    """A canary for the Connector's behaviour (1.23: `check_hostname = False`). A server
    whose certificate chains to the instance's CA but names another instance (the case of
    Google's CA Service, whose pool signs every instance of the region) completes the TLS
    handshake with the Connector. If this test fails, the Connector has started checking
    names: then a wrong name is refused in the handshake too, and this test should say so."""
    state = cas_emulation.state
    impostor = certs.issue_server_cert(
        state.keypair(gcp_state.SERVER_INTERMEDIATE_CA),
        "local-project:retired-db",
        "127.0.0.1",
        ("retired-db.local-project.europe-west1.sql.goog.",),
    )
    chain_file = Path(state.directory) / "impostor.pem"
    key_file = Path(state.directory) / "impostor.key"
    gcp_state.write_private(
        chain_file, impostor.cert_pem + state.keypair(gcp_state.SERVER_INTERMEDIATE_CA).cert_pem
    )
    gcp_state.write_private(key_file, impostor.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain_file, key_file)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=state.path("client-ca.pem"))
    # The Connector always dials port 3307; it takes the address from the domain's A record.
    listener = _listen_3307()
    handshakes: list[str] = []

    def serve() -> None:
        raw, _ = listener.accept()
        with context.wrap_socket(raw, server_side=True) as tls:
            handshakes.append(tls.version() or "")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    local_dns.records[("impostor.test.", "TXT")] = [f'"{CONNECTION_NAME}"']
    local_dns.records[("impostor.test.", "A")] = [listener.getsockname()[0]]
    connector = _dns_connector(cas_emulation, local_dns)
    try:
        with pytest.raises(Exception) as failed:  # noqa: PT011 - the server hangs up after TLS
            _select_current_user(connector, "impostor.test", cas_emulation)
    finally:
        connector.close()
        thread.join(10)
        listener.close()
    assert handshakes == ["TLSv1.3"], failed.value
    assert not isinstance(failed.value, ssl.SSLError), failed.value


def _listen_3307() -> socket.socket:
    """A listening socket on port 3307 of a free 127.x.y.z address."""
    for third in range(1, 255):
        sock = socket.socket()
        try:
            sock.bind((f"127.0.{third}.253", gcp_state.PROXY_PORT))
        except OSError:
            sock.close()
            continue
        sock.listen(1)
        return sock
    raise AssertionError("no free 127.0.x.253:3307")


def test_local_up_again_keeps_the_same_mode_and_restarts_the_google_side_for_another(
    cas_emulation,
):
    env = cas_emulation.env()
    pids = cas_emulation.state.pids
    again = nucleus("local", "up", "--server-ca-mode", "google-managed-cas-ca", env=env)
    assert again.code == 0, again.err
    assert cas_emulation.state.pids == pids  # nothing restarted
    try:
        other = nucleus("local", "up", "--server-ca-mode", "google-managed-internal-ca", env=env)
        assert other.code == 0, other.err
        assert json.loads(other.out)["server_ca_mode"] == "GOOGLE_MANAGED_INTERNAL_CA"
        assert _connect_settings(cas_emulation)["serverCaMode"] == "GOOGLE_MANAGED_INTERNAL_CA"
        assert certs.dns_names(_served_leaf(cas_emulation)) == []
    finally:
        back = nucleus("local", "up", "--server-ca-mode", "google-managed-cas-ca", env=env)
        assert back.code == 0, back.err
    assert _connect_settings(cas_emulation)["dnsName"] == CAS_DNS_NAME


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--dns-name", "db.example.test"], "need a CA Service server CA mode"),
        (
            ["--server-ca-mode", "google-managed-cas-ca", "--custom-san", "db.example.test"],
            "custom subject alternative names need the customer's own CA pool",
        ),
        (["--server-ca-mode", "google-managed-cas-ca", "--dns-name", "bad name"], "not a DNS"),
    ],
)
def test_local_up_refuses_server_ca_options_cloud_sql_does_not_have(tmp_path, args, fragment):
    run = nucleus("local", "up", "--state-dir", str(tmp_path), *args, env=_env({}), timeout=30)
    assert_one_clear_line(run, fragment)
    assert list(tmp_path.iterdir()) == []  # nothing was started or written
