"""Where the database logins of an environment come from: IAM, a connector plug-in, a password
variable, or Secret Manager.

For each user of an environment (`users.admin`, `users.owner` in environments.toml) the
lookup is, in this order:

1. Admin only, when the environment sets `iam_login`: IAM database authentication as that
   service account (one of `iam_users`); no password.
2. Environments with a connector plug-in only (`provision.connector_plugin`, e.g. the local
   emulation): the password the plug-in knows for that user. It comes before the variable
   so that a production password exported in the shell can never be sent to the plug-in's
   instance, nor a stale one be used after `local up` made new ones.
3. The environment variable named by `password_env`, when it is set and not empty.
4. Without a plug-in only: the latest version of the Secret Manager secret `secret` in the
   environment's project (the secret the stacks create).

A `Login` keeps the password out of its repr, and errors name where they looked, never a
value. Google credentials come from Application Default Credentials, unless a plug-in
supplies its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from provision.errors import ConnectionFailed, CredentialsMissing

if TYPE_CHECKING:
    import google.auth.credentials

    from provision.config import Environment, UserConfig
    from provision.connector_plugin import ConnectorOverrides

Role = Literal["admin", "owner", "app"]
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
        payload: bytes = response.payload.data
        return payload.decode("utf-8").rstrip("\r\n")

    def close(self) -> None:
        """Close the client's channel (gRPC keeps threads otherwise). Idempotent."""
        if self._client_instance is not None:
            self._client_instance.transport.close()
            self._client_instance = None


class _SecretNotFound(Exception):
    """Internal: the secret does not exist; the lookup goes on and reports it at the end."""


# -- the lookup -------------------------------------------------------------------------------


def _hint(
    environment: Environment, role: Role, user: UserConfig, overrides: ConnectorOverrides | None
) -> str:
    ways = []
    if user.password_env:
        ways.append(f"export {user.password_env}")
    if user.secret and overrides is None:
        ways.append(f"create Secret Manager secret {user.secret} in project {environment.project}")
    if role == "admin":
        ways.append("or log in with IAM: iam_login = a service account of iam_users")
    return "; ".join(ways)


def login_for(
    environment: Environment,
    role: Role,
    *,
    secrets: SecretReader | None = None,
    overrides: ConnectorOverrides | None = None,
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
    user: UserConfig | None = getattr(environment.users, role)
    if user is None:
        raise CredentialsMissing(
            f"environment {environment.name!r} declares no users.{role}",
            hint=f"add [environments.{environment.name}.users.{role}] to environments.toml",
        )

    looked: list[str] = []
    if overrides is not None:
        known = overrides.passwords(user.name)
        if known is not None:
            return Login(user.name, known, False, overrides.label)
        looked.append(f"{overrides.label} (it has no password for {user.name!r})")

    if user.password_env:
        value = os.environ.get(user.password_env)
        if value:
            return Login(user.name, value, False, f"environment variable {user.password_env}")
        looked.append(f"environment variable {user.password_env} (not set)")

    if user.secret and overrides is None:
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
        hint=_hint(environment, role, user, overrides),
    )


def app_password_source(
    environment: Environment,
    *,
    secrets: SecretReader | None = None,
    overrides: ConnectorOverrides | None = None,
) -> Callable[[], str] | None:
    """users.app's password (see `login_for` for the order), looked up only when apply must
    create the login; None when the environment declares no app login."""
    app = environment.users.app
    if app is None:
        return None

    def read() -> str:
        try:
            login = login_for(environment, "app", secrets=secrets, overrides=overrides)
        except CredentialsMissing as exc:
            if app.name in exc.message:
                raise
            # Secret Manager could not even be asked (no Google credentials): say what for.
            raise CredentialsMissing(
                f"no password for login {app.name!r} (users.app): "
                + (f"{app.password_env} is not set, and " if app.password_env else "")
                + f"its Secret Manager secret could not be read ({exc.message})",
                hint=(f"export {app.password_env}, or " if app.password_env else "")
                + (exc.hint or ""),
            ) from None
        assert login.password is not None  # a password login, never IAM
        return login.password

    return read
