"""Commands named in hints, with the target flags of the invocation that printed them.

A hint such as "run `nucleus-provision move run`" printed by `move verify --env local` must
say `--env local`: without it, it points at prod. Hints are written deep in the engine (the
executor, the move runner, concerns' remedies), far from the options, so the CLI records the
invocation's target flags here once (`set_target`, from `cli.target_options`) and every hint
that names a command of ours builds it with `command(...)`. Nothing else keeps state here.

A DSN is repeated with its password replaced by the word PASSWORD: a password never reaches
output (the reader types theirs, or passes the same variable they used). Imports only the
standard library: cli.py imports it at its top, and `--help` must load nothing heavy.
"""

from __future__ import annotations

import shlex
from contextvars import ContextVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

PROGRAM = "nucleus-provision"

# The target flags of this invocation, in the order they are printed (empty: none given, as
# for `local`, `lock`, `diff`, or a library caller).
_TARGET: ContextVar[tuple[str, ...]] = ContextVar("provision_hint_target", default=())


def _without_password(dsn: str) -> str:
    """The DSN with its password (before the @ or in ?password=) replaced by PASSWORD."""
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
    user = parts.username or ""
    netloc = host if ":" not in host else f"[{host}]"
    if port is not None:
        netloc = f"{netloc}:{port}"
    if user:
        has_password = parts.password is not None or "password=" in parts.query
        netloc = f"{user}:PASSWORD@{netloc}" if has_password else f"{user}@{netloc}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "password"])
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def target_flags(
    *,
    env_name: str | None = None,
    dsn: str | None = None,
    owner_dsn: str | None = None,
    config: str | None = None,
) -> tuple[str, ...]:
    """The flags that name a target, as a reader would type them again (shell-quoted)."""
    flags: list[str] = []
    if config:
        flags += ["--config", shlex.quote(config)]
    if env_name:
        flags += ["--env", shlex.quote(env_name)]
    if dsn:
        flags += ["--dsn", shlex.quote(_without_password(dsn))]
    if owner_dsn:
        flags += ["--owner-dsn", shlex.quote(_without_password(owner_dsn))]
    return tuple(flags)


def set_target(
    *,
    env_name: str | None = None,
    dsn: str | None = None,
    owner_dsn: str | None = None,
    config: str | None = None,
) -> None:
    """Record the invocation's target flags (the CLI, once per command)."""
    _TARGET.set(target_flags(env_name=env_name, dsn=dsn, owner_dsn=owner_dsn, config=config))


def command(verb: str) -> str:
    """`nucleus-provision VERB ARGS` followed by this invocation's target flags."""
    return " ".join([PROGRAM, verb, *_TARGET.get()])
