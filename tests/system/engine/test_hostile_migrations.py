"""Issue 17: hostile migrations of each class, walking around the guard rail (dynamic SQL in a
function, as a reviewer would), are rolled back by the proof, and what lies outside the
managed schemas, read by the emulated superuser (`cloudsqladmin`), is unchanged.

The superuser's fingerprint covers more than the tool's own proof can read (passwords in
pg_authid, every comment), so a test here fails if the proof misses a class.
"""

from __future__ import annotations

import pytest
from test_apply import legacy_fingerprint
from test_safety import migrations_copy

from helpers import assert_clean_error, cli

MANAGED = "{dna,tasks,agents,results,memory,assembly,execution}"

# Everything global or outside the managed schemas that the legacy services and logins see,
# read by the superuser (who may read pg_authid's passwords). Sequence values are apart:
# they are not transactional (see test_a_legacy_sequence_advanced_by_a_migration_...).
GLOBAL_STATE = f"""
SELECT 'role', rolname, md5(concat_ws('|', rolsuper, rolinherit, rolcreaterole, rolcreatedb,
       rolcanlogin, rolreplication, rolbypassrls, rolconnlimit, rolpassword, rolvaliduntil))
FROM pg_authid
UNION ALL SELECT 'member', roleid::regrole::text || '>' || member::regrole::text,
       concat_ws('|', grantor::regrole, admin_option, inherit_option, set_option)
FROM pg_auth_members
UNION ALL SELECT 'setting', coalesce(setdatabase::text, '') || '/' || coalesce(setrole::text, ''),
       setconfig::text FROM pg_db_role_setting
UNION ALL SELECT 'database', datname, concat_ws('|', datdba, datconnlimit, datacl, datallowconn)
FROM pg_database
UNION ALL SELECT 'shared comment', objoid::text, description FROM pg_shdescription
UNION ALL SELECT 'comment', i.type || ' ' || i.identity, d.description
FROM pg_description d, LATERAL pg_identify_object(d.classoid, d.objoid, d.objsubid) i
WHERE coalesce(i.schema, '') <> ALL('{MANAGED}'::text[])
  AND NOT (i.type = 'schema' AND i.identity = ANY('{MANAGED}'::text[]))
UNION ALL SELECT 'large object', oid::text, lomowner::text FROM pg_largeobject_metadata
UNION ALL SELECT 'publication', pubname, '' FROM pg_publication
UNION ALL SELECT 'cast', castsource::regtype || '>' || casttarget::regtype, castfunc::text
FROM pg_cast
UNION ALL SELECT 'schema', nspname, concat_ws('|', nspowner, nspacl) FROM pg_namespace
WHERE nspname <> ALL('{MANAGED}'::text[])
UNION ALL SELECT 'operator', oprnamespace::regnamespace || '.' || oprname,
       concat_ws('|', oprleft, oprright, oprcode) FROM pg_operator
WHERE oprnamespace <> ALL(SELECT oid FROM pg_namespace WHERE nspname = ANY('{MANAGED}'::text[]))
UNION ALL SELECT 'type', typnamespace::regnamespace || '.' || typname, typtype::text FROM pg_type
WHERE typnamespace <> ALL(SELECT oid FROM pg_namespace WHERE nspname = ANY('{MANAGED}'::text[]))
UNION ALL SELECT 'relation', relnamespace::regnamespace || '.' || relname,
       concat_ws('|', relkind, relowner, relacl, relhassubclass, relhastriggers, relfilenode)
FROM pg_class
WHERE relnamespace <> ALL(SELECT oid FROM pg_namespace WHERE nspname = ANY('{MANAGED}'::text[]))
UNION ALL SELECT 'trigger', tgrelid::regclass::text || '.' || tgname, tgenabled::text
FROM pg_trigger WHERE tgrelid IN (SELECT oid FROM pg_class WHERE relnamespace <> ALL(
    SELECT oid FROM pg_namespace WHERE nspname = ANY('{MANAGED}'::text[])))
UNION ALL SELECT 'default privileges', defaclrole::regrole || '/' || defaclnamespace || '/'
       || defaclobjtype::text, defaclacl::text FROM pg_default_acl
WHERE defaclnamespace <> ALL(SELECT oid FROM pg_namespace WHERE nspname = ANY('{MANAGED}'::text[]))
ORDER BY 1, 2, 3
"""

