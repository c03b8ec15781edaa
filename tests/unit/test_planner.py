"""The planner is pure: these tests build catalog snapshots by hand, no database."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from provision.catalog import (
    Catalog,
    DefaultGrant,
    Extension,
    Grant,
    Membership,
    MigrationRecord,
    MigrationsTableInfo,
    PrivilegeFacts,
    Relation,
    Role,
    RoleFacts,
    RoleState,
    SchemaInfo,
)
from provision.concerns import all_findings
from provision.concerns.ownership import RouteName
from provision.config import load_environment
from provision.desired import DesiredState, desired_state
from provision.errors import ChecksumMismatch, MigrationFileError, PermissionProblem
from provision.lockfile import load as load_lock
from provision.migrations import check_protected, load_migrations, parse_migration
from provision.planner import Plan, make_plan

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = load_migrations(ROOT / "bootstrap_sql")
# The local environment's desired state (vector only); prod's adds pgaudit (tests below).
LOCK = load_lock(ROOT / "bootstrap_sql" / "schema.lock")
DESIRED = desired_state(load_environment("local"), MIGRATIONS, expected=LOCK)
PROD = desired_state(load_environment("prod"), MIGRATIONS, expected=LOCK)
LAYOUT = DESIRED.layout
COLUMNS = DESIRED.version_table.column_names


def plan(catalog: Catalog, desired: DesiredState = DESIRED, **options) -> Plan:
    return make_plan(desired, catalog, **options)


def roles(**overrides) -> RoleFacts:
    base = RoleFacts(
        current_user="postgres",
        server_version_num=160002,
        roles={
            n: Role(n, True, login=n != "cloudsqlsuperuser")
            for n in ("postgres", "nucleus", "cloudsqlsuperuser")
        },
        superuser_group_members=("nucleus", "postgres"),
        admin_can_set_owner=False,
        admin_can_grant_owner=False,
        admin_can_set_group=True,
        owner_inherits_group=True,
    )
    return replace(base, **overrides)


RW, RO, APP = "nucleus_readwrite", "nucleus_readonly", "nucleus_app"
APP_B = "nucleus_app_b"  # the login that alternates with APP at each rotation
API_SA = "nucleus-api@local-project.iam"  # local's serviceAccount member, less its domain
ANALYSTS = "nucleus-analysts@local-project.example"  # local's group member
TABLE_GRANTS = {RW: ("SELECT", "INSERT", "UPDATE", "DELETE"), RO: ("SELECT",)}


def converged_privileges(tables) -> PrivilegeFacts:
    """What the declaration of privileges.toml and local's members look like once applied,
    written out here by hand (not derived from the code under test)."""
    grants = [Grant("schema", s.name, None, g, "USAGE") for s in LAYOUT.schemas for g in (RW, RO)]
    grants += [
        Grant("table", t.schema, t.name, g, p)
        for t in tables
        for g, privileges in TABLE_GRANTS.items()
        for p in privileges
    ]
    defaults = [
        DefaultGrant("nucleus", s.name, "r", g, p)
        for s in LAYOUT.schemas
        for g, privileges in TABLE_GRANTS.items()
        for p in privileges
    ]
    defaults += [
        DefaultGrant("nucleus", s.name, "S", RW, p)
        for s in LAYOUT.schemas
        for p in ("USAGE", "SELECT")
    ]
    owners = {(s.name, None): "nucleus" for s in LAYOUT.schemas}
    owners |= {(t.schema, t.name): "nucleus" for t in tables}
    return PrivilegeFacts(
        grants=tuple(grants),
        defaults=tuple(defaults),
        memberships=(
            # PostgreSQL 16 gives the groups' creator an ADMIN-only membership (no INHERIT) ...
            Membership(RW, "postgres", admin_option=True, inherit_option=False),
            Membership(RO, "postgres", admin_option=True, inherit_option=False),
            # ... and users.admin.member_of declares a real one (the Phase 4 move's).
            Membership(RW, "postgres"),
            Membership(RW, APP),
            Membership(RW, APP_B),
            Membership(RW, API_SA, member_iam=True),
            Membership(RO, ANALYSTS, member_iam=True),
        ),
        roles={
            "postgres": RoleState("postgres", True, login=True, in_superuser_group=True),
            RW: RoleState(RW, True, admin_holds_admin=True),
            RO: RoleState(RO, True, admin_holds_admin=True),
            APP: RoleState(APP, True, login=True),
            APP_B: RoleState(APP_B, True, login=True),
            API_SA: RoleState(API_SA, True, login=True, iam=True),
            ANALYSTS: RoleState(ANALYSTS, True, iam=True),
        },
        owners=owners,
    )


def converged(**overrides) -> Catalog:
    """A snapshot of a database that matches the layout."""
    schemas = {s.name: SchemaInfo(s.name, "nucleus") for s in LAYOUT.schemas} | {
        "public": SchemaInfo("public", "x")
    }
    relations = {
        (t.schema, t.name): Relation(t.schema, t.name, "table", "nucleus") for t in LAYOUT.tables
    }
    relations[("public", "migrations")] = Relation("public", "migrations", "table", "nucleus")
    relations[("public", "migrations_version_key")] = Relation(
        "public", "migrations_version_key", "index", "nucleus", follows_table=True
    )
    records = tuple(
        MigrationRecord(i, m.name, None, m.version, m.description, None, m.checksum, 5)
        for i, m in enumerate(MIGRATIONS, 1)
    )
    base = Catalog(
        database="nucleus_v12",
        roles=roles(),
        schemas=schemas,
        relations=relations,
        extensions={"vector": Extension("vector", "0.6.2", "0.6.2", "postgres")},
        migrations=MigrationsTableInfo(
            exists=True,
            owner="nucleus",
            columns=COLUMNS,
            readable=True,
            insertable=True,
            sequence="public.migrations_id_seq",
            sequence_usable=True,
            records=records,
            records_known=True,
        ),
        privileges=converged_privileges(LAYOUT.tables),
    )
    return replace(base, **overrides)


def test_a_converged_database_plans_nothing_and_reports_nothing():
    catalog = converged()
    assert plan(catalog, owner_session=False).empty
    assert all_findings(DESIRED, catalog) == []


def test_the_admin_that_may_set_role_owner_hands_objects_over_directly():
    catalog = converged(
        schemas={**converged().schemas, "dna": SchemaInfo("dna", "postgres")},
        roles=roles(admin_can_set_owner=True),
    )
    planned = plan(catalog, owner_session=False)
    assert planned.route.name == RouteName.DIRECT and planned.owner_via_set_role
    assert [s.text for a in planned.actions for s in a.statements] == [
        "ALTER SCHEMA dna OWNER TO nucleus"
    ]


def test_without_set_role_or_admin_option_the_two_step_route_goes_through_cloudsqlsuperuser():
    catalog = converged(schemas={**converged().schemas, "dna": SchemaInfo("dna", "postgres")})
    planned = plan(catalog, owner_session=True)
    assert planned.route.name == RouteName.TWO_STEP
    assert [(a.session.value, [s.text for s in a.statements]) for a in planned.actions] == [
        ("admin", ["ALTER SCHEMA dna OWNER TO cloudsqlsuperuser"]),
        ("owner", ["ALTER SCHEMA dna OWNER TO nucleus"]),
    ]


def test_an_object_left_with_cloudsqlsuperuser_by_an_interrupted_run_needs_only_step_two():
    catalog = converged(
        schemas={**converged().schemas, "dna": SchemaInfo("dna", "cloudsqlsuperuser")}
    )
    planned = plan(catalog, owner_session=True)
    assert [a.kind for a in planned.actions] == ["handoff-to-owner"]


def test_no_route_names_the_missing_membership_and_the_fix():
    catalog = converged(
        schemas={**converged().schemas, "dna": SchemaInfo("dna", "postgres")},
        roles=roles(owner_inherits_group=False),
    )
    with pytest.raises(PermissionProblem) as problem:
        plan(catalog, owner_session=True)
    assert "nucleus is not a member of cloudsqlsuperuser" in problem.value.message
    assert (
        "GRANT nucleus TO postgres" in problem.value.hint
        and "gcloud sql users create" in problem.value.hint
    )


def test_a_legacy_row_named_like_a_version_is_not_taken_for_it():
    legacy = MigrationRecord(1, "001_add_dna_profiles", None)
    info = replace(converged().migrations, records=(legacy,))
    planned = plan(converged(migrations=info), owner_session=True)
    assert planned.pending == tuple(m.version for m in MIGRATIONS)
    assert all(a.record.text.startswith("INSERT") for a in planned.actions if a.migration)


def test_a_legacy_row_claiming_our_migration_becomes_its_record_after_it_runs():
    claimed = MigrationRecord(7, MIGRATIONS[0].name, None)
    info = replace(converged().migrations, records=(claimed,))
    planned = plan(converged(migrations=info), owner_session=True)
    record = next(a for a in planned.actions if a.kind == "migrate").record
    assert (
        record.text.startswith("UPDATE public.migrations SET version") and record.params["id"] == 7
    )


def test_an_edited_applied_migration_is_refused_unless_accepted():
    records = tuple(
        replace(r, checksum="0" * 64) if r.version == "002" else r
        for r in converged().migrations.records
    )
    catalog = converged(migrations=replace(converged().migrations, records=records))
    with pytest.raises(ChecksumMismatch) as mismatch:
        plan(catalog, owner_session=True)
    assert "--accept-changed 002" in mismatch.value.hint
    planned = plan(catalog, owner_session=True, accept_changed=["002"])
    assert [a.kind for a in planned.actions] == ["accept-changed"]


def test_a_missing_extension_is_created_by_the_admin_first():
    catalog = converged(extensions={"vector": Extension("vector", "0.6.2", None)})
    planned = plan(catalog, owner_session=True)
    assert (
        planned.actions[0].kind == "create-extension"
        and planned.actions[0].session.value == "admin"
    )
    assert [f.code for f in all_findings(DESIRED, catalog)] == ["extension-missing"]


def test_the_guard_rail_sees_legacy_schemas_in_every_statement_shape(tmp_path):
    for sql in (
        "DROP TABLE dna_schema.entities",
        "ALTER SCHEMA dna_schema OWNER TO nucleus",
        "GRANT ALL ON ALL TABLES IN SCHEMA tasks_schema TO nucleus",
        "TRUNCATE agents_schema.agents",
        "UPDATE results_schema.results SET score = 0",
        "ALTER SCHEMA results_schema RENAME TO r",
        "WITH gone AS (DELETE FROM dna_schema.interests RETURNING 1) SELECT count(*) FROM gone",
        "SET search_path TO dna_schema",
        "SELECT set_config('search_path', 'dna_schema', true)",
        "MERGE INTO dna_schema.entities e USING dna.entity n ON false WHEN NOT MATCHED THEN DO NOTHING",
        "EXPLAIN ANALYZE DELETE FROM dna_schema.entities",
        "DO $$ BEGIN DELETE FROM dna_schema.entities; END $$",
        "DELETE FROM migrations",
        "CREATE POLICY p ON dna_schema.entities USING (true)",
        "CREATE TABLE dna.x (id int REFERENCES dna_schema.entities (id))",
        "REASSIGN OWNED BY postgres TO nucleus",
        "COMMIT",
        "CREATE ROLE app LOGIN PASSWORD 'not-in-a-migration'",
    ):
        path = tmp_path / "009_x.sql"
        path.write_text(sql + ";\n")
        with pytest.raises(MigrationFileError):
            check_protected(parse_migration(path), LAYOUT.protected_schemas)
    # Reading legacy tables is fine, and a string literal is data, not a name.
    for n, sql in enumerate(
        (
            "INSERT INTO dna.entity (name) VALUES ('dna_schema')",
            "INSERT INTO dna.entity (name) SELECT name FROM dna_schema.entities",
            "CREATE VIEW dna.legacy_names AS SELECT name FROM dna_schema.entities",
        )
    ):
        path = tmp_path / f"0{20 + n}_ok.sql"
        path.write_text(sql + ";\n")
        check_protected(parse_migration(path), LAYOUT.protected_schemas)


MANAGED = ("dna", "tasks", "agents", "results", "memory", "assembly", "execution")


@pytest.mark.parametrize(
    ("sql", "why"),
    [
        ("CREATE SCHEMA postgres", "only the managed schemas"),
        ("CREATE SCHEMA IF NOT EXISTS billing", "only the managed schemas"),
        ("ALTER SCHEMA memory RENAME TO nucleus", "renames a schema"),
        ("LOCK TABLE public.migrations", "LOCK outside"),
        ("LOCK TABLE migrations IN SHARE MODE", "LOCK outside"),
        ("SELECT id FROM public.migrations FOR UPDATE", "FOR UPDATE/SHARE"),
        (
            "INSERT INTO dna.entity (name) SELECT name FROM (SELECT name FROM public.migrations "
            "FOR SHARE) x",
            "FOR UPDATE/SHARE",
        ),
        ("ALTER DATABASE nucleus_v12 CONNECTION LIMIT 1", "Terraform"),
        ("ALTER DATABASE nucleus_v12 SET statement_timeout = 1", "Terraform"),
        ("COMMENT ON DATABASE nucleus_v12 IS 'x'", "Terraform"),
        ("CREATE PUBLICATION p FOR TABLE dna.entity", "publications"),
        ("CREATE CAST (text AS int) WITH INOUT", "cast"),
        ("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC", "default privileges"),
        (
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO PUBLIC",
            "default privileges",
        ),
        ("SELECT lo_create(0)", "large objects"),
        ("SELECT nextval('public.migrations_id_seq')", "nextval()"),
        ("SELECT setval('migrations_id_seq', 1)", "setval()"),
        ("SET statement_timeout = 0", "statement-timeout"),
        ("SET LOCAL lock_timeout = '1h'", "set by nucleus-provision"),
    ],
)
def test_the_guard_rail_refuses_what_reaches_beyond_the_managed_schemas(tmp_path, sql, why):
    path = tmp_path / "009_x.sql"
    path.write_text(sql + ";\n")
    with pytest.raises(MigrationFileError) as refused:
        check_protected(parse_migration(path), LAYOUT.protected_schemas, managed=MANAGED)
    assert why in refused.value.message


def test_the_guard_rail_lets_work_on_the_managed_schemas_through(tmp_path):
    for n, sql in enumerate(
        (
            "CREATE SCHEMA IF NOT EXISTS memory",
            "LOCK TABLE dna.entity IN SHARE MODE",
            "SELECT id FROM dna.entity FOR UPDATE",
            "SELECT nextval('dna.goals_id_seq')",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA dna GRANT SELECT ON TABLES TO nucleus_readonly",
            "COMMENT ON TABLE dna.entity IS 'the new layout'",
        )
    ):
        path = tmp_path / f"0{30 + n}_ok.sql"
        path.write_text(sql + ";\n")
        check_protected(parse_migration(path), LAYOUT.protected_schemas, managed=MANAGED)


def test_a_header_sets_the_statement_timeout_and_a_bad_one_is_named(tmp_path):
    from provision.migrations import DEFAULT_STATEMENT_TIMEOUT

    plain = tmp_path / "001_plain.sql"
    plain.write_text("CREATE TABLE dna.x (id int);\n")
    assert parse_migration(plain).statement_timeout == DEFAULT_STATEMENT_TIMEOUT
    longer = tmp_path / "002_longer.sql"
    longer.write_text(
        "-- nucleus-provision: statement-timeout 45min\nCREATE TABLE dna.y (id int);\n"
    )
    assert parse_migration(longer).statement_timeout == "45min"
    bad = tmp_path / "003_bad.sql"
    bad.write_text("-- nucleus-provision: statement-timeout forever\nSELECT 1;\n")
    with pytest.raises(MigrationFileError) as refused:
        parse_migration(bad)
    assert "003_bad.sql:1: statement-timeout 'forever' is not a duration" in refused.value.message


def test_an_unreadable_version_table_is_never_taken_for_an_empty_one():
    info = replace(converged().migrations, readable=False, records=(), records_known=False)
    with pytest.raises(PermissionProblem) as problem:
        plan(converged(migrations=info), owner_session=False)
    assert "which migrations ran is unknown" in problem.value.message


def test_accepting_an_edited_file_without_an_owner_session_chooses_a_route():
    records = tuple(
        replace(r, checksum="0" * 64) if r.version == "002" else r
        for r in converged().migrations.records
    )
    catalog = converged(
        migrations=replace(converged().migrations, records=records),
        roles=roles(admin_can_set_owner=True),
    )
    planned = plan(catalog, owner_session=False, accept_changed=["002"])
    assert planned.owner_via_set_role and [a.kind for a in planned.actions] == ["accept-changed"]


def test_rows_that_legacy_tooling_appends_later_are_not_drift():
    late = MigrationRecord(99, "004_legacy_service", None)
    info = replace(converged().migrations, records=converged().migrations.records + (late,))
    assert plan(converged(migrations=info), owner_session=False).empty


def test_after_the_hand_over_the_admin_keeps_reading_and_appending():
    info = replace(converged().migrations, owner="postgres", readable=True, insertable=True)
    planned = plan(converged(migrations=info), owner_session=True)
    adopt = next(a for a in planned.actions if a.kind == "adopt-migrations-table")
    assert [s.text for s in adopt.statements] == [
        "GRANT SELECT, INSERT ON public.migrations TO postgres",
        "GRANT USAGE ON SEQUENCE public.migrations_id_seq TO postgres",
    ]


def test_migration_files_are_versioned_as_written_and_checksummed():
    assert [(m.version, m.name, m.transactional) for m in MIGRATIONS[:2]] == [
        ("001", "001_init_schemas", True),
        ("002", "002_add_entity_integrations", True),
    ]
    assert all(len(m.checksum) == 64 for m in MIGRATIONS)


def test_pgaudit_is_created_where_the_environment_turns_it_on_and_the_server_offers_it():
    assert PROD.layout.extensions == ("vector", "pgaudit")
    offered = converged(
        extensions={
            **converged().extensions,
            "pgaudit": Extension("pgaudit", "16.0", None),
        }
    )
    planned = plan(offered, PROD, owner_session=True)
    assert [
        (a.kind, a.statements[0].text) for a in planned.actions if a.kind == "create-extension"
    ] == [("create-extension", "CREATE EXTENSION IF NOT EXISTS pgaudit")]
    assert plan(offered, DESIRED, owner_session=True).empty  # local: not wanted


def test_pgaudit_the_server_cannot_load_is_manual_drift_with_the_flag_to_turn_on():
    found = [f for f in all_findings(PROD, converged()) if f.code == "extension-missing"]
    assert len(found) == 1 and found[0].manual
    assert "cloudsql.enable_pgaudit" in found[0].remedy
    assert (
        not [  # nothing apply could run for it
            a
            for a in plan(converged(), PROD, owner_session=True).actions
            if a.kind == "create-extension"
        ]
    )


# -- privileges -------------------------------------------------------------------------------


def _privileges(**changes) -> Catalog:
    base = converged().privileges
    return converged(privileges=replace(base, **changes))


def _statements(planned) -> list[str]:
    return [s.text for a in planned.actions for s in a.statements]


def test_a_grant_made_by_hand_to_public_is_reported_and_revoked_by_the_owner():
    facts = converged().privileges
    catalog = _privileges(
        grants=facts.grants + (Grant("table", "dna", "entity", "PUBLIC", "SELECT"),)
    )
    codes = [f.code for f in all_findings(DESIRED, catalog)]
    assert codes == ["privilege-unexpected"]
    planned = plan(catalog, owner_session=True)
    assert [(a.session.value, [s.text for s in a.statements]) for a in planned.actions] == [
        ("owner", ["REVOKE SELECT ON TABLE dna.entity FROM PUBLIC"])
    ]


def test_a_revoked_privilege_is_granted_again():
    facts = converged().privileges
    kept = tuple(g for g in facts.grants if not (g.name == "goals" and g.grantee == RO))
    catalog = _privileges(grants=kept)
    assert [f.code for f in all_findings(DESIRED, catalog)] == ["privilege-missing"]
    assert _statements(plan(catalog, owner_session=True)) == [
        "GRANT SELECT ON TABLE dna.goals TO nucleus_readonly"
    ]


def test_an_undeclared_member_of_a_group_is_revoked_by_the_admin():
    facts = converged().privileges
    catalog = _privileges(memberships=facts.memberships + (Membership(RW, "intruder"),))
    assert [f.code for f in all_findings(DESIRED, catalog)] == ["membership-unexpected"]
    planned = plan(catalog, owner_session=True)
    assert [(a.session.value, [s.text for s in a.statements]) for a in planned.actions] == [
        ("admin", ["REVOKE nucleus_readwrite FROM intruder"])
    ]


def test_a_revoked_default_privilege_is_granted_again_for_the_owner():
    facts = converged().privileges
    kept = tuple(d for d in facts.defaults if not (d.schema == "tasks" and d.grantee == RO))
    catalog = _privileges(defaults=kept)
    assert [f.code for f in all_findings(DESIRED, catalog)] == ["default-privileges-missing"]
    assert _statements(plan(catalog, owner_session=True)) == [
        "ALTER DEFAULT PRIVILEGES FOR ROLE nucleus IN SCHEMA tasks GRANT SELECT ON TABLES TO "
        "nucleus_readonly"
    ]


def test_missing_groups_and_app_login_are_created_by_the_admin_and_the_password_never_shown():
    facts = converged().privileges
    roles = {n: s for n, s in facts.roles.items() if n not in (RW, RO, APP, APP_B)}
    catalog = _privileges(roles=roles, memberships=(), grants=(), defaults=())
    planned = plan(catalog, owner_session=True)
    kinds = [a.kind.value for a in planned.actions]
    assert kinds[:4] == ["create-roles", "create-login", "create-login", "memberships"]
    login = planned.actions[1].statements[0]
    assert login.secret and "{app_password_verifier}" in login.text
    assert "PASSWORD" in login.text and "'" not in login.text
    # The alternate login is created without any password, and joins the same group.
    (alternate,) = planned.actions[2].statements
    assert alternate.text == "CREATE ROLE nucleus_app_b LOGIN" and not alternate.secret
    assert "GRANT nucleus_readwrite TO nucleus_app_b" in _statements(planned)


def test_with_dsn_alone_iam_memberships_are_left_alone():
    catalog = converged()
    no_iam = replace(DESIRED, privileges=replace(DESIRED.privileges, manage_iam=False))
    assert plan(catalog, no_iam, owner_session=True).empty
    stray = _privileges(
        memberships=catalog.privileges.memberships + (Membership(RO, API_SA, member_iam=True),)
    )
    assert plan(stray, no_iam, owner_session=True).empty
    assert _statements(plan(stray, owner_session=True)) == [
        'REVOKE nucleus_readonly FROM "nucleus-api@local-project.iam"'
    ]


def test_with_dsn_alone_an_undeclared_iam_identity_is_left_alone_too():
    """Whether a member is an IAM identity is read for every member, declared or not."""
    no_iam = replace(DESIRED, privileges=replace(DESIRED.privileges, manage_iam=False))
    analyst = Membership(RO, "analysts@example.com", grantor="postgres", member_iam=True)
    stray = _privileges(memberships=converged().privileges.memberships + (analyst,))
    assert plan(stray, no_iam, owner_session=True).empty
    assert not [f for f in all_findings(no_iam, stray) if f.code.startswith("membership")]


def test_a_membership_granted_through_the_admin_api_is_reported_never_revoked():
    """cloudsqladmin's grant: a REVOKE by postgres would do nothing (PostgreSQL only warns)."""
    by_api = Membership(RW, "intruder", grantor="cloudsqladmin", admin_acts_for_grantor=False)
    catalog = _privileges(memberships=converged().privileges.memberships + (by_api,))
    assert _statements(plan(catalog, owner_session=True)) == []
    (found,) = [f for f in all_findings(DESIRED, catalog) if f.manual]
    assert found.code == "membership-granted-by-another-role"
    assert "cloudsqladmin" in found.message and "Cloud SQL Admin API" in found.remedy


