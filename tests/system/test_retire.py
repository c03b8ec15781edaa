"""Issue 20: `retire plan | apply | status | verify | unfreeze` against the emulation.

The template: the legacy scenario with the layout applied and every move run and cut over
(through the real CLI), so each test starts where a retirement can start. Each test writes
its own retire.toml (a copy of moves/ with short windows): a window of "0s" needs one clean
interval between two snapshots, i.e. two `apply` runs with no use in between.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pg8000.native
import pytest

from helpers import APP_PASSWORD, assert_clean_error, cli
from provision.local import cloudsql_api
from provision.local.instance import LocalInstance

MOVES = Path(__file__).resolve().parents[2] / "moves"
# A leaf of the legacy layout: nothing reads it (dna_schema.interests, say, is read by the
# legacy view dna_schema.entity_summary, which blocks its freeze).
TABLE = "results_schema.results"


@pytest.fixture(scope="module")
def cut_over(instance: LocalInstance, database_from) -> Iterator[str]:
    """Template: layout applied, every move run and cut over."""
    janitor, db = database_from(instance, "tmpl_legacy_nucleus_v12")
    applied = cli("apply", "--auto-approve", *db.targets)
    assert applied.code == 0, applied.err
    run = cli("move", "run", "--dsn", db.admin_dsn, "--moves", str(MOVES), timeout=300)
    assert run.code == 0, run.err
    for name in ("entities", "agents", "interests", "tasks", "results"):
        cut = cli("move", "cutover", name, "--dsn", db.admin_dsn, "--moves", str(MOVES))
        assert cut.code == 0, cut.err
    yield db.name
    janitor.drop()


@pytest.fixture
def db(instance: LocalInstance, cut_over: str, database_from):
    janitor, database = database_from(instance, cut_over)
    yield database
    janitor.drop()


def moves_with(tmp_path: Path, body: str) -> Path:
    directory = tmp_path / "moves"
    shutil.copytree(MOVES, directory)
    (directory / "retire.toml").write_text(body)
    return directory


def entry(name: str, observe: str = "0s", move: str | None = None) -> str:
    line = f'move = "{move}"\n' if move else ""
    return f'[[table]]\nname = "{name}"\n{line}observe = "{observe}"\n\n'


def retire(db, verb: str, moves: Path, *args: str):
    return cli("retire", verb, "--dsn", db.admin_dsn, "--moves", str(moves), *args, timeout=180)


def use(db, sql: str, user: str = "cloudsqladmin", password: str | None = None) -> None:
    """Run `sql` as `user` and disconnect, then wait until that backend is gone: a backend
    publishes its statistics on exit, before it leaves pg_stat_activity (while idle it does
    so only every second or so). A wait for a fact, not a timed assertion."""
    conn = (
        db.connect(user)
        if password is None
        else pg8000.native.Connection(
            user,
            host=db.instance.host,
            port=db.instance.port,
            database=db.name,
            password=password,
            timeout=30,
        )
    )
    pid = conn.run("SELECT pg_backend_pid()")[0][0]
    try:
        if "TO STDOUT" in sql:
            conn.run(sql, stream=io.StringIO())
        else:
            conn.run(sql)
    finally:
        conn.close()
    watcher = db.connect()
    try:
        for _ in range(600):
            if not watcher.run("SELECT 1 FROM pg_stat_activity WHERE pid = :p", p=pid):
                return
            time.sleep(0.05)
        raise AssertionError(f"backend {pid} did not exit")
    finally:
        watcher.close()


def phase(db, name: str):
    return db.query("SELECT phase FROM nucleus_retire.tables WHERE name = :n", n=name)


def test_an_idle_table_is_frozen_after_a_clean_window_and_every_step_is_recorded(db, tmp_path):
    moves = moves_with(tmp_path, entry(TABLE))
    plan = retire(db, "plan", moves)
    assert plan.code == 2, plan.out + plan.err
    assert "[wait] observe window" in plan.out
    first = retire(db, "apply", moves)
    assert first.code == 2, first.out + first.err
    assert phase(db, TABLE) == [["observing"]]
    second = retire(db, "apply", moves)
    assert second.code == 0, second.out + second.err
    assert phase(db, TABLE) == [["frozen"]]
    events = db.query(
        "SELECT step, current_user_name, session_user_name, evidence->'gates' IS NOT NULL "
        "FROM nucleus_retire.events WHERE name = :n ORDER BY id",
        n=TABLE,
    )
    assert events == [["freeze", "postgres", "postgres", True]]
    assert db.query(
        "SELECT count(*) >= 2 FROM nucleus_retire.snapshots WHERE name = :n", n=TABLE
    ) == [[True]]
    verify = retire(db, "verify", moves)
    assert verify.code == 0, verify.out
    again = retire(db, "apply", moves)  # a rerun changes nothing but a new snapshot
    assert again.code == 0 and "freezing" not in again.err


def test_a_read_between_snapshots_restarts_the_window_and_status_names_it(db, tmp_path):
    moves = moves_with(tmp_path, entry(TABLE))
    assert retire(db, "apply", moves).code == 2
    use(db, f"SELECT count(*) FROM {TABLE}", user="nucleus")
    applied = retire(db, "apply", moves)
    assert applied.code == 2, applied.out + applied.err
    assert phase(db, TABLE) == [["observing"]]
    status = retire(db, "status", moves)
    assert status.code == 0
    assert "sequential scan" in status.out and "used:" in status.out, status.out


def test_a_counter_reset_restarts_the_window_instead_of_passing_as_no_use(db, tmp_path):
    moves = moves_with(tmp_path, entry(TABLE))
    assert retire(db, "apply", moves).code == 2
    use(db, "SELECT pg_stat_reset()")
    applied = retire(db, "apply", moves)
    assert applied.code == 2, applied.out
    assert phase(db, TABLE) == [["observing"]]
    reason = db.query("SELECT window_reason FROM nucleus_retire.tables WHERE name = :n", n=TABLE)
    assert "statistics were reset" in reason[0][0]


def test_a_move_not_cut_over_holds_the_freeze(instance, database_from, tmp_path):
    janitor, fresh = database_from(instance, "tmpl_legacy_nucleus_v12")
    try:
        moves = moves_with(tmp_path, entry(TABLE))
        assert retire(fresh, "apply", moves).code == 2
        second = retire(fresh, "apply", moves)
        assert second.code == 2
        assert "move results is not cut over" in second.out
        assert phase(fresh, TABLE) == [["observing"]]
    finally:
        janitor.drop()


@pytest.mark.parametrize(
    ("ddl", "named"),
    [
        (
            f"CREATE VIEW public.legacy_results AS SELECT * FROM {TABLE}",
            "view public.legacy_results",
        ),
        (
            f"CREATE TABLE public.notes (id int, result_id int REFERENCES {TABLE} (id))",
            "foreign key public.notes notes_result_id_fkey",
        ),
        (
            "CREATE FUNCTION public.count_results() RETURNS bigint LANGUAGE plpgsql AS "
            f"$$BEGIN RETURN (SELECT count(*) FROM {TABLE}); END$$",
            "function public.count_results()",
        ),
        (
            "CREATE FUNCTION public.n_results() RETURNS bigint LANGUAGE sql "
            f"BEGIN ATOMIC SELECT count(*) FROM {TABLE}; END",
            "function public.n_results()",
        ),
        (
            "CREATE TABLE public.guarded (id int); ALTER TABLE public.guarded ENABLE ROW LEVEL "
            "SECURITY; CREATE POLICY p ON public.guarded USING "
            f"(EXISTS (SELECT FROM {TABLE} i WHERE i.id = guarded.id))",
            "policy public.guarded p",
        ),
    ],
    ids=["view", "foreign-key", "plpgsql-function", "sql-function", "policy"],
)
def test_a_dependant_blocks_the_freeze_and_is_named(db, tmp_path, ddl, named):
    db.query(ddl, user="postgres")
    moves = moves_with(tmp_path, entry(TABLE))
    assert retire(db, "apply", moves).code == 3
    second = retire(db, "apply", moves)
    assert second.code == 3, second.out + second.err
    assert named in second.out, second.out
    assert phase(db, TABLE) == [["observing"]]


def _login(instance: LocalInstance, db, user: str, password: str) -> pg8000.native.Connection:
    return pg8000.native.Connection(
        user,
        host=instance.host,
        port=instance.port,
        database=db.name,
        password=password,
        timeout=30,
    )


WRITES = {
    "INSERT": f"INSERT INTO {TABLE} (task_id, output) VALUES (1, '{{}}')",
    "UPDATE": f"UPDATE {TABLE} SET score = score WHERE id = 1",
    "DELETE": f"DELETE FROM {TABLE} WHERE id = -1",
    "TRUNCATE": f"TRUNCATE {TABLE}",
    "MERGE": (
        f"MERGE INTO {TABLE} t USING (SELECT 1 AS id) s ON t.id = s.id "
        "WHEN MATCHED THEN UPDATE SET score = t.score"
    ),
    "COPY": f"COPY {TABLE} (task_id, output) FROM STDIN",
}


def test_every_role_and_every_write_fails_on_a_frozen_table_and_unfreeze_restores_the_grants(
    db, instance, tmp_path
):
    sa = "retire-writer@nucleus-test.iam"
    cloudsql_api.create_iam_service_account_user(instance, sa, "iam-secret-1")
    db.query(
        "DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'retire_direct') THEN "
        "CREATE ROLE retire_direct LOGIN PASSWORD 'direct-secret-1'; END IF; END$$"
    )
    grants = (
        f'GRANT USAGE ON SCHEMA results_schema TO nucleus_app, "{sa}", retire_direct; '
        f'GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON {TABLE} TO nucleus_app, "{sa}"; '
        f"GRANT UPDATE (score) ON {TABLE} TO retire_direct; "
        f"GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON {TABLE} TO retire_direct; "
        f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA results_schema TO nucleus_app, "{sa}", retire_direct'
    )
    db.query(grants, user="postgres")
    # A grant by another grantor than the admin: nucleus, holding INSERT WITH GRANT OPTION,
    # passes it on. postgres cannot act for nucleus: the freeze keeps both and says so.
    db.query(f"GRANT INSERT ON {TABLE} TO nucleus WITH GRANT OPTION", user="postgres")
    db.query(f"GRANT INSERT ON {TABLE} TO retire_direct", user="nucleus")
    acts = db.query("SELECT pg_has_role('postgres', 'nucleus', 'USAGE')")[0][0]
    acl = (
        "SELECT coalesce(a.attname, '-'), x.grantee::regrole::text, x.grantor::regrole::text, "
        "x.privilege_type, x.is_grantable FROM (SELECT NULL::name AS attname, "
        "coalesce(relacl, acldefault('r', relowner)) AS acl FROM pg_class "
        f"WHERE oid = '{TABLE}'::regclass UNION ALL SELECT attname, attacl FROM pg_attribute "
        f"WHERE attrelid = '{TABLE}'::regclass AND attacl IS NOT NULL) a, "
        "LATERAL aclexplode(a.acl) x ORDER BY 1, 2, 3, 4"
    )
    before = db.query(acl)
    moves = moves_with(tmp_path, entry(TABLE))
    assert retire(db, "apply", moves).code == 2
    frozen = retire(db, "apply", moves)
    assert frozen.code == 0, frozen.out + frozen.err
    rows_before = db.query(f"SELECT count(*) FROM {TABLE}")
    kept = db.query(
        "SELECT jsonb_path_query_array(evidence, '$.kept[*].grantor') FROM nucleus_retire.events "
        "WHERE name = :n AND step = 'freeze'",
        n=TABLE,
    )
    assert kept == [[[] if acts else ["postgres", "nucleus"]]], kept

    logins = {
        "postgres (owner, cloudsqlsuperuser)": ("postgres", instance.passwords["postgres"]),
        "nucleus (legacy services)": ("nucleus", instance.passwords["nucleus"]),
        "nucleus_app (app login)": ("nucleus_app", APP_PASSWORD),
        "IAM service account": (sa, "iam-secret-1"),
        "retire_direct (direct grant)": ("retire_direct", "direct-secret-1"),
    }
    for who, (user, password) in logins.items():
        conn = _login(instance, db, user, password)
        try:
            conn.run("SET application_name = 'legacy-writer'")
            assert conn.run(f"SELECT count(*) FROM {TABLE}") == rows_before  # reads work
            for verb, sql in WRITES.items():
                with pytest.raises(pg8000.native.DatabaseError) as refused:
                    if verb == "COPY":
                        conn.run(sql, stream=io.StringIO("1\t{}\n"))
                    else:
                        conn.run(sql)
                fields = refused.value.args[0]
                assert fields["C"] == "42501", (who, verb, fields)
                if "frozen" in fields["M"]:
                    assert TABLE.split(".")[1] in fields["M"] and user in fields["M"], fields
                    assert "legacy-writer" in fields["M"], fields
        finally:
            conn.close()
    # A REVOKE alone never stops an owner (it grants itself back) nor a superuser: the
    # trigger does, naming the table, the role and the application.
    for user in ("postgres", "cloudsqladmin"):
        conn = db.connect(user)
        try:
            conn.run("SET application_name = 'owner-shell'")
            if user == "postgres":
                conn.run(f"GRANT INSERT, UPDATE, DELETE, TRUNCATE ON {TABLE} TO postgres")
            for verb, sql in WRITES.items():
                with pytest.raises(pg8000.native.DatabaseError) as refused:
                    if verb == "COPY":
                        conn.run(sql, stream=io.StringIO("1\t{}\n"))
                    else:
                        conn.run(sql)
                message = refused.value.args[0]["M"]
                assert "frozen for retirement" in message, (user, verb, message)
                assert f"current_user {user}" in message and "'owner-shell'" in message
            if user == "postgres":
                conn.run(f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {TABLE} FROM postgres")
        finally:
            conn.close()
    assert db.query(f"SELECT count(*) FROM {TABLE}") == rows_before
    status = retire(db, "status", moves)
    assert "frozen" in status.out

    thawed = retire(db, "unfreeze", moves, TABLE)
    assert thawed.code == 0, thawed.out + thawed.err
    assert db.query(acl) == before
    assert phase(db, TABLE) == [["observing"]]
    conn = _login(instance, db, "nucleus", instance.passwords["nucleus"])
    try:
        conn.run(f"UPDATE {TABLE} SET score = score WHERE id = 1")
    finally:
        conn.close()
    steps = db.query("SELECT step FROM nucleus_retire.events WHERE name = :n ORDER BY id", n=TABLE)
    assert steps == [["freeze"], ["unfreeze"]]


def test_verify_names_a_frozen_table_whose_trigger_was_disabled_and_apply_restores_it(db, tmp_path):
    moves = moves_with(tmp_path, entry(TABLE))
    retire(db, "apply", moves)
    assert retire(db, "apply", moves).code == 0
    db.query(f"ALTER TABLE {TABLE} DISABLE TRIGGER nucleus_retire_frozen", user="postgres")
    verify = retire(db, "verify", moves)
    assert verify.code == 1, verify.out
    assert "DRIFT" in verify.out and "nucleus_retire_frozen" in verify.out
    assert retire(db, "apply", moves).code == 0
    assert retire(db, "verify", moves).code == 0
    db.query(f"GRANT INSERT ON {TABLE} TO nucleus", user="postgres")
    regranted = retire(db, "verify", moves)
    assert regranted.code == 1, regranted.out
    assert "INSERT for nucleus (by postgres) was granted again" in regranted.out
    assert f"REVOKE INSERT ON {TABLE} FROM nucleus GRANTED BY postgres" in regranted.out
    db.query(f"REVOKE INSERT ON {TABLE} FROM nucleus GRANTED BY postgres", user="postgres")
    assert retire(db, "verify", moves).code == 0


def test_a_declared_table_that_does_not_exist_needs_a_person(db, tmp_path):
    db.query(f"DROP TABLE {TABLE}", user="postgres")  # the test's copy only
    moves = moves_with(tmp_path, entry(TABLE))
    plan = retire(db, "plan", moves)
    assert plan.code == 3, plan.out + plan.err
    assert f"{TABLE} does not exist" in plan.out
    assert retire(db, "apply", moves).code == 3


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (
            '[[table]]\nname = "dna_schema.interests"\nobserve = "soon"\n',
            "observe must be a duration",
        ),
        ('[[table]]\nname = "dna_schema.capabilities"\nobserve = "1d"\n', "not-moved.toml"),
        (
            '[[table]]\nname = "dna_schema.interests"\nobserve = "1d"\ncolour = 1\n',
            "unknown key 'colour'",
        ),
        (
            '[[table]]\nname = "results_schema.results"\nmove = "agents"\nobserve = "1d"\n',
            "move agents reads",
        ),
        ("[[table]\n", "not valid TOML"),
    ],
    ids=["duration", "not-moved", "unknown-key", "wrong-move", "toml"],
)
def test_a_bad_retire_file_is_a_clear_error_and_changes_nothing(db, tmp_path, body, fragment):
    moves = moves_with(tmp_path, body)
    run = retire(db, "apply", moves)
    assert_clean_error(run, "retire.toml", fragment)
    assert db.query("SELECT to_regnamespace('nucleus_retire') IS NULL") == [[True]]


HIDDEN_USES = {
    # name: (setup as postgres, the use, as whom)
    "read-through-a-view": (
        f"CREATE VIEW public.v_results AS SELECT * FROM {TABLE}",
        "SELECT count(*) FROM public.v_results",
    ),
    "security-definer-function": (
        "CREATE FUNCTION public.result_count() RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER "
        "SET search_path = results_schema AS $$BEGIN RETURN (SELECT count(*) FROM results); END$$",
        "SELECT public.result_count()",
    ),
    "copy-to": ("", f"COPY {TABLE} TO STDOUT"),
    "index-lookup": ("", f"SELECT output FROM {TABLE} WHERE id = 7"),
    "trigger-on-another-table": (
        "CREATE TABLE public.audit (id int); "
        "CREATE FUNCTION public.audit_touch() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN PERFORM 1 FROM results WHERE id = NEW.id; RETURN NEW; END$$ "
        "SET search_path = results_schema; "
        "CREATE TRIGGER t AFTER INSERT ON public.audit FOR EACH ROW "
        "EXECUTE FUNCTION public.audit_touch()",
        "INSERT INTO public.audit VALUES (3)",
    ),
}


@pytest.mark.parametrize("scenario", sorted(HIDDEN_USES))
def test_a_hidden_use_between_two_snapshots_holds_the_freeze_with_its_evidence(
    db, tmp_path, scenario
):
    setup, sql = HIDDEN_USES[scenario]
    if setup:
        db.query(setup, user="postgres")
    moves = moves_with(tmp_path, entry(TABLE))
    retire(db, "apply", moves)
    use(db, sql)
    second = retire(db, "apply", moves)
    assert second.code in (2, 3), second.out + second.err
    assert phase(db, TABLE) == [["observing"]]
    status = retire(db, "status", moves, "--format", "json")
    (table,) = status.json
    assert table["window_reason"].startswith("used: "), table
    assert "scan" in table["last_use"], table


def test_an_iam_login_reading_the_table_counts_as_use(db, instance, tmp_path):
    sa = "retire-reader@nucleus-test.iam"
    cloudsql_api.create_iam_service_account_user(instance, sa, "iam-secret-2")
    db.query(
        f'GRANT USAGE ON SCHEMA results_schema TO "{sa}"; GRANT SELECT ON {TABLE} TO "{sa}"',
        user="postgres",
    )
    moves = moves_with(tmp_path, entry(TABLE))
    retire(db, "apply", moves)
    use(db, f"SELECT count(*) FROM {TABLE}", user=sa, password="iam-secret-2")
    assert retire(db, "apply", moves).code == 2
    assert phase(db, TABLE) == [["observing"]]


def test_a_session_holding_the_table_now_holds_the_freeze_and_is_named(db, tmp_path):
    moves = moves_with(tmp_path, entry(TABLE))
    retire(db, "apply", moves)
    conn = db.connect("nucleus")
    try:
        conn.run("SET application_name = 'monthly-report'")
        conn.run("BEGIN")
        conn.run(f"SELECT 1 FROM {TABLE} LIMIT 0")  # no row read: the lock is the evidence
        second = retire(db, "apply", moves)
    finally:
        conn.close()
    assert second.code == 2, second.out
    assert "monthly-report" in second.out and "[wait] not in use now" in second.out
    assert phase(db, TABLE) == [["observing"]]


def test_the_repository_declaration_on_the_legacy_scenario_names_what_blocks(db):
    plan = retire(db, "plan", MOVES, "--format", "json")
    assert plan.code == 3, plan.out + plan.err
    blocks = {
        t["table"]: sorted(d["what"] for d in t["dependants"] if d["blocks"]) for t in plan.json
    }
    assert blocks == {
        "dna_schema.entities": [
            "dna_schema.capabilities capabilities_entity_id_fkey",
            "dna_schema.dna_profiles dna_profiles_entity_id_fkey",
            "dna_schema.entity_summary",
        ],
        "dna_schema.interests": ["dna_schema.entity_summary"],
        "agents_schema.agents": [],
        "tasks_schema.tasks": [],
        "results_schema.results": [],
    }
    assert db.query("SELECT to_regnamespace('nucleus_retire') IS NULL") == [[True]]  # read-only


def frozen(db, tmp_path: Path) -> Path:
    moves = moves_with(tmp_path, entry(TABLE))
    retire(db, "apply", moves)
    assert retire(db, "apply", moves).code == 0
    return moves


def test_an_archive_of_a_frozen_table_is_checked_and_a_tampered_one_refused(db, tmp_path):
    moves = moves_with(tmp_path, entry(TABLE))
    bucket = tmp_path / "bucket"
    early = retire(db, "archive", moves, TABLE, "--bucket", str(bucket))
    assert_clean_error(early, "is not frozen")
    rows = db.query(f"SELECT count(*) FROM {TABLE}")[0][0]  # before the window starts
    frozen(db, tmp_path / "f")
    made = retire(db, "archive", moves, TABLE, "--bucket", str(bucket), "--format", "json")
    assert made.code == 0, made.out + made.err
    archive = made.json
    assert (
        archive["rows"] == rows and archive["sha256"] and archive["ddl"].startswith("CREATE TABLE")
    )
    directory = Path(archive["directory"])
    assert retire(db, "check-archive", moves, str(directory)).code == 0
    steps = db.query("SELECT step FROM nucleus_retire.events WHERE name = :n ORDER BY id", n=TABLE)
    assert steps == [["freeze"], ["archive"], ["archive-check"]]
    # The archive's own scans (COPY, hashes, the check's read of the live table) are recorded
    # and discounted: the next snapshot does not take them for a use.
    assert db.query(
        "SELECT sum(seq_scan) > 0 FROM nucleus_retire.own_reads WHERE name = :n", n=TABLE
    ) == [[True]]
    assert retire(db, "apply", moves).code == 0
    (table,) = retire(db, "status", moves, "--format", "json").json
    assert not table["window_reason"].startswith("used"), table
    use(db, f"SELECT count(*) FROM {TABLE}")  # a real read still counts
    retire(db, "apply", moves)
    (table,) = retire(db, "status", moves, "--format", "json").json
    assert table["window_reason"] == "used: 1 sequential scan(s)", table

    data = (directory / "rows.copy").read_bytes()
    manifest = (directory / "manifest.json").read_text()
    # Truncated: refused before anything is restored.
    (directory / "rows.copy").write_bytes(data[: len(data) // 2])
    truncated = retire(db, "check-archive", moves, str(directory))
    assert_clean_error(truncated, "truncated or changed")
    # One value changed, and the manifest's sha256 and size made to match: the restore's
    # per-range hashes refuse it, naming the range.
    first, rest = data.split(b"\n", 1)
    assert b"2025" in first
    changed = first.replace(b"2025", b"2024", 1) + b"\n" + rest
    doc = json.loads(manifest)
    doc["sha256"], doc["bytes"] = hashlib.sha256(changed).hexdigest(), len(changed)
    (directory / "rows.copy").write_bytes(changed)
    (directory / "manifest.json").write_text(json.dumps(doc))
    tampered = retire(db, "check-archive", moves, str(directory))
    assert_clean_error(tampered, "refused", "key range(s) 0..8191")


@pytest.mark.parametrize(
    ("side_effect", "named"),
    [
        # The table's name built at run time: no text search of function bodies finds it.
        (
            "EXECUTE 'ALTER TABLE results_' || 'schema.results SET (fillfactor = 90)'",
            "more than its privileges and its trigger",
        ),
        ("INSERT INTO public.ddl_log VALUES (1)", "rows of public.ddl_log: 1 inserted"),
    ],
    ids=["table-option", "row-elsewhere"],
)
def test_a_freeze_that_changes_more_than_it_declares_is_rolled_back_and_named(
    db, tmp_path, side_effect, named
):
    # An event trigger (only Cloud SQL's superuser could make one) fires on CREATE TRIGGER.
    db.query(
        "CREATE TABLE public.ddl_log (n int); "
        "CREATE FUNCTION public.on_ddl() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER AS "
        f"$$BEGIN IF tg_tag = 'CREATE TRIGGER' THEN {side_effect}; END IF; END$$; "
        "CREATE EVENT TRIGGER on_ddl ON ddl_command_end EXECUTE FUNCTION public.on_ddl()"
    )
    moves = moves_with(tmp_path, entry(TABLE))
    retire(db, "apply", moves)
    refused = retire(db, "apply", moves)
    assert_clean_error(refused, "freeze: rolled back", named)
    assert phase(db, TABLE) == [["observing"]]
    assert db.query("SELECT count(*) FROM pg_trigger WHERE tgname = 'nucleus_retire_frozen'") == [
        [0]
    ]
    assert db.query("SELECT count(*) FROM public.ddl_log") == [[0]]
