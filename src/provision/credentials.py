"""Where the database logins of an environment come from: IAM, a password variable, Secret
Manager, or the local emulation's state.

For each user of an environment (`users.admin`, `users.owner` in environments.toml) the
lookup is, in this order:

1. Admin only, when the environment sets `iam_login`: IAM database authentication as that
   service account (one of `iam_users`); no password.
2. Emulated environments only: the password the running emulation generated for that user
   (`local up` writes it to its state directory). It comes before the variable so that a
   production password exported in the shell can never be sent to the local emulation, nor
   a stale one be used after `local up` made new ones.
3. The environment variable named by `password_env`, when it is set and not empty.
4. Non-emulated environments only: the latest version of the Secret Manager secret `secret`
   in the environment's project (the secret the stacks create).

A `Login` keeps the password out of its repr, and errors name where they looked, never a
value. Google credentials come from Application Default Credentials for real environments
and from the emulation's static token for emulated ones (never `google.auth.default()`
there, which could reach Google's metadata server).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from provision.errors import ConnectionFailed, CredentialsMissing

if TYPE_CHECKING:
    import google.auth.credentials

    from provision.config import Environment, UserConfig
    from provision.local.emulator import EmulatorState, IamUser
    from provision.local.server import LocalInstance

Role = Literal["admin", "owner"]
# (project, secret id) -> the secret's latest payload (SecretManagerReader, or a stand-in).
SecretReader = Callable[[str, str], str]

# The Connector needs sqlservice.admin; Secret Manager needs cloud-platform, which covers both.
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
SECRET_TIMEOUT = 10.0


@dataclass(frozen=True)
class Login:
    """How one database user logs in. `source` says where the secret came from, for messages."""

    user: str
    password: str | None = field(repr=False)
    iam: bool
    source: str


# -- Google credentials -----------------------------------------------------------------------


def application_default_credentials() -> google.auth.credentials.Credentials:
    """Application Default Credentials for the Admin API and Secret Manager, or a clear error."""
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, _project = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
    except DefaultCredentialsError:
        raise CredentialsMissing(
            "no Google credentials for the Cloud SQL Admin API (Application Default Credentials not found)",
            hint="run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS "
            "to a service-account key file",
        ) from None
    return credentials


def static_token_credentials(token: str) -> google.auth.credentials.Credentials:
    """Credentials that never need a refresh, for the local emulation: a static token, no expiry.

    A subclass only so that a refresh keeps the token: IAM database authentication makes the
    Connector copy the credentials, down-scope the copy and refresh it, and google-auth's
    refresh_handler does not survive that copy. The emulation knows one token per identity,
    so "refreshing" hands back the same token, valid for an hour.
    """
    import google.oauth2.credentials

    class StaticTokenCredentials(google.oauth2.credentials.Credentials):
        def refresh(self, request: object) -> None:
            # google-auth compares expiries as naive UTC datetimes.
            now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
            self.expiry = now + datetime.timedelta(hours=1)

    return StaticTokenCredentials(token=token)


# -- Secret Manager ---------------------------------------------------------------------------


class SecretManagerReader:
    """A SecretReader over the Secret Manager API; the client is built on first use (so that
    a run whose passwords all come from variables never loads it) and closed by `close`.

    Production: gRPC to secretmanager.googleapis.com with the given (or default) credentials.
    With `endpoint="http://HOST:PORT"` it speaks Secret Manager's REST protocol to that
    address instead, which is how tests reach a local fake with the real client.
    """

    def __init__(
        self,
        credentials: google.auth.credentials.Credentials | None = None,
        *,
        endpoint: str | None = None,
        timeout: float = SECRET_TIMEOUT,
    ) -> None:
        self.credentials = credentials
        self.endpoint = endpoint
        self.timeout = timeout
        self._client_instance: Any = None

    def _client(self) -> Any:
        if self._client_instance is None:
            from google.cloud import secretmanager

            if self.endpoint is not None:
                from google.cloud.secretmanager_v1.services.secret_manager_service.transports.rest import (
                    SecretManagerServiceRestTransport,
                )

                scheme, _, host = self.endpoint.partition("://")
                transport = SecretManagerServiceRestTransport(
                    host=host, credentials=self.credentials, url_scheme=scheme
                )
                self._client_instance = secretmanager.SecretManagerServiceClient(
                    transport=transport
                )
            else:
                self._client_instance = secretmanager.SecretManagerServiceClient(
                    credentials=self.credentials
                )
        return self._client_instance

    def __call__(self, project: str, secret: str) -> str:
        import requests
        from google.api_core import exceptions as api
        from google.api_core.retry import Retry, if_exception_type

        name = f"projects/{project}/secrets/{secret}/versions/latest"
        # Retry transient errors briefly; the whole lookup stays within `timeout`.
        retry = Retry(
            predicate=if_exception_type(api.ServiceUnavailable),
            initial=0.2,
            maximum=2.0,
            timeout=self.timeout,
        )
        try:
            response = self._client().access_secret_version(
                name=name, timeout=self.timeout, retry=retry
            )
        except api.NotFound:
            raise _SecretNotFound(
                f"Secret Manager secret {name}: not found (or it has no enabled version)"
            ) from None
        except (api.Forbidden, api.Unauthorized):  # gRPC: PermissionDenied, Unauthenticated
            raise CredentialsMissing(
                f"no permission to read Secret Manager secret {name}",
                hint="grant roles/secretmanager.secretAccessor on it (secret_accessors in environments.toml), "
                "or export the password variable",
            ) from None
        except api.FailedPrecondition:
            raise CredentialsMissing(
                f"the latest version of Secret Manager secret {name} is disabled or destroyed",
                hint="add a new version: `gcloud secrets versions add`",
            ) from None
        except (api.GoogleAPICallError, api.RetryError, requests.RequestException) as exc:
            # gRPC reports an unreachable service as ServiceUnavailable; REST as requests' errors.
            raise ConnectionFailed(
                f"cannot read Secret Manager secret {name} ({type(exc).__name__})",
                hint="check the network path to Secret Manager, or export the password variable",
            ) from None
        # A secret made with `echo ... | gcloud secrets create` ends in a newline that is not
        # part of the password.
        return response.payload.data.decode("utf-8").rstrip("\r\n")

    def close(self) -> None:
        """Close the client's channel (gRPC keeps threads otherwise). Idempotent."""
        if self._client_instance is not None:
            self._client_instance.transport.close()
            self._client_instance = None


