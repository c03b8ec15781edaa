"""Where the database logins of an environment come from: IAM, a connector plug-in, a password
variable, or Secret Manager.

For each user of an environment (`users.admin`, `users.owner` in environments.toml) the
lookup is, in this order:

1. Admin only, when the environment sets `iam_login`: IAM database authentication as that
   service account (one of `iam_users`); no password.
2. Environments with a connector plug-in only (`provision.connector_plugin`, e.g. the local
   emulation): the user's secret in the plug-in's own Secret Manager (the local emulation
   serves one), else the password the plug-in knows for that user. Both come before the
   variable so that a production password exported in the shell can never be sent to the
   plug-in's instance, nor a stale one be used after `local up` made new ones.
3. The environment variable named by `password_env`, when it is set and not empty.
4. Without a plug-in only: the latest version of the Secret Manager secret `secret` in the
   environment's project (the secret the stacks create).

The app login's secret holds JSON, `{"username": "nucleus_app", "password": "..."}`: which of
the two alternating logins is current, and its password (`AppSecret`; docs/terraform.md, "Rotating
passwords"). A secret holding a bare password (written by hand, or before rotation existed)
is read as the password of `users.app.name`.

A `Login` keeps the password out of its repr, and errors name where they looked, never a
value. Google credentials come from Application Default Credentials, unless a plug-in
supplies its own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from provision.errors import ConnectionFailed, CredentialsMissing
from provision.hints import command

if TYPE_CHECKING:
    import google.auth.credentials

    from provision.config import Environment, UserConfig
    from provision.connector_plugin import ConnectorOverrides

Role = Literal["admin", "owner", "app"]
# (project, secret id) -> the secret's latest payload (SecretStore, or a stand-in).
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


class SecretStore:
    """Secret Manager: a SecretReader (`store(project, secret)` is the latest payload) that
    also adds versions, for `rotate`. The client is built on first use (so that a run whose
    passwords all come from variables never loads it) and closed by `close`.

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

    def add_version(self, project: str, secret: str, payload: str) -> str:
        """Add `payload` as the secret's new (latest) version; returns the version's name.
        Errors name the secret and what to do, never the payload."""
        import requests
        from google.api_core import exceptions as api

        parent = f"projects/{project}/secrets/{secret}"
        try:
            # No retry: an add that timed out may have happened, and a second one would be a
            # second version (harmless, but not what was asked).
            version = self._client().add_secret_version(
                parent=parent,
                payload={"data": payload.encode("utf-8")},
                timeout=self.timeout,
            )
        except api.NotFound:
            raise CredentialsMissing(
                f"Secret Manager secret {parent} does not exist",
                hint="the stacks create it: `npx cdktf deploy <env>` (or `gcloud secrets create`)",
            ) from None
        except (api.Forbidden, api.Unauthorized):
            raise CredentialsMissing(
                f"no permission to add a version to Secret Manager secret {parent}",
                hint="grant roles/secretmanager.secretVersionAdder on it to whoever rotates",
            ) from None
        except (api.GoogleAPICallError, api.RetryError, requests.RequestException) as exc:
            raise ConnectionFailed(
                f"cannot add a version to Secret Manager secret {parent} ({type(exc).__name__})",
                hint="check the network path to Secret Manager and run again",
            ) from None
        name: str = version.name
        return name

    def has_versions(self, project: str, secret: str) -> bool:
        """Whether the secret has any version (enabled or not)."""
        response = self._client().list_secret_versions(
            parent=f"projects/{project}/secrets/{secret}", timeout=self.timeout
        )
        return any(True for _ in response)

    def create_secret(self, project: str, secret: str) -> None:
        """Create an empty secret (automatic replication) unless it exists: what the stacks
        do, for an emulation that stands in for them."""
        from google.api_core import exceptions as api

        try:
            self._client().create_secret(
                parent=f"projects/{project}",
                secret_id=secret,
                secret={"replication": {"automatic": {}}},
                timeout=self.timeout,
            )
        except api.AlreadyExists:
            pass

    def close(self) -> None:
        """Close the client's channel (gRPC keeps threads otherwise). Idempotent."""
        if self._client_instance is not None:
            self._client_instance.transport.close()
            self._client_instance = None


class _SecretNotFound(Exception):
    """Internal: the secret does not exist; the lookup goes on and reports it at the end."""


# -- the app login's secret -------------------------------------------------------------------


@dataclass(frozen=True)
class AppSecret:
    """What the app login's secret says: the login that is current and its password."""

    username: str
    password: str = field(repr=False)

    def payload(self) -> str:
        """The JSON a new version of the secret holds (services parse it the same way)."""
        return json.dumps({"username": self.username, "password": self.password})


def parse_app_secret(text: str, default_username: str, where: str) -> AppSecret:
    """The app secret's payload: JSON `{"username", "password"}`, or a bare password (of
    `default_username`). A payload that is neither is an error naming `where`, never the text."""
    if not text.lstrip().startswith("{"):
        return AppSecret(default_username, text)
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("username"), str)
        or not isinstance(data.get("password"), str)
        or not data["username"]
        or not data["password"]
    ):
        raise CredentialsMissing(
            f'{where} is not the app secret\'s JSON {{"username": ..., "password": ...}}',
            hint=f"add a version in that shape, or run `{command('rotate --user app')}`",
        )
    return AppSecret(data["username"], data["password"])


def secret_store_for(overrides: ConnectorOverrides | None) -> SecretStore | None:
    """The Secret Manager a run talks to: Google's (None: the caller builds it with ADC), or
    the plug-in's own, when it serves one; a plug-in without one has no secrets at all."""
    if overrides is None or overrides.secret_manager_endpoint is None:
        return None
    return SecretStore(overrides.google_credentials, endpoint=overrides.secret_manager_endpoint)


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
        store = secret_store_for(overrides) if user.secret else None
        if store is not None:
            try:
                return _from_secret(environment, role, user, store, f" of {overrides.label}")
            except _SecretNotFound as exc:
                looked.append(f"{exc} ({overrides.label})")
            finally:
                store.close()
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
            secrets = own_reader = SecretStore(application_default_credentials())
        try:
            return _from_secret(environment, role, user, secrets)
        except _SecretNotFound as exc:
            looked.append(str(exc))
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


def _from_secret(
    environment: Environment, role: Role, user: UserConfig, read: SecretReader, where: str = ""
) -> Login:
    assert user.secret is not None
    name = f"Secret Manager secret projects/{environment.project}/secrets/{user.secret}"
    text = read(environment.project, user.secret)
    if role == "app":
        # The app secret names the login that is current (one of two, alternating).
        app = parse_app_secret(text, user.name, name)
        return Login(app.username, app.password, False, f"{name} (latest version){where}")
    return Login(user.name, text, False, f"{name} (latest version){where}")


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
        if login.user != app.name:
            # After a rotation the secret may name the alternate login; apply creates only
            # users.app.name with a password (the alternate without one), so it would give
            # the wrong login this password.
            raise CredentialsMissing(
                f"the app secret names {login.user!r} as the current login, but login "
                f"{app.name!r} (users.app.name) is the one apply must create with its password",
                hint=f"add a version naming {app.name!r} to the app secret "
                f'(`{{"username": "{app.name}", "password": ...}}`), run `{command("apply")}`, then '
                f"`{command('rotate --user app')}`",
            )
        return login.password

    return read
