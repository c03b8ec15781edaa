"""Carriers of a secret that the state-secrets check missed at first (issue 22's review):
the random provider's other resources and sensitive input variables that are not ephemeral."""

from __future__ import annotations

from typing import Any

import pytest

from stacks.state_secrets import secret_carriers


def _stack(**blocks: Any) -> dict[str, Any]:
    return {"terraform": {"required_version": ">= 1.11"}, **blocks}


@pytest.mark.parametrize("kind", ["random_id", "random_bytes", "random_uuid", "random_integer"])
def test_any_random_resource_is_a_carrier(kind: str) -> None:
    problems = secret_carriers(_stack(resource={kind: {"pw": {"byte_length": 32}}}))
    assert problems == [f"resource.{kind}.pw: its state holds a secret"]


def test_an_ephemeral_random_block_is_not_a_carrier() -> None:
    stack = _stack(ephemeral={"random_bytes": {"pw": {"length": 32}}})
    assert secret_carriers(stack) == []


def test_a_sensitive_variable_that_is_not_ephemeral_is_a_carrier() -> None:
    stack = _stack(
        variable={"admin_password": {"type": "string", "sensitive": True}},
        resource={"terraform_data": {"hook": {"input": "${var.admin_password}"}}},
    )
    assert secret_carriers(stack) == [
        "variable.admin_password: sensitive but not ephemeral (its value is saved in plan files)"
    ]


def test_an_ephemeral_sensitive_variable_is_not_a_carrier() -> None:
    stack = _stack(
        variable={"admin_password": {"type": "string", "sensitive": True, "ephemeral": True}}
    )
    assert secret_carriers(stack) == []
