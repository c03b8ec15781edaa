"""The app login's secret: JSON naming the current login, or a bare password."""

from __future__ import annotations

import json

import pytest

from provision.credentials import AppSecret, parse_app_secret
from provision.errors import CredentialsMissing


def test_the_json_payload_names_the_current_login_and_round_trips() -> None:
    secret = AppSecret("nucleus_app_b", "p4ss-W0rd!")
    assert json.loads(secret.payload()) == {"username": "nucleus_app_b", "password": "p4ss-W0rd!"}
    assert parse_app_secret(secret.payload(), "nucleus_app", "s") == secret
    assert "p4ss" not in repr(secret)


def test_a_bare_password_is_the_configured_logins() -> None:
    assert parse_app_secret("just-a-password", "nucleus_app", "s") == AppSecret(
        "nucleus_app", "just-a-password"
    )


@pytest.mark.parametrize(
    "payload",
    [
        '{"username": "nucleus_app"}',
        '{"password": "x"}',
        "{not json",
        '{"username": "", "password": "x"}',
    ],
)
def test_a_malformed_json_payload_is_a_clear_error_that_never_quotes_it(payload: str) -> None:
    with pytest.raises(CredentialsMissing) as error:
        parse_app_secret(payload, "nucleus_app", "projects/p/secrets/app")
    assert "projects/p/secrets/app is not the app secret's JSON" in error.value.message
    assert payload not in error.value.message and "rotate --user app" in (error.value.hint or "")
