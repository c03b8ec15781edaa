"""Issue 18: escalations the declaration does not give, made by hand one at a time on a
converged database, each seen by `verify`, shown by `plan`, and either repaired by `apply` or
reported with a remedy that works when followed (never a REVOKE that does nothing)."""

from __future__ import annotations

import os

import pytest

from helpers import cli
from provision.local.cloudsql_api import create_iam_role
from provision.local.instance import BOOTSTRAP_SUPERUSER, OWNER_USER

ANALYSTS = "nucleus-analysts@local-project.example"  # local's declared IAM group
API_SA = "nucleus-api@local-project.iam"  # local's declared service account


@pytest.fixture
def converged(legacy_db):
    create_iam_role(legacy_db.instance, ANALYSTS, group=True)
    assert cli("apply", "--auto-approve", *legacy_db.targets).code == 0
    assert cli("verify", *legacy_db.targets).code == 0
    return legacy_db


def planned_sql(db) -> list[str]:
    plan = cli("plan", *db.targets, "--format", "json")
    return [s for a in plan.json["actions"] for s in a["sql"]]


# (SQL run as the owner, what verify names, the statement apply runs)
REPAIRED = {
    "column grant": (
        "GRANT UPDATE (email) ON dna.entity TO nucleus_readonly",
        "column dna.entity.email",
        "REVOKE UPDATE (email) ON TABLE dna.entity FROM nucleus_readonly",
    ),
    "with grant option": (
        "GRANT SELECT ON dna.goals TO nucleus_readonly WITH GRANT OPTION",
        "GRANT OPTION FOR SELECT on table dna.goals",
        "REVOKE GRANT OPTION FOR SELECT ON TABLE dna.goals FROM nucleus_readonly CASCADE",
    ),
    "grant to every IAM group": (
        "GRANT DELETE ON dna.entity TO cloudsqliamgroup",
        "cloudsqliamgroup: DELETE on table dna.entity",
        "REVOKE DELETE ON TABLE dna.entity FROM cloudsqliamgroup",
    ),
    "grant to every IAM service account": (
        "GRANT INSERT ON tasks.task TO cloudsqliamserviceaccount",
        "cloudsqliamserviceaccount: INSERT on table tasks.task",
        "REVOKE INSERT ON TABLE tasks.task FROM cloudsqliamserviceaccount",
    ),
}


@pytest.mark.parametrize("case", list(REPAIRED), ids=list(REPAIRED))
def test_an_escalation_in_the_new_schemas_is_verified_planned_and_revoked(converged, case):
    sql, named, statement = REPAIRED[case]
    converged.query(sql, user=OWNER_USER)
    verify = cli("verify", *converged.targets)
    assert verify.code == 2 and "privilege-unexpected" in verify.out
    detail = cli("inspect", *converged.targets, "--format", "json").json
    details = [d for f in detail["findings"] for d in f.get("details", [])]
    assert any(named in d for d in details), details
    assert statement in planned_sql(converged)
    assert cli("apply", "--auto-approve", *converged.targets).code == 0
    assert cli("verify", *converged.targets).code == 0


# Memberships only Cloud SQL's superuser could grant (as the Admin API does): (SQL, member, group)
BY_CLOUD_SQL = {
    "owner to the app login": ("GRANT nucleus TO nucleus_app", "nucleus_app", "nucleus"),
    "write everything to the analysts": (
        f'GRANT pg_write_all_data TO "{ANALYSTS}"',
        ANALYSTS,
        "pg_write_all_data",
    ),
}


