"""What each synthesized stack declares: the instance, database, users, secrets, outputs."""

from __future__ import annotations

from typing import Any

import cdktf
import pytest
from stack_support import (
    ADMIN_ONLY_READER,
    AUTHORIZED_NETWORK,
    IAM_USERS,
    PRIVATE_NETWORK,
    PRIVATE_VARIANT,
    PROD_READER,
    PUBLIC_VARIANT,
    REAL_STACKS,
    only,
    resources,
)

from provision.config import Environment

# The CIS logging flags and pgaudit of environments.toml, sorted by name as the stack writes
# them, plus cloudsql.iam_authentication from iam_auth.
PROD_FLAGS = [
    {"name": "cloudsql.enable_pgaudit", "value": "on"},
    {"name": "cloudsql.iam_authentication", "value": "on"},
    {"name": "log_checkpoints", "value": "on"},
    {"name": "log_connections", "value": "on"},
    {"name": "log_disconnections", "value": "on"},
    {"name": "log_error_verbosity", "value": "default"},
    {"name": "log_lock_waits", "value": "on"},
    {"name": "log_min_duration_statement", "value": "-1"},
    {"name": "log_min_error_statement", "value": "error"},
    {"name": "log_min_messages", "value": "warning"},
    {"name": "log_statement", "value": "ddl"},
    {"name": "log_temp_files", "value": "0"},
    {"name": "pgaudit.log", "value": "ddl,role"},
]


def test_one_stack_per_deployable_environment_and_none_for_the_local_emulation(
    stacks: dict[str, Any],
) -> None:
    assert sorted(stacks) == sorted([*REAL_STACKS, PRIVATE_VARIANT, PUBLIC_VARIANT])
    assert "local" not in stacks


@pytest.mark.parametrize("name", REAL_STACKS)
def test_each_stack_keeps_its_state_in_gcs_under_its_own_prefix(
    name: str, stacks: dict[str, Any], environments: dict[str, Environment]
) -> None:
    env = environments[name]
    assert stacks[name]["terraform"]["backend"] == {
        "gcs": {"bucket": env.state_bucket, "prefix": f"nucleus/{name}"}
    }


@pytest.mark.parametrize("name", REAL_STACKS)
def test_the_provider_is_the_only_place_that_names_the_project(
    name: str, stacks: dict[str, Any], environments: dict[str, Environment]
) -> None:
    env = environments[name]
    stack = stacks[name]
    assert stack["provider"]["google"] == [{"project": env.project, "region": env.region}]
    for kind in stack["resource"]:
        for resource_name, body in resources(stack, kind).items():
            assert "project" not in body, f"{kind}.{resource_name} names a project"


def test_the_stack_enables_the_apis_it_needs_and_never_disables_them(
    prod: dict[str, Any], stacks: dict[str, Any]
) -> None:
    assert resources(prod, "google_project_service") == {
        "service_sqladmin": {"service": "sqladmin.googleapis.com", "disable_on_destroy": False},
        "service_secretmanager": {
            "service": "secretmanager.googleapis.com",
            "disable_on_destroy": False,
        },
    }
    private = resources(stacks[PRIVATE_VARIANT], "google_project_service")
    assert private["service_servicenetworking"] == {
        "service": "servicenetworking.googleapis.com",
        "disable_on_destroy": False,
    }
    instance = prod["resource"]["google_sql_database_instance"]["instance"]
    assert instance["depends_on"] == ["google_project_service.service_sqladmin"]


def test_prod_instance_is_exactly_the_configured_one(prod: dict[str, Any]) -> None:
    instance = only(prod, "google_sql_database_instance")
    assert instance == {
        "name": "nucleus-prototype-db",
        "region": "europe-west1",
        "database_version": "POSTGRES_16",
        "deletion_protection": True,
        "depends_on": ["google_project_service.service_sqladmin"],
        "settings": {
            "edition": "ENTERPRISE",
            "tier": "db-custom-2-7680",
            "availability_type": "REGIONAL",
            "disk_size": 50,
            "disk_type": "PD_SSD",
            "disk_autoresize": True,
            "deletion_protection_enabled": True,
            "backup_configuration": {
                "enabled": True,
                "start_time": "02:00",
                "point_in_time_recovery_enabled": True,
                "transaction_log_retention_days": 7,
                "backup_retention_settings": {"retained_backups": 14, "retention_unit": "COUNT"},
            },
            "maintenance_window": {"day": 7, "hour": 3, "update_track": "stable"},
            "insights_config": {
                "query_insights_enabled": True,
                "record_application_tags": True,
                "record_client_address": False,
            },
            "connector_enforcement": "NOT_REQUIRED",
            "password_validation_policy": {
                "enable_password_policy": True,
                "min_length": 16,
                "complexity": "COMPLEXITY_DEFAULT",
                "reuse_interval": 5,
                "disallow_username_substring": True,
            },
            "ip_configuration": {
                "ipv4_enabled": True,
                "ssl_mode": "ENCRYPTED_ONLY",
                "server_ca_mode": "GOOGLE_MANAGED_INTERNAL_CA",
                "authorized_networks": [],
            },
            "database_flags": PROD_FLAGS,
        },
    }


