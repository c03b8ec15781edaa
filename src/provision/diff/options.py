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
    "or --from-dsn URL --to-dsn URL"
)


@dataclass(frozen=True)
class SideSpec:
    """One side as the user named it: an environment of environments.toml, or a DSN."""

    env: str | None = None
    dsn: str | None = None


def sides(
    envs: Iterable[str] = (),
    dsns: Iterable[str] = (),
    from_env: str | None = None,
    to_env: str | None = None,
    from_dsn: str | None = None,
    to_dsn: str | None = None,
) -> tuple[SideSpec, SideSpec]:
    """(left, right). `--from-*` names the left side and `--to-*` the right; a repeated
    `--env` (or `--dsn`) fills what is left, in the order given."""
    envs, dsns = list(envs), list(dsns)
    if from_env and from_dsn:
        raise ConfigError("--from-env and --from-dsn both name the left side", hint=_SIDES_HINT)
    if to_env and to_dsn:
        raise ConfigError("--to-env and --to-dsn both name the right side", hint=_SIDES_HINT)
    left = SideSpec(env=from_env) if from_env else SideSpec(dsn=from_dsn) if from_dsn else None
    right = SideSpec(env=to_env) if to_env else SideSpec(dsn=to_dsn) if to_dsn else None
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
