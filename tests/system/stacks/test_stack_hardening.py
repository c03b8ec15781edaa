"""The CIS hardening of each environment: what environments.toml states, what the stacks
synthesize from it, and that the generated passwords pass the password policy."""

from __future__ import annotations

import string
import textwrap
from pathlib import Path
from typing import Any

import pytest
from stack_support import PRIVATE_VARIANT, PUBLIC_VARIANT, REAL_STACKS, REPO_ROOT, only

from provision.config import Environment, load_environments
from provision.errors import ConfigError
from stacks.database import PASSWORD_LENGTH

# The reviewed choice per environment (README, "Hardening"): prod refuses no live client
# until its client inventory; staging runs the target posture.
POSTURE = {
    "prod": ("NOT_REQUIRED", "ENCRYPTED_ONLY", "GOOGLE_MANAGED_INTERNAL_CA"),
    "staging": ("REQUIRED", "TRUSTED_CLIENT_CERTIFICATE_REQUIRED", "GOOGLE_MANAGED_CAS_CA"),
}


@pytest.mark.parametrize("name", REAL_STACKS)
def test_each_stack_carries_its_environments_connection_hardening(
    name: str, stacks: dict[str, Any]
) -> None:
    settings = only(stacks[name], "google_sql_database_instance")["settings"]
    ip = settings["ip_configuration"]
    assert (settings["connector_enforcement"], ip["ssl_mode"], ip["server_ca_mode"]) == POSTURE[
        name
    ]
    assert "server_ca_pool" not in ip


@pytest.mark.parametrize("name", REAL_STACKS)
def test_pgaudit_is_on_with_ddl_and_role_auditing_in_both_stacks(
    name: str, stacks: dict[str, Any]
) -> None:
    flags = {
        flag["name"]: flag["value"]
        for flag in only(stacks[name], "google_sql_database_instance")["settings"]["database_flags"]
    }
    assert flags["cloudsql.enable_pgaudit"] == "on"
    assert flags["pgaudit.log"] == "ddl,role"
    assert "pgaudit.log_parameter" not in flags  # bound values (secrets, data) stay out of logs


def test_apply_must_create_pgaudit_where_the_flag_is_on_and_only_there() -> None:
    # Both branches come from the real file: the embedded server of `local` has no pgaudit.
    envs = load_environments(REPO_ROOT / "environments.toml")
    assert envs["prod"].required_extensions == ("vector", "pgaudit")
    assert envs["staging"].required_extensions == ("vector", "pgaudit")
    assert envs["local"].required_extensions == ("vector",)
    assert envs["local"].pgaudit.flags() == {}


def _password_policy_holds(stack: dict[str, Any], expected: list[str]) -> None:
    policy = only(stack, "google_sql_database_instance")["settings"]["password_validation_policy"]
    assert policy["enable_password_policy"] is True
    passwords = stack["ephemeral"]["random_password"]
    assert sorted(passwords) == expected
    for name, password in passwords.items():
        assert password["length"] >= policy["min_length"], name
        assert password["length"] >= PASSWORD_LENGTH, name
        if policy["complexity"] == "COMPLEXITY_DEFAULT":
            # Cloud SQL's default complexity: lower, upper, digit and symbol, each at least once.
            for minimum in ("min_lower", "min_upper", "min_numeric", "min_special"):
                assert password[minimum] >= 1, (name, minimum)
            assert password["special"] is True, name
            specials = password["override_special"]
            assert specials and not set(specials) & set(string.ascii_letters + string.digits)
        classes = sum(password[m] for m in ("min_lower", "min_upper", "min_numeric", "min_special"))
        assert classes <= password["length"], name


@pytest.mark.parametrize("name", [*REAL_STACKS, PRIVATE_VARIANT])
def test_generated_passwords_satisfy_the_password_validation_policy(
    name: str, stacks: dict[str, Any]
) -> None:
    # The real stacks have the app login (users.app); the private variant has none. Prod
    # adopts its built-in users, which keep their passwords (no generated one).
    app = ["app_password"] if name in REAL_STACKS else []
    built_in = [] if name == "prod" else ["admin_password", "owner_password"]
    _password_policy_holds(stacks[name], sorted([*built_in, *app]))


def test_generated_passwords_grow_to_a_policy_minimum_above_32(stacks: dict[str, Any]) -> None:
    private = stacks[PRIVATE_VARIANT]
    assert (
        only(private, "google_sql_database_instance")["settings"]["password_validation_policy"][
            "min_length"
        ]
        == 40
    )
    assert {p["length"] for p in private["ephemeral"]["random_password"].values()} == {40}
    # The real policy is below 32, so the real passwords keep their 32 characters.
    assert {p["length"] for p in stacks["prod"]["ephemeral"]["random_password"].values()} == {32}


def test_a_disabled_policy_and_pgaudit_leave_no_trace_in_the_stack(stacks: dict[str, Any]) -> None:
    settings = only(stacks[PUBLIC_VARIANT], "google_sql_database_instance")["settings"]
    assert "password_validation_policy" not in settings
    names = {flag["name"] for flag in settings["database_flags"]}
    assert not {name for name in names if "pgaudit" in name}