@pytest.mark.parametrize("case", list(BY_CLOUD_SQL), ids=list(BY_CLOUD_SQL))
def test_a_membership_granted_by_cloudsqladmin_is_reported_with_its_route_never_revoked(
    converged, case
):
    sql, member, group = BY_CLOUD_SQL[case]
    converged.query(sql, user=BOOTSTRAP_SUPERUSER)

    verify = cli("verify", *converged.targets)
    assert verify.code == 3 and "membership-granted-by-another-role" in verify.out
    assert member in verify.out and group in verify.out

    plan = cli("plan", *converged.targets, "--format", "json")
    assert plan.code == 3  # a person must act; nothing apply could send would help
    assert not [s for a in plan.json["actions"] for s in a["sql"] if "REVOKE" in s]
    (manual,) = [
        m for m in plan.json["manual"] if m["code"] == "membership-granted-by-another-role"
    ]
    assert "cloudsqladmin" in manual["remedy"] and "Cloud SQL Admin API" in manual["remedy"]

    applied = cli("apply", "--auto-approve", *converged.targets)
    assert applied.code == 3  # only a person can fix it
    assert "cloudsqladmin" in applied.err and "bug" not in applied.err

    # The route, as the Admin API takes it: cloudsqladmin revokes its own grant.
    converged.query(f'REVOKE "{group}" FROM "{member}"', user=BOOTSTRAP_SUPERUSER)
    assert cli("verify", *converged.targets).code == 0


def test_a_declared_group_that_exists_as_a_login_becomes_a_plain_group(legacy_db):
    # Roles belong to the server: the group exists once any test applied; made a login here.
    assert cli("apply", "--auto-approve", *legacy_db.targets).code == 0
    legacy_db.query("ALTER ROLE nucleus_readonly LOGIN CREATEDB", user="postgres")
    verify = cli("verify", *legacy_db.targets)
    assert verify.code == 2 and "group-is-not-a-plain-group" in verify.out  # apply fixes it
    assert (
        "ALTER ROLE nucleus_readonly NOLOGIN NOCREATEDB NOCREATEROLE PASSWORD NULL"
        in planned_sql(legacy_db)
    )
    assert cli("apply", "--auto-approve", *legacy_db.targets).code == 0
    assert legacy_db.query(
        "SELECT rolcanlogin, rolcreatedb FROM pg_roles WHERE rolname = 'nucleus_readonly'"
    ) == [[False, False]]
    assert cli("verify", *legacy_db.targets).code == 0


def test_with_dsn_alone_iam_identities_are_never_revoked(converged):
    """No environment named: IAM identities belong to one, so their memberships stay, declared
    or not (an undeclared identity is still recognised by its cloudsqliam* membership)."""
    stranger = "stranger@local-project.iam"
    create_iam_role(converged.instance, stranger, group=False)
    converged.query(f'GRANT nucleus_readonly TO "{stranger}"', user="postgres")
    env = {k: v for k, v in os.environ.items() if k != "NUCLEUS_PROVISION_ENV"}
    plan = cli("plan", *converged.targets, "--format", "json", env=env)
    revokes = [s for a in plan.json["actions"] for s in a["sql"] if s.startswith("REVOKE")]
    assert not [s for s in revokes if stranger in s or API_SA in s or ANALYSTS in s], revokes
    # With the environment named, the undeclared one is revoked.
    assert f'REVOKE nucleus_readonly FROM "{stranger}"' in planned_sql(converged)


def test_effective_write_on_a_legacy_table_is_reported_and_the_remedy_clears_it(converged):
    """Legacy schemas are never changed by apply: their owner removes what it granted."""
    converged.query("GRANT DELETE ON dna_schema.entities TO nucleus_app", user="postgres")
    verify = cli("verify", *converged.targets)
    assert verify.code == 3 and "access-unexpected" in verify.out
    assert "DELETE on table dna_schema.entities" in verify.out
    plan = cli("plan", *converged.targets, "--format", "json")
    assert plan.code == 3 and not plan.json["actions"]
    (manual,) = [m for m in plan.json["manual"] if m["code"] == "access-unexpected"]
    # The remedy names the statement and who runs it (the grantor); followed, it clears it.
    statement = "REVOKE DELETE ON TABLE dna_schema.entities FROM nucleus_app"
    assert f"as postgres (or a role that may act for it): {statement}" in manual["remedy"]
    converged.query(statement, user="postgres")
    assert cli("verify", *converged.targets).code == 0


def test_a_column_grant_on_a_legacy_table_is_effective_access_too(converged):
    converged.query("GRANT UPDATE (name) ON dna_schema.entities TO nucleus_app", user="postgres")
    verify = cli("verify", *converged.targets)
    assert verify.code == 3 and "UPDATE on table dna_schema.entities" in verify.out
    converged.query("REVOKE UPDATE (name) ON dna_schema.entities FROM nucleus_app", user="postgres")
    assert cli("verify", *converged.targets).code == 0


