"""Certificates of the local Cloud SQL emulation: a server CA, a client CA and what they sign.

Cloud SQL keeps two trust chains apart (shared/docs/cloudsql.md, section 4): the *server CA*
signs the certificate of the server-side proxy on port 3307 and is handed to clients as
`serverCaCert`; the *client CA* signs the short-lived ephemeral certificates that
`generateEphemeralCert` returns, and the proxy accepts only client certificates that chain
to it. The emulation does the same with throwaway CAs made for each `local up`.

Where the server CA comes from depends on the instance's `serverCaMode` (section 7). With
the per-instance CA (`GOOGLE_MANAGED_INTERNAL_CA`) one self-signed CA signs the proxy's
certificate directly. With CA Service (`GOOGLE_MANAGED_CAS_CA`, `CUSTOMER_MANAGED_CAS_CA`)
a root signs an intermediate (`ca_hierarchy`), the intermediate signs the proxy's
certificate, and that certificate names the instance by DNS name in its subject
alternative names.

CA and proxy keys are EC P-256 (quick to generate, accepted by TLS 1.3); client keys are
whatever the Connector sends (RSA 2048 in version 1.23).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import secrets
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ORGANIZATION = "nucleus-provision local Cloud SQL emulation"
# Cloud SQL's ephemeral certificates live one hour; the Connector refreshes at half-life.
EPHEMERAL_LIFETIME = datetime.timedelta(hours=1)
_CA_LIFETIME = datetime.timedelta(days=365)
# Tolerate small clock differences between the processes that issue and check certificates.
_BACKDATE = datetime.timedelta(minutes=5)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, both PEM."""

    cert_pem: str
    key_pem: str

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem.encode())

    @property
    def key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.key_pem.encode(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def new_ca(common_name: str, *, path_length: int = 0) -> KeyPair:
    """A self-signed CA; with path length 0 it may sign end-entity certificates only."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(_pem(cert), _key_pem(key))


def ca_hierarchy(root_name: str, intermediate_name: str) -> tuple[KeyPair, KeyPair]:
    """A CA Service pool as clients see it: a root, and an intermediate it signed that signs
    the server certificates (end-entity only)."""
    root = new_ca(root_name, path_length=1)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(intermediate_name))
        .issuer_name(root.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_id(root), critical=False)
        .sign(root.key, hashes.SHA256())
    )
    return root, KeyPair(_pem(cert), _key_pem(key))


def _authority_key_id(issuer: KeyPair) -> x509.AuthorityKeyIdentifier:
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key())


def issue_server_cert(
    ca: KeyPair, common_name: str, address: str, dns_names: tuple[str, ...] = ()
) -> KeyPair:
    """The proxy's certificate, signed by `ca`: the instance's DNS names (CA Service modes;
    written without the trailing dot, which TLS hostname checks do not accept) and its IP
    address as subject alternative names. The IP SAN is there so that other TLS clients
    (psql with sslmode=verify-full) can check the address they dial."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    names: list[x509.GeneralName] = [x509.DNSName(name.rstrip(".")) for name in dns_names]
    names.append(x509.IPAddress(ipaddress.ip_address(address)))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_authority_key_id(ca), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return KeyPair(_pem(cert), _key_pem(key))


def dns_names(cert: x509.Certificate) -> list[str]:
    """The DNS names among a certificate's subject alternative names."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.DNSName)


class InvalidPublicKey(ValueError):
    """The public key of a generateEphemeralCert request is not an RSA key in PEM."""


def issue_ephemeral_cert(
    ca: KeyPair, public_key_pem: str, *, iam_email: str | None = None
) -> x509.Certificate:
    """What `generateEphemeralCert` returns: the client's key, signed by the client CA for an hour.

    For IAM database authentication the service account is written into the certificate
    (an email SAN), which is how the emulated proxy learns who may log in without a password.
    """
    try:
        public_key = serialization.load_pem_public_key(public_key_pem.encode())
    except (ValueError, TypeError) as exc:
        raise InvalidPublicKey(f"public_key is not a PEM public key ({exc})") from None
    if not isinstance(public_key, rsa.RSAPublicKey) or public_key.key_size < 2048:
        raise InvalidPublicKey("public_key must be an RSA key of at least 2048 bits")
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(iam_email or f"ephemeral-{secrets.token_hex(6)}"))
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + EPHEMERAL_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    if iam_email is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(iam_email)]), critical=False
        )
    return builder.sign(ca.key, hashes.SHA256())


def iam_identity(cert: x509.Certificate) -> str | None:
    """The service account an ephemeral certificate was issued for, if any."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    emails = san.get_values_for_type(x509.RFC822Name)
    return emails[0] if emails else None


def describe(cert: x509.Certificate) -> dict[str, object]:
    """The facts about a certificate that the emulator's records keep."""
    return {
        "serial": format(cert.serial_number, "x"),
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "sha256": hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
        "iam_user": iam_identity(cert),
        "pem": _pem(cert),  # public: lets a reader check the signature against the CA itself
    }


def pem(cert: x509.Certificate) -> str:
    return _pem(cert)


def load(pem_text: str) -> x509.Certificate:
    """The first certificate of a PEM text (a bundle starts with the one that matters)."""
    return x509.load_pem_x509_certificate(pem_text.encode())


def load_all(pem_text: str) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle, in order."""
    return x509.load_pem_x509_certificates(pem_text.encode())
