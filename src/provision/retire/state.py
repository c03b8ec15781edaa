"""The retirement's own state, in schema `nucleus_retire` (as `nucleus_move` is the move's):
one row per declared table (its phase, when its observe window started and why, the grants
its freeze revoked), the usage snapshots, and an append-only log of every step with who ran
it (current_user, session_user, application_name), when, and its evidence (JSON).

The write guard is here too: `refuse_write()`, the trigger function a frozen table carries.
It raises for every role, table owner and `cloudsqlsuperuser` members included (a trigger
fires for them; a REVOKE does not stop an owner, who may grant itself back)."""

from __future__ import annotations

from provision.sql import ident

SCHEMA = "nucleus_retire"
# The trigger a frozen table carries (statement-level: one call per statement, nothing per
# row, and never on a read: SELECT does not fire triggers, so reads are not slowed).
FREEZE_TRIGGER = "nucleus_retire_frozen"
PHASES = ("observing", "frozen")

BOOKKEEPING = (
    f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.tables (
    name              text PRIMARY KEY,
    move              text NOT NULL,
    phase             text NOT NULL DEFAULT 'observing' CHECK (phase IN {PHASES!r}),
    window_started_at timestamptz NOT NULL DEFAULT now(),
    window_reason     text NOT NULL,
    frozen_at         timestamptz,
    revoked           jsonb NOT NULL DEFAULT '[]',
    updated_at        timestamptz NOT NULL DEFAULT now()
)""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.snapshots (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             text NOT NULL,
    taken_at         timestamptz NOT NULL,
    relid            oid NOT NULL,
    stats_reset      timestamptz,
    postmaster_start timestamptz NOT NULL,
    seq_scan         bigint NOT NULL,
    idx_scan         bigint NOT NULL,
    n_tup_ins        bigint NOT NULL,
    n_tup_upd        bigint NOT NULL,
    n_tup_del        bigint NOT NULL,
    last_seq_scan    timestamptz,
    last_idx_scan    timestamptz
)""",
    f"CREATE INDEX IF NOT EXISTS snapshots_name_idx ON {SCHEMA}.snapshots (name, taken_at)",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.events (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             text NOT NULL,
    step             text NOT NULL,
    at               timestamptz NOT NULL DEFAULT now(),
    current_user_name text NOT NULL DEFAULT current_user,
    session_user_name text NOT NULL DEFAULT session_user,
    application_name text NOT NULL DEFAULT current_setting('application_name'),
    evidence         jsonb NOT NULL
)""",
    # The tool's own scans of a table (archive), discounted from the evidence of use.
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.own_reads (
    name     text NOT NULL,
    at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    seq_scan bigint NOT NULL,
    idx_scan bigint NOT NULL,
    what     text NOT NULL
)""",
    # SECURITY INVOKER (the default): it only raises, with the writer's own identity.
    f"""CREATE OR REPLACE FUNCTION {SCHEMA}.refuse_write() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION USING
        ERRCODE = 'insufficient_privilege',
        MESSAGE = format(
            '%s on %I.%I refused: the table is frozen for retirement (current_user %s, '
            'session_user %s, application_name %L)',
            TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME, current_user, session_user,
            current_setting('application_name')),
        HINT = format(
            'its rows were moved to the new layout and its move is cut over; to write it '
            'again: nucleus-provision retire unfreeze %s.%s', TG_TABLE_SCHEMA, TG_TABLE_NAME);
END
$fn$""",
    f"REVOKE ALL ON FUNCTION {SCHEMA}.refuse_write() FROM PUBLIC",
)


def freeze_trigger(table: tuple[str, str]) -> list[str]:
    """The guard on `table`: BEFORE each writing statement (COPY FROM and MERGE fire the
    INSERT/UPDATE/DELETE statement triggers), ENABLE ALWAYS so that a session in
    `session_replication_role = replica` fires it too. Idempotent (re-freezes a table whose
    trigger was disabled or dropped)."""
    on = ident(*table)
    return [
        f"CREATE OR REPLACE TRIGGER {ident(FREEZE_TRIGGER)} "
        f"BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON {on} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {SCHEMA}.refuse_write()",
        f"ALTER TABLE {on} ENABLE ALWAYS TRIGGER {ident(FREEZE_TRIGGER)}",
    ]


def unfreeze_trigger(table: tuple[str, str]) -> list[str]:
    return [f"DROP TRIGGER IF EXISTS {ident(FREEZE_TRIGGER)} ON {ident(*table)}"]


EVENT_SQL = f"INSERT INTO {SCHEMA}.events (name, step, evidence) VALUES (:name, :step, CAST(:evidence AS jsonb))"

OWN_READ_SQL = f"""INSERT INTO {SCHEMA}.own_reads (name, seq_scan, idx_scan, what)
VALUES (:name, :seq_scan, :idx_scan, :what)"""
# This transaction's scans of a table, not yet in pg_stat_user_tables.
XACT_SCANS_SQL = """SELECT coalesce(sum(seq_scan), 0) AS seq_scan, coalesce(sum(idx_scan), 0) AS idx_scan
FROM pg_stat_xact_user_tables WHERE relid = CAST(:table AS regclass)"""
