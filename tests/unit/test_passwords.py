"""Passwords rotate makes satisfy the password validation policy Cloud SQL enforces."""

from __future__ import annotations

import pytest

from provision import passwords
from provision.config import PasswordValidationPolicy

POLICY = PasswordValidationPolicy(
    enabled=True, min_length=16, reuse_interval=5, disallow_username_substring=True
)


@pytest.mark.parametrize("min_length", [1, 16, 32, 40, 64])
def test_generated_passwords_pass_the_policy_at_any_minimum_length(min_length: int) -> None:
    policy = POLICY.model_copy(update={"min_length": min_length})
    for _ in range(200):
        password = passwords.generate(policy, "nucleus_app")
        assert passwords.problems(password, policy, "nucleus_app") == []
        assert len(password) == max(32, min_length)
        assert set(password) <= set("".join(passwords.CLASSES))


def test_generated_passwords_differ_every_time() -> None:
    made = {passwords.generate(POLICY, "postgres") for _ in range(500)}
    assert len(made) == 500


def test_the_policy_check_names_each_reason_without_the_password() -> None:
    found = passwords.problems("nucleus_app", POLICY, "nucleus_app")
    assert found == [
        "shorter than 16 characters",
        "lacks an upper-case letter",
        "lacks a digit",
        "contains the user name",
    ]
    assert passwords.problems("x", PasswordValidationPolicy(enabled=False), "x") == []
