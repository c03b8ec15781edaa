"""`diff` against live databases on the embedded Cloud SQL emulation, through the real CLI.

The layout applied to a fresh (`empty`) database and to the seed's production state
(`legacy-nucleus-v12`) must compare equal over the managed schemas: staging built from
nothing reproduces prod. Then one thing at a time is changed by hand on one side, and `diff`
must name exactly that difference, in JSON, text and markdown, exit 2; undone, exit 0.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from helpers import assert_clean_error, cli
from provision.local.instance import (
    LocalInstance,
    connect_as,
    superuser_connection,
)

# -- fixtures: the layout applied once per module, cloned per test ----------------------------
#
# Applying the layout (through the real CLI) to an `empty` and to a `legacy-nucleus-v12`
# database takes a few seconds; each test then gets its own copies of the two applied
# databases (`CREATE DATABASE ... TEMPLATE`: milliseconds), so a test may change one side.


@pytest.fixture(scope="module")
def applied(instance: LocalInstance, database_from) -> Iterator[dict[str, str]]:
    """Template databases: the layout applied to `empty` and to `legacy-nucleus-v12`."""
    janitors, names = [], {}
    for scenario in ("empty", "legacy-nucleus-v12"):
        janitor, side = database_from(instance, f"tmpl_{scenario.replace('-', '_')}")
        janitors.append(janitor)
        run = cli("apply", "--auto-approve", "--dsn", side.admin_dsn, "--owner-dsn", side.owner_dsn)
        assert run.code == 0, run.err
        names[scenario] = side.name
    yield names
    for janitor in janitors:
        janitor.drop()


@pytest.fixture
def clone(instance: LocalInstance, applied: dict[str, str], database_from) -> Iterator[Callable]:
    """Factory: a fresh copy of the applied `empty` or `legacy-nucleus-v12` database."""
    janitors = []

    def make(scenario: str):
        janitor, side = database_from(instance, applied[scenario])
        janitors.append(janitor)
        return side

    yield make
    for janitor in janitors:
        janitor.drop()


MANAGED = "dna,tasks,agents,results,memory,assembly,execution,public"
# The production side keeps the old tooling's history, which a fresh database never has.
LEGACY_ROWS = {
    ("legacy-migration-record", f"legacy migration {name}")
    for name in (
        "000_initial_schema",
        "001_add_dna_profiles",
        "002_add_results_score",
        "003_tasks_due_at",
    )
}


def diff(left, right, *args: str, fmt: str = "json"):
    return cli(
        "diff", "--from-dsn", left.admin_dsn, "--to-dsn", right.admin_dsn, "--format", fmt, *args
    )


def named(run) -> set[tuple[str, str]]:
    return {(d["kind"], d["object"]) for d in run.json}


@pytest.fixture
def pair(clone):
    """(prod, staging): the layout applied to the seed's production state and to a fresh database."""
    return clone("legacy-nucleus-v12"), clone("empty")


def test_staging_from_nothing_reproduces_prod_over_the_managed_schemas(pair):
    prod, staging = pair
    run = diff(prod, staging, "--schema", MANAGED, "--ignore", "legacy-migrations")
    assert (run.code, run.json) == (0, []), run.err
    # Prod's old-tooling rows are its only difference, and they are named as such.
    run = diff(prod, staging, "--schema", MANAGED)
    assert run.code == 2, run.err
    assert named(run) == LEGACY_ROWS
    assert all(d["left"] == "recorded" and d["right"] is None for d in run.json)


def test_legacy_schemas_are_compared_by_default_and_named_once(pair):
    prod, staging = pair
    run = diff(prod, staging, "--ignore", "legacy-migrations")
    assert run.code == 2, run.err
    # A schema missing on one side is one difference: its tables are not listed again.
    assert named(run) == {
        ("schema", f"schema {s}")
        for s in ("dna_schema", "tasks_schema", "agents_schema", "results_schema")
    }


def test_a_database_compared_with_itself_is_identical_in_every_format(pair):
    prod, _ = pair
    for fmt in ("json", "text", "markdown"):
        run = diff(prod, prod, fmt=fmt)
        assert run.code == 0, run.err
    assert "Identical: no differences." in diff(prod, prod, fmt="text").out
    assert "no differences" in diff(prod, prod, fmt="markdown").out


@dataclass(frozen=True)
class Case:
    """One hand-made difference: `change` on one side (after `setup` on both), then `undo`."""

    id: str
    change: str
    undo: str
    kind: str
    object: str
    side: str = "staging"
    setup: str = ""
    args: tuple[str, ...] = ("--schema", MANAGED, "--ignore", "legacy-migrations")
    user: str = "cloudsqladmin"
    baseline: frozenset[tuple[str, str]] = frozenset()


