"""Command-line shapes of `diff`: which two databases, what to ignore, how roles map.

Kept out of cli.py so that the CLI only declares the options and calls these.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from provision.diff.compare import CATEGORIES
from provision.errors import ConfigError

_SIDES_HINT = (
    "give two sides: --env prod --env staging, --from-env prod --to-dsn URL, "
    "--from-dsn URL --to-dsn URL, or --env prod --to-lock bootstrap_sql/schema.lock"
)


@dataclass(frozen=True)
class SideSpec:
    """One side as the user named it: an environment of environments.toml, or a DSN."""

    env: str | None = None
    dsn: str | None = None
    lock: str | None = None  # a schema lock file (bootstrap_sql/schema.lock)


def sides(
    envs: Iterable[str] = (),
    dsns: Iterable[str] = (),
    from_env: str | None = None,
    to_env: str | None = None,
    from_dsn: str | None = None,
    to_dsn: str | None = None,
    from_lock: str | None = None,
    to_lock: str | None = None,
) -> tuple[SideSpec, SideSpec]:
    """(left, right). `--from-*` names the left side and `--to-*` the right; a repeated
    `--env` (or `--dsn`) fills what is left, in the order given."""
    envs, dsns = list(envs), list(dsns)
    if sum(map(bool, (from_env, from_dsn, from_lock))) > 1:
        raise ConfigError(
            "--from-env, --from-dsn and --from-lock both name the left side: give one",
            hint=_SIDES_HINT,
        )
    if sum(map(bool, (to_env, to_dsn, to_lock))) > 1:
        raise ConfigError(
            "--to-env, --to-dsn and --to-lock both name the right side: give one",
            hint=_SIDES_HINT,
        )
    left = (
        SideSpec(env=from_env, dsn=from_dsn, lock=from_lock)
        if (from_env or from_dsn or from_lock)
        else None
    )
    right = (
        SideSpec(env=to_env, dsn=to_dsn, lock=to_lock) if (to_env or to_dsn or to_lock) else None
    )
    if envs and dsns:
        # click does not keep the order between two different options, so which is left
        # would be a guess.
        raise ConfigError(
            "--env and --dsn together do not say which side is which",
            hint="use --from-env/--to-env and --from-dsn/--to-dsn to mix them",
        )
    rest = [SideSpec(env=e) for e in envs] + [SideSpec(dsn=d) for d in dsns]
    if left is None and rest:
        left = rest.pop(0)
    if right is None and rest:
        right = rest.pop(0)
    if left is None or right is None or rest:
        given = 2 - (left is None) - (right is None) + len(rest)
        raise ConfigError(f"diff compares exactly two databases ({given} given)", hint=_SIDES_HINT)
    return left, right


def categories(values: Iterable[str]) -> frozenset[str]:
    """`--ignore owners,privileges --ignore memberships` as a set of categories."""
    chosen = frozenset(v.strip() for value in values for v in value.split(",") if v.strip())
    unknown = sorted(chosen - set(CATEGORIES))
    if unknown:
        raise ConfigError(
            f"unknown category to ignore: {', '.join(unknown)}",
            hint=f"choose among: {', '.join(CATEGORIES)}",
        )
    return chosen


def schema_names(values: Iterable[str]) -> tuple[str, ...]:
    """`--schema dna,tasks --schema public` as names, in the order given."""
    return tuple(
        dict.fromkeys(v.strip() for value in values for v in value.split(",") if v.strip())
    )