def test_a_membership_granted_by_a_role_the_admin_acts_for_is_revoked_granted_by_it():
    other = Membership(RW, "intruder", grantor="nucleus_ops", admin_acts_for_grantor=True)
    catalog = _privileges(memberships=converged().privileges.memberships + (other,))
    assert _statements(plan(catalog, owner_session=True)) == [
        "REVOKE nucleus_readwrite FROM intruder GRANTED BY nucleus_ops"
    ]


def test_a_runtime_login_in_the_superuser_group_is_manual_drift():
    facts = converged().privileges
    roles = dict(facts.roles)
    roles[APP] = replace(roles[APP], in_superuser_group=True)
    found = [f for f in all_findings(DESIRED, _privileges(roles=roles)) if f.manual]
    assert [f.code for f in found] == ["login-is-superuser-group"]
    assert "gcloud sql users delete nucleus_app" in found[0].remedy


def test_the_admins_admin_only_creator_membership_does_not_count_as_the_declared_one():
    facts = converged().privileges
    creator_only = tuple(
        m for m in facts.memberships if not (m.member == "postgres" and m.inherit_option)
    )
    catalog = _privileges(memberships=creator_only)
    assert [f.code for f in all_findings(DESIRED, catalog)] == ["membership-missing"]
    assert _statements(plan(catalog, owner_session=True)) == ["GRANT nucleus_readwrite TO postgres"]


def test_a_role_named_like_a_new_schema_is_a_finding_naming_it():
    from provision.concerns import code

    found = code.findings(DESIRED, replace(converged(), shadowed=("memory",)))
    assert [f.code for f in found] == ["schema-shadows-role"]
    assert found[0].details == ("memory",) and found[0].manual
    assert code.findings(DESIRED, converged()) == []