CASES = [
    Case(
        "schema",
        "CREATE SCHEMA hand_made AUTHORIZATION nucleus",
        "DROP SCHEMA hand_made",
        "schema",
        "schema hand_made",
        args=("--schema", MANAGED + ",hand_made", "--ignore", "legacy-migrations"),
    ),
    Case(
        "table",
        "CREATE TABLE dna.scratch (id int)",
        "DROP TABLE dna.scratch",
        "table",
        "table dna.scratch",
        user="nucleus",
    ),
    Case(
        "column-type",
        "ALTER TABLE dna.goals ALTER COLUMN title TYPE varchar(200)",
        "ALTER TABLE dna.goals ALTER COLUMN title TYPE text",
        "column-type",
        "column dna.goals.title",
    ),
    Case(
        "column-default",
        "ALTER TABLE tasks.task ALTER COLUMN priority SET DEFAULT 4",
        "ALTER TABLE tasks.task ALTER COLUMN priority SET DEFAULT 3",
        "column-default",
        "column tasks.task.priority",
        side="prod",
    ),
    Case(
        "check",
        'ALTER TABLE dna."values" DROP CONSTRAINT values_importance_check, '
        "ADD CONSTRAINT values_importance_check CHECK (importance BETWEEN 1 AND 10)",
        'ALTER TABLE dna."values" DROP CONSTRAINT values_importance_check, '
        "ADD CONSTRAINT values_importance_check CHECK (importance BETWEEN 1 AND 5)",
        "constraint-definition",
        "constraint values_importance_check on dna.values",
    ),
    Case(
        "index",
        "CREATE INDEX goals_status_idx ON dna.goals (status)",
        "DROP INDEX dna.goals_status_idx",
        "index",
        "index dna.goals_status_idx",
    ),
    Case(
        "sequence",
        "ALTER TABLE dna.goals ALTER COLUMN id SET INCREMENT BY 5",
        "ALTER TABLE dna.goals ALTER COLUMN id SET INCREMENT BY 1",
        "sequence-definition",
        "sequence dna.goals_id_seq",
    ),
    Case(
        "view",
        "CREATE OR REPLACE VIEW dna.open_goals AS SELECT id, title FROM dna.goals WHERE status = 'achieved'",
        "CREATE OR REPLACE VIEW dna.open_goals AS SELECT id, title FROM dna.goals WHERE status = 'open'",
        "view-definition",
        "view dna.open_goals",
        setup="CREATE VIEW dna.open_goals AS SELECT id, title FROM dna.goals WHERE status = 'open'",
        user="nucleus",
    ),
    Case(
        "function",
        "CREATE OR REPLACE FUNCTION dna.goal_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) + 1 FROM dna.goals'",
        "CREATE OR REPLACE FUNCTION dna.goal_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM dna.goals'",
        "function-definition",
        "function dna.goal_count()",
        setup="CREATE FUNCTION dna.goal_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM dna.goals'",
        user="nucleus",
    ),
    Case(
        "trigger",
        "CREATE TRIGGER goals_touch BEFORE UPDATE ON dna.goals FOR EACH ROW EXECUTE FUNCTION dna.touch()",
        "DROP TRIGGER goals_touch ON dna.goals",
        "trigger",
        "trigger goals_touch on dna.goals",
        setup="CREATE FUNCTION dna.touch() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'",
        user="nucleus",
    ),
    Case(
        "policy",
        "CREATE POLICY open_only ON dna.goals USING (status = 'open')",
        "DROP POLICY open_only ON dna.goals",
        "policy",
        "policy open_only on dna.goals",
        user="nucleus",
    ),
    Case(
        "extension",
        "DROP EXTENSION vector CASCADE",
        "CREATE EXTENSION vector",
        "extension",
        "extension vector",
        side="prod",
        user="postgres",  # who created it: recreated, it has the same owner again
        # Dropping vector takes memory.memory.embedding with it: compare the other schemas.
        args=("--schema", MANAGED, "--exclude-schema", "memory", "--ignore", "legacy-migrations"),
    ),
    Case(
        "owner",
        "ALTER TABLE agents.agent OWNER TO postgres",
        "ALTER TABLE agents.agent OWNER TO nucleus",
        "owner",
        "table agents.agent",
    ),
    Case(
        "grant",
        "GRANT SELECT ON results.result TO postgres",
        "REVOKE SELECT ON results.result FROM postgres",
        "privilege",
        "table results.result to postgres",
        user="nucleus",
    ),
    Case(
        "default-privilege",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA dna GRANT SELECT ON TABLES TO postgres",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA dna REVOKE SELECT ON TABLES FROM postgres",
        "default-privilege",
        "default privileges of nucleus on tables in schema dna to postgres",
        user="nucleus",
    ),
    Case(
        "migration-record",
        "INSERT INTO public.migrations (migration_name, version, description, checksum) "
        "VALUES ('003_hand_run', '003', 'hand run', 'abc')",
        "DELETE FROM public.migrations WHERE version = '003'",
        "migration-record",
        "migration 003",
    ),
    Case(
        "migration-checksum",
        "UPDATE public.migrations SET checksum = reverse(checksum) WHERE version = '002'",
        "UPDATE public.migrations SET checksum = reverse(checksum) WHERE version = '002'",
        "migration-checksum",
        "migration 002",
    ),
    Case(
        "legacy-migration-record",
        "INSERT INTO public.migrations (migration_name) VALUES ('004_hand_run')",
        "DELETE FROM public.migrations WHERE migration_name = '004_hand_run'",
        "legacy-migration-record",
        "legacy migration 004_hand_run",
        args=("--schema", MANAGED),
        baseline=frozenset(LEGACY_ROWS),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_one_hand_made_difference_is_named_exactly_then_undone(pair, case: Case):
    prod, staging = pair
    changed = prod if case.side == "prod" else staging
    if case.setup:
        for side in pair:
            side.query(case.setup, user=case.user)
    changed.query(case.change, user=case.user)

    run = diff(prod, staging, *case.args)
    assert run.code == 2, run.err
    assert named(run) == set(case.baseline) | {(case.kind, case.object)}
    text = diff(prod, staging, *case.args, fmt="text")
    assert text.code == 2 and case.kind in text.out and case.object in text.out, text.out
    markdown = diff(prod, staging, *case.args, fmt="markdown")
    assert markdown.code == 2 and f"| {case.object} | {case.kind} |" in markdown.out, markdown.out

    changed.query(case.undo, user=case.user)
    run = diff(prod, staging, *case.args)
    assert (run.code, named(run)) == (0 if not case.baseline else 2, set(case.baseline)), run.out


def test_left_and_right_values_say_which_side_has_what(pair):
    prod, staging = pair
    staging.query("ALTER TABLE dna.goals ALTER COLUMN title TYPE varchar(200)")
    staging.query("GRANT SELECT, UPDATE ON results.result TO postgres", user="nucleus")
    run = diff(prod, staging, "--schema", MANAGED, "--ignore", "legacy-migrations")
    by_kind = {d["kind"]: d for d in run.json}
    assert by_kind["column-type"]["left"] == "text"
    assert by_kind["column-type"]["right"] == "character varying(200)"
    assert by_kind["privilege"]["left"] == []
    assert by_kind["privilege"]["right"] == ["SELECT", "UPDATE"]


def test_ignore_drops_a_category(pair):
    prod, staging = pair
    staging.query("ALTER TABLE agents.agent OWNER TO postgres")
    staging.query("GRANT SELECT ON results.result TO postgres", user="nucleus")
    args = ("--schema", MANAGED, "--ignore", "legacy-migrations")
    assert {k for k, _ in named(diff(prod, staging, *args))} == {"owner", "privilege"}
    run = diff(prod, staging, *args, "--ignore", "owners,privileges")
    assert (run.code, run.json) == (0, []), run.out


@pytest.fixture
def app_roles(instance):
    """Two roles of the server (roles are cluster-wide): one a member of nucleus, one not."""
    conn = superuser_connection(instance)
    try:
        conn.run("CREATE ROLE diff_app_prod IN ROLE nucleus")
        conn.run("CREATE ROLE diff_app_staging")
    finally:
        conn.close()
    yield "diff_app_prod", "diff_app_staging"
    conn = superuser_connection(instance)
    try:
        conn.run("DROP ROLE diff_app_prod")
        conn.run("DROP ROLE diff_app_staging")
    finally:
        conn.close()


def test_map_role_compares_differently_named_roles_and_their_memberships(app_roles, clone):
    # app_roles first: the databases (and their grants to these roles) are dropped before the roles.
    prod, staging = clone("legacy-nucleus-v12"), clone("empty")
    prod_role, staging_role = app_roles
    prod.query(f"GRANT SELECT ON dna.goals TO {prod_role}", user="nucleus")
    staging.query(f"GRANT SELECT ON dna.goals TO {staging_role}", user="nucleus")
    args = ("--schema", MANAGED, "--ignore", "legacy-migrations")

    unmapped = diff(prod, staging, *args)
    assert named(unmapped) >= {
        ("privilege", f"table dna.goals to {prod_role}"),
        ("privilege", f"table dna.goals to {staging_role}"),
    }
    mapped = diff(prod, staging, *args, "--map-role", f"{prod_role}={staging_role}")
    # The grants now match; what is left is that the prod role is a member of nucleus and its
    # staging counterpart is not.
    assert mapped.json == [
        {
            "kind": "membership",
            "object": f"role {staging_role} in nucleus",
            "left": "INHERIT, SET",
            "right": None,
        }
    ], mapped.out


def test_a_read_behind_a_lock_gives_up_instead_of_hanging(pair):
    prod, staging = pair
    holder = connect_as(staging.instance, "cloudsqladmin", staging.name, timeout=30)
    try:
        holder.run("BEGIN")
        holder.run("LOCK TABLE public.migrations IN ACCESS EXCLUSIVE MODE")
        run = diff(prod, staging, "--schema", MANAGED)
    finally:
        holder.run("ROLLBACK")
        holder.close()
    assert_clean_error(run, "lock timeout")


def test_the_version_table_unreadable_is_an_error_not_an_empty_history(pair):
    prod, staging = pair
    staging.query("REVOKE SELECT ON public.migrations FROM postgres", user="nucleus")
    run = diff(prod, staging, "--schema", MANAGED)
    assert_clean_error(run, "may not read public.migrations", "GRANT SELECT")
    # Without the records, what is left is the very revocation that hid them.
    run = diff(prod, staging, "--schema", MANAGED, "--ignore", "migrations,legacy-migrations")
    assert named(run) == {("privilege", "table public.migrations to postgres")}


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("--env", "prod"), "exactly two databases (1 given)"),
        (("--env", "a", "--env", "b", "--env", "c"), "exactly two databases (3 given)"),
        (("--env", "a", "--dsn", "postgresql://u:p@h/d"), "do not say which side is which"),
        (
            ("--from-env", "a", "--from-dsn", "postgresql://u:p@h/d", "--to-env", "b"),
            "both name the left side",
        ),
        (("--env", "a", "--env", "b", "--ignore", "owner"), "unknown category to ignore: owner"),
        (("--env", "a", "--env", "b", "--map-role", "nucleus"), "is not LEFT=RIGHT"),
    ],
)
def test_bad_usage_is_one_line_and_exit_1(args, fragment):
    assert_clean_error(cli("diff", *args), fragment)


