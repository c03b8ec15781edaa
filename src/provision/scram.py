"""SCRAM-SHA-256 verifiers computed on the client, as psql's `\\password` does.

A statement that sets a password (`CREATE ROLE ... PASSWORD '...'`) is written to the
server log in full whenever `log_statement` covers DDL (the CIS setting), and Cloud SQL ships
that log to Cloud Logging. Sending the verifier instead keeps the password off the server
entirely; PostgreSQL stores a verifier as it is given.
"""

from __future__ import annotations

import base64

import scramp

ITERATIONS = 4096  # PostgreSQL's default (scram_iterations)


def verifier(password: str) -> str:
    """`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, with a fresh salt."""
    salt, stored_key, server_key, iterations = scramp.ScramMechanism(
        "SCRAM-SHA-256"
    ).make_auth_info(password, iteration_count=ITERATIONS)

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"
