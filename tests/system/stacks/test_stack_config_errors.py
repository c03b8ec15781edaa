"""A configuration the stacks must not deploy is refused with a clear error, before synth."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from stack_support import REPO_ROOT

from provision.config import Environment, load_environments
from provision.errors import ConfigError
from stacks.checks import check_deployable


def _config(tmp_path: Path, extra: str) -> Path:
    """The real environments.toml with `extra` appended to staging's table."""
    text = (REPO_ROOT / "environments.toml").read_text()
    marker = "[environments.staging.users.admin]"
    path = tmp_path / "environments.toml"
    path.write_text(text.replace(marker, textwrap.dedent(extra).strip() + "\n\n" + marker, 1))
    # environments.toml names its privileges file, beside it.
    (path.parent / "privileges.toml").write_text((REPO_ROOT / "privileges.toml").read_text())
    return path


@pytest.mark.parametrize(
    "cidr",
    ["0.0.0.0/0", " 0.0.0.0/0 ", "::/0", "0.0.0.0/00", "0.0.0.0/1", "128.0.0.0/4"],
)
def test_opening_the_instance_to_the_internet_is_refused_naming_environment_and_field(
    tmp_path: Path, cidr: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_environments(_config(tmp_path, f'authorized_networks = ["{cidr}"]'))
    message = str(caught.value)
    assert "environment 'staging' is invalid" in message
    assert "authorized_networks" in message
    assert "internet" in message


def test_a_malformed_network_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a CIDR range"):
        load_environments(_config(tmp_path, 'authorized_networks = ["office"]'))


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('secret_accessors = ["allUsers"]', "is not an IAM member"),
        ('iam_users = ["someone@example.com"]', "is not a service-account email"),
        ('edition = "ENTERPRISE_PLUSS"', "must be one of ENTERPRISE, ENTERPRISE_PLUS"),
        ('disk_type = "NVME"', "must be one of PD_SSD, PD_HDD"),
        (
            'database_flags = [{name = "cloudsql.enable_pgvector", value = "on"}]',
            "cloudsql.enable_pgvector does not exist",
        ),
        (
            'database_flags = [{name = "cloudsql.iam_authentication", value = "off"}]',
            "is set from iam_auth",
        ),
        ('private_network = "default"', "projects/PROJECT/global/networks/NAME"),
    ],
)
def test_invalid_values_are_refused_with_the_fix_in_the_message(
    tmp_path: Path, extra: str, expected: str
) -> None:
    with pytest.raises(ConfigError, match="environment 'staging' is invalid") as caught:
        load_environments(_config(tmp_path, extra))
    assert expected in str(caught.value)


def test_iam_users_without_iam_auth_are_refused(tmp_path: Path) -> None:
    extra = 'iam_auth = false\niam_users = ["nucleus-api@nucleus-staging.iam.gserviceaccount.com"]'
    with pytest.raises(ConfigError, match="iam_users: .*needs iam_auth = true"):
        load_environments(_config(tmp_path, extra))


def _staging(environments: dict[str, Environment], **changes: Any) -> list[Environment]:
    data = environments["staging"].model_dump()
    data.update(changes)
    return [environments["prod"], Environment(**data)]


def test_stacks_refuse_an_environment_without_password_secrets(
    environments: dict[str, Environment],
) -> None:
    users = {"admin": {"name": "postgres"}, "owner": {"name": "nucleus"}}
    with pytest.raises(ConfigError) as caught:
        check_deployable(_staging(environments, users=users))
    message = str(caught.value)
    assert "environment 'staging': users.admin.secret is missing" in message
    assert "users.owner.secret is missing" in message


def test_stacks_refuse_two_environments_sharing_one_terraform_state(
    environments: dict[str, Environment],
) -> None:
    with pytest.raises(ConfigError, match="'prod' and 'staging' share the Terraform state"):
        check_deployable(_staging(environments, state_prefix="nucleus/prod"))


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"state_prefix": ""}, "state_prefix is empty"),
        ({"ip_type": "private"}, "ip_type = 'private' needs private_network"),
        ({"ip_type": "psc"}, "not supported by the stack yet"),
        (
            {"availability_type": "REGIONAL", "backup": {"point_in_time_recovery": False}},
            "'REGIONAL' needs backup.point_in_time_recovery = true",
        ),
        ({"backup": {"transaction_log_retention_days": 14}}, "needs edition = 'ENTERPRISE_PLUS'"),
        (
            {
                "users": {
                    "admin": {"name": "postgres", "secret": "a"},
                    "owner": {"name": "postgres", "secret": "b"},
                }
            },
            "must be different users",
        ),
    ],
)
def test_stacks_refuse_what_cloud_sql_or_terraform_would_reject_later(
    environments: dict[str, Environment], changes: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError, match="the stacks cannot be built") as caught:
        check_deployable(_staging(environments, **changes))
    assert expected in str(caught.value)


def test_build_app_reports_configuration_errors_before_loading_any_binding(
    environments: dict[str, Environment],
) -> None:
    from main import build_app

    with pytest.raises(ConfigError, match="state_prefix is empty"):
        build_app(_staging(environments, state_prefix=""))


def test_the_real_configuration_is_deployable(environments: dict[str, Environment]) -> None:
    check_deployable(load_environments(REPO_ROOT / "environments.toml").values())