def test_an_unreachable_side_is_an_error_without_its_password(pair):
    prod, _ = pair
    run = cli(
        "--connect-timeout",
        "2",
        "diff",
        "--from-dsn",
        prod.admin_dsn,
        "--to-dsn",
        "postgresql://postgres:s3cret-pw@127.0.0.1:9/nucleus_v12",
    )
    assert_clean_error(run, "cannot connect", secrets=("s3cret-pw",))


@pytest.fixture
def second_emulation(tmp_path):
    """A second Cloud SQL emulation (its own server and roles), reached as `--env local`."""
    from provision.local.server import Server

    state_dir = tmp_path / "staging-emulation"
    server = Server(state_dir)
    instance = server.start("empty")
    yield {**os.environ, "NUCLEUS_LOCAL_STATE_DIR": str(state_dir)}, instance
    server.stop()


def test_two_emulations_through_the_connector_then_a_membership_changed_by_hand(
    second_emulation, clone
):
    env, staging_instance = second_emulation
    assert cli("apply", "--auto-approve", "--env", "local", env=env).code == 0
    prod = clone("legacy-nucleus-v12")
    args = ("--from-dsn", prod.admin_dsn, "--to-env", "local", "--schema", MANAGED)
    args += ("--ignore", "legacy-migrations")

    run = cli("diff", *args, "--format", "json", env=env)
    assert (run.code, run.json) == (0, []), run.out + run.err

    # Memberships live in the server, not the database: only two servers can differ in them.
    conn = superuser_connection(staging_instance)
    try:
        conn.run("GRANT pg_read_all_data TO nucleus")
        for fmt in ("json", "text", "markdown"):
            run = cli("diff", *args, "--format", fmt, env=env)
            assert run.code == 2, run.err
            if fmt == "json":
                assert run.json == [
                    {
                        "kind": "membership",
                        "object": "role nucleus in pg_read_all_data",
                        "left": None,
                        "right": "INHERIT, SET",
                    }
                ]
            else:
                assert "role nucleus in pg_read_all_data" in run.out
        conn.run("REVOKE pg_read_all_data FROM nucleus")
    finally:
        conn.close()
    assert cli("diff", *args, env=env).code == 0


def test_the_old_version_table_shape_is_read_too(make_db):
    # Before any apply, public.migrations has only the old tooling's columns.
    prod, staging = make_db("legacy-nucleus-v12"), make_db("legacy-nucleus-v12")
    assert diff(prod, staging).code == 0
    staging.query("INSERT INTO public.migrations (migration_name) VALUES ('004_hand_run')")
    run = diff(prod, staging)
    assert run.json == [
        {
            "kind": "legacy-migration-record",
            "object": "legacy migration 004_hand_run",
            "left": None,
            "right": "recorded",
        }
    ]
