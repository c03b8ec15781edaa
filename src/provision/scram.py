"""SCRAM-SHA-256 verifiers computed on the client, as psql's `\\password` does.

A statement that sets a password (`CREATE ROLE ... PASSWORD '...'`) is written to the
server log in full whenever `log_statement` covers DDL (the CIS setting), and Cloud SQL ships
that log to Cloud Logging. Sending the verifier instead keeps the password off the server
entirely; PostgreSQL stores a verifier as it is given.

The password is normalized with SASLprep (RFC 4013) when it can be, and used as its raw
UTF-8 bytes when SASLprep refuses it (a tab, text mixing right-to-left and left-to-right
characters): exactly what PostgreSQL does (`pg_saslprep` in src/common/saslprep.c, used by
`scram_build_secret` and by the server when it checks a login), so a login with such a
password works against the verifier computed here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from scramp import ScramException
from scramp.utils import saslprep

ITERATIONS = 4096  # PostgreSQL's default (scram_iterations)
SALT_BYTES = 16  # as PostgreSQL's SCRAM_DEFAULT_SALT_LEN


def normalized(password: str) -> bytes:
    """The bytes PostgreSQL derives the keys from: SASLprep'd, else the raw UTF-8."""
    try:
        prepared: str = saslprep(password)
        return prepared.encode()
    except ScramException:
        return password.encode()


def verifier(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, with a fresh salt."""
    salt = salt if salt is not None else os.urandom(SALT_BYTES)
    salted = hashlib.pbkdf2_hmac("sha256", normalized(password), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"
