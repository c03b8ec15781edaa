"""The emulated Cloud SQL side speaks the real protocols: the Admin API's paths, shapes and
errors, and a TLS 1.3 proxy that only lets in certificates of the client CA. Several
emulations run side by side, and `local down` leaves nothing behind."""

from __future__ import annotations

import json
import socket
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from connector_support import SCENARIO, alive, assert_one_clear_line, emulated_target, nucleus
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import text

from provision.config import load_environment
from provision.local.gcp import certs, emulator
from provision.local.gcp import state as gcp_state
from provision.local.server import Server

API_PATH = "/sql/v1beta4/projects/{project}/instances/{instance}"


def _call(
    state: gcp_state.EmulatorState, path: str, *, body: dict | None = None, token: str | None = ""
) -> tuple[int, dict]:
    request = urllib.request.Request(
        state.admin_api + path,
        data=json.dumps(body).encode() if body is not None else None,
        method="POST" if body is not None else "GET",
        headers={"Content-Type": "application/json"},
    )
    if token is not None:
        request.add_header("Authorization", f"Bearer {token or state.api_token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def _public_key_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def test_connect_settings_describe_the_instance_of_the_local_environment(emulation):
    state = emulation.state
    local = load_environment("local")
    status, body = _call(
        state, API_PATH.format(project=local.project, instance=local.instance) + "/connectSettings"
    )
    assert status == 200
    assert body["region"] == local.region == "europe-west1"
    assert body["databaseVersion"] == "POSTGRES_16"
    # ip_type = "public" and no private_network: a public IP only, and no PSC.
    assert {a["type"]: a["ipAddress"] for a in body["ipAddresses"]} == {"PRIMARY": state.address}
    assert "pscEnabled" not in body
    server_ca = x509.load_pem_x509_certificate(body["serverCaCert"]["cert"].encode())
    # The proxy's certificate chains to the serverCaCert the API hands out.
    context = ssl.create_default_context(cadata=body["serverCaCert"]["cert"])
    context.check_hostname = False
    with socket.create_connection((state.address, gcp_state.PROXY_PORT), timeout=5) as raw:
        with context.wrap_socket(raw) as tls:
            proxy_cert = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
    proxy_cert.verify_directly_issued_by(server_ca)


@pytest.mark.parametrize(
    ("path", "token", "code", "status"),
    [
        (
            API_PATH.format(project="local-project", instance="nucleus-prototype-db")
            + "/connectSettings",
            None,
            401,
            "UNAUTHENTICATED",
        ),
        (
            API_PATH.format(project="local-project", instance="nucleus-prototype-db")
            + "/connectSettings",
            "forged",
            401,
            "UNAUTHENTICATED",
        ),
        (
            API_PATH.format(project="local-project", instance="nope") + "/connectSettings",
            "",
            404,
            "NOT_FOUND",
        ),
        (
            API_PATH.format(project="other-project", instance="nucleus-prototype-db")
            + "/connectSettings",
            "",
            404,
            "NOT_FOUND",
        ),
        ("/sql/v1beta4/projects/local-project/instances", "", 404, "NOT_FOUND"),
    ],
)
def test_admin_api_errors_have_googles_shape(emulation, path, token, code, status):
    got, body = _call(emulation.state, path, token=token)
    assert got == code
    assert (
        body["error"]["code"] == code
        and body["error"]["status"] == status
        and body["error"]["message"]
    )


def test_generate_ephemeral_cert_signs_rsa_keys_with_the_client_ca_for_an_hour(emulation):
    state = emulation.state
    path = (
        API_PATH.format(project="local-project", instance="nucleus-prototype-db")
        + ":generateEphemeralCert"
    )
    status, body = _call(
        state, path, body={"public_key": _public_key_pem(rsa.generate_private_key(65537, 2048))}
    )
    assert status == 200
    cert = x509.load_pem_x509_certificate(body["ephemeralCert"]["cert"].encode())
    cert.verify_directly_issued_by(state.keypair("client-ca").cert)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert certs.EPHEMERAL_LIFETIME <= lifetime <= certs.EPHEMERAL_LIFETIME * 1.2

    status, body = _call(
        state, path, body={"public_key": _public_key_pem(ec.generate_private_key(ec.SECP256R1()))}
    )
    assert status == 400 and body["error"]["status"] == "INVALID_ARGUMENT"
    status, body = _call(state, path, body={"public_key": "x", "access_token": "not-a-known-token"})
    assert status == 403 and body["error"]["status"] == "PERMISSION_DENIED"


def _client_context(
    cert_pem: str | None = None, key_pem: str | None = None, tmp: Path | None = None
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if cert_pem and key_pem and tmp:
        (tmp / "c.pem").write_text(cert_pem)
        (tmp / "c.key").write_text(key_pem)
        context.load_cert_chain(tmp / "c.pem", tmp / "c.key")
    return context


def _refused(state: gcp_state.EmulatorState, context: ssl.SSLContext) -> bool:
    """Whether the proxy turns this client away (during or right after the handshake)."""
    try:
        with socket.create_connection((state.address, gcp_state.PROXY_PORT), timeout=5) as raw:
            with context.wrap_socket(raw) as tls:
                # In TLS 1.3 the server checks the client's certificate after the client has
                # finished its side of the handshake: the refusal shows on the first read.
                tls.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")  # SSLRequest
                return tls.recv(1) == b""
    except (ssl.SSLError, ConnectionResetError):
        return True


def test_the_proxy_refuses_clients_without_a_certificate_of_the_client_ca(emulation, tmp_path):
    state = emulation.state
    before = len(emulation.records())
    assert _refused(state, _client_context())
    stranger_ca = certs.new_ca("Some other CA")
    key = rsa.generate_private_key(65537, 2048)
    foreign = certs.issue_ephemeral_cert(stranger_ca, _public_key_pem(key))
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    assert _refused(state, _client_context(certs.pem(foreign), key_pem, tmp_path))
    # The client sees the TLS alert before the proxy has written its record: wait for it.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        failures = [r for r in emulation.records(before) if r["event"] == "handshake_failed"]
        if len(failures) >= 2:
            break
        time.sleep(0.02)
    assert not [r for r in emulation.records(before) if r["event"] == "connection"]
    assert [r["error"] for r in failures] == [
        "PEER_DID_NOT_RETURN_A_CERTIFICATE",
        "CERTIFICATE_VERIFY_FAILED",
    ]


def test_the_proxy_speaks_only_tls_1_3(emulation):
    context = _client_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    assert _refused(emulation.state, context)


def test_two_emulations_run_side_by_side_on_their_own_addresses(emulation, tmp_path):
    state_dir = tmp_path / "second"
    up = nucleus(
        "local", "up", "--scenario", "empty", "--state-dir", str(state_dir), env=emulation.env()
    )
    assert up.code == 0, up.err
    info = json.loads(up.out)
    try:
        assert {"admin_dsn", "owner_dsn", "connection_name", "admin_api", "proxy"} <= info.keys()
        assert info["connection_name"] == "local-project:europe-west1:nucleus-prototype-db"
        second = gcp_state.EmulatorState.load(state_dir)
        assert second is not None
        first = emulation.state
        assert second.address != first.address
        assert (
            first.proxy.endswith(":3307")
            and info["proxy"] == second.proxy
            and second.proxy.endswith(":3307")
        )

        local = load_environment("local")
        ports = []
        for directory in (emulation.state_dir, state_dir):
            target = emulated_target(local, directory)
            try:
                with target.admin.connect() as conn:
                    ports.append(conn.execute(text("SELECT inet_server_port()")).scalar())
            finally:
                target.dispose()
        assert ports == [first.pg_port, second.pg_port]
    finally:
        down = nucleus("local", "down", "--state-dir", str(state_dir), env=emulation.env())
    assert down.code == 0, down.err
    assert not any(alive(pid) for pid in second.pids.values())
    assert not (state_dir / gcp_state.EMULATOR_DIR).exists()
    with socket.socket() as probe:  # the address and port are free again
        probe.bind((second.address, gcp_state.PROXY_PORT))
    after = nucleus(
        "inspect",
        "--env",
        "local",
        env={**emulation.env(), "NUCLEUS_LOCAL_STATE_DIR": str(state_dir)},
    )
    assert_one_clear_line(after, "no local Cloud SQL emulation runs from")


def test_local_up_brings_back_a_dead_emulator_without_touching_postgres(fragile_emulation):
    before = fragile_emulation.instance.pid
    emulator.stop_component(fragile_emulation.state_dir, "proxy")
    assert emulator.running(fragile_emulation.state_dir) == {
        "admin-api": True,
        "proxy": False,
        "secret-manager": True,
    }
    instance = Server(fragile_emulation.state_dir).start(SCENARIO)
    assert instance.pid == before
    assert all(emulator.running(fragile_emulation.state_dir).values())