def test_a_runtime_login_with_role_attributes_is_verified_and_stripped(converged):
    """CREATEDB / CREATEROLE show in no grant and no has_*_privilege: the role's own flags."""
    converged.query("ALTER ROLE nucleus_app CREATEDB CREATEROLE", user="postgres")
    verify = cli("verify", *converged.targets)
    assert verify.code == 2 and "login-has-role-attributes" in verify.out
    assert "nucleus_app has CREATEDB, CREATEROLE" in verify.out
    assert "ALTER ROLE nucleus_app NOCREATEDB NOCREATEROLE" in planned_sql(converged)
    assert cli("apply", "--auto-approve", *converged.targets).code == 0
    assert converged.query(
        "SELECT rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = 'nucleus_app'"
    ) == [[False, False]]
    assert cli("verify", *converged.targets).code == 0


def test_an_iam_login_with_role_attributes_is_reported_and_the_remedy_clears_it(converged):
    """The IAM user is cloudsqladmin's: postgres cannot change it, so it is a manual finding."""
    converged.query(f'ALTER ROLE "{API_SA}" CREATEROLE', user=BOOTSTRAP_SUPERUSER)
    try:
        verify = cli("verify", *converged.targets)
        assert verify.code == 3 and f"{API_SA} has CREATEROLE" in verify.out
        plan = cli("plan", *converged.targets, "--format", "json")
        (manual,) = [m for m in plan.json["manual"] if m["code"] == "login-has-role-attributes"]
        remedy = f'ALTER ROLE "{API_SA}" NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS'
        assert remedy in manual["remedy"]
        converged.query(remedy, user=BOOTSTRAP_SUPERUSER)
        assert cli("verify", *converged.targets).code == 0
    finally:
        converged.query(f'ALTER ROLE "{API_SA}" NOCREATEROLE', user=BOOTSTRAP_SUPERUSER)


# Read access the declaration never gives, made by hand outside the new schemas: (SQL as
# postgres, a detail verify names, the statement the remedy gives, run as postgres).
READ_PATHS = {
    "PUBLIC select on a legacy table": (
        "GRANT SELECT ON dna_schema.entities TO PUBLIC",
        "SELECT on table dna_schema.entities (granted to PUBLIC by postgres)",
        "REVOKE SELECT ON TABLE dna_schema.entities FROM PUBLIC",
    ),
    "PUBLIC usage and select in a legacy schema": (
        "GRANT USAGE ON SCHEMA dna_schema TO PUBLIC; GRANT SELECT ON dna_schema.interests TO PUBLIC",
        "SELECT on table dna_schema.interests (granted to PUBLIC by postgres)",
        "REVOKE SELECT ON TABLE dna_schema.interests FROM PUBLIC",
    ),
    "a column of a legacy table to PUBLIC": (
        "GRANT SELECT (name) ON dna_schema.entities TO PUBLIC",
        "SELECT on table dna_schema.entities (column name granted to PUBLIC by postgres)",
        "REVOKE SELECT (name) ON TABLE dna_schema.entities FROM PUBLIC",
    ),
    "setval on a legacy sequence through every IAM group": (
        "GRANT UPDATE ON SEQUENCE dna_schema.entities_id_seq TO cloudsqliamgroup",
        "UPDATE on sequence dna_schema.entities_id_seq (granted to cloudsqliamgroup by postgres)",
        "REVOKE UPDATE ON SEQUENCE dna_schema.entities_id_seq FROM cloudsqliamgroup",
    ),
    "a grant option on a legacy table": (
        "GRANT SELECT ON dna_schema.capabilities TO nucleus_readonly WITH GRANT OPTION",
        "SELECT on table dna_schema.capabilities (granted to nucleus_readonly by postgres)",
        "REVOKE SELECT ON TABLE dna_schema.capabilities FROM nucleus_readonly",
    ),
}


