"""The SQL of a move, composed from its declaration and the target's catalog facts (pure).

Statements are for `sqlalchemy.text()` (bound parameters `:name`). Every statement is computed in the server: no row comes through Python, only cursors, counts
and the keys of rows that differ. The pieces:

- `mapped`: the source rows as target rows (each expression cast to the target column's type,
  skip rules applied), with the legacy key beside them as `__key`;
- `ready`: those whose parents (the target's foreign keys) are already in the new layout; a
  row whose parent is not there yet (inserted by a live service after the parent's move
  passed it) waits for the next catch-up pass instead of failing the batch;
- `copy_batch`: one keyset batch: the next `:n` legacy keys after `:cursor`, upserted, and the
  cursor and counters of the move advanced *in the same statement*, so a batch and its cursor
  commit together (a killed run resumes exactly there, with no duplicate and no gap);
- `diff`: a full outer join of the mapped source and the target on the target key, comparing
  an md5 of each row: the keys that differ (missing, changed, or gone from the source) are
  written to `nucleus_move.pending`; `repair_batch` then fixes them `:n` at a time;
- `verify`: the same join, grouped by ranges of the legacy key: counts and hashes per range
  on both sides, and the first keys that differ.
"""

from __future__ import annotations

from dataclasses import dataclass

from provision.move.declare import Move
from provision.sql import ident

SCHEMA = "nucleus_move"
# The lowest cursor: before any bigint key.
START_CURSOR = -(2**63)

