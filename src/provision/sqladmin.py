"""The one Cloud SQL Admin API call the tool makes itself: `users.update`, which sets a built-in
user's password (the Connector makes the others).

`PUT {endpoint}/sql/v1beta4/projects/{project}/instances/{instance}/users?name=NAME` with
`{"name": NAME, "password": ...}` answers an operation; the password is set once
`GET .../operations/{name}` says DONE (polled, bounded by `timeout`). Cloud SQL checks the
password against the instance's password validation policy and answers 400 when it refuses.
The endpoint is Google's, or the one a connector plug-in hands over (the local emulation).
Errors carry Google's message, never the request body.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from provision.errors import ConnectionFailed, CredentialsMissing, ProvisionError

if TYPE_CHECKING:
    import google.auth.credentials

DEFAULT_ENDPOINT = "https://sqladmin.googleapis.com"
TIMEOUT = 120.0  # users.update is quick, but an instance busy with another operation queues it


class SqlAdmin:
    """users.update over an authorized HTTP session (google-auth's, on requests)."""

    def __init__(
        self,
        credentials: google.auth.credentials.Credentials,
        endpoint: str | None = None,
        *,
        timeout: float = TIMEOUT,
    ) -> None:
        from google.auth.transport.requests import AuthorizedSession

        self.endpoint = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
        self.timeout = timeout
        self._session = AuthorizedSession(credentials)  # type: ignore[no-untyped-call]

    def set_password(self, project: str, instance: str, user: str, password: str) -> None:
        """Set `user`'s password and wait until Cloud SQL has applied it."""
        base = f"{self.endpoint}/sql/v1beta4/projects/{project}"
        what = f"users.update of {user} on {project}:{instance}"
        operation = self._call(
            "PUT",
            f"{base}/instances/{instance}/users",
            what,
            params={"name": user},
            json={"name": user, "password": password},
        )
        deadline = time.monotonic() + self.timeout
        delay = 0.2
        while operation.get("status") != "DONE":
            if time.monotonic() > deadline:
                raise ConnectionFailed(
                    f"{what}: operation {operation.get('name')} not done after {self.timeout:g}s",
                    hint="see `gcloud sql operations list`; the password may or may not be set: "
                    "run rotate again once it is done",
                )
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            operation = self._call("GET", f"{base}/operations/{operation['name']}", what)
        if "error" in operation:
            errors = operation["error"].get("errors") or [{}]
            raise ProvisionError(f"{what} failed: {errors[0].get('message', 'no details')}")

    def _call(self, method: str, url: str, what: str, **kwargs: Any) -> dict[str, Any]:
        import requests

        try:
            response = self._session.request(method, url, timeout=30, **kwargs)  # type: ignore[no-untyped-call]
        except requests.RequestException as exc:
            raise ConnectionFailed(
                f"{what}: cannot reach the Cloud SQL Admin API at {self.endpoint} "
                f"({type(exc).__name__})",
                hint="check the network path to the Admin API and run again",
            ) from None
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            body = {}
        if response.status_code >= 400:
            message = (body.get("error") or {}).get("message") or response.reason
            if response.status_code in (401, 403):
                raise CredentialsMissing(
                    f"{what}: refused ({response.status_code}: {message})",
                    hint="the caller needs roles/cloudsql.admin (cloudsql.users.update) on the project",
                )
            raise ProvisionError(
                f"{what}: the Admin API answered {response.status_code} ({message})"
            )
        return body

    def close(self) -> None:
        self._session.close()  # type: ignore[no-untyped-call]
