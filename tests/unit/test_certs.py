"""The emulation's certificates, checked by an independent verifier (cryptography's
RFC 5280 / CA-Browser-Forum path validation), and its server CA settings."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509
from cryptography.x509.verification import DNSName, IPAddress, PolicyBuilder, Store
from google.cloud.sql.connector.resolver import is_instance_dns_name

from provision.config import ServerCaMode
from provision.errors import ConfigError
from provision.local.gcp import certs
from provision.local.gcp.server_ca import default_dns_name, parse_mode, server_ca

ADDRESS = "127.10.20.30"


def _verify(root: certs.KeyPair, leaf_pem: str, name: x509.verification.Subject) -> list[str]:
    """The verified chain's common names, leaf first; the leaf file may carry intermediates."""
    leaf, *intermediates = certs.load_all(leaf_pem)
    verifier = PolicyBuilder().store(Store([root.cert])).build_server_verifier(name)
    chain = verifier.verify(leaf, intermediates)
    return [c.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value for c in chain]


def test_a_cas_server_certificate_chains_through_the_intermediate_and_names_the_instance():
    root, intermediate = certs.ca_hierarchy("Root", "Intermediate")
    leaf = certs.issue_server_cert(
        intermediate, "p:i", ADDRESS, ("i.p.europe-west1.sql.goog.", "db.example.test")
    )
    chain_pem = leaf.cert_pem + intermediate.cert_pem
    for name in ("i.p.europe-west1.sql.goog", "db.example.test"):
        assert _verify(root, chain_pem, DNSName(name)) == ["p:i", "Intermediate", "Root"]
    assert _verify(root, chain_pem, IPAddress(ipaddress.ip_address(ADDRESS)))[0] == "p:i"
    # The SAN holds the names without the trailing dot, which hostname checks refuse.
    assert certs.dns_names(leaf.cert) == ["i.p.europe-west1.sql.goog", "db.example.test"]


def test_a_certificate_for_another_name_or_from_another_pool_is_refused():
    root, intermediate = certs.ca_hierarchy("Root", "Intermediate")
    leaf = certs.issue_server_cert(intermediate, "p:i", ADDRESS, ("i.p.europe-west1.sql.goog",))
    chain_pem = leaf.cert_pem + intermediate.cert_pem
    with pytest.raises(x509.verification.VerificationError):
        _verify(root, chain_pem, DNSName("other.p.europe-west1.sql.goog"))
    other_root, _ = certs.ca_hierarchy("Other root", "Other intermediate")
    with pytest.raises(x509.verification.VerificationError):
        _verify(other_root, chain_pem, DNSName("i.p.europe-west1.sql.goog"))
    # Without the intermediate, the root alone cannot vouch for the server certificate.
    with pytest.raises(x509.verification.VerificationError):
        _verify(root, leaf.cert_pem, DNSName("i.p.europe-west1.sql.goog"))


def test_the_per_instance_ca_signs_a_certificate_without_dns_names():
    ca = certs.new_ca("Server CA")
    leaf = certs.issue_server_cert(ca, "p:i", ADDRESS)
    assert _verify(ca, leaf.cert_pem, IPAddress(ipaddress.ip_address(ADDRESS))) == [
        "p:i",
        "Server CA",
    ]
    assert certs.dns_names(leaf.cert) == []


def test_the_default_dns_name_is_one_the_connector_resolves_through_the_admin_api():
    name = default_dns_name("local-project", "europe-west1", "nucleus-prototype-db")
    assert name == "nucleus-prototype-db.local-project.europe-west1.sql.goog."
    assert is_instance_dns_name(name)
    # A name that is no DNS label becomes a hash, and the result still has the Connector's form.
    assert is_instance_dns_name(default_dns_name("example.com:legacy", "us-east1", "db"))


def test_server_ca_settings_fill_in_defaults():
    common = {"project": "p", "region": "europe-west1", "instance": "i"}
    assert server_ca(ServerCaMode.GOOGLE_MANAGED_INTERNAL_CA, **common).dns_name is None
    google = server_ca(ServerCaMode.GOOGLE_MANAGED_CAS_CA, **common)
    assert google.certificate_names == ("i.p.europe-west1.sql.goog.",)
    assert google.ca_pool is None
    customer = server_ca(
        ServerCaMode.CUSTOMER_MANAGED_CAS_CA,
        dns_name="DB.Example.TEST",
        custom_sans=("db.example.test.", "replica.example.test"),
        ca_pool="projects/p/locations/europe-west1/caPools/pool",
        **common,
    )
    # Lower case with the trailing dot, as the API reports names; no duplicate of the DNS name.
    assert customer.certificate_names == ("db.example.test.", "replica.example.test.")
    assert customer.ca_pool == "projects/p/locations/europe-west1/caPools/pool"


@pytest.mark.parametrize(
    ("mode", "options", "message"),
    [
        (
            ServerCaMode.GOOGLE_MANAGED_INTERNAL_CA,
            {"dns_name": "db.example.test"},
            "need a CA Service server CA mode",
        ),
        (
            ServerCaMode.GOOGLE_MANAGED_CAS_CA,
            {"custom_sans": ("db.example.test",)},
            "need the customer's own CA pool",
        ),
        # As the config layer: no pool, no customer-managed CA (none is invented).
        (
            ServerCaMode.CUSTOMER_MANAGED_CAS_CA,
            {},
            r"needs the customer's CA pool \(server_ca_pool\)",
        ),
        (ServerCaMode.GOOGLE_MANAGED_CAS_CA, {"dns_name": "localhost"}, "is not a DNS name"),
        (ServerCaMode.GOOGLE_MANAGED_CAS_CA, {"dns_name": "a..b"}, "is not a DNS name"),
        (ServerCaMode.GOOGLE_MANAGED_CAS_CA, {"dns_name": "-a.b"}, "is not a DNS name"),
    ],
)
def test_server_ca_settings_cloud_sql_does_not_have_are_refused(mode, options, message):
    with pytest.raises(ConfigError, match=message):
        server_ca(mode, project="p", region="r", instance="i", **options)


def test_modes_are_read_in_both_spellings():
    assert parse_mode("google-managed-cas-ca") is ServerCaMode.GOOGLE_MANAGED_CAS_CA
    assert parse_mode("CUSTOMER_MANAGED_CAS_CA") is ServerCaMode.CUSTOMER_MANAGED_CAS_CA
    with pytest.raises(ConfigError, match="unknown server CA mode"):
        parse_mode("self-signed")
