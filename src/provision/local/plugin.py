"""The connector plug-in of `--env local` (entry point `local` of group
`nucleus_provision.connectors`): what the connection layer needs to reach the running local
emulation through the real Cloud SQL Python Connector.

It reads the emulation's state directory (`$NUCLEUS_LOCAL_STATE_DIR`, a per-user default, or
the one the caller names) and hands over, as one `ConnectorOverrides`: the emulated Admin
API's address, Google credentials holding the static token the emulation issued (never
`google.auth.default()`, which could reach Google's metadata server), and the address of the
emulated Secret Manager, where `local up` stored the throwaway passwords it generated, as
the stacks store theirs: so every password of `--env local` is read (and rotated) through the
same Secret Manager client and code as in production.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import google.auth.credentials
import google.oauth2.credentials

from provision.config import Environment
from provision.connector_plugin import ConnectorOverrides
from provision.errors import CredentialsMissing, LocalInstanceError
from provision.local.gcp.state import EmulatorState, iam_users
from provision.local.instance import (
    BOOTSTRAP_SUPERUSER,
    STATE_ENV_VAR,
    LocalInstance,
    default_state_dir,
)


class StaticTokenCredentials(google.oauth2.credentials.Credentials):
    """Credentials that never need a refresh: a static token, no expiry.

    A subclass only so that a refresh keeps the token: IAM database authentication makes the
    Connector copy the credentials, down-scope the copy and refresh it, and google-auth's
    refresh_handler does not survive that copy. The emulation knows one token per identity,
    so "refreshing" hands back the same token, valid for an hour.
    """

    def __init__(self, token: str) -> None:
        super().__init__(token=token)  # type: ignore[no-untyped-call]  # google-auth is untyped here

    def refresh(self, request: object) -> None:
        # google-auth compares expiries as naive UTC datetimes.
        now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
        self.expiry = now + datetime.timedelta(hours=1)


def google_token(state: EmulatorState, environment: Environment) -> str:
    """The static token for the environment's Google credentials.

    With `iam_login`, the run acts as that service account (as it would with its key on
    Google Cloud): the token is the one the emulation issued to it.
    """
    if environment.iam_login is None:
        return state.api_token
    known = iam_users(state.state_dir)
    if environment.iam_login not in known:
        raise CredentialsMissing(
            f"the local emulation has no IAM service account {environment.iam_login}",
            hint="list it in the emulated environment's iam_users (with iam_auth = true), then run "
            "`nucleus-provision local up` (it adds IAM users to a running instance, keeping the data)",
        )
    return known[environment.iam_login].token


def overrides(environment: Environment, *, state_dir: Path | None = None) -> ConnectorOverrides:
    """The running emulation of `state_dir` (default: `default_state_dir()`) as connector
    overrides for `environment`, or LocalInstanceError when none runs there."""
    directory = state_dir or default_state_dir()
    instance = LocalInstance.load(directory)
    state = EmulatorState.load(directory)
    if instance is None or state is None:
        raise LocalInstanceError(
            f"no local Cloud SQL emulation runs from {directory}",
            hint=f"start one with `nucleus-provision local up`, or set {STATE_ENV_VAR} to its state directory",
        )
    # For users without a secret (test variants of the environment): the throwaway passwords
    # `local up` made. Users with a secret are read from the emulated Secret Manager first.
    passwords = dict(instance.passwords)
    # Cloud SQL's own superuser is never a customer login.
    passwords.pop(BOOTSTRAP_SUPERUSER, None)
    credentials: google.auth.credentials.Credentials = StaticTokenCredentials(
        token=google_token(state, environment)
    )
    return ConnectorOverrides(
        sqladmin_api_endpoint=state.admin_api,
        google_credentials=credentials,
        passwords=passwords.get,
        secret_manager_endpoint=state.secret_manager,
        label=f"the local emulation in {instance.state_dir}",
        unreachable_hint=(
            f"is the local emulation running (Admin API {state.admin_api}, Secret Manager "
            f"{state.secret_manager}, proxy {state.proxy})? "
            "see `nucleus-provision local status`; `local down` then `local up` restarts it"
        ),
        serves=(state.connection_name,),
    )