@pytest.mark.parametrize("case", list(READ_PATHS), ids=list(READ_PATHS))
def test_access_outside_the_new_schemas_is_reported_with_a_remedy_that_works(converged, case):
    """The tool never changes a legacy grant (a live service may use it): a person decides,
    and the statement the remedy gives, run by the grantor, clears it."""
    sql, detail, statement = READ_PATHS[case]
    for part in sql.split("; "):
        converged.query(part, user="postgres")
    verify = cli("verify", *converged.targets)
    assert verify.code != 0 and "access-unexpected" in verify.out
    report = cli("inspect", *converged.targets, "--format", "json").json
    details = [d for f in report["findings"] for d in f.get("details", [])]
    assert any(detail in d for d in details), details
    plan = cli("plan", *converged.targets, "--format", "json")
    assert plan.code != 0 and not plan.json["actions"]
    manual = [m for m in plan.json["manual"] if m["code"] == "access-unexpected"]
    assert manual and all(
        "as postgres (or a role that may act for it): " in m["remedy"] for m in manual
    )
    assert any(statement in m["remedy"] for m in manual), manual
    converged.query(statement, user="postgres")
    if "USAGE" in sql:
        converged.query("REVOKE USAGE ON SCHEMA dna_schema FROM PUBLIC", user="postgres")
    run = cli("verify", *converged.targets)
    assert run.code == 0, run.out


def test_another_services_schema_counts_once_a_runtime_role_can_reach_it(converged):
    """A grant in a schema the runtime roles have no USAGE on is not access; with USAGE it is."""
    converged.query(
        "CREATE SCHEMA other_app; CREATE TABLE other_app.notes (id int)", user="postgres"
    )
    converged.query("GRANT SELECT ON other_app.notes TO PUBLIC", user="postgres")
    assert cli("verify", *converged.targets).code == 0
    converged.query("GRANT USAGE ON SCHEMA other_app TO PUBLIC", user="postgres")
    verify = cli("verify", *converged.targets)
    assert verify.code != 0 and "SELECT on table other_app.notes" in verify.out


def test_the_version_table_granted_to_public_is_revoked(converged):
    converged.query("GRANT SELECT, INSERT ON public.migrations TO PUBLIC", user=OWNER_USER)
    verify = cli("verify", *converged.targets)
    assert verify.code != 0 and "privilege-unexpected" in verify.out
    assert "REVOKE INSERT, SELECT ON TABLE public.migrations FROM PUBLIC" in planned_sql(converged)
    assert cli("apply", "--auto-approve", *converged.targets).code == 0
    assert cli("verify", *converged.targets).code == 0


def test_a_membership_chain_through_an_iam_role_is_revoked_where_postgres_may(converged):
    """Every IAM group is a member of cloudsqliamgroup: a group granted to it reaches them all."""
    converged.query("GRANT nucleus_readwrite TO cloudsqliamgroup", user="postgres")
    verify = cli("verify", *converged.targets)
    assert verify.code != 0 and "membership-chain" in verify.out
    assert f"{ANALYSTS} is a member of nucleus_readwrite through cloudsqliamgroup" in verify.out
    assert "REVOKE nucleus_readwrite FROM cloudsqliamgroup" in planned_sql(converged)
    assert cli("apply", "--auto-approve", *converged.targets).code == 0
    assert cli("verify", *converged.targets).code == 0


def test_a_membership_chain_only_cloud_sql_could_grant_names_its_route(converged):
    converged.query("GRANT nucleus TO cloudsqliamserviceaccount", user=BOOTSTRAP_SUPERUSER)
    try:
        verify = cli("verify", *converged.targets)
        assert verify.code != 0 and "membership-chain" in verify.out
        assert f"{API_SA} is a member of nucleus through cloudsqliamserviceaccount" in verify.out
        plan = cli("plan", *converged.targets, "--format", "json")
        (manual,) = [m for m in plan.json["manual"] if m["code"] == "membership-chain"]
        assert manual["message"].endswith("of nucleus through cloudsqliamserviceaccount")
        assert "cloudsqladmin" in manual["remedy"] and "Cloud SQL Admin API" in manual["remedy"]
        assert not [s for a in plan.json["actions"] for s in a["sql"] if "nucleus FROM" in s]
    finally:
        converged.query("REVOKE nucleus FROM cloudsqliamserviceaccount", user=BOOTSTRAP_SUPERUSER)
    assert cli("verify", *converged.targets).code == 0
