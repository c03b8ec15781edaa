"""What Cloud SQL itself does inside PostgreSQL, as the emulated `cloudsqladmin`: the acts of
creating an instance and of the Admin API's users and databases calls.

- instance creation: `cloudsqlsuperuser` is a NOLOGIN CREATEROLE CREATEDB group; `postgres`
  is LOGIN CREATEROLE CREATEDB NOSUPERUSER and a member of it;
- `google_sql_user` / `gcloud sql users create`: a LOGIN member of `cloudsqlsuperuser`,
  created by `cloudsqladmin`, so `postgres` holds no ADMIN OPTION on it;
- `google_sql_database`: a database owned by `cloudsqlsuperuser` (and only the owner has
  CREATE on it, which is what keeps `vector` to members of that group);
- `gcloud sql users create EMAIL --type=cloud_iam_service_account`: the same, also a member
  of `cloudsqliamserviceaccount`, named after the email less `.gserviceaccount.com`.

See shared/docs/cloudsql.md, sections 1 to 3. These are never what the tool does.

Passwords are sent as SCRAM verifiers computed here (`provision.scram`), never in clear: the
emulated server logs DDL (`log_statement = ddl`, prod's CIS flag), and tests check that no
password ever reaches its log.
"""

from __future__ import annotations

import pg8000.native
from pg8000.native import identifier, literal

from provision.errors import LocalInstanceError
from provision.local.instance import (
    ADMIN_USER,
    IAM_SERVICE_ACCOUNT_GROUP,
    OWNER_USER,
    SUPERUSER_GROUP,
    LocalInstance,
    superuser_connection,
)
from provision.scram import verifier


def create_user(conn: pg8000.native.Connection, name: str, password: str) -> None:
    """A built-in user created through the API: a LOGIN member of cloudsqlsuperuser."""
    conn.run(
        f"CREATE ROLE {identifier(name)} LOGIN CREATEROLE CREATEDB PASSWORD {literal(verifier(password))} "
        f"IN ROLE {identifier(SUPERUSER_GROUP)}"
    )


def create_database(conn: pg8000.native.Connection, name: str) -> None:
    """A database created through the API: owned by cloudsqlsuperuser."""
    conn.run(f"CREATE DATABASE {identifier(name)} OWNER {identifier(SUPERUSER_GROUP)}")


def bootstrap(instance: LocalInstance) -> None:
    """The roles of a new Cloud SQL instance, and the owner user Terraform creates beside it."""
    conn = superuser_connection(instance)
    try:
        conn.run(f"CREATE ROLE {identifier(SUPERUSER_GROUP)} NOLOGIN CREATEROLE CREATEDB")
        conn.run(
            f"CREATE ROLE {identifier(ADMIN_USER)} LOGIN CREATEROLE CREATEDB NOSUPERUSER "
            f"PASSWORD {literal(verifier(instance.passwords[ADMIN_USER]))} IN ROLE {identifier(SUPERUSER_GROUP)}"
        )
        create_user(conn, OWNER_USER, instance.passwords[OWNER_USER])
    finally:
        conn.close()


def create_iam_service_account_user(
    instance: LocalInstance, db_user: str, password: str, parent: str = IAM_SERVICE_ACCOUNT_GROUP
) -> None:
    """An IAM service-account user (idempotent); with `parent` "cloudsqliamuser", an IAM
    user (a person) that can log in. `password` is internal to the emulation: only its proxy
    uses it, to finish the login of a client whose certificate proves the identity."""
    conn = superuser_connection(instance)
    try:
        group = identifier(parent)
        if not conn.run("SELECT 1 FROM pg_roles WHERE rolname = :name", name=parent):
            conn.run(f"CREATE ROLE {group} NOLOGIN")
        role = identifier(db_user)
        if conn.run("SELECT 1 FROM pg_roles WHERE rolname = :name", name=db_user):
            conn.run(f"ALTER ROLE {role} LOGIN PASSWORD {literal(verifier(password))}")
        else:
            # Unlike the built-in users, IAM users are no members of cloudsqlsuperuser and
            # start with no privileges (shared/docs/cloudsql.md, section 6).
            conn.run(
                f"CREATE ROLE {role} LOGIN PASSWORD {literal(verifier(password))} IN ROLE {group}"
            )
    finally:
        conn.close()


def create_iam_role(instance: LocalInstance, name: str, *, group: bool) -> None:
    """An IAM user (`CLOUD_IAM_USER`) or group (`CLOUD_IAM_GROUP`) through the API: a role
    named by the email, in cloudsqliamuser / cloudsqliamgroup, with no privileges. A group's
    role holds the grants; each member gets a login role of its own at first login, which
    inherits from it (the emulation creates no members). Idempotent."""
    parent = "cloudsqliamgroup" if group else "cloudsqliamuser"
    conn = superuser_connection(instance)
    try:
        if not conn.run("SELECT 1 FROM pg_roles WHERE rolname = :name", name=parent):
            conn.run(f"CREATE ROLE {identifier(parent)} NOLOGIN")
        if not conn.run("SELECT 1 FROM pg_roles WHERE rolname = :name", name=name):
            login = "NOLOGIN" if group else "LOGIN"
            conn.run(f"CREATE ROLE {identifier(name)} {login} IN ROLE {identifier(parent)}")
    finally:
        conn.close()


def delete_iam_role(instance: LocalInstance, name: str) -> None:
    """`gcloud sql users delete` of an IAM user or group: DROP ROLE as Cloud SQL's superuser.
    Refused, as on Cloud SQL, while the role still owns objects or holds privileges
    (LocalInstanceError naming the role). Idempotent."""
    conn = superuser_connection(instance)
    try:
        conn.run(f"DROP ROLE IF EXISTS {identifier(name)}")
    except pg8000.native.DatabaseError as exc:
        detail = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
        raise LocalInstanceError(
            f"the IAM database user {name} cannot be deleted: {detail.get('M', exc)}",
            hint="revoke its privileges and reassign what it owns (`REASSIGN OWNED BY` / "
            "`DROP OWNED BY` as an admin), or keep it in iam_members",
        ) from None
    finally:
        conn.close()
