"""`inspect` reproduces the seed's hand-written analysis."""

from __future__ import annotations

from helpers import cli

SEED_CODES = [
    "schema-name-mismatch",
    "table-name-mismatch",
    "migrations-table-shape",
    "migrations-table-owner",
    "extension-missing",
]
# The group roles and logins environments.toml declares (the local environment's).
DECLARED_ROLES = ("nucleus_readonly", "nucleus_readwrite", "nucleus_app", "nucleus_app_b")


def test_inspect_reports_exactly_the_seeds_five_problems_on_the_legacy_state(legacy_db):
    run = cli("inspect", "--dsn", legacy_db.admin_dsn, "--format", "json")
    assert run.code == 2, run.err  # findings, all of which apply fixes
    report = run.json
    codes = [f["code"] for f in report["findings"]]
    assert codes[: len(SEED_CODES)] == SEED_CODES
    # Roles and memberships belong to the server, not the database: whether the declared
    # groups and logins exist yet depends on whether an earlier test of this server (of this
    # worker) applied. The seed's analysis predates declared privileges; when they are absent,
    # the privileges concern says so, and nothing else is added.
    absent = legacy_db.query(
        "SELECT count(*) FROM unnest(CAST(:names AS text[])) r "
        "WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r)",
        names=list(DECLARED_ROLES),
    )[0][0]
    if absent:
        assert codes[len(SEED_CODES) :] == ["role-missing"] * 3 + ["membership-missing"]
    else:
        assert codes == SEED_CODES
    assert all({"code", "severity", "message"} <= set(f) for f in report["findings"])
    assert (
        "vector"
        in next(f for f in report["findings"] if f["code"] == "extension-missing")["message"]
    )
    assert report["migrations_table"]["columns"] == ["id", "migration_name", "applied_at"]
    assert report["migrations_table"]["owner"] == "postgres"
    assert report["roles"]["admin_can_set_role_owner"] is False
    assert report["roles"]["cloudsqlsuperuser_members"] == ["nucleus", "postgres"]
    assert {e["name"]: e["available_version"] for e in report["extensions"]}["vector"] == "0.6.2"
    assert {s["name"]: s["status"] for s in report["schemas"]}["dna_schema"] == "legacy"


def test_inspect_reports_unrecorded_objects_on_the_half_run_state(partial_db):
    codes = [
        f["code"]
        for f in cli("inspect", "--dsn", partial_db.admin_dsn, "--format", "json").json["findings"]
    ]
    assert "unrecorded-objects" in codes and "layout-owner-mismatch" in codes
    assert {
        "schema-name-mismatch",
        "migrations-table-shape",
        "migrations-table-owner",
        "extension-missing",
    } <= set(codes)


def test_markdown_reads_like_the_seed_document(legacy_db):
    text = cli("inspect", "--dsn", legacy_db.admin_dsn, "--format", "markdown").out
    for heading in (
        "# Database State Analysis - ",
        "### Schemas Found",
        "### Tables in dna_schema (OLD)",
        "### Schemas Expected by Code",
        "## Issues Identified",
        "**Severity:** CRITICAL",
    ):
        assert heading in text


def test_inspect_never_prints_the_password(legacy_db):
    run = cli("inspect", "--dsn", legacy_db.admin_dsn)
    assert legacy_db.instance.passwords["postgres"] not in run.out + run.err