SEQUENCES = (
    "SELECT schemaname || '.' || sequencename, last_value FROM pg_sequences "
    f"WHERE schemaname <> ALL('{MANAGED}'::text[]) ORDER BY 1"
)


def everything_outside(db):
    return {"legacy": legacy_fingerprint(db), "global": db.query(GLOBAL_STATE)}


def dynamic(statement: str, result: str = "void") -> str:
    """A migration that runs `statement` through EXECUTE in a function: the guard rail reads
    only the function's body as a string, so only the proof can stop it."""
    body = statement.replace("'", "''")
    return (
        f"CREATE FUNCTION dna.hostile() RETURNS {result} LANGUAGE plpgsql AS\n"
        f"$$ BEGIN EXECUTE '{body}'; END $$;\n"
        "SELECT dna.hostile();\n"
    )


HOSTILE = {
    "an operator in public": (
        "CREATE FUNCTION dna.always(varchar, varchar) RETURNS bool LANGUAGE sql IMMUTABLE "
        "AS 'SELECT true';\n"
        "CREATE OPERATOR public.= (LEFTARG = varchar, RIGHTARG = varchar, "
        "FUNCTION = dna.always);\n",
        "operator public.=",
    ),
    "a type in public": ("CREATE TYPE public.mood AS ENUM ('sad');\n", "type public.mood"),
    "a function in public": (
        "CREATE FUNCTION public.lower(varchar) RETURNS text LANGUAGE sql AS 'SELECT ''x''';\n",
        "function public.lower",
    ),
    "ALTER ROLE SET through EXECUTE": (
        dynamic("ALTER ROLE nucleus SET statement_timeout = 1"),
        "nucleus",
    ),
    "ALTER ROLE SET search_path through EXECUTE": (
        dynamic("ALTER ROLE nucleus SET search_path = dna"),
        "nucleus",
    ),
    "a password through EXECUTE": (
        dynamic("ALTER ROLE nucleus PASSWORD 'owned-by-a-migration'"),
        "pg_authid",
    ),
    "a new login role through EXECUTE": (
        dynamic("CREATE ROLE intruder LOGIN CREATEDB PASSWORD 'x'"),
        "",
    ),
    "ALTER DATABASE through EXECUTE": (
        "CREATE FUNCTION dna.hostile() RETURNS void LANGUAGE plpgsql AS\n"
        "$$ BEGIN EXECUTE format('ALTER DATABASE %I CONNECTION LIMIT 1', current_database()); "
        "END $$;\nSELECT dna.hostile();\n",
        "database",
    ),
    "a database comment through EXECUTE": (
        "CREATE FUNCTION dna.hostile() RETURNS void LANGUAGE plpgsql AS\n"
        "$$ BEGIN EXECUTE format('COMMENT ON DATABASE %I IS ''x''', current_database()); "
        "END $$;\nSELECT dna.hostile();\n",
        "database",
    ),
    "a comment on the version table": (
        dynamic("COMMENT ON TABLE public.migrations IS 'ours now'"),
        "comment table public.migrations",
    ),
    "a comment on schema public": (
        "COMMENT ON SCHEMA public IS 'ours now';\n",
        "comment schema public",
    ),
    "a large object through EXECUTE": (dynamic("SELECT lo_create(0)"), "large object"),
    "a publication through EXECUTE": (
        dynamic("CREATE PUBLICATION leak FOR TABLE dna.entity"),
        "publication",
    ),
    "default privileges in public through EXECUTE": (
        dynamic("ALTER DEFAULT PRIVILEGES GRANT ALL ON TABLES TO PUBLIC"),
        "default privileges",
    ),
    "a schema named after a login through EXECUTE": (
        dynamic("CREATE SCHEMA postgres"),
        "schema postgres created",
    ),
    "a managed schema renamed after a login through EXECUTE": (
        dynamic("ALTER SCHEMA execution RENAME TO nucleus"),
        "schema nucleus created",
    ),
    "a cast through EXECUTE": (
        "CREATE TYPE dna.tag AS (v text);\n"
        + dynamic("CREATE CAST (dna.tag AS text) WITH INOUT AS IMPLICIT"),
        "cast",
    ),
    "a foreign key to a legacy table through EXECUTE": (
        dynamic("CREATE TABLE dna.child (e int REFERENCES dna_schema.entities (id))"),
        "dna_schema.entities",
    ),
    # PostgreSQL itself refuses this one (only the parent's owner may add a child): a clear
    # error, nothing changed.
    "inheriting from a legacy table through EXECUTE": (
        dynamic("CREATE TABLE dna.kid () INHERITS (dna_schema.capabilities)"),
        "must be owner",
    ),
    "SELECT FOR UPDATE of legacy rows through EXECUTE": (
        dynamic("SELECT id FROM dna_schema.entities FOR UPDATE"),
        "dna_schema.entities",
    ),
    "a SECURITY DEFINER function in dna": (
        "CREATE FUNCTION dna.purge() RETURNS void LANGUAGE sql SECURITY DEFINER AS\n"
        "$$ DELETE FROM dna.entity $$;\n",
        "function dna.purge() is SECURITY DEFINER",
    ),
    "a function made SECURITY DEFINER later through EXECUTE": (
        "CREATE FUNCTION dna.helper() RETURNS int LANGUAGE sql AS 'SELECT 1';\n"
        + dynamic("ALTER FUNCTION dna.helper() SECURITY DEFINER"),
        "SECURITY DEFINER",
    ),
    "LOCK through a view": (
        "CREATE VIEW dna.every_entity AS SELECT * FROM dna_schema.entities;\n"
        "LOCK TABLE dna.every_entity IN ACCESS EXCLUSIVE MODE;\n",
        "dna_schema.entities",
    ),
    "a temporary view shadowing pg_locks": (
        "CREATE TEMP VIEW pg_locks AS SELECT * FROM pg_catalog.pg_locks WHERE false;\n"
        + dynamic("SELECT id FROM dna_schema.entities FOR UPDATE"),
        "dna_schema.entities",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_migration_is_rolled_back_and_nothing_outside_changes(legacy_db, tmp_path, case):
    sql, named = HOSTILE[case]
    assert (
        cli("apply", "--auto-approve", *legacy_db.targets).code == 0
    )  # the repository's files first
    # Some production grants are broad (GRANT ALL): with REFERENCES, PostgreSQL lets a new
    # table's foreign key put its triggers on the legacy table.
    legacy_db.query("GRANT REFERENCES ON dna_schema.entities TO nucleus")
    before = everything_outside(legacy_db)
    extra = migrations_copy(tmp_path, {"900_hostile.sql": sql})
    run = cli("apply", "--auto-approve", *legacy_db.targets, "--migrations", str(extra))
    assert_clean_error(run, "900_hostile.sql", named)
    assert "report it" not in run.err
    assert everything_outside(legacy_db) == before
    assert legacy_db.query("SELECT count(*) FROM public.migrations WHERE version = '900'") == [[0]]
    # Nothing of the file remains, and the owner still logs in with its password.
    assert legacy_db.query("SELECT count(*) FROM pg_proc WHERE proname = 'hostile'") == [[0]]
    assert cli("verify", *legacy_db.targets).code == 0


def test_a_legacy_sequence_advanced_by_a_migration_stops_the_run_naming_it(legacy_db, tmp_path):
    # Sequences are not transactional: the ids drawn stay drawn (a gap, as any rolled-back
    # insert of a service leaves), but the run stops, names the sequence, and nothing else of
    # the file remains.
    assert cli("apply", "--auto-approve", *legacy_db.targets).code == 0
    before = everything_outside(legacy_db)
    extra = migrations_copy(
        tmp_path, {"900_hostile.sql": dynamic("SELECT nextval('dna_schema.entities_id_seq')")}
    )
    run = cli("apply", "--auto-approve", *legacy_db.targets, "--migrations", str(extra))
    assert_clean_error(run, "900_hostile.sql", "dna_schema.entities_id_seq")
    assert everything_outside(legacy_db) == before


def test_a_legacy_sequence_moved_back_in_a_swallowed_error_is_set_forward_again(
    legacy_db, tmp_path
):
    # The subtransaction's lock is gone with it and currval() is not set by setval(.., false):
    # only the second session's read sees it, and moving it forward again is always safe.
    assert cli("apply", "--auto-approve", *legacy_db.targets).code == 0
    before = legacy_db.query(SEQUENCES)
    sql = (
        "CREATE FUNCTION dna.hostile() RETURNS void LANGUAGE plpgsql AS\n"
        "$$ BEGIN\n"
        "  BEGIN\n"
        "    PERFORM setval('dna_schema.entities_id_seq', 1, false);\n"
        "    RAISE EXCEPTION 'hide the lock';\n"
        "  EXCEPTION WHEN raise_exception THEN NULL;\n"
        "  END;\n"
        "END $$;\n"
        "SELECT dna.hostile();\n"
    )
    legacy_db.query("GRANT UPDATE ON SEQUENCE dna_schema.entities_id_seq TO nucleus")
    extra = migrations_copy(tmp_path, {"900_hostile.sql": sql})
    run = cli("apply", "--auto-approve", *legacy_db.targets, "--migrations", str(extra))
    assert_clean_error(run, "900_hostile.sql", "dna_schema.entities_id_seq moved back")
    assert legacy_db.query(SEQUENCES) == before


def test_a_concurrent_index_calling_a_falsely_immutable_function_is_refused_before_it_builds(
    legacy_db, tmp_path
):
    # Outside a transaction nothing could be rolled back: the index is first built on an
    # empty copy of its table, and what it calls must be built in.
    evil = (
        "CREATE FUNCTION dna.evil(text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS\n"
        "$$ BEGIN DELETE FROM dna_schema.interests; RETURN $1; END $$;\n"
    )
    extra = migrations_copy(
        tmp_path,
        {
            "900_function.sql": evil,
            "901_index.sql": "-- nucleus-provision: no-transaction\n"
            "CREATE INDEX CONCURRENTLY entity_evil ON dna.entity (dna.evil(name));\n",
        },
    )
    assert cli("apply", "--auto-approve", *legacy_db.targets).code == 0
    legacy_db.query(
        "INSERT INTO dna.entity (name) SELECT name FROM dna_schema.entities LIMIT 3", user="nucleus"
    )
    before = everything_outside(legacy_db)
    run = cli("apply", "--auto-approve", *legacy_db.targets, "--migrations", str(extra))
    assert_clean_error(run, "901_index.sql:2: refused", "dna.evil(text)")
    assert everything_outside(legacy_db) == before
    assert legacy_db.query("SELECT count(*) FROM pg_class WHERE relname = 'entity_evil'") == [[0]]
    assert legacy_db.query("SELECT count(*) FROM public.migrations WHERE version = '901'") == [[0]]


def test_a_concurrent_index_on_built_in_expressions_runs(legacy_db, tmp_path):
    extra = migrations_copy(
        tmp_path,
        {
            "900_index.sql": "-- nucleus-provision: no-transaction\n"
            "-- nucleus-provision: statement-timeout 10min\n"
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS entity_lower ON dna.entity "
            "(lower(name)) WHERE name <> '';\n",
        },
    )
    before = everything_outside(legacy_db)
    run = cli("apply", "--auto-approve", *legacy_db.targets, "--migrations", str(extra))
    assert run.code == 0, run.err
    assert legacy_db.query("SELECT count(*) FROM pg_class WHERE relname = 'entity_lower'") == [[1]]
    after = everything_outside(legacy_db)
    assert after["legacy"] == before["legacy"]


def test_functions_a_migration_creates_are_not_executable_by_public(legacy_db, tmp_path):
    extra = migrations_copy(
        tmp_path,
        {
            "900_helper.sql": "CREATE FUNCTION dna.helper() RETURNS int LANGUAGE sql AS 'SELECT 1';\n"
        },
    )
    run = cli("apply", "--auto-approve", *legacy_db.targets, "--migrations", str(extra))
    assert run.code == 0, run.err
    assert legacy_db.query(
        "SELECT has_function_privilege('nucleus_app', 'dna.helper()', 'EXECUTE')"
    ) == [[False]]
    assert cli("verify", *legacy_db.targets, "--migrations", str(extra)).code == 0


def test_code_left_for_later_is_a_finding_naming_it(legacy_db, tmp_path):
    # Neither changes anything while the migration runs, so the proof lets them through; what
    # they would do later is what inspect and verify report.
    extra = migrations_copy(
        tmp_path,
        {
            "900_later.sql": "CREATE TABLE dna.audit (x int);\n"
            "CREATE FUNCTION dna.spill() RETURNS trigger LANGUAGE plpgsql AS\n"
            "$$ BEGIN DELETE FROM dna_schema.capabilities; RETURN NEW; END $$;\n"
            "CREATE TRIGGER spill AFTER INSERT ON dna.audit FOR EACH ROW "
            "EXECUTE FUNCTION dna.spill();\n"
            "CREATE FUNCTION dna.open() RETURNS int LANGUAGE sql AS 'SELECT 1';\n"
            "GRANT EXECUTE ON FUNCTION dna.open() TO PUBLIC;\n"
        },
    )
    cli("apply", "--auto-approve", *legacy_db.targets, "--migrations", str(extra))
    run = cli("verify", *legacy_db.targets, "--migrations", str(extra), "--format", "json")
    assert run.code == 3, run.err
    assert "code-names-legacy" in run.out and "code-public-execute" in run.out
    report = cli("inspect", *legacy_db.targets, "--migrations", str(extra), "--format", "json")
    assert report.code == 3, report.err  # only a person can fix code that names legacy schemas
    assert "dna.audit.spill names dna_schema" in report.out and "dna.open()" in report.out


def test_a_migration_that_catches_the_lock_guards_cancel_is_ended_and_stops_holding_the_lock(
    legacy_db, tmp_path
):
    # A cancel is an error plpgsql may catch (EXCEPTION WHEN query_canceled) and go on holding
    # its row locks on legacy rows, so live traffic would wait for as long as it loops. The
    # guard ends a backend that still runs with the lock after one cancel. Each cancel it
    # caught draws from a managed sequence (sequences outlive the rollback): one at most.
    assert cli("apply", "--auto-approve", *legacy_db.targets).code == 0
    before = everything_outside(legacy_db)
    drawn = "SELECT coalesce(last_value, 0) FROM pg_sequences WHERE sequencename = 'goals_id_seq'"
    start = legacy_db.query(drawn)
    sql = (
        "CREATE FUNCTION dna.hostile() RETURNS void LANGUAGE plpgsql AS\n"
        "$$ BEGIN\n"
        "  PERFORM id FROM dna_schema.entities FOR UPDATE;\n"
        "  FOR i IN 1..20 LOOP\n"
        "    BEGIN\n"
        "      PERFORM pg_sleep(0.5);\n"
        "    EXCEPTION WHEN query_canceled THEN\n"
        "      PERFORM nextval('dna.goals_id_seq');\n"
        "    END;\n"
        "  END LOOP;\n"
        "END $$;\n"
        "SELECT dna.hostile();\n"
    )
    extra = migrations_copy(tmp_path, {"900_hostile.sql": sql})
    run = cli("apply", "--auto-approve", *legacy_db.targets, "--migrations", str(extra))
    assert_clean_error(run, "900_hostile.sql", "dna_schema.entities")
    assert legacy_db.query(drawn)[0][0] - start[0][0] <= 1
    assert everything_outside(legacy_db) == before
    assert legacy_db.query("SELECT count(*) FROM public.migrations WHERE version = '900'") == [[0]]


@pytest.mark.parametrize(
    "target", ["INDEX CONCURRENTLY dna.sleeper_idx", "TABLE CONCURRENTLY dna.sleeper"]
)
def test_a_concurrent_reindex_of_an_index_calling_a_user_function_is_refused_before_it_runs(
    legacy_db, tmp_path, target
):
    # The index was built in a proven transaction, where its function did nothing: it acts
    # only when the query is a REINDEX, which outside a transaction nothing could roll back.
    sleeper = (
        "CREATE FUNCTION dna.wake() RETURNS int LANGUAGE plpgsql AS\n"
        "$$ BEGIN\n"
        "  IF current_query() ILIKE '%reindex%' THEN DELETE FROM dna_schema.interests; END IF;\n"
        "  RETURN 1;\n"
        "END $$;\n"
        "CREATE FUNCTION dna.sleeper(int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS\n"
        "$$ BEGIN RETURN dna.wake() + $1; END $$;\n"
        "CREATE TABLE dna.sleeper (id int);\n"
        "INSERT INTO dna.sleeper VALUES (1), (2);\n"
        "CREATE INDEX sleeper_idx ON dna.sleeper ((dna.sleeper(id)));\n"
    )
    extra = migrations_copy(
        tmp_path,
        {
            "900_sleeper.sql": sleeper,
            "901_reindex.sql": f"-- nucleus-provision: no-transaction\nREINDEX {target};\n",
        },
    )
    assert cli("apply", "--auto-approve", *legacy_db.targets).code == 0
    before = everything_outside(legacy_db)
    run = cli("apply", "--auto-approve", *legacy_db.targets, "--migrations", str(extra))
    assert_clean_error(run, "901_reindex.sql:2: refused", "dna.sleeper(integer)")
    assert everything_outside(legacy_db) == before
    assert legacy_db.query("SELECT count(*) FROM public.migrations WHERE version = '901'") == [[0]]


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE VIEW dna.every_interest AS SELECT * FROM dna_schema.interests;\n",
        "CREATE TABLE dna.inbox (id int);\n"
        + dynamic(
            "CREATE RULE purge AS ON INSERT TO dna.inbox "
            "DO ALSO DELETE FROM dna_schema.interests WHERE id = NEW.id"
        ),
    ],
    ids=["view", "rule"],
)
def test_a_view_or_rule_reaching_legacy_tables_with_its_owners_rights_is_rolled_back(
    legacy_db, tmp_path, sql
):
    # A view's (or rule's) relations are checked with its owner's rights: `nucleus` may
    # delete legacy rows, and the default privileges give nucleus_readwrite every new
    # relation, so the app login (no right on dna_schema) would delete them through it.
    assert cli("apply", "--auto-approve", *legacy_db.targets).code == 0
    before = everything_outside(legacy_db)
    extra = migrations_copy(tmp_path, {"900_hostile.sql": sql})
    run = cli("apply", "--auto-approve", *legacy_db.targets, "--migrations", str(extra))
    assert_clean_error(run, "900_hostile.sql", "with its owner's rights")
    assert everything_outside(legacy_db) == before
    assert legacy_db.query("SELECT count(*) FROM public.migrations WHERE version = '900'") == [[0]]


def test_a_security_invoker_view_over_legacy_tables_is_allowed(legacy_db, tmp_path):
    sql = (
        "CREATE VIEW dna.every_interest WITH (security_invoker = on) AS "
        "SELECT * FROM dna_schema.interests;\n"
    )
    extra = migrations_copy(tmp_path, {"900_view.sql": sql})
    run = cli("apply", "--auto-approve", *legacy_db.targets, "--migrations", str(extra))
    assert run.code == 0, run.err
