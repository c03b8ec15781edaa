"""What an environment must state before a stack can deploy it.

`provision.config` validates each value on its own (ranges, enums, no 0.0.0.0/0). These
checks add what only matters once Terraform creates real resources: a password secret per
user, a state prefix of its own per stack, a network for private IP. They run before any
cdktf code, so a bad configuration fails in milliseconds with every problem listed,
instead of half-way through a synth or, worse, a deploy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from provision.config import Environment, IpType
from provision.errors import ConfigError
from stacks.naming import iam_user_key, member_key


def deployable(environments: Iterable[Environment]) -> list[Environment]:
    """The environments a stack is built for: every one on Google's Cloud SQL, i.e. not reached
    through a connector plug-in (the local emulation)."""
    return [env for env in environments if env.connector is None]


def environment_problems(env: Environment) -> list[str]:
    """Everything that keeps one environment from being deployed, as readable sentences."""
    problems: list[str] = []
    users = [("admin", env.users.admin), ("owner", env.users.owner)]
    users += [("app", env.users.app)] if env.users.app is not None else []
    for role, user in users:
        if "@" in user.name:
            # The stack creates users.admin and users.owner as built-in users with a
            # password; a service account logs in through iam_users instead.
            problems.append(
                f"users.{role}.name = {user.name!r} is an IAM identity; the stack creates "
                "built-in users with passwords (list service accounts in iam_users)"
            )
        if not user.secret:
            problems.append(
                f"users.{role}.secret is missing: the stack stores the {user.name!r} password in "
                "that Secret Manager secret"
            )
    if env.users.admin.name == env.users.owner.name:
        problems.append("users.admin.name and users.owner.name must be different users")
    secrets = [user.secret for _, user in users if user.secret]
    if len(set(secrets)) != len(secrets):
        problems.append("users.admin, users.owner and users.app need different secrets")
    if not env.state_prefix:
        problems.append(
            "state_prefix is empty: each stack keeps its Terraform state under its own prefix"
        )
    if env.ip_type is IpType.PRIVATE and not env.private_network:
        problems.append(
            "ip_type = 'private' needs private_network = 'projects/P/global/networks/N'"
        )
    if env.ip_type is IpType.PSC:
        problems.append(
            "ip_type = 'psc' is not supported by the stack yet; use 'public' or 'private'"
        )
    if env.ip_type is not IpType.PUBLIC and env.authorized_networks:
        problems.append(
            "authorized_networks only applies to a public IP; remove it or use ip_type = 'public'"
        )
    if env.availability_type == "REGIONAL" and not env.backup.point_in_time_recovery:
        # Cloud SQL for PostgreSQL refuses high availability without point-in-time recovery.
        problems.append("availability_type = 'REGIONAL' needs backup.point_in_time_recovery = true")
    if env.edition == "ENTERPRISE" and env.backup.transaction_log_retention_days > 7:
        problems.append(
            "backup.transaction_log_retention_days above 7 needs edition = 'ENTERPRISE_PLUS'"
        )
    problems += _key_clashes("iam_users", env.iam_users, iam_user_key)
    users = [("admin", env.users.admin), ("owner", env.users.owner)]
    users += [("app", env.users.app)] if env.users.app is not None else []
    for role, user in users:
        readers = (*env.secret_accessors, *user.secret_accessors)
        problems += _key_clashes(
            f"secret readers of users.{role}", tuple(dict.fromkeys(readers)), member_key
        )
    return problems


def _key_clashes(what: str, values: tuple[str, ...], key: Callable[[str], str]) -> list[str]:
    by_key: dict[str, list[str]] = {}
    for value in values:
        by_key.setdefault(key(value), []).append(value)
    return [
        f"{what}: {' and '.join(clash)} would get the same Terraform name {name!r}; "
        "only one identity per account name is supported"
        for name, clash in by_key.items()
        if len(clash) > 1
    ]


def check_deployable(environments: Iterable[Environment]) -> None:
    """Raise ConfigError naming every problem of every stack environment, or return."""
    stacks = deployable(environments)
    problems = [
        f"environment {env.name!r}: {problem}"
        for env in stacks
        for problem in environment_problems(env)
    ]
    seen: dict[tuple[str, str], str] = {}
    for env in stacks:
        state = (env.state_bucket, env.state_prefix)
        if env.state_prefix and state in seen:
            # Two stacks writing one state object would each destroy the other's resources.
            problems.append(
                f"environments {seen[state]!r} and {env.name!r} share the Terraform state "
                f"gs://{env.state_bucket}/{env.state_prefix}"
            )
        seen.setdefault(state, env.name)
    if not stacks:
        problems.append("no environment to deploy: every environment is emulated")
    if problems:
        raise ConfigError(
            "the stacks cannot be built: " + "; ".join(problems),
            hint="fix environments.toml as described above",
        )
