"""Connector plug-ins: how an environment reaches something else than Google's Cloud SQL (the
local emulation) through the same Cloud SQL Python Connector, without the connection code
knowing what that something is.

An environment names its plug-in in environments.toml (`connector = "local"`). The name is
looked up among the Python entry points of group `nucleus_provision.connectors` (declared by
the package that provides the plug-in: `local = "provision.local.plugin:overrides"` in this
project's pyproject.toml, installed with the `emulation` extra). The entry point is a
`ConnectorPlugin`: given the environment, it returns one `ConnectorOverrides`, everything
the connection layer takes from it instead of from Google:

- the Admin API endpoint the Connector calls (`sqladmin_api_endpoint`);
- the Google credentials it presents there;
- the database passwords it knows, or the Secret Manager endpoint it serves (the local
  emulation serves one: its secrets stand for the ones the stacks create), consulted before
  the password variable, so that a production password exported in the shell is never sent
  elsewhere (and Google's Secret Manager is never asked);
- words for messages: what it is (`label`), what to check when its endpoint does not answer
  (`unreachable_hint`), and which instances it serves (named when the Admin API answers 404).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

from provision.errors import ConfigError

if TYPE_CHECKING:
    import google.auth.credentials

    from provision.config import Environment

ENTRY_POINT_GROUP = "nucleus_provision.connectors"
# The plug-in this project ships; the others would come from packages of their own.
EMULATION_EXTRA_HINT = "pip install 'nucleus-provision[emulation]'"


@dataclass(frozen=True)
class ConnectorOverrides:
    """What a connector plug-in hands the connection layer (see the module docstring)."""

    sqladmin_api_endpoint: str
    google_credentials: google.auth.credentials.Credentials = field(repr=False)
    # Database user name -> its password, or None when the plug-in does not know that user.
    passwords: Callable[[str], str | None] = field(repr=False)
    label: str
    unreachable_hint: str | None = None
    serves: tuple[str, ...] = ()
    # `http://HOST:PORT` of a Secret Manager the plug-in serves (REST, the real client), for
    # the secrets of users it has no password for; also where `rotate` writes.
    secret_manager_endpoint: str | None = None


class ConnectorPlugin(Protocol):
    """The callable an entry point of ENTRY_POINT_GROUP names.

    `state_dir` is where the plug-in keeps its state when the caller knows better than the
    plug-in's default (the demo's own emulation); plug-ins without state ignore it.
    """

    def __call__(
        self, environment: Environment, *, state_dir: Path | None = None
    ) -> ConnectorOverrides: ...


def load_plugin(name: str, environment_name: str) -> ConnectorPlugin:
    """The plug-in registered under `name`, or a ConfigError saying how to get it."""
    found = entry_points(group=ENTRY_POINT_GROUP, name=name)
    if not found:
        known = sorted(entry.name for entry in entry_points(group=ENTRY_POINT_GROUP))
        raise ConfigError(
            f"environment {environment_name!r} names connector {name!r}, which is not installed "
            f"(known: {', '.join(known) or 'none'})",
            hint=f"fix connector in [environments.{environment_name}] of environments.toml; "
            f"the local emulation's connector comes with {EMULATION_EXTRA_HINT}",
        )
    entry = next(iter(found))
    try:
        plugin = entry.load()
    except ImportError as exc:
        raise ConfigError(
            f"connector {name!r} of environment {environment_name!r} cannot be loaded: {exc}",
            hint=f"install what it needs; for the local emulation: {EMULATION_EXTRA_HINT}",
        ) from None
    return cast(ConnectorPlugin, plugin)


def overrides_for(
    environment: Environment, *, state_dir: Path | None = None
) -> ConnectorOverrides | None:
    """The overrides of the environment's connector plug-in; None for Google's Cloud SQL."""
    if environment.connector is None:
        return None
    plugin = load_plugin(environment.connector, environment.name)
    return plugin(environment, state_dir=state_dir)