BOOKKEEPING = (
    f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.state (
    name        text PRIMARY KEY,
    source      text NOT NULL,
    target      text NOT NULL,
    checksum    text NOT NULL,
    phase       text NOT NULL DEFAULT 'copying' CHECK (phase IN ('copying', 'catching-up', 'synced')),
    cursor      bigint NOT NULL DEFAULT {START_CURSOR},
    copied      bigint NOT NULL DEFAULT 0,
    scanned     bigint NOT NULL DEFAULT 0,
    repaired    bigint NOT NULL DEFAULT 0,
    passes      integer NOT NULL DEFAULT 0,
    last_diff   bigint,
    started_at  timestamptz NOT NULL DEFAULT now(),
    copied_at   timestamptz,
    synced_at   timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    last_error  text
)""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.pending (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL,
    legacy_key  bigint,
    target_key  jsonb
)""",
    f"CREATE INDEX IF NOT EXISTS pending_name_idx ON {SCHEMA}.pending (name, id)",
)


@dataclass(frozen=True)
class ForeignKey:
    columns: tuple[str, ...]
    parent: tuple[str, str]
    parent_columns: tuple[str, ...]


@dataclass(frozen=True)
class TargetInfo:
    """What the catalog says about a target table."""

    types: dict[str, str]  # column -> format_type()
    unique_keys: tuple[tuple[str, ...], ...]
    foreign_keys: tuple[ForeignKey, ...]


def fragment(sql: str) -> str:
    """A fragment of a move file inside a statement for `sqlalchemy.text()`: its colons are
    escaped, so that `'a:b'` is never taken for a bound parameter (`::` casts still work)."""
    return sql.replace(":", "\\:")


def _not_skipped(move: Move) -> str:
    return " AND ".join(f"NOT coalesce(({fragment(r.when)}), false)" for r in move.skip) or "true"


def mapped(move: Move, info: TargetInfo, where: str = "true") -> str:
    """The source rows as target rows, with `__key`, the legacy key."""
    columns = ", ".join(
        f"CAST(({fragment(expression)}) AS {info.types[column]}) AS {ident(column)}"
        for column, expression in move.columns
    )
    return (
        f"SELECT s.{ident(move.key)} AS __key, {columns} FROM {fragment(move.from_clause)} "
        f"WHERE ({where}) AND {_not_skipped(move)}"
    )


def ready(move: Move, info: TargetInfo, where: str = "true") -> str:
    """`mapped` rows whose parents are in the new layout already."""
    conditions = []
    for fk in info.foreign_keys:
        if not set(fk.columns) <= set(move.column_names):
            continue  # a column the move leaves to its default
        nulls = " OR ".join(f"m.{ident(c)} IS NULL" for c in fk.columns)
        match = " AND ".join(
            f"p.{ident(pc)} = m.{ident(c)}"
            for c, pc in zip(fk.columns, fk.parent_columns, strict=True)
        )
        conditions.append(
            f"({nulls} OR EXISTS (SELECT 1 FROM {ident(*fk.parent)} p WHERE {match}))"
        )
    return f"SELECT m.* FROM ({mapped(move, info, where)}) m WHERE {' AND '.join(conditions) or 'true'}"


def _upsert(move: Move, info: TargetInfo, where: str, update: bool = True) -> str:
    """INSERT ... SELECT of `ready` rows; on a key already in the target, update it (repair),
    or leave it (copy: the row is there already, and the catch-up comparison corrects it if
    it differs; DO NOTHING is the cheaper speculative insertion)."""
    columns = ", ".join(ident(c) for c in move.column_names)
    keys = ", ".join(ident(c) for c in move.target_key)
    updates = [c for c in move.column_names if c not in move.target_key] if update else []
    action = (
        "DO UPDATE SET "
        + ", ".join(f"{ident(c)} = EXCLUDED.{ident(c)}" for c in updates)
        + " WHERE ("
        + ", ".join(f"t.{ident(c)}" for c in updates)
        + ") IS DISTINCT FROM ("
        + ", ".join(f"EXCLUDED.{ident(c)}" for c in updates)
        + ")"
        if updates
        else "DO NOTHING"
    )
    return (
        f"INSERT INTO {ident(*move.target)} AS t ({columns}) "
        f"SELECT {columns} FROM ({ready(move, info, where)}) r "
        f"ON CONFLICT ({keys}) {action} RETURNING 1"
    )


def raw_insert(move: Move, info: TargetInfo) -> str:
    """The whole mapping as one plain INSERT ... SELECT: the baseline of the benchmark."""
    columns = ", ".join(ident(c) for c in move.column_names)
    return (
        f"INSERT INTO {ident(*move.target)} ({columns}) "
        f"SELECT {columns} FROM ({ready(move, info)}) r"
    )


def copy_batch(move: Move, info: TargetInfo) -> str:
    """One keyset batch and its cursor, in one statement. Params: name, cursor, n.
    Returns cursor, copied (rows written), scanned (legacy keys passed)."""
    key = f"s.{ident(move.key)}"
    source = ident(*move.source)
    return f"""WITH bound AS (
    SELECT max(k) AS hi, count(*) AS scanned FROM (
        SELECT {key} AS k FROM {source} s WHERE {key} > CAST(:cursor AS bigint) ORDER BY {key} LIMIT :n) b
), written AS (
    {_upsert(move, info, f"{key} > CAST(:cursor AS bigint) AND {key} <= (SELECT hi FROM bound)", update=False)}
), counted AS (SELECT count(*) AS copied FROM written)
UPDATE {SCHEMA}.state st
SET cursor = coalesce(bound.hi, st.cursor), copied = st.copied + counted.copied,
    scanned = st.scanned + bound.scanned, updated_at = clock_timestamp(), last_error = NULL
FROM bound, counted
WHERE st.name = :name
RETURNING st.cursor, counted.copied, bound.scanned"""


def remaining(move: Move) -> str:
    """Legacy keys after the cursor (an index-only count). Param: cursor."""
    key = f"s.{ident(move.key)}"
    return f"SELECT count(*) FROM {ident(*move.source)} s WHERE {key} > CAST(:cursor AS bigint)"


def _hashed_sides(move: Move, info: TargetInfo) -> str:
    """CTEs `src` and `tgt`: the target key columns and an md5 of the row, each side."""

    def listed(alias: str, columns: tuple[str, ...]) -> str:
        return ", ".join(f"{alias}.{ident(c)}" for c in columns)

    keys, row = move.target_key, move.column_names
    return (
        f"src AS (SELECT m.__key, {listed('m', keys)}, md5(ROW({listed('m', row)})::text) AS h "
        f"FROM ({mapped(move, info)}) m), "
        f"tgt AS (SELECT {listed('t', keys)}, md5(ROW({listed('t', row)})::text) AS h "
        f"FROM {ident(*move.target)} t)"
    )


def _join(move: Move) -> str:
    on = " AND ".join(f"src.{ident(c)} = tgt.{ident(c)}" for c in move.target_key)
    return f"src FULL JOIN tgt ON {on}"


def _target_key_json(move: Move) -> str:
    pairs = ", ".join(f"'{c}', tgt.{ident(c)}" for c in move.target_key)
    return f"jsonb_build_object({pairs})"


def diff(move: Move, info: TargetInfo) -> str:
    """Write the keys that differ to the pending list (the caller clears it first). Param:
    name. A key whose source row exists is named by its legacy key (upserted from the source);
    one the source no longer has, by its target key (deleted)."""
    return f"""WITH {_hashed_sides(move, info)}
INSERT INTO {SCHEMA}.pending (name, legacy_key, target_key)
SELECT :name, src.__key, CASE WHEN src.__key IS NULL THEN {_target_key_json(move)} END
FROM {_join(move)}
WHERE src.h IS DISTINCT FROM tgt.h"""


def repair_batch(move: Move, info: TargetInfo) -> str:
    """Take `:n` pending keys of the move: delete the target rows the source no longer has,
    upsert the rest from the source as it is now. Params: name, n.
    Returns taken, deleted, upserted."""
    target = ident(*move.target)
    match = " AND ".join(f"t.{ident(c)} = k.{ident(c)}" for c in move.target_key)
    return f"""WITH taken AS (
    DELETE FROM {SCHEMA}.pending WHERE id IN (
        SELECT id FROM {SCHEMA}.pending WHERE name = :name ORDER BY id LIMIT :n)
    RETURNING legacy_key, target_key
), gone AS (
    DELETE FROM {target} t
    USING (SELECT (jsonb_populate_record(NULL::{target}, p.target_key)).*
           FROM taken p WHERE p.target_key IS NOT NULL) k
    WHERE {match}
    RETURNING 1
), written AS (
    {_upsert(move, info, f"s.{ident(move.key)} IN (SELECT legacy_key FROM taken WHERE legacy_key IS NOT NULL)")}
)
SELECT (SELECT count(*) FROM taken) AS taken, (SELECT count(*) FROM gone) AS deleted,
       (SELECT count(*) FROM written) AS upserted"""


def verify(move: Move, info: TargetInfo) -> str:
    """Counts and hashes per range of `:width` legacy keys, on both sides, with the first
    keys that differ. Rows of the target that no source row maps to form the range NULL."""
    key_text = " || ',' || ".join(f"tgt.{ident(c)}::text" for c in move.target_key)
    return f"""WITH {_hashed_sides(move, info)},
j AS (
    SELECT src.__key AS k, src.h AS sh, tgt.h AS th, {key_text} AS tkey
    FROM {_join(move)}
)
SELECT floor(k::numeric / :width)::bigint AS bucket, min(k) AS lo, max(k) AS hi,
       count(sh) AS source_rows, count(th) AS target_rows,
       to_hex(coalesce(bit_xor(('x' || left(sh, 16))::bit(64)::bigint), 0)) AS source_hash,
       to_hex(coalesce(bit_xor(('x' || left(th, 16))::bit(64)::bigint), 0)) AS target_hash,
       count(*) FILTER (WHERE sh IS DISTINCT FROM th) AS differing,
       (array_agg(coalesce(k::text, 'target ' || tkey) ORDER BY k, tkey)
            FILTER (WHERE sh IS DISTINCT FROM th))[1:5] AS sample
FROM j GROUP BY 1 ORDER BY 1 NULLS LAST"""


def skipped(move: Move) -> str:
    """Rows of the source each rule keeps out (a row counts under the first rule it matches)."""
    if not move.skip:
        return "SELECT"
    counts = []
    for n, rule in enumerate(move.skip):
        earlier = [f"NOT coalesce(({fragment(r.when)}), false)" for r in move.skip[:n]]
        condition = " AND ".join([*earlier, f"coalesce(({fragment(rule.when)}), false)"])
        counts.append(f"count(*) FILTER (WHERE {condition}) AS r{n}")
    return f"SELECT {', '.join(counts)} FROM {fragment(move.from_clause)}"


def explain(move: Move, info: TargetInfo) -> str:
    """What the server must be able to plan before anything is copied."""
    return f"EXPLAIN {ready(move, info)}"