def test_cdktf_testing_helpers_agree_on_the_prod_instance(stack_text: dict[str, str]) -> None:
    prod = stack_text["prod"]
    assert cdktf.Testing.to_have_resource_with_properties(
        prod,
        "google_sql_database_instance",
        {
            "name": "nucleus-prototype-db",
            "deletion_protection": True,
            "settings": {
                "deletion_protection_enabled": True,
                "backup_configuration": {"point_in_time_recovery_enabled": True},
                "ip_configuration": {"ssl_mode": "ENCRYPTED_ONLY"},
            },
        },
    )
    assert cdktf.Testing.to_have_resource_with_properties(
        prod, "google_sql_database", {"name": "nucleus_v12"}
    )
    assert not cdktf.Testing.to_have_resource_with_properties(
        prod,
        "google_sql_database_instance",
        {"settings": {"ip_configuration": {"ssl_mode": "ALLOW_UNENCRYPTED_AND_ENCRYPTED"}}},
    )


def test_prod_is_protected_from_deletion_at_terraform_and_api_level_and_staging_is_not(
    prod: dict[str, Any], staging: dict[str, Any]
) -> None:
    for stack, protected in ((prod, True), (staging, False)):
        instance = only(stack, "google_sql_database_instance")
        assert instance["deletion_protection"] is protected
        assert instance["settings"]["deletion_protection_enabled"] is protected
        for secret in resources(stack, "google_secret_manager_secret").values():
            assert secret["deletion_protection"] is protected


def test_prod_keeps_backups_with_point_in_time_recovery(prod: dict[str, Any]) -> None:
    backups = only(prod, "google_sql_database_instance")["settings"]["backup_configuration"]
    assert backups["enabled"] is True
    assert backups["point_in_time_recovery_enabled"] is True
    assert backups["transaction_log_retention_days"] >= 1


def test_every_instance_accepts_encrypted_connections_only(stacks: dict[str, Any]) -> None:
    for name, stack in stacks.items():
        ip = only(stack, "google_sql_database_instance")["settings"]["ip_configuration"]
        assert ip["ssl_mode"] in ("ENCRYPTED_ONLY", "TRUSTED_CLIENT_CERTIFICATE_REQUIRED"), name
        assert "require_ssl" not in ip, name  # deprecated; ssl_mode is the one switch


def test_no_stack_opens_the_instance_to_the_internet(
    stacks: dict[str, Any], stack_text: dict[str, str]
) -> None:
    for name, stack in stacks.items():
        assert "0.0.0.0/0" not in stack_text[name]
        assert "::/0" not in stack_text[name]
        networks = only(stack, "google_sql_database_instance")["settings"]["ip_configuration"][
            "authorized_networks"
        ]
        expected = (
            [{"name": "network-0", "value": AUTHORIZED_NETWORK}] if name == PUBLIC_VARIANT else []
        )
        assert networks == expected, name


def test_a_private_network_instance_has_no_public_ip(stacks: dict[str, Any]) -> None:
    ip = only(stacks[PRIVATE_VARIANT], "google_sql_database_instance")["settings"][
        "ip_configuration"
    ]
    assert ip == {
        "ipv4_enabled": False,
        "private_network": PRIVATE_NETWORK,
        "ssl_mode": "ENCRYPTED_ONLY",
        "server_ca_mode": "GOOGLE_MANAGED_INTERNAL_CA",
        "authorized_networks": [],
    }


