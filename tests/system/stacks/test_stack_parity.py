"""Staging reproduces prod: same resources, and differences only where reviewed."""

from __future__ import annotations

import copy
from typing import Any

from stacks.parity import ALLOWED_DIFFERENCES, ALLOWED_ONLY_IN_ONE, compare, resource_counts


def test_staging_has_the_same_resource_types_and_counts_as_prod(
    prod: dict[str, Any], staging: dict[str, Any]
) -> None:
    assert resource_counts(staging) == resource_counts(prod)
    for kind in prod["resource"]:
        only_in_one = sorted(set(staging["resource"][kind]) ^ set(prod["resource"][kind]))
        assert all((kind, name) in ALLOWED_ONLY_IN_ONE for name in only_in_one), (kind, only_in_one)
    # Exactly the reviewed ones: staging creates its users (first secret versions), prod adopts.
    assert set(staging["resource"]["google_secret_manager_secret_version"]) - set(
        prod["resource"]["google_secret_manager_secret_version"]
    ) == {name for _, name in ALLOWED_ONLY_IN_ONE}


def test_staging_differs_from_prod_only_in_the_reviewed_fields(
    prod: dict[str, Any], staging: dict[str, Any]
) -> None:
    report = compare(prod, staging)
    assert report.ok, report.describe()
    # The differences that exist are the intended ones, and each one is listed.
    observed = {(d.block, d.path) for d in report.differences if d.block != "import"}
    assert observed == {
        ("provider", "google[0].project"),
        ("terraform", "backend.gcs.prefix"),
        ("google_sql_database_instance", "name"),
        ("google_sql_database_instance", "settings.tier"),
        ("google_sql_database_instance", "settings.availability_type"),
        ("google_sql_database_instance", "deletion_protection"),
        ("google_sql_database_instance", "settings.deletion_protection_enabled"),
        ("google_sql_database_instance", "settings.connector_enforcement"),
        ("google_sql_database_instance", "settings.ip_configuration.ssl_mode"),
        ("google_sql_database_instance", "settings.ip_configuration.server_ca_mode"),
        ("google_secret_manager_secret", "secret_id"),
        ("google_secret_manager_secret", "deletion_protection"),
        ("terraform_data", "provisioner[0].local-exec.command"),
        # Staging creates postgres and nucleus with first passwords; prod adopts them as
        # they are (their passwords untouched).
        ("google_sql_user", "password_wo"),
        ("google_sql_user", "password_wo_version"),
        ("terraform_data", "depends_on[4]"),
        ("terraform_data", "depends_on[5]"),
        ("terraform_data", "depends_on[6]"),
        # The digest of the live plan: the environment's, read after what the hook needs.
        ("data", "external.live_plan.query.env"),
        ("data", "external.live_plan.depends_on[4]"),
        ("data", "external.live_plan.depends_on[5]"),
        ("data", "external.live_plan.depends_on[6]"),
        *(
            ("ephemeral", f"random_password.{role}_password.{field}")
            for role in ("admin", "owner")
            for field in (
                "length",
                "special",
                "override_special",
                "min_lower",
                "min_upper",
                "min_numeric",
                "min_special",
            )
        ),
    }
    assert all(d.allowed for d in report.differences)


def test_parity_check_fails_on_a_difference_nobody_reviewed(
    prod: dict[str, Any], staging: dict[str, Any]
) -> None:
    drifted = copy.deepcopy(staging)
    drifted["resource"]["google_sql_database_instance"]["instance"]["settings"]["disk_size"] = 10
    drifted["resource"]["google_sql_database_instance"]["instance"]["settings"][
        "backup_configuration"
    ]["point_in_time_recovery_enabled"] = False
    report = compare(prod, drifted)
    assert not report.ok
    assert {(d.block, d.resource, d.path) for d in report.unexpected} == {
        ("google_sql_database_instance", "instance", "settings.disk_size"),
        (
            "google_sql_database_instance",
            "instance",
            "settings.backup_configuration.point_in_time_recovery_enabled",
        ),
    }


def test_parity_check_fails_on_a_missing_or_extra_resource(
    prod: dict[str, Any], staging: dict[str, Any]
) -> None:
    missing = copy.deepcopy(staging)
    del missing["resource"]["google_secret_manager_secret_version"]["app_secret_version"]
    report = compare(prod, missing)
    assert not report.ok
    assert any(
        "app_secret_version exists only in the reference" in line for line in report.structure
    )

    extra = copy.deepcopy(staging)
    extra["resource"]["google_sql_user"]["debug_user"] = {"name": "debug", "instance": "x"}
    assert not compare(prod, extra).ok


def test_parity_check_fails_on_an_unreviewed_top_level_difference(
    prod: dict[str, Any], staging: dict[str, Any]
) -> None:
    moved = copy.deepcopy(staging)
    moved["terraform"]["backend"]["gcs"]["bucket"] = "someone-elses-bucket"
    moved["provider"]["google"][0]["region"] = "us-central1"
    assert {(d.block, d.path) for d in compare(prod, moved).unexpected} == {
        ("terraform", "backend.gcs.bucket"),
        ("provider", "google[0].region"),
    }


def test_every_allowed_difference_states_why_it_is_allowed() -> None:
    for (block, path), reason in ALLOWED_DIFFERENCES.items():
        assert block and reason.strip(), (block, path)