def _config(tmp_path: Path, extra: str, table: str = "[environments.staging.users.admin]") -> Path:
    """The real environments.toml with `extra` inserted before the header `table`."""
    text = (REPO_ROOT / "environments.toml").read_text()
    path = tmp_path / "environments.toml"
    path.write_text(text.replace(table, textwrap.dedent(extra).strip() + "\n\n" + table, 1))
    # environments.toml names its privileges file, beside it.
    (path.parent / "privileges.toml").write_text((REPO_ROOT / "privileges.toml").read_text())
    return path


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('connector_enforcement = "ALWAYS"', "Input should be 'NOT_REQUIRED' or 'REQUIRED'"),
        (
            'ssl_mode = "ALLOW_UNENCRYPTED_AND_ENCRYPTED"',
            "Input should be 'ENCRYPTED_ONLY' or 'TRUSTED_CLIENT_CERTIFICATE_REQUIRED'",
        ),
        (
            'server_ca_mode = "GOOGLE_CA"',
            "Input should be 'GOOGLE_MANAGED_INTERNAL_CA', 'GOOGLE_MANAGED_CAS_CA' or "
            "'CUSTOMER_MANAGED_CAS_CA'",
        ),
        ('server_ca_mode = "CUSTOMER_MANAGED_CAS_CA"', "needs server_ca_pool"),
        (
            'server_ca_pool = "projects/p/locations/europe-west1/caPools/nucleus"',
            "server_ca_pool only applies to server_ca_mode = 'CUSTOMER_MANAGED_CAS_CA'",
        ),
        (
            'server_ca_mode = "CUSTOMER_MANAGED_CAS_CA"\nserver_ca_pool = "nucleus-pool"',
            "must be a CA pool path like projects/PROJECT/locations/REGION/caPools/NAME",
        ),
        (
            "[environments.staging.database_flags]\nlog_statement = 'everything'",
            "log_statement must be one of none, ddl, mod, all; got 'everything'",
        ),
        (
            "[environments.staging.database_flags]\nlog_connections = 'yes'",
            "log_connections must be one of on, off; got 'yes'",
        ),
        (
            "[environments.staging.database_flags]\nlog_temp_files = -5",
            "log_temp_files must be -1 (off) or a non-negative integer; got '-5'",
        ),
        (
            "[environments.staging.database_flags]\n'cloudsql.enable_pgaudit' = 'on'",
            "cloudsql.enable_pgaudit is set from the [pgaudit] table",
        ),
        (
            "[environments.staging.database_flags]\n'pgaudit.log' = 'all'",
            "pgaudit.log is set from the [pgaudit] table",
        ),
        (
            "[environments.staging.pgaudit]\nlog = ['ddl', 'everything']",
            "Input should be 'read', 'write', 'function', 'role', 'ddl', 'misc', 'misc_set' "
            "or 'all'",
        ),
        ("[environments.staging.pgaudit]\nlog = []", "names no statement class"),
        (
            "[environments.staging.password_validation_policy]\ncomplexity = 'STRONG'",
            "Input should be 'COMPLEXITY_DEFAULT' or 'COMPLEXITY_UNSPECIFIED'",
        ),
        (
            "[environments.staging.password_validation_policy]\nmin_length = 0",
            "min_length: Input should be greater than or equal to 1",
        ),
    ],
)
def test_invalid_hardening_values_are_refused_listing_the_valid_ones(
    tmp_path: Path, extra: str, expected: str
) -> None:
    # Tables go to staging; plain keys to `local`, which (unlike staging) states none of them.
    name, table = (
        ("staging", "[environments.staging.users.admin]")
        if extra.startswith("[")
        else ("local", "[environments.local.pgaudit]")
    )
    with pytest.raises(ConfigError, match=f"environment '{name}' is invalid") as caught:
        load_environments(_config(tmp_path, extra, table))
    assert expected in str(caught.value)


def test_a_child_environment_overrides_one_flag_and_inherits_the_others(tmp_path: Path) -> None:
    envs = load_environments(
        _config(tmp_path, "[environments.staging.database_flags]\nlog_statement = 'mod'")
    )
    prod = {flag.name: flag.value for flag in envs["prod"].database_flags}
    staging = {flag.name: flag.value for flag in envs["staging"].database_flags}
    assert staging == {**prod, "log_statement": "mod"}
    assert prod["log_temp_files"] == "0"  # TOML integers become the strings Cloud SQL expects


def test_the_list_form_of_database_flags_still_works(environments: dict[str, Environment]) -> None:
    data = environments["prod"].model_dump(exclude={"name"})
    data["database_flags"] = [{"name": "log_lock_waits", "value": "on"}]
    env = Environment(name="listed", **data)
    assert [(f.name, f.value) for f in env.database_flags] == [("log_lock_waits", "on")]