def test_database_flags_follow_iam_auth_and_the_configured_extras(stacks: dict[str, Any]) -> None:
    def flags(name: str) -> list[dict[str, str]]:
        return only(stacks[name], "google_sql_database_instance")["settings"]["database_flags"]

    assert flags("prod") == PROD_FLAGS
    assert flags("staging") == PROD_FLAGS  # inherited through `extends`, written once
    # The private variant replaces the logging flags with one of its own; pgaudit stays on.
    assert flags(PRIVATE_VARIANT) == [
        {"name": "cloudsql.enable_pgaudit", "value": "on"},
        {"name": "cloudsql.iam_authentication", "value": "on"},
        {"name": "log_min_duration_statement", "value": "1000"},
        {"name": "pgaudit.log", "value": "ddl,role"},
    ]
    # Without IAM auth and with pgaudit off, only the logging flags remain.
    assert flags(PUBLIC_VARIANT) == [
        flag
        for flag in PROD_FLAGS
        if flag["name"]
        not in ("cloudsql.iam_authentication", "cloudsql.enable_pgaudit", "pgaudit.log")
    ]
    insights = only(stacks[PUBLIC_VARIANT], "google_sql_database_instance")["settings"][
        "insights_config"
    ]
    assert insights["query_insights_enabled"] is False


@pytest.mark.parametrize("name", REAL_STACKS)
def test_the_database_and_both_built_in_users_live_on_the_instance(
    name: str, stacks: dict[str, Any], environments: dict[str, Environment]
) -> None:
    stack = stacks[name]
    instance_name = "${google_sql_database_instance.instance.name}"
    assert only(stack, "google_sql_database") == {
        "name": "nucleus_v12",
        "instance": instance_name,
        "deletion_policy": "ABANDON",
    }
    # Staging creates its users: their first passwords go through write-only arguments only.
    # Prod adopts them (import_existing): no password argument at all, so Terraform neither
    # knows nor changes the passwords prod has today.
    created = environments[name].import_existing is False
    assert resources(stack, "google_sql_user") == {
        f"{role}_user": {
            "name": user,
            "instance": instance_name,
            **(
                {
                    "password_wo": f"${{ephemeral.random_password.{role}_password.result}}",
                    "password_wo_version": 1,
                }
                if created
                else {}
            ),
            "deletion_policy": "ABANDON",
        }
        for role, user in (("admin", "postgres"), ("owner", "nucleus"))
    }


@pytest.mark.parametrize("name", REAL_STACKS)
def test_first_passwords_are_ephemeral_and_stored_each_in_its_own_secret(
    name: str, stacks: dict[str, Any], environments: dict[str, Environment]
) -> None:
    stack = stacks[name]
    assert "random_password" not in stack["resource"]
    created = ["admin", "owner"] if not environments[name].import_existing else []
    ephemeral = stack["ephemeral"]["random_password"]
    assert sorted(ephemeral) == sorted(f"{role}_password" for role in [*created, "app"])
    for password in ephemeral.values():
        assert password["length"] >= 32
        assert password["special"] is True
    secrets = resources(stack, "google_secret_manager_secret")
    prefix = environments[name].instance
    assert {name: secret["secret_id"] for name, secret in secrets.items()} == {
        "admin_secret": f"{prefix}-postgres-password",
        "owner_secret": f"{prefix}-nucleus-password",
        "app_secret": f"{prefix}-nucleus-app-password",
    }
    for secret in secrets.values():
        assert secret["replication"] == {
            "user_managed": {"replicas": [{"location": "europe-west1"}]}
        }
    versions = {
        f"{role}_secret_version": {
            "secret": f"${{google_secret_manager_secret.{role}_secret.id}}",
            "secret_data_wo": f"${{ephemeral.random_password.{role}_password.result}}",
            "secret_data_wo_version": 1,
        }
        for role in created
    }
    # The app secret says which of the alternating logins is current (README, "Rotation").
    versions["app_secret_version"] = {
        "secret": "${google_secret_manager_secret.app_secret.id}",
        "secret_data_wo": '${jsonencode({"username" = "nucleus_app", "password" = '
        "ephemeral.random_password.app_password.result})}",
        "secret_data_wo_version": 1,
    }
    assert resources(stack, "google_secret_manager_secret_version") == versions
    # The app login is created by the hook's apply in SQL, never through the Cloud SQL API
    # (which would make it a member of cloudsqlsuperuser): no google_sql_user for it.
    assert sorted(resources(stack, "google_sql_user")) == ["admin_user", "owner_user"]


