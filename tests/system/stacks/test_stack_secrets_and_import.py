"""No secret in the synthesized Terraform; prod adopts what exists, staging creates it."""

from __future__ import annotations

import re
from typing import Any

from stack_support import strings

from provision.config import Environment
from stacks.database import import_ids

# The only values a password-carrying field may hold: a reference to a random_password.
PASSWORD_REFERENCE = re.compile(r"\$\{random_password\.[a-z_]+\.result\}")
# Fields that carry a password or secret value, wherever they appear.
SECRET_FIELDS = re.compile(
    r"(^|\.)(password|secret_data|secret_data_wo|password_wo|root_password)$"
)


def test_no_password_or_secret_value_appears_anywhere_in_the_synthesized_json(
    stacks: dict[str, Any],
) -> None:
    for name, stack in stacks.items():
        carried = [(path, value) for path, value in strings(stack) if SECRET_FIELDS.search(path)]
        assert carried, f"{name}: expected the users and secret versions to carry passwords"
        for path, value in carried:
            assert PASSWORD_REFERENCE.fullmatch(value), f"{name}: {path} holds a literal value"
        # The provisioner and its environment carry no credentials either.
        hook = stack["resource"]["terraform_data"]["post_provision"]["provisioner"][0]["local-exec"]
        assert set(hook["environment"]) == {"NUCLEUS_PROVISION_CONFIG", "NUCLEUS_BOOTSTRAP_SQL"}
        assert "password" not in hook["command"].lower()
        assert "random_password" not in str(hook)


def test_no_output_exposes_or_hides_a_secret(stacks: dict[str, Any]) -> None:
    for name, stack in stacks.items():
        for output_name, output in stack["output"].items():
            assert "sensitive" not in output, f"{name}: output {output_name} is marked sensitive"
            value = str(output["value"])
            assert "random_password" not in value, (
                f"{name}: output {output_name} exposes a password"
            )
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
