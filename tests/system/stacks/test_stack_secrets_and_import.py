"""No secret in the synthesized Terraform or its state; prod adopts what exists (its users
keep their passwords), staging creates it."""

from __future__ import annotations

import copy
import re
from typing import Any

from stack_support import strings

from provision.config import Environment
from stacks.database import TERRAFORM_REQUIRED_VERSION, import_ids
from stacks.state_secrets import secret_carriers

# The only values a write-only argument may hold: an ephemeral password, alone or as the app
# secret's JSON.
EPHEMERAL_PASSWORD = re.compile(
    r"\$\{(jsonencode\(\{\"username\" = \"[a-z_]+\", \"password\" = )?"
    r"ephemeral\.random_password\.[a-z_]+\.result(\}\))?\}"
)
WRITE_ONLY = re.compile(r"\.(password_wo|secret_data_wo)$")


def test_no_stack_can_carry_a_secret_into_the_terraform_state(stacks: dict[str, Any]) -> None:
    # The gate of `make test`: every synthesized stack against the denylist of
    # stacks.state_secrets (secret-bearing resource types, data sources, arguments,
    # references, ephemeral values outside write-only arguments).
    assert set(stacks) >= {"prod", "staging"}
    for name, stack in stacks.items():
        assert secret_carriers(stack) == [], name
        assert "random_password" not in stack.get("resource", {}), name
        assert stack["terraform"]["required_version"] == TERRAFORM_REQUIRED_VERSION


def test_passwords_reach_terraform_only_through_write_only_arguments(
    stacks: dict[str, Any],
) -> None:
    for name, stack in stacks.items():
        written = [(path, value) for path, value in strings(stack) if WRITE_ONLY.search(path)]
        assert written, f"{name}: expected the app secret's first version at least"
        for path, value in written:
            assert EPHEMERAL_PASSWORD.fullmatch(value), f"{name}: {path} holds {value!r}"
            assert re.sub(r"_wo$", "_wo_version", path.rsplit(".", 1)[-1]) in str(stack["resource"])
        # The provisioner and its environment carry no credentials either.
        hook = stack["resource"]["terraform_data"]["post_provision"]["provisioner"][0]["local-exec"]
        assert set(hook["environment"]) == {"NUCLEUS_PROVISION_CONFIG", "NUCLEUS_BOOTSTRAP_SQL"}
        assert "password" not in hook["command"].lower()
        assert "ephemeral" not in str(stack["resource"]["terraform_data"])


def test_the_state_check_catches_each_kind_of_secret_carrier(prod: dict[str, Any]) -> None:
    # The check is only worth something if it fails: plant one carrier of each kind in a copy
    # of the real prod stack and see it named.
    planted = {
        "resource.random_password.p": ("resource", "random_password", "p", {"length": 32}),
        "data.google_secret_manager_secret_version.s": (
            "data",
            "google_secret_manager_secret_version",
            "s",
            {"secret": "x"},
        ),
        "resource.google_sql_user.u.password": (
            "resource",
            "google_sql_user",
            "u",
            {"name": "x", "password": "${var.pw}"},
        ),
        "resource.google_secret_manager_secret_version.v.secret_data": (
            "resource",
            "google_secret_manager_secret_version",
            "v",
            {"secret": "x", "secret_data": "literal"},
        ),
        "resource.terraform_data.t.input": (
            "resource",
            "terraform_data",
            "t",
            {"input": "${ephemeral.random_password.app_password.result}"},
        ),
        "resource.google_sql_user.w.password_wo": (
            "resource",
            "google_sql_user",
            "w",
            {"name": "x", "password_wo": "a-literal-password"},
        ),
    }
    for where, (block, kind, name, body) in planted.items():
        stack = copy.deepcopy(prod)
        stack.setdefault(block, {}).setdefault(kind, {})[name] = body
        found = secret_carriers(stack)
        assert any(problem.startswith(where) for problem in found), (where, found)
    leaky = copy.deepcopy(prod)
    leaky["output"]["pw"] = {"value": "${google_sql_user.admin_user.password}", "sensitive": True}
    found = secret_carriers(leaky)
    assert "output.pw: marked sensitive (outputs are stored in the state)" in found
    assert any(p.startswith("output.pw.value: refers to .password") for p in found)


def test_no_output_exposes_or_hides_a_secret(stacks: dict[str, Any]) -> None:
    for name, stack in stacks.items():
        for output_name, output in stack["output"].items():
            assert "sensitive" not in output, f"{name}: output {output_name} is marked sensitive"
            value = str(output["value"])
            assert "random_password" not in value, (
                f"{name}: output {output_name} exposes a password"
            )
            assert "ephemeral" not in value, f"{name}: output {output_name} exposes a password"
            assert "secret_version" not in value, (
                f"{name}: output {output_name} exposes a secret value"
            )


def test_prod_adopts_the_existing_instance_database_and_users_with_import_blocks(
    prod: dict[str, Any],
) -> None:
    assert prod["import"] == [
        {
            "to": "google_sql_database_instance.instance",
            "id": "projects/nucleus-prod/instances/nucleus-prototype-db",
        },
        {
            "to": "google_sql_database.database",
            "id": "projects/nucleus-prod/instances/nucleus-prototype-db/databases/nucleus_v12",
        },
        {"to": "google_sql_user.admin_user", "id": "nucleus-prod/nucleus-prototype-db/postgres"},
        {"to": "google_sql_user.owner_user", "id": "nucleus-prod/nucleus-prototype-db/nucleus"},
    ]


def test_import_blocks_point_at_resources_the_stack_declares(prod: dict[str, Any]) -> None:
    for block in prod["import"]:
        kind, name = block["to"].split(".")
        assert name in prod["resource"][kind]


def test_staging_creates_its_resources_instead_of_importing_them(
    staging: dict[str, Any], environments: dict[str, Environment]
) -> None:
    assert environments["staging"].import_existing is False
    assert "import" not in staging


def test_import_ids_use_the_formats_the_google_provider_documents(
    environments: dict[str, Environment],
) -> None:
    env = environments["staging"]
    assert import_ids(env) == {
        "instance": "projects/nucleus-staging/instances/nucleus-staging-db",
        "database": "projects/nucleus-staging/instances/nucleus-staging-db/databases/nucleus_v12",
        "admin_user": "nucleus-staging/nucleus-staging-db/postgres",
        "owner_user": "nucleus-staging/nucleus-staging-db/nucleus",
    }