def test_secrets_are_readable_only_by_the_configured_members_at_secret_level(
    stacks: dict[str, Any],
) -> None:
    for name, stack in stacks.items():
        kinds = set(stack["resource"])
        # Never project-wide: no project IAM resource of any kind in any stack.
        assert not {kind for kind in kinds if kind.startswith("google_project_iam")}, name
        assert "google_secret_manager_secret_iam_binding" not in kinds, name
        assert "google_secret_manager_secret_iam_policy" not in kinds, name

    readers = resources(stacks[PRIVATE_VARIANT], "google_secret_manager_secret_iam_member")
    granted = {(reader["secret_id"], reader["member"]) for reader in readers.values()}
    assert granted == {
        ("${google_secret_manager_secret.admin_secret.id}", PROD_READER),
        ("${google_secret_manager_secret.admin_secret.id}", ADMIN_ONLY_READER),
        ("${google_secret_manager_secret.owner_secret.id}", PROD_READER),
    }
    assert {reader["role"] for reader in readers.values()} == {"roles/secretmanager.secretAccessor"}
    # Nobody is configured for the real stacks yet, so nobody is granted anything there.
    for name in REAL_STACKS:
        assert resources(stacks[name], "google_secret_manager_secret_iam_member") == {}


def test_service_accounts_get_iam_database_users_named_without_the_domain_suffix(
    stacks: dict[str, Any],
) -> None:
    users = resources(stacks[PRIVATE_VARIANT], "google_sql_user")
    iam_users = {
        name: user
        for name, user in users.items()
        if name.startswith("iam_user_")
        and user["type"] == "CLOUD_IAM_SERVICE_ACCOUNT"
        and name != "iam_user_nucleus_worker"  # an iam_members one: the test below
    }
    assert iam_users == {
        "iam_user_nucleus_api": {
            "name": IAM_USERS[0].removesuffix(".gserviceaccount.com"),
            "instance": "${google_sql_database_instance.instance.name}",
            "type": "CLOUD_IAM_SERVICE_ACCOUNT",
            "deletion_policy": "ABANDON",
        },
        "iam_user_nucleus_jobs": {
            "name": "nucleus-jobs@nucleus-variant.iam",
            "instance": "${google_sql_database_instance.instance.name}",
            "type": "CLOUD_IAM_SERVICE_ACCOUNT",
            "deletion_policy": "ABANDON",
        },
    }
    assert all("password" not in user for user in iam_users.values())


def test_outputs_name_everything_a_client_needs_and_nothing_secret(prod: dict[str, Any]) -> None:
    assert prod["output"] == {
        "connection_name": {"value": "${google_sql_database_instance.instance.connection_name}"},
        "database_name": {"value": "${google_sql_database.database.name}"},
        "admin_user_name": {"value": "${google_sql_user.admin_user.name}"},
        "owner_user_name": {"value": "${google_sql_user.owner_user.name}"},
        "admin_password_secret_id": {
            "value": "${google_secret_manager_secret.admin_secret.secret_id}"
        },
        "owner_password_secret_id": {
            "value": "${google_secret_manager_secret.owner_secret.secret_id}"
        },
        "app_user_name": {"value": "nucleus_app"},
        "app_password_secret_id": {"value": "${google_secret_manager_secret.app_secret.secret_id}"},
    }


def test_iam_members_get_iam_database_users_of_their_kind(stacks: dict[str, Any]) -> None:
    users = resources(stacks[PRIVATE_VARIANT], "google_sql_user")
    iam = {u["name"]: u["type"] for u in users.values() if "type" in u}
    assert iam == {
        "nucleus-api@nucleus-variant.iam": "CLOUD_IAM_SERVICE_ACCOUNT",
        "nucleus-jobs@nucleus-variant.iam": "CLOUD_IAM_SERVICE_ACCOUNT",
        "nucleus-worker@nucleus-variant.iam": "CLOUD_IAM_SERVICE_ACCOUNT",
        "nucleus-analysts@example.com": "CLOUD_IAM_GROUP",
        "alice@example.com": "CLOUD_IAM_USER",
    }
    assert all(u["deletion_policy"] == "ABANDON" for u in users.values() if "type" in u)
