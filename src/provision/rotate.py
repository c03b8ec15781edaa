"""`rotate`: a new password for one user of an environment, set where it must be and stored as
a new version of the user's secret, in an order that keeps every reader of the secret working.

Readers read the secret's latest version, then log in. So the new password must work *before*
the secret shows it, and a password a reader may still hold must keep working as long as
possible:

- **the app login** (`users.app`, SQL-created): two logins alternate, `nucleus_app` and its
  `alternate` (`nucleus_app_b`), both members of the same groups (apply creates both). The
  secret names the current one (`{"username": ..., "password": ...}`). Rotation gives the
  *other* login a fresh password (a SCRAM-SHA-256 verifier computed here, sent as `postgres`:
  the password never reaches the server or its log), proves it by logging in with it, and
  only then adds the secret version naming it. The previous login keeps its password, so
  connections (and pools) opened with it keep working until the *next* rotation: readers have
  a whole rotation interval to pick up the new version. No downtime.
- **the admin and the owner** (`postgres`, `nucleus`: built-in users, created through the
  Admin API, one password each, and PostgreSQL has no second password per role): the new
  password is set through the Admin API (`users.update`, which checks the instance's password
  policy), proven by a login, then stored. Open sessions are not affected (PostgreSQL checks
  passwords at login only); a reader that read the old version between the two steps fails
  its next login and must read again. If storing is refused, the old password is set back, so
  the secret and the user never disagree after a failed run; but not when the policy's
  `reuse_interval` forbids it (Cloud SQL refuses the user's last N passwords: prod's policy),
  nor when the add got no answer (it may have happened): then the error says the password is
  in no secret, and running `rotate` again repairs it. The single window left is a crash
  between `users.update` and the store: running `rotate` again repairs it (the admin's
  rotation holds its lock as the owner, so it does not need the admin's lost password;
  docs/terraform.md, "Rotating passwords").

One rotation at a time per database: an admin session (the owner's, rotating the admin) holds an advisory lock
(`locks.ROTATE_KEY`) throughout; a second one stops at once and names the holder. Passwords
never appear in output, errors, logs or the server log.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pg8000.native import literal
from sqlalchemy import Connection, Engine, text

from provision import cloudsql, credentials, passwords, scram
from provision.connector_plugin import ConnectorOverrides, overrides_for
from provision.credentials import AppSecret, Login, Role
from provision.errors import (
    ConfigError,
    ConnectionFailed,
    LockTimeout,
    ManualActionRequired,
    ProvisionError,
)
from provision.hints import command
from provision.locks import DEFAULT_POLICY, ROTATE_KEY, LockPolicy, holders
from provision.sql import ident

if TYPE_CHECKING:
    import google.auth.credentials

    from provision.config import Environment
    from provision.db import Target


@dataclass(frozen=True)
class Rotation:
    """What a rotation did (no secret in it)."""

    environment: str
    user: Role
    login: str  # the login whose password is new, and which the secret now names
    previous_login: str | None  # app: still valid until the next rotation
    secret: str  # projects/P/secrets/S
    version: str  # the secret version that holds the new password
    set_through: str
    # The password variable of this user, when it is set in the rotating shell: it now holds
    # an old password and, for an environment without a plug-in, comes before the secret.
    stale_variable: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "environment": self.environment,
            "user": self.user,
            "login": self.login,
            "previous_login": self.previous_login,
            "secret": self.secret,
            "version": self.version,
            "set_through": self.set_through,
            "stale_variable": self.stale_variable,
        }


def rotate(
    environment: Environment,
    role: Role,
    *,
    connect_timeout: float = 10.0,
    policy: LockPolicy = DEFAULT_POLICY,
    overrides: ConnectorOverrides | None = None,
) -> Rotation:
    """Rotate the password of `users.<role>` (see the module docstring)."""
    if overrides is None:
        overrides = overrides_for(environment)
    user = getattr(environment.users, role)
    if user is None or not user.secret:
        raise ConfigError(
            f"environment {environment.name!r} declares no users.{role} with a secret",
            hint=f"set users.{role}.secret in environments.toml (the stacks create the secret)",
        )
    if role == "admin" and environment.iam_login is not None:
        raise ConfigError(
            f"environment {environment.name!r} logs in as {environment.iam_login} (iam_login): "
            "rotating users.admin's password needs a password login to hold the rotation lock",
            hint="export NUCLEUS_ADMIN_PASSWORD, or rotate from an environment without iam_login",
        )
    google_credentials = (
        overrides.google_credentials
        if overrides is not None
        else credentials.application_default_credentials()
    )
    store = credentials.secret_store_for(overrides) or credentials.SecretStore(google_credentials)
    target = cloudsql.target_for(environment, connect_timeout=connect_timeout, overrides=overrides)
    # The admin's rotation holds its lock as the owner when it can: a run killed between
    # users.update and the store leaves postgres with a password in no secret, and the rerun
    # that repairs it must not need postgres's login (the admin's rotation needs none otherwise).
    try:
        with _lock_connection(target, role) as lock_conn:
            _lock(lock_conn)
            try:
                if role == "app":
                    return _rotate_app(
                        environment, store, target.admin, overrides, connect_timeout, policy
                    )
                return _rotate_built_in(
                    environment, role, store, google_credentials, overrides, connect_timeout
                )
            finally:
                lock_conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ROTATE_KEY})
                lock_conn.commit()
    finally:
        target.dispose()
        store.close()


def _lock_connection(target: Target, role: Role) -> Connection:
    """The session that holds the rotation lock: the admin's, or, rotating the admin, the
    owner's when it can log in (else the admin's)."""
    if role == "admin" and target.owner is not None:
        try:
            return target.owner.connect()
        except ProvisionError:
            pass  # the owner's password is not at hand: the admin's login then
    return target.admin.connect()


def _lock(conn: Connection) -> None:
    if conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": ROTATE_KEY}).scalar():
        conn.commit()
        return
    who = "; ".join(b.describe() for b in holders(conn, ROTATE_KEY)) or "another session"
    raise LockTimeout(
        f"another rotation is running on this database ({who})",
        hint="wait for it to finish and run rotate again; nothing was changed",
    )


def _secret_name(environment: Environment, secret: str) -> str:
    return f"projects/{environment.project}/secrets/{secret}"


# -- the app login: two logins, alternating ---------------------------------------------------


def _rotate_app(
    environment: Environment,
    store: credentials.SecretStore,
    admin: Engine,
    overrides: ConnectorOverrides | None,
    connect_timeout: float,
    policy: LockPolicy,
) -> Rotation:
    app = environment.users.app
    assert app is not None and app.secret is not None
    name = _secret_name(environment, app.secret)
    current = credentials.parse_app_secret(store(environment.project, app.secret), app.name, name)
    if current.username not in app.logins:
        raise ManualActionRequired(
            f"{name} names {current.username!r}, which is neither of the app's logins "
            f"({', '.join(app.logins)})",
            hint=f"add a version naming {app.name!r} with its password, then rotate",
        )
    following = app.alternate_name if current.username == app.name else app.name
    _check_alternate(admin, following, current.username, app.member_of)
    password = passwords.generate(environment.password_validation_policy, following)
    with admin.connect() as conn:
        # A short lock wait: ALTER ROLE locks the role's catalog row, and must never queue
        # live logins behind it for long.
        conn.execute(text(f"SET lock_timeout = {policy.timeout_ms}"))
        # A utility statement takes no bind parameters: the verifier goes as a quoted literal
        # (as the executor fills the app login's slot); the password itself never goes.
        conn.exec_driver_sql(
            f"ALTER ROLE {ident(following)} LOGIN PASSWORD {literal(scram.verifier(password))}"
        )
        conn.commit()
    # Proven before any reader can see it.
    cloudsql.prove_login(
        environment,
        Login(following, password, False, f"the new password of {following}"),
        overrides=overrides,
        connect_timeout=connect_timeout,
    )
    version = store.add_version(
        environment.project, app.secret, AppSecret(following, password).payload()
    )
    return Rotation(
        environment.name,
        "app",
        following,
        current.username,
        name,
        version,
        "SCRAM-SHA-256 verifier computed here, set by " + environment.users.admin.name,
    )


def _check_alternate(admin: Engine, login: str, current: str, groups: tuple[str, ...]) -> None:
    """The login about to become current exists and is in the declared groups."""
    with admin.connect() as conn:
        row = conn.execute(
            text(
                "SELECT r.rolcanlogin, ARRAY(SELECT g.rolname FROM pg_auth_members m "
                "JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid AND m.inherit_option) "
                "FROM pg_roles r WHERE r.rolname = :name"
            ),
            {"name": login},
        ).one_or_none()
    missing = sorted(set(groups) - set(row[1] if row is not None else ()))
    if row is None or missing:
        what = "does not exist" if row is None else f"is not a member of {', '.join(missing)}"
        # An error (exit 1), not "only a person can fix this" (3): the hint's apply fixes it.
        raise ProvisionError(
            f"login {login}, which takes over from {current} at this rotation, {what}",
            hint=f"run `{command('apply')}` first (it creates both "
            "logins of users.app and their memberships); nothing was changed",
        )


# -- the built-in users: through the Admin API ------------------------------------------------


def _rotate_built_in(
    environment: Environment,
    role: Role,
    store: credentials.SecretStore,
    google_credentials: google.auth.credentials.Credentials,
    overrides: ConnectorOverrides | None,
    connect_timeout: float,
) -> Rotation:
    from provision.sqladmin import SqlAdmin

    user = getattr(environment.users, role)
    name = _secret_name(environment, user.secret)
    try:
        previous = credentials.login_for(environment, role, secrets=store, overrides=overrides)
    except ProvisionError:
        previous = None  # an adopted user whose secret is still empty: nothing to restore
    password = passwords.generate(environment.password_validation_policy, user.name)
    api = SqlAdmin(
        google_credentials,
        overrides.sqladmin_api_endpoint if overrides is not None else None,
    )
    rerun = f"`nucleus-provision rotate --env {environment.name} --user {role}`"

    def give_up(exc: ProvisionError, why: str) -> ProvisionError:
        return ProvisionError(
            f"{exc.message}; {user.name} now has a new password that is in no secret ({why})",
            hint=(f"{exc.hint}, then run " if exc.hint else "run ") + f"{rerun} again "
            "(it sets and stores a new one)",
        )

    def set_back(exc: ProvisionError) -> ProvisionError:
        """The error to raise after the new password failed to be proven or stored (definitely
        not stored): the previous password set back when Cloud SQL allows it."""
        policy = environment.password_validation_policy
        if previous is None or previous.password is None:
            return give_up(exc, "its previous one is not known")
        if policy.enabled and policy.reuse_interval:
            # Cloud SQL refuses any of the user's last `reuse_interval` passwords.
            return give_up(exc, "the password policy's reuse_interval refuses the previous one")
        try:
            api.set_password(
                environment.project, environment.instance, user.name, previous.password
            )
        except ProvisionError as undo:
            return give_up(exc, f"setting the previous one back failed: {undo.message}")
        return ProvisionError(
            f"{exc.message}; the previous password of {user.name} was set back, nothing changed",
            hint=exc.hint,
        )

    try:
        api.set_password(environment.project, environment.instance, user.name, password)
        try:
            cloudsql.prove_login(
                environment,
                Login(user.name, password, False, f"the new password of {user.name}"),
                overrides=overrides,
                connect_timeout=connect_timeout,
            )
        except ProvisionError as exc:
            raise set_back(exc) from None
        try:
            version = store.add_version(environment.project, user.secret, password)
        except ConnectionFailed as exc:
            # An add that got no answer may have happened: setting the previous password back
            # could leave the secret's latest version naming a password that no longer works.
            raise give_up(exc, "or in a version whose adding got no answer") from None
        except ProvisionError as exc:
            raise set_back(exc) from None
    finally:
        api.close()
    variable = (
        user.password_env if user.password_env and os.environ.get(user.password_env) else None
    )
    return Rotation(
        environment.name,
        role,
        user.name,
        None,
        name,
        version,
        "Cloud SQL Admin API users.update",
        variable,
    )
