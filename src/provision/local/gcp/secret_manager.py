"""The emulated Secret Manager: the REST calls (v1) the real `google-cloud-secret-manager`
client makes, served by a daemon of its own on loopback (a service apart from the Admin API,
as on Google Cloud: either can be down alone).

Production code reaches it with the real client's REST transport pointed at
`http://127.0.0.1:PORT` (`provision.credentials.SecretStore(endpoint=...)`), the endpoint the
connector plug-in hands over (`ConnectorOverrides.secret_manager_endpoint`). Served, under
the real paths and with Google's JSON shapes:

- `POST /v1/projects/{p}/secrets?secretId=S` (create), `GET /v1/projects/{p}/secrets/{s}`;
- `POST /v1/projects/{p}/secrets/{s}:addVersion` with `{"payload": {"data": base64}}`;
- `GET /v1/projects/{p}/secrets/{s}/versions/{v}:access` (`v` a number or `latest`, the
  newest version; a disabled or destroyed one answers FAILED_PRECONDITION, as Google does);
- `GET /v1/projects/{p}/secrets/{s}/versions` (newest first), `GET .../versions/{v}`;
- errors as `{"error": {"code": N, "message": ..., "status": ...}}`: 401 without the
  emulation's token, 404 for an unknown project, secret or version, 409 for a secret that
  exists, 400 for a malformed request.

Secrets live in `<state dir>/emulator/secrets.json` (owner-only). The records log each call
with the secret's name and version, never a payload.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from provision.local.gcp.state import EmulatorState, RecordLog, iam_users, write_private

COMPONENT = "secret-manager"
SECRETS_FILE = "secrets.json"
_SECRETS = re.compile(r"/v1/projects/([^/]+)/secrets")
_SECRET = re.compile(r"/v1/projects/([^/]+)/secrets/([^/:]+)")
_ADD_VERSION = re.compile(r"/v1/projects/([^/]+)/secrets/([^/:]+):addVersion")
_VERSIONS = re.compile(r"/v1/projects/([^/]+)/secrets/([^/:]+)/versions")
_VERSION = re.compile(r"/v1/projects/([^/]+)/secrets/([^/:]+)/versions/([^/:]+)")
_ACCESS = re.compile(r"/v1/projects/([^/]+)/secrets/([^/:]+)/versions/([^/:]+):access")
_SECRET_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "ALREADY_EXISTS",
    412: "FAILED_PRECONDITION",
}


class SecretError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _now() -> str:
    return (
        datetime.datetime.now(datetime.UTC)
        .isoformat(timespec="microseconds")
        .replace("+00:00", "Z")
    )


@dataclass
class SecretManager:
    """The secrets of one emulated project, kept in memory and saved after every change."""

    state: EmulatorState
    records: RecordLog
    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            self.secrets = json.loads(self.state.path(SECRETS_FILE).read_text())
        except FileNotFoundError:
            self.secrets = {}

    def _save(self) -> None:
        write_private(self.state.path(SECRETS_FILE), json.dumps(self.secrets, indent=1))

    def _caller(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        if token and token == self.state.api_token:
            return "local developer (static token)"
        for user in iam_users(self.state.state_dir).values():
            if token and token == user.token:
                return f"serviceAccount:{user.email}"
        raise SecretError(401, "Request had invalid authentication credentials.")

    async def handle(self, request: web.Request) -> web.Response:
        record: dict[str, Any] = {"method": request.method, "path": request.path}
        event = "request"
        try:
            record["caller"] = self._caller(request)
            path = request.path
            if match := _ACCESS.fullmatch(path):
                event = "accessSecretVersion"
                self._allow(request, "GET")
                body = self._access(*match.groups())
                record["version"] = body["name"].rsplit("/", 1)[-1]
            elif match := _ADD_VERSION.fullmatch(path):
                event = "addSecretVersion"
                self._allow(request, "POST")
                project, secret = match.groups()
                body = self._add_version(project, secret, await self._json(request))
                record["version"] = body["name"].rsplit("/", 1)[-1]
            elif match := _VERSION.fullmatch(path):
                event = "getSecretVersion"
                self._allow(request, "GET")
                body = self._version_body(*match.groups())
            elif match := _VERSIONS.fullmatch(path):
                event = "listSecretVersions"
                self._allow(request, "GET")
                body = self._list_versions(*match.groups())
            elif match := _SECRET.fullmatch(path):
                event = "getSecret"
                self._allow(request, "GET")
                body = self._secret_body(*match.groups())
            elif match := _SECRETS.fullmatch(path):
                event = "createSecret"
                self._allow(request, "POST")
                body = self._create(
                    match.group(1), request.query.get("secretId", ""), await self._json(request)
                )
            else:
                raise SecretError(404, f"The requested URL {path} was not found on this server.")
        except SecretError as exc:
            self.records.write(COMPONENT, event, status=exc.code, error=exc.message, **record)
            return web.json_response(
                {
                    "error": {
                        "code": exc.code,
                        "message": exc.message,
                        "status": _STATUS.get(exc.code, "UNKNOWN"),
                    }
                },
                status=exc.code if exc.code != 412 else 400,
            )
        self.records.write(COMPONENT, event, status=200, **record)
        return web.json_response(body)

    # -- requests ---------------------------------------------------------------------------

    @staticmethod
    def _allow(request: web.Request, method: str) -> None:
        if request.method != method:
            raise SecretError(405, f"Method {request.method} is not allowed here; use {method}.")

    @staticmethod
    async def _json(request: web.Request) -> dict[str, Any]:
        try:
            payload = await request.json() if request.can_read_body else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SecretError(400, "Invalid JSON payload received.") from None
        if not isinstance(payload, dict):
            raise SecretError(400, "Invalid JSON payload received.")
        return payload

    def _project(self, project: str) -> None:
        # The real API also accepts the project number; the emulation knows only the id.
        if project != self.state.project:
            raise SecretError(404, f"Project {project} not found or has no secrets.")

    def _secret(self, project: str, secret: str) -> dict[str, Any]:
        self._project(project)
        found = self.secrets.get(secret)
        if found is None:
            raise SecretError(404, f"Secret [projects/{project}/secrets/{secret}] not found.")
        return found

    def _secret_body(self, project: str, secret: str) -> dict[str, Any]:
        found = self._secret(project, secret)
        return {
            "name": f"projects/{project}/secrets/{secret}",
            "replication": found["replication"],
            "createTime": found["createTime"],
            "etag": f'"{len(found["versions"])}"',
        }

    def _create(self, project: str, secret: str, body: dict[str, Any]) -> dict[str, Any]:
        self._project(project)
        if not _SECRET_ID.fullmatch(secret):
            raise SecretError(400, "Invalid secret id: letters, digits, '-' and '_' only.")
        if secret in self.secrets:
            raise SecretError(409, f"Secret [projects/{project}/secrets/{secret}] already exists.")
        self.secrets[secret] = {
            "replication": body.get("replication") or {"automatic": {}},
            "createTime": _now(),
            "versions": [],
        }
        self._save()
        return self._secret_body(project, secret)

    def _add_version(self, project: str, secret: str, body: dict[str, Any]) -> dict[str, Any]:
        found = self._secret(project, secret)
        try:
            data = base64.b64decode(body["payload"]["data"], validate=True)
        except (KeyError, TypeError, binascii.Error):
            raise SecretError(400, "Invalid request: payload.data (base64) is required.") from None
        found["versions"].append(
            {
                "data": base64.b64encode(data).decode(),
                "state": "ENABLED",
                "createTime": _now(),
            }
        )
        self._save()
        return self._version_body(project, secret, str(len(found["versions"])))

    def _resolve(self, project: str, secret: str, version: str) -> tuple[int, dict[str, Any]]:
        versions = self._secret(project, secret)["versions"]
        name = f"projects/{project}/secrets/{secret}/versions/{version}"
        if version == "latest":
            if not versions:
                raise SecretError(404, f"Secret Version [{name}] not found.")
            return len(versions), versions[-1]
        if not version.isdigit() or not 1 <= int(version) <= len(versions):
            raise SecretError(404, f"Secret Version [{name}] not found.")
        return int(version), versions[int(version) - 1]

    def _version_body(self, project: str, secret: str, version: str) -> dict[str, Any]:
        number, found = self._resolve(project, secret, version)
        return {
            "name": f"projects/{project}/secrets/{secret}/versions/{number}",
            "createTime": found["createTime"],
            "state": found["state"],
            "etag": f'"{number}"',
        }

    def _list_versions(self, project: str, secret: str) -> dict[str, Any]:
        count = len(self._secret(project, secret)["versions"])
        listed = [self._version_body(project, secret, str(n)) for n in range(count, 0, -1)]
        return {"versions": listed, "totalSize": count} if listed else {}

    def _access(self, project: str, secret: str, version: str) -> dict[str, Any]:
        number, found = self._resolve(project, secret, version)
        name = f"projects/{project}/secrets/{secret}/versions/{number}"
        if found["state"] != "ENABLED":
            raise SecretError(412, f"Secret Version [{name}] is in {found['state']} state.")
        # No dataCrc32c: it is optional, and a wrong one would be worse than none.
        return {"name": name, "payload": {"data": found["data"]}}


async def start(
    state: EmulatorState, sock: Any, records: RecordLog
) -> Callable[[], Awaitable[None]]:
    """Serve Secret Manager on the given listening socket; returns the coroutine that stops it."""
    manager = SecretManager(state, records)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", manager.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return runner.cleanup