class _SecretNotFound(Exception):
    """Internal: the secret does not exist; the lookup goes on and reports it at the end."""


# -- the lookup -------------------------------------------------------------------------------


def _hint(environment: Environment, role: Role, user: UserConfig) -> str:
    ways = []
    if user.password_env:
        ways.append(f"export {user.password_env}")
    if user.secret and not environment.emulated:
        ways.append(f"create Secret Manager secret {user.secret} in project {environment.project}")
    if role == "admin":
        ways.append("or log in with IAM: iam_login = a service account of iam_users")
    if environment.emulated:
        ways.insert(0, "start the emulation with `nucleus-provision local up`")
    return "; ".join(ways)


def login_for(
    environment: Environment,
    role: Role,
    *,
    secrets: SecretReader | None = None,
    emulation: LocalInstance | None = None,
) -> Login:
    """The login of `users.<role>` (see the module docstring for the order), or CredentialsMissing
    naming every place that was looked at."""
    if role == "admin" and environment.iam_login is not None:
        return Login(
            environment.iam_login,
            None,
            True,
            f"IAM database authentication as {environment.iam_login}",
        )
    user: UserConfig = getattr(environment.users, role)

    looked: list[str] = []
    if environment.emulated:
        if emulation is not None and user.name in emulation.passwords:
            return Login(
                user.name,
                emulation.passwords[user.name],
                False,
                f"the local emulation in {emulation.state_dir}",
            )
        looked.append(
            "the local emulation's state"
            if emulation is not None
            else "a running local emulation (none)"
        )

    if user.password_env:
        value = os.environ.get(user.password_env)
        if value:
            return Login(user.name, value, False, f"environment variable {user.password_env}")
        looked.append(f"environment variable {user.password_env} (not set)")

    if user.secret and not environment.emulated:
        own_reader = None
        if secrets is None:
            secrets = own_reader = SecretManagerReader(application_default_credentials())
        try:
            password = secrets(environment.project, user.secret)
        except _SecretNotFound as exc:
            looked.append(str(exc))
        else:
            return Login(
                user.name,
                password,
                False,
                f"Secret Manager secret projects/{environment.project}/secrets/{user.secret} (latest version)",
            )
        finally:
            if own_reader is not None:
                own_reader.close()

    if not looked:
        looked.append("nowhere: neither password_env nor secret is configured")
    raise CredentialsMissing(
        f"no password for database user {user.name!r} (users.{role} of environment {environment.name!r}); "
        f"looked in: {'; '.join(looked)}",
        hint=_hint(environment, role, user),
    )


def emulation_token(state: EmulatorState, environment: Environment) -> tuple[str, IamUser | None]:
    """The static token for an emulated environment's Google credentials.

    With `iam_login`, the run acts as that service account (as it would with its key on
    Google Cloud): the token is the one the emulation issued to it.
    """
    from provision.local.emulator import iam_users

    if environment.iam_login is None:
        return state.api_token, None
    known = iam_users(state.state_dir)
    if environment.iam_login not in known:
        raise CredentialsMissing(
            f"the local emulation has no IAM service account {environment.iam_login}",
            hint="list it in the emulated environment's iam_users (with iam_auth = true), then run "
            "`nucleus-provision local down` and `local up` again",
        )
    user = known[environment.iam_login]
    return user.token, user
