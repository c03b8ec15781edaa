"""The emulated Cloud SQL Admin API: the calls the Cloud SQL Python Connector makes.

Served over plain HTTP on loopback (the Connector accepts `sqladmin_api_endpoint=
"http://127.0.0.1:PORT"`), under the real paths and with Google's shapes:

- `GET  /sql/v1beta4/projects/{project}/instances/{instance}/connectSettings`
- `POST /sql/v1beta4/projects/{project}/instances/{instance}:generateEphemeralCert`
- `GET  /sql/v1beta4/locations/{region}/dns/{dns_name}:resolveConnectSettings`: the
  instance DNS name of a CA Service instance back to its connection name (the Connector's
  `DnsResolver` asks this for names of the form `<a>.<b>.<region>.sql.goog`); 404 for any
  other name
- `PUT  /sql/v1beta4/projects/{project}/instances/{instance}/users?name=NAME`
  (`users.update`): sets a built-in user's password, checked against the instance's password
  validation policy (including `reuse_interval`: none of the user's last N passwords, the
  current one among them, kept as salted digests in password-history.json) (400 with Cloud SQL's reason when refused), as `cloudsqladmin` with a
  SCRAM verifier computed here, so the server log never sees the password; answers a DONE
  operation, which `GET /sql/v1beta4/projects/{project}/operations/{id}` reads back;
- errors as `{"error": {"code": N, "message": "...", "status": "NOT_FOUND"}}`: 401 without a
  valid bearer token, 404 for another project or instance, 400 for a malformed request,
  403 for an IAM login token the emulation does not know.

The emulated instance reports only the addresses its environment configures (the stacks'
`ipv4_enabled` for ip_type public: PRIMARY; `private_network` or ip_type private: PRIVATE;
`pscEnabled` for ip_type psc), each the same loopback address, so a Connector asking for one
the instance lacks fails locally as on Cloud SQL. `serverCaMode` is the emulation's
(provision.local.gcp.server_ca); with CA Service, the instance's DNS name is reported as
`dnsName` and in `dnsNames`, where the PSC entry (PSC instances only) is the loopback address
the Connector dials for ip_type psc.
Every call is written to the emulator's records with the caller's identity and user agent
(never the token).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hashlib
import json
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from provision import passwords, scram
from provision.config import PasswordValidationPolicy
from provision.local.gcp import certs
from provision.local.gcp.state import (
    EmulatorState,
    RecordLog,
    emulator_dir,
    iam_users,
    write_private,
)
from provision.local.instance import LocalInstance, superuser_connection

COMPONENT = "admin-api"
_CONNECT_SETTINGS = re.compile(r"/sql/v1beta4/projects/([^/]+)/instances/([^/:]+)/connectSettings")
_EPHEMERAL_CERT = re.compile(
    r"/sql/v1beta4/projects/([^/]+)/instances/([^/:]+):generateEphemeralCert"
)
_USERS = re.compile(r"/sql/v1beta4/projects/([^/]+)/instances/([^/:]+)/users")
_OPERATION = re.compile(r"/sql/v1beta4/projects/([^/]+)/operations/([^/:]+)")
_RESOLVE_DNS = re.compile(r"/sql/v1beta4/locations/([^/]+)/dns/([^/]+):resolveConnectSettings")
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
}


class ApiError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _error_body(code: int, message: str) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "status": _STATUS.get(code, "UNKNOWN"),
            "errors": [
                {
                    "message": message,
                    "domain": "global",
                    "reason": _STATUS.get(code, "unknown").lower(),
                }
            ],
        }
    }


@dataclass
class AdminApi:
    state: EmulatorState
    records: RecordLog

    def __post_init__(self) -> None:
        self.client_ca = self.state.keypair("client-ca")
        self.operations: dict[str, dict[str, Any]] = {}

    # -- request handling -----------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        record: dict[str, Any] = {
            "method": request.method,
            "path": request.path,
            "user_agent": request.headers.get("User-Agent", ""),
        }
        event = "request"
        try:
            caller = self._caller(request)
            record["caller"] = caller
            if match := _CONNECT_SETTINGS.fullmatch(request.path):
                event = "connectSettings"
                self._allow(request, "GET")
                self._instance(*match.groups())
                body = self._connect_settings()
            elif match := _USERS.fullmatch(request.path):
                event = "users.update"
                self._allow(request, "PUT")
                self._instance(*match.groups())
                record["user"] = request.query.get("name", "")
                body = await self._update_user(request)
            elif match := _OPERATION.fullmatch(request.path):
                event = "operations.get"
                self._allow(request, "GET")
                body = self._operation(*match.groups())
            elif match := _RESOLVE_DNS.fullmatch(request.path):
                event = "resolveConnectSettings"
                self._allow(request, "GET")
                body = self._resolve_dns_name(*match.groups())
                record["dns_name"] = match.group(2)
            elif match := _EPHEMERAL_CERT.fullmatch(request.path):
                event = "generateEphemeralCert"
                self._allow(request, "POST")
                self._instance(*match.groups())
                body, record["certificate"] = await self._ephemeral_cert(request)
            else:
                raise ApiError(
                    404, f"The requested URL {request.path} was not found on this server."
                )
        except ApiError as exc:
            self.records.write(COMPONENT, event, status=exc.code, error=exc.message, **record)
            return web.json_response(_error_body(exc.code, exc.message), status=exc.code)
        self.records.write(COMPONENT, event, status=200, **record)
        return web.json_response(body)

    def _caller(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        if token and token == self.state.api_token:
            return "local developer (static token)"
        for user in iam_users(self.state.state_dir).values():
            if token and token == user.token:
                kind = "serviceAccount" if user.email.endswith(".gserviceaccount.com") else "user"
                return f"{kind}:{user.email}"
        raise ApiError(
            401,
            "Request had invalid authentication credentials. Expected OAuth 2 access token, "
            "login cookie or other valid authentication credential.",
        )

    @staticmethod
    def _allow(request: web.Request, method: str) -> None:
        if request.method != method:
            raise ApiError(405, f"Method {request.method} is not allowed here; use {method}.")

    def _instance(self, project: str, instance: str) -> None:
        if project != self.state.project:
            raise ApiError(
                404, f"The project {project} does not exist or has no Cloud SQL instances."
            )
        if instance != self.state.instance:
            raise ApiError(404, "The Cloud SQL instance does not exist.")

    def _resolve_dns_name(self, location: str, dns_name: str) -> dict[str, Any]:
        state = self.state
        known = location == state.region and state.dns_name is not None
        if not known or dns_name.lower().rstrip(".") + "." != state.dns_name:
            raise ApiError(404, f"The DNS name {dns_name} does not name a Cloud SQL instance.")
        return {"connectionName": state.connection_name}

    def _connect_settings(self) -> dict[str, Any]:
        bundle = self.state.server_ca_certs()
        ca = certs.load(bundle)
        address = self.state.address
        body: dict[str, Any] = {
            "kind": "sql#connectSettings",
            "serverCaCert": {
                "kind": "sql#sslCert",
                "certSerialNumber": str(ca.serial_number),
                "cert": bundle,
                "commonName": ca.subject.rfc4514_string(),
                "expirationTime": ca.not_valid_after_utc.isoformat().replace("+00:00", "Z"),
                "instance": self.state.instance,
            },
            "ipAddresses": [{"type": kind, "ipAddress": address} for kind in self.state.ip_types],
            "region": self.state.region,
            "databaseVersion": self.state.database_version,
            "backendType": "SECOND_GEN",
            "serverCaMode": self.state.server_ca_mode,
        }
        if self.state.psc_enabled:
            # Cloud SQL reports pscEnabled and a PSC DNS name only for PSC instances; the
            # Connector dials that name for ip_type psc (loopback here).
            body["pscEnabled"] = True
            body["dnsName"] = f"{address}."
        if self.state.dns_name is not None:
            # CA Service: dnsName is the instance's DNS name, and PSC has an entry of its own.
            body["dnsName"] = self.state.dns_name
            body["dnsNames"] = [
                {"name": self.state.dns_name, "connectionType": "PUBLIC", "dnsScope": "INSTANCE"}
            ]
            if self.state.psc_enabled:
                body["dnsNames"].append(
                    {
                        "name": f"{address}.",
                        "connectionType": "PRIVATE_SERVICE_CONNECT",
                        "dnsScope": "INSTANCE",
                    }
                )
        return body

    async def _update_user(self, request: web.Request) -> dict[str, Any]:
        """users.update: a new password for a built-in user, if the policy accepts it."""
        name = request.query.get("name", "")
        try:
            payload = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(400, "Invalid JSON payload received.") from None
        password = payload.get("password") if isinstance(payload, dict) else None
        if not name or not isinstance(password, str) or not password:
            raise ApiError(400, "Invalid request: the user name and a password are required.")
        policy = PasswordValidationPolicy(**self.state.password_policy)
        refused = passwords.problems(password, policy, name)
        if refused:
            raise ApiError(
                400, f"Password does not meet the password validation policy: {refused[0]}."
            )
        instance = LocalInstance.load(self.state.state_dir)
        if instance is None:
            raise ApiError(404, "The Cloud SQL instance does not exist.")
        history = _PasswordHistory(emulator_dir(self.state.state_dir) / PASSWORD_HISTORY_FILE)
        previous = history.of(name, instance.passwords.get(name))
        if (
            policy.enabled
            and policy.reuse_interval
            and history.reused(previous[-policy.reuse_interval :], password)
        ):
            raise ApiError(
                400,
                "Password does not meet the password validation policy: it is one of the "
                f"last {policy.reuse_interval} passwords of the user.",
            )
        if not await asyncio.get_running_loop().run_in_executor(
            None, _set_password, instance, name, password
        ):
            raise ApiError(404, f"The user {name} does not exist on this instance.")
        history.remember(name, previous, password)
        operation = {
            "kind": "sql#operation",
            "name": str(uuid.uuid4()),
            "operationType": "UPDATE_USER",
            "status": "DONE",
            "targetId": self.state.instance,
            "targetProject": self.state.project,
            "insertTime": datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z"),
        }
        self.operations[operation["name"]] = operation
        return operation

    def _operation(self, project: str, name: str) -> dict[str, Any]:
        if project != self.state.project or name not in self.operations:
            raise ApiError(404, f"The operation {name} does not exist.")
        return self.operations[name]

    async def _ephemeral_cert(self, request: web.Request) -> tuple[dict[str, Any], dict[str, Any]]:
        try:
            payload = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(400, "Invalid JSON payload received.") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("public_key"), str):
            raise ApiError(400, "Invalid request: public_key is required.")
        iam_email = None
        token = payload.get("access_token")
        if token is not None:
            # IAM database authentication: the login token names the service account, which
            # the certificate then carries (see provision.local.gcp.proxy).
            matches = [u for u in iam_users(self.state.state_dir).values() if u.token == token]
            if not matches:
                raise ApiError(
                    403, "The access_token is not valid for IAM database authentication."
                )
            iam_email = matches[0].email
        try:
            cert = certs.issue_ephemeral_cert(
                self.client_ca, payload["public_key"], iam_email=iam_email
            )
        except certs.InvalidPublicKey as exc:
            raise ApiError(400, f"Invalid request: {exc}.") from None
        body = {
            "ephemeralCert": {
                "kind": "sql#sslCert",
                "certSerialNumber": str(cert.serial_number),
                "cert": certs.pem(cert),
                "commonName": cert.subject.rfc4514_string(),
                "expirationTime": cert.not_valid_after_utc.isoformat().replace("+00:00", "Z"),
                "instance": self.state.instance,
            }
        }
        return body, certs.describe(cert)


PASSWORD_HISTORY_FILE = "password-history.json"
# More than any reuse_interval a test sets; Cloud SQL's own limit is not documented.
_HISTORY_LENGTH = 32


class _PasswordHistory:
    """Each built-in user's passwords as Cloud SQL remembers them for `reuse_interval`: salted
    SHA-256 digests, oldest first, in an owner-only file (never a password)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, list[list[str]]]:
        try:
            loaded: dict[str, list[list[str]]] = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        return loaded

    @staticmethod
    def _digest(password: str, salt: str) -> str:
        return hashlib.sha256(bytes.fromhex(salt) + password.encode()).hexdigest()

    @classmethod
    def _entry(cls, password: str) -> list[str]:
        salt = secrets.token_hex(16)
        return [salt, cls._digest(password, salt)]

    def of(self, name: str, current: str | None) -> list[list[str]]:
        """The user's remembered passwords; the current one (set at creation) when none is."""
        known = self._load().get(name)
        if known:
            return known
        return [self._entry(current)] if current is not None else []

    def reused(self, entries: list[list[str]], password: str) -> bool:
        return any(self._digest(password, salt) == digest for salt, digest in entries)

    def remember(self, name: str, previous: list[list[str]], password: str) -> None:
        history = self._load()
        history[name] = [*previous, self._entry(password)][-_HISTORY_LENGTH:]
        write_private(self.path, json.dumps(history))


def _set_password(instance: LocalInstance, name: str, password: str) -> bool:
    """What Cloud SQL does for users.update, as its own superuser; False if no such user.

    The emulation also keeps the new password in its state (instance.json, owner-only), so
    that the DSNs `local status` prints keep working after a rotation."""
    import pg8000.native

    conn = superuser_connection(instance)
    try:
        if not conn.run("SELECT 1 FROM pg_roles WHERE rolname = :name AND rolcanlogin", name=name):
            return False
        conn.run(
            f"ALTER ROLE {pg8000.native.identifier(name)} "
            f"PASSWORD {pg8000.native.literal(scram.verifier(password))}"
        )
    finally:
        conn.close()
    if name in instance.passwords:
        dataclasses.replace(instance, passwords={**instance.passwords, name: password}).save()
    return True


async def start(
    state: EmulatorState, sock: Any, records: RecordLog
) -> Callable[[], Awaitable[None]]:
    """Serve the Admin API on the given listening socket; returns the coroutine that stops it."""
    api = AdminApi(state, records)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", api.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return runner.cleanup
