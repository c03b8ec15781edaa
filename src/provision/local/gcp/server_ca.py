"""The emulated instance's server CA mode (`serverCaMode`, shared/docs/cloudsql.md section 7):
who signs the proxy's certificate, and which DNS names it carries.

- `GOOGLE_MANAGED_INTERNAL_CA` (the default, the older Cloud SQL default): a per-instance
  self-signed CA; the certificate names the instance `project:instance` and has no DNS name.
- `GOOGLE_MANAGED_CAS_CA`: Google's CA Service pool of the region, a root and an
  intermediate; the certificate carries the instance's DNS name (`dnsName`,
  `<a>.<b>.<region>.sql.goog.`), which the Admin API reports and resolves back to the
  instance (`resolveConnectSettings`).
- `CUSTOMER_MANAGED_CAS_CA`: the customer's CA pool (`server_ca_pool`), also a root and an
  intermediate, and the customer's own names in the certificate as well
  (`customSubjectAlternativeNames`), which the customer's DNS maps to the instance (a TXT
  record holding the connection name, for the Connector's `DnsResolver`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from provision.config import ServerCaMode
from provision.errors import ConfigError

_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_MAX_NAME = 253


def mode_option(mode: ServerCaMode) -> str:
    """The spelling of a mode on the command line: `google-managed-cas-ca`."""
    return mode.value.lower().replace("_", "-")


MODE_OPTIONS = tuple(mode_option(mode) for mode in ServerCaMode)


def parse_mode(text: str) -> ServerCaMode:
    """A mode from its option spelling or the API's (`GOOGLE_MANAGED_CAS_CA`)."""
    normalized = text.strip().upper().replace("-", "_")
    try:
        return ServerCaMode(normalized)
    except ValueError:
        raise ConfigError(
            f"unknown server CA mode {text!r}", hint=f"one of {', '.join(MODE_OPTIONS)}"
        ) from None


def _label(text: str, length: int) -> str:
    """`text` as one DNS label when it is one, else a stable hash (Cloud SQL uses hashes)."""
    lowered = text.lower()
    if _LABEL.fullmatch(lowered):
        return lowered
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def default_dns_name(project: str, region: str, instance: str) -> str:
    """A DNS name of the form Cloud SQL gives CA Service instances, `<a>.<b>.<region>.sql.goog.`
    (Cloud SQL's labels are hashes; here they are the instance and project when they fit)."""
    return f"{_label(instance, 12)}.{_label(project, 13)}.{_label(region, 12)}.sql.goog."


def normalize_dns_name(name: str, what: str) -> str:
    """A DNS name in lower case with its trailing dot, or ConfigError."""
    fqdn = name.strip().lower().rstrip(".") + "."
    labels = fqdn[:-1].split(".")
    if len(fqdn) > _MAX_NAME or len(labels) < 2 or not all(_LABEL.fullmatch(x) for x in labels):
        raise ConfigError(
            f"{what} {name!r} is not a DNS name",
            hint="use letters, digits and hyphens in at least two dot-separated labels, "
            "e.g. db.nucleus.example",
        )
    return fqdn


@dataclass(frozen=True)
class ServerCa:
    """The server CA settings of one emulated instance (validated by `server_ca`)."""

    mode: ServerCaMode = ServerCaMode.GOOGLE_MANAGED_INTERNAL_CA
    # CA Service modes: the instance's DNS name, with its trailing dot as the API reports it.
    dns_name: str | None = None
    # CUSTOMER_MANAGED_CAS_CA: the customer's extra names in the certificate.
    custom_sans: tuple[str, ...] = ()
    # CUSTOMER_MANAGED_CAS_CA: the CA Service pool that signs (names its CAs).
    ca_pool: str | None = None

    @property
    def uses_cas(self) -> bool:
        return self.mode is not ServerCaMode.GOOGLE_MANAGED_INTERNAL_CA

    @property
    def certificate_names(self) -> tuple[str, ...]:
        """The DNS names of the proxy's certificate."""
        return (self.dns_name, *self.custom_sans) if self.dns_name else self.custom_sans


def server_ca(
    mode: ServerCaMode,
    *,
    project: str,
    region: str,
    instance: str,
    dns_name: str | None = None,
    custom_sans: tuple[str, ...] = (),
    ca_pool: str | None = None,
) -> ServerCa:
    """The settings for `mode`, with the defaults filled in; ConfigError for a combination
    Cloud SQL does not have (a DNS name on a per-instance CA, custom names on Google's pool)."""
    if mode is ServerCaMode.GOOGLE_MANAGED_INTERNAL_CA:
        if dns_name is not None or custom_sans:
            raise ConfigError(
                "DNS names in the server certificate need a CA Service server CA mode",
                hint=f"add --server-ca-mode {mode_option(ServerCaMode.GOOGLE_MANAGED_CAS_CA)} "
                f"(or {mode_option(ServerCaMode.CUSTOMER_MANAGED_CAS_CA)} for custom names)",
            )
        return ServerCa()
    if custom_sans and mode is not ServerCaMode.CUSTOMER_MANAGED_CAS_CA:
        raise ConfigError(
            "custom subject alternative names need the customer's own CA pool",
            hint=f"use --server-ca-mode {mode_option(ServerCaMode.CUSTOMER_MANAGED_CAS_CA)}",
        )
    name = (
        normalize_dns_name(dns_name, "--dns-name")
        if dns_name is not None
        else default_dns_name(project, region, instance)
    )
    sans = tuple(
        dict.fromkeys(
            n for n in (normalize_dns_name(s, "--custom-san") for s in custom_sans) if n != name
        )
    )
    pool = None
    if mode is ServerCaMode.CUSTOMER_MANAGED_CAS_CA:
        # The config layer refuses this mode without the customer's pool (Environment's
        # validator); the emulation must not invent one that production would not have.
        if ca_pool is None:
            raise ConfigError(
                "server CA mode customer-managed-cas-ca needs the customer's CA pool "
                "(server_ca_pool), and the environment names none",
                hint="set server_ca_mode = 'CUSTOMER_MANAGED_CAS_CA' and server_ca_pool = "
                "'projects/PROJECT/locations/REGION/caPools/NAME' in the environment of "
                "environments.toml, then run `local up` again",
            )
        pool = ca_pool
    return ServerCa(mode=mode, dns_name=name, custom_sans=sans, ca_pool=pool)


def ca_names(settings: ServerCa, region: str) -> tuple[str, str]:
    """The common names of the root and intermediate CAs of a CA Service mode."""
    if settings.mode is ServerCaMode.CUSTOMER_MANAGED_CAS_CA:
        # A common name holds at most 64 characters: the pool's own name, not its full path.
        pool = (settings.ca_pool or "").rsplit("/", 1)[-1][:40]
        return f"{pool} root CA", f"{pool} subordinate CA"
    return (
        f"Google Cloud SQL Server Root CA {region} (emulated)",
        f"Google Cloud SQL Server Intermediate CA {region} (emulated)",
    )
