"""The SQL of a move, composed from its declaration and the target's catalog facts (pure).

Statements are for `sqlalchemy.text()` (bound parameters `:name`). Every statement is
computed in the server: no row comes through Python, only cursors, counts and keys. The pieces:

- `mapped`: the source rows as target rows (each expression cast to the target column's type,
  skip rules applied), with the legacy key beside them as `__key`;
- `ready`: those whose parents (the target's foreign keys) are already in the new layout; a
  row whose parent is not there yet (inserted by a live service after the parent's move
  passed it) waits for the next catch-up pass instead of failing the batch;
- `copy_batch`: one keyset batch: the next `:n` legacy keys after `:cursor`, inserted where
  no row holds their key, recorded in the move's provenance table (`written_<move>`: target
  key, legacy key, md5 of the row as written), and the cursor advanced *in the same
  statement*, so a batch, its provenance and its cursor commit together;
- `diff`: the mapped legacy rows against the provenance (not the target): the keys whose
  legacy row is new, changed, or gone go to `nucleus_move.pending`, for all legacy keys or
  a range of them; `repair` then classifies each against the target and writes only rows
  the move wrote and that still hold what it wrote (everything else is a conflict);
- `summary`: a count and hash per range of a legacy table's rows, kept in `nucleus_move.ranges`
  so a catch-up re-reads only ranges that changed;
- `verify`: mapped legacy rows against the target, grouped by ranges of the legacy key:
  counts and hashes per range on both sides, and the first keys that differ.
"""

from __future__ import annotations

from dataclasses import dataclass

from provision.move.declare import Move
from provision.sql import ident

SCHEMA = "nucleus_move"
# The lowest cursor: before any bigint key.
START_CURSOR = -(2**63)
MAX_KEY = 2**63 - 1
# Legacy keys per range of the catch-up's summaries (one hash per range in the move's state):
# 2^13 = 8,192, so that a key's range is an arithmetic shift (floor division, negatives
# included), cheaper in a scan of millions of rows than a division and a CASE.
RANGE_BITS = 13
RANGE_WIDTH = 2**RANGE_BITS

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
    # Cut-over is a recorded state: from then on the move never writes its target.
    f"ALTER TABLE {SCHEMA}.state ADD COLUMN IF NOT EXISTS cutover_at timestamptz",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.pending (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL,
    legacy_key  bigint,
    target_key  jsonb
)""",
    f"CREATE INDEX IF NOT EXISTS pending_name_idx ON {SCHEMA}.pending (name, id)",
    # Target rows the move did not touch because they are not (or no longer) what it wrote.
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.conflicts (
    name        text NOT NULL,
    target_key  text NOT NULL,
    legacy_key  bigint,
    kind        text NOT NULL,
    noted_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, target_key)
)""",
    # Per move and legacy table read, one count and hash per range of keys (NULL: re-read).
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.ranges (
    name        text NOT NULL,
    tbl         text NOT NULL,
    bucket      bigint NOT NULL,
    rows        bigint NOT NULL,
    hash        bigint,
    PRIMARY KEY (name, tbl, bucket)
)""",
)

# The conflicts a catch-up reports, by kind.
CONFLICT_KINDS = {
    "clash": "a row the move did not write holds this key",
    "changed-in-target": "changed in the target since the move wrote it",
    "deleted-in-target": "deleted from the target since the move wrote it",
    "referenced": "its legacy row is gone, but rows of other tables reference it",
}


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
    # Foreign keys of other tables that reference the target: `columns` are the child's,
    # `parent` the child table, `parent_columns` the target's referenced columns.
    referenced_by: tuple[ForeignKey, ...] = ()
    sequences: tuple[str, ...] = ()  # owned by the target (advanced by its inserts)


def written(move: Move) -> str:
    """The move's provenance table: every target row it wrote, by target key, with the legacy
    key it came from and the md5 of the row as written."""
    return ident(SCHEMA, f"written_{move.name}")


def provenance_ddl(move: Move, info: TargetInfo) -> tuple[str, ...]:
    keys = ", ".join(f"{ident(c)} {info.types[c]} NOT NULL" for c in move.target_key)
    return (
        f"CREATE TABLE IF NOT EXISTS {written(move)} ({keys}, legacy_key bigint NOT NULL, "
        f"h text NOT NULL, PRIMARY KEY ({', '.join(ident(c) for c in move.target_key)}))",
    )


def provenance_index(move: Move) -> str:
    """The index of the provenance by legacy key, for the catch-up's changed ranges: built
    once when the copy ends (one sort) rather than row by row during the copy, which never
    reads by legacy key."""
    return (
        f"CREATE INDEX IF NOT EXISTS {ident(f'written_{move.name}_legacy_idx')} "
        f"ON {written(move)} (legacy_key)"
    )


def _row_hash(alias: str, move: Move) -> str:
    return f"md5(ROW({', '.join(f'{alias}.{ident(c)}' for c in move.column_names)})::text)"


def _keys_match(a: str, b: str, move: Move) -> str:
    return " AND ".join(f"{a}.{ident(c)} = {b}.{ident(c)}" for c in move.target_key)


def _key_text(alias: str, move: Move) -> str:
    return " || ',' || ".join(f"{alias}.{ident(c)}::text" for c in move.target_key)


def bucket_of(expression: str) -> str:
    """The range of a legacy key (`key >> RANGE_BITS`: floor division by RANGE_WIDTH)."""
    return f"({expression} >> {RANGE_BITS})"


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


def raw_insert(move: Move, info: TargetInfo) -> str:
    """The whole mapping as one plain INSERT ... SELECT: the baseline of the benchmark."""
    columns = ", ".join(ident(c) for c in move.column_names)
    return (
        f"INSERT INTO {ident(*move.target)} ({columns}) "
        f"SELECT {columns} FROM ({ready(move, info)}) r"
    )


def copy_batch(move: Move, info: TargetInfo) -> str:
    """One keyset batch, its provenance and its cursor, in one statement. Params: name,
    cursor, n. Returns cursor, copied (rows written), scanned (legacy keys passed).

    A key already in the target (a row a service wrote) is left alone (ON CONFLICT DO
    NOTHING) and never recorded as the move's: the catch-up reports it as a clash. A key the
    move wrote before is never inserted again (a service may have deleted it since)."""
    key = f"s.{ident(move.key)}"
    source = ident(*move.source)
    columns = ", ".join(ident(c) for c in move.column_names)
    keys = ", ".join(ident(c) for c in move.target_key)
    where = f"{key} > CAST(:cursor AS bigint) AND {key} <= (SELECT hi FROM bound)"
    return f"""WITH bound AS (
    SELECT max(k) AS hi, count(*) AS scanned FROM (
        SELECT {key} AS k FROM {source} s WHERE {key} > CAST(:cursor AS bigint) ORDER BY {key} LIMIT :n) b
), batch AS (
    SELECT r.* FROM ({ready(move, info, where)}) r
    WHERE NOT EXISTS (SELECT 1 FROM {written(move)} p WHERE {_keys_match("p", "r", move)})
), inserted AS (
    INSERT INTO {ident(*move.target)} AS t ({columns}) SELECT {columns} FROM batch
    ON CONFLICT ({keys}) DO NOTHING
    RETURNING {", ".join(f"t.{ident(c)}" for c in move.target_key)}, {_row_hash("t", move)} AS h
), recorded AS (
    INSERT INTO {written(move)} ({keys}, legacy_key, h)
    SELECT {", ".join(f"i.{ident(c)}" for c in move.target_key)}, b.__key, i.h
    FROM inserted i JOIN batch b ON {_keys_match("i", "b", move)}
    -- two legacy rows of one batch with one target key (no rule keeps one out): one was
    -- inserted; which legacy key is recorded does not matter, the catch-up compares both.
    ON CONFLICT ({keys}) DO NOTHING
    RETURNING 1
), counted AS (SELECT count(*) AS copied FROM recorded)
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


def _in_range(column: str) -> str:
    return f"{column} BETWEEN CAST(:lo AS bigint) AND CAST(:hi AS bigint)"


def _src_and_prov(move: Move, info: TargetInfo) -> str:
    """CTEs `src` (the mapped legacy rows with legacy keys in :lo..:hi, their target key and
    hash) and `prov` (what the move wrote from legacy keys in that range)."""
    keys = ", ".join(f"m.{ident(c)}" for c in move.target_key)
    return (
        f"src AS (SELECT m.__key, {keys}, {_row_hash('m', move)} AS h "
        f"FROM ({mapped(move, info, _in_range(f's.{ident(move.key)}'))}) m), "
        f"prov AS (SELECT * FROM {written(move)} p WHERE {_in_range('p.legacy_key')})"
    )


def _prov_key_json(move: Move) -> str:
    pairs = ", ".join(f"'{c}', prov.{ident(c)}" for c in move.target_key)
    return f"jsonb_build_object({pairs})"


def diff(move: Move, info: TargetInfo) -> str:
    """Write to the pending list the keys where the mapped legacy rows (legacy keys in
    :lo..:hi) differ from what the move wrote: new or changed legacy rows by their legacy key,
    and rows the move wrote whose legacy row is gone (or no longer maps) by their target key.
    The target itself is not read: what a service did to it decides only how a key is
    repaired (or reported), in `repair`. Params: name, lo, hi."""
    return f"""WITH {_src_and_prov(move, info)}
INSERT INTO {SCHEMA}.pending (name, legacy_key, target_key)
SELECT :name, src.__key, CASE WHEN src.__key IS NULL THEN {_prov_key_json(move)} END
FROM src FULL JOIN prov ON {_keys_match("src", "prov", move)}
WHERE src.h IS DISTINCT FROM prov.h OR src.__key IS DISTINCT FROM prov.legacy_key"""


def recheck_conflicts() -> str:
    """The conflicts of a move (legacy keys in :lo..:hi) go back on the pending list: each
    pass reports them again, and forgets those that resolved (a legacy row changed back, a
    service's row removed). Params: name, lo, hi."""
    return f"""INSERT INTO {SCHEMA}.pending (name, legacy_key)
SELECT :name, c.legacy_key FROM {SCHEMA}.conflicts c
WHERE c.name = :name AND {_in_range("c.legacy_key")}"""


def legacy_changed(move: Move, info: TargetInfo) -> str:
    """After cut-over: the legacy keys (or, for rows gone, the target keys) that differ from
    what the move wrote, with how. Read-only. Params: lo, hi."""
    return f"""WITH {_src_and_prov(move, info)}
SELECT CASE WHEN prov.legacy_key IS NULL THEN 'inserted'
            WHEN src.__key IS NULL THEN 'deleted' ELSE 'updated' END AS how,
       coalesce(src.__key, prov.legacy_key) AS legacy_key
FROM src FULL JOIN prov ON {_keys_match("src", "prov", move)}
WHERE src.h IS DISTINCT FROM prov.h OR src.__key IS DISTINCT FROM prov.legacy_key
ORDER BY 2"""


def work_table(move: Move, info: TargetInfo) -> str:
    """A batch's keys, what the legacy side maps them to now, and what the move wrote and the
    target holds: dropped at COMMIT."""
    columns = ", ".join(f"{ident(c)} {info.types[c]}" for c in move.column_names)
    return (
        f"CREATE TEMP TABLE {ident(f'nm_work_{move.name}')} (legacy_key bigint, {columns}, "
        "h text, ready boolean, ph text, plk bigint, th text, referenced boolean, action text) "
        "ON COMMIT DROP"
    )


def _ready_condition(move: Move, info: TargetInfo, alias: str) -> str:
    conditions = []
    for fk in info.foreign_keys:
        if not set(fk.columns) <= set(move.column_names):
            continue
        nulls = " OR ".join(f"{alias}.{ident(c)} IS NULL" for c in fk.columns)
        match = " AND ".join(
            f"p.{ident(pc)} = {alias}.{ident(c)}"
            for c, pc in zip(fk.columns, fk.parent_columns, strict=True)
        )
        conditions.append(
            f"({nulls} OR EXISTS (SELECT 1 FROM {ident(*fk.parent)} p WHERE {match}))"
        )
    return " AND ".join(conditions) or "true"


def repair(move: Move, info: TargetInfo) -> tuple[str, ...]:
    """One repair batch, statements of one transaction. Params: name, n. The last returns,
    per action, the count, the legacy-key ranges and a sample of keys.

    Each key is classified against what the move wrote (`written_<move>`) and what the target
    holds now (its rows locked first, so no service changes them between the check and the
    write): the move inserts a key nobody holds, updates or deletes only a row that still
    holds exactly what it wrote, and deletes it only while no row of another table
    references it. Everything else is a conflict, recorded in `nucleus_move.conflicts`."""
    work = ident(f"nm_work_{move.name}")
    target = ident(*move.target)
    columns = ", ".join(ident(c) for c in move.column_names)
    keys = ", ".join(ident(c) for c in move.target_key)
    w_columns = ", ".join(f"w.{ident(c)}" for c in move.column_names)
    # A key the move wrote whose legacy row is gone comes as its target key (jsonb).
    prov_only_columns = ", ".join(
        f"CAST(x.target_key ->> '{c}' AS {info.types[c]})" if c in move.target_key else "NULL"
        for c in move.column_names
    )
    references = (
        " OR ".join(
            f"EXISTS (SELECT 1 FROM {ident(*fk.parent)} c WHERE "
            + " AND ".join(
                f"c.{ident(cc)} = t.{ident(pc)}"
                for cc, pc in zip(fk.columns, fk.parent_columns, strict=True)
            )
            + ")"
            for fk in info.referenced_by
        )
        or "false"
    )
    key = f"s.{ident(move.key)}"
    take = f"""WITH taken AS (
    DELETE FROM {SCHEMA}.pending WHERE id IN (
        SELECT id FROM {SCHEMA}.pending WHERE name = :name ORDER BY id LIMIT :n)
    RETURNING legacy_key, target_key
), src AS (
    {mapped(move, info, f"{key} IN (SELECT legacy_key FROM taken WHERE legacy_key IS NOT NULL)")}
), rows AS (
    SELECT m.__key AS legacy_key, {", ".join(f"m.{ident(c)}" for c in move.column_names)},
           {_row_hash("m", move)} AS h, {_ready_condition(move, info, "m")} AS ready
    FROM src m
    UNION ALL
    SELECT NULL, {prov_only_columns}, NULL, NULL FROM taken x WHERE x.target_key IS NOT NULL
)
INSERT INTO {work} (legacy_key, {columns}, h, ready)
SELECT DISTINCT ON ({keys}) * FROM rows ORDER BY {keys}, legacy_key NULLS LAST"""
    facts = f"""UPDATE {work} w SET ph = p.h, plk = p.legacy_key
FROM {written(move)} p WHERE {_keys_match("p", "w", move)}"""
    # Locked before they are compared: a service's UPDATE or a child's INSERT (which takes a
    # KEY SHARE lock on the parent row) waits for the batch, under the run's lock_timeout.
    lock = f"""SELECT 1 FROM {target} t JOIN {work} w ON {_keys_match("t", "w", move)}
FOR UPDATE OF t"""
    target_facts = f"""UPDATE {work} w SET th = {_row_hash("t", move)}, referenced = ({references})
FROM {target} t WHERE {_keys_match("t", "w", move)}"""
    classify = f"""UPDATE {work} SET action = CASE
    WHEN legacy_key IS NOT NULL AND NOT ready THEN 'waiting'
    WHEN legacy_key IS NOT NULL AND ph IS NULL AND th IS NULL THEN 'insert'
    WHEN legacy_key IS NOT NULL AND ph IS NULL THEN CASE WHEN th = h THEN 'same' ELSE 'clash' END
    WHEN legacy_key IS NOT NULL AND th IS NULL THEN 'deleted-in-target'
    WHEN legacy_key IS NOT NULL AND th = ph THEN
        CASE WHEN h = ph AND plk = legacy_key THEN 'same' ELSE 'update' END
    WHEN legacy_key IS NOT NULL THEN CASE WHEN th = h THEN 'same' ELSE 'changed-in-target' END
    WHEN ph IS NULL THEN 'same'
    WHEN th IS NULL THEN 'forget'
    WHEN th <> ph THEN 'changed-in-target'
    WHEN referenced THEN 'referenced'
    ELSE 'delete' END"""
    updates = [c for c in move.column_names if c not in move.target_key]
    set_clause = ", ".join(f"{ident(c)} = w.{ident(c)}" for c in updates) or (
        f"{ident(move.target_key[0])} = t.{ident(move.target_key[0])}"
    )
    t_keys = ", ".join(f"t.{ident(c)}" for c in move.target_key)
    write = f"""WITH ins AS (
    INSERT INTO {target} AS t ({columns}) SELECT {w_columns} FROM {work} w WHERE w.action = 'insert'
    ON CONFLICT ({keys}) DO NOTHING
    RETURNING {t_keys}, {_row_hash("t", move)} AS h
), ins_p AS (
    INSERT INTO {written(move)} ({keys}, legacy_key, h)
    SELECT {", ".join(f"i.{ident(c)}" for c in move.target_key)}, w.legacy_key, i.h
    FROM ins i JOIN {work} w ON {_keys_match("i", "w", move)}
    ON CONFLICT ({keys}) DO UPDATE SET legacy_key = EXCLUDED.legacy_key, h = EXCLUDED.h
    RETURNING 1
), upd AS (
    UPDATE {target} t SET {set_clause} FROM {work} w
    WHERE w.action = 'update' AND {_keys_match("t", "w", move)} AND {_row_hash("t", move)} = w.ph
    RETURNING {t_keys}, {_row_hash("t", move)} AS h, w.legacy_key
), upd_p AS (
    UPDATE {written(move)} p SET h = u.h, legacy_key = u.legacy_key FROM upd u
    WHERE {_keys_match("p", "u", move)}
    RETURNING 1
), del AS (
    DELETE FROM {target} t USING {work} w
    WHERE w.action = 'delete' AND {_keys_match("t", "w", move)} AND {_row_hash("t", move)} = w.ph
      AND NOT ({references})
    RETURNING {t_keys}
), del_p AS (
    DELETE FROM {written(move)} p USING (
        SELECT {", ".join(f"w.{ident(c)}" for c in move.target_key)} FROM {work} w
        WHERE w.action = 'forget' UNION ALL SELECT * FROM del) d
    WHERE {_keys_match("p", "d", move)}
    RETURNING 1
)
SELECT (SELECT count(*) FROM ins_p) + (SELECT count(*) FROM upd_p) + (SELECT count(*) FROM del_p)"""
    # A write that did not happen (a service got there between classification and write,
    # which the locks make rare) is a conflict, never a silent success.
    outcome = f"""UPDATE {work} w SET action = CASE w.action
        WHEN 'insert' THEN 'clash' WHEN 'update' THEN 'changed-in-target'
        ELSE 'referenced' END
WHERE (w.action IN ('insert', 'update') AND NOT EXISTS (
        SELECT 1 FROM {written(move)} p WHERE {_keys_match("p", "w", move)}
          AND p.h = w.h AND p.legacy_key = w.legacy_key))
   OR (w.action = 'delete' AND EXISTS (
        SELECT 1 FROM {written(move)} p WHERE {_keys_match("p", "w", move)}))"""
    kinds = ", ".join(f"'{k}'" for k in CONFLICT_KINDS)
    forget_conflicts = f"""DELETE FROM {SCHEMA}.conflicts c USING {work} w
WHERE c.name = :name AND c.target_key = {_key_text("w", move)}"""
    note_conflicts = f"""INSERT INTO {SCHEMA}.conflicts (name, target_key, legacy_key, kind)
SELECT :name, {_key_text("w", move)}, coalesce(w.legacy_key, w.plk), w.action
FROM {work} w WHERE w.action IN ({kinds})"""
    report = f"""SELECT action, count(*) AS n,
       array_agg(DISTINCT {bucket_of("coalesce(legacy_key, plk)")})
           FILTER (WHERE coalesce(legacy_key, plk) IS NOT NULL) AS buckets,
       (array_agg({_key_text("w", move)} ORDER BY {keys}))[1:5] AS sample
FROM {work} w GROUP BY action"""
    return (
        work_table(move, info),
        take,
        facts,
        lock,
        target_facts,
        classify,
        write,
        outcome,
        forget_conflicts,
        note_conflicts,
        report,
    )


def summary(table: tuple[str, str], key: str | None, hashed: bool = True) -> str:
    """Per range of `key` (one range when None): rows and a 64-bit hash of every row, whatever
    it holds (`hash_record_extended`, or the row's text for types without a hash function).
    One scan; what the catch-up compares with the summary of its last pass."""
    bucket = bucket_of(f"t.{ident(key)}") if key else "0"
    row_hash = "hash_record_extended(t, 0)" if hashed else "hashtextextended(t::text, 0)"
    return (
        f"SELECT {bucket} AS bucket, count(*) AS rows, bit_xor({row_hash}) AS hash "
        f"FROM {ident(*table)} t GROUP BY 1"
    )


def verify(move: Move, info: TargetInfo) -> str:
    """Counts and hashes per range of `:width` legacy keys, on both sides, with the first
    keys that differ: the mapped legacy rows against the target rows of their keys, and the
    rows the move wrote whose legacy row is gone. Target rows the move never wrote and no
    legacy row maps to (a service's) form the range NULL: counted, never a difference."""
    keys = ", ".join(f"m.{ident(c)}" for c in move.target_key)
    return f"""WITH src AS (
    SELECT m.__key, {keys}, {_row_hash("m", move)} AS h FROM ({mapped(move, info)}) m
), tgt AS (
    SELECT {", ".join(f"t.{ident(c)}" for c in move.target_key)}, {_row_hash("t", move)} AS h,
           {_key_text("t", move)} AS tkey, p.legacy_key AS plk
    FROM {ident(*move.target)} t LEFT JOIN {written(move)} p ON {_keys_match("p", "t", move)}
), j AS (
    SELECT coalesce(src.__key, tgt.plk) AS k, src.h AS sh, tgt.h AS th, tgt.tkey
    FROM src FULL JOIN tgt ON {_keys_match("src", "tgt", move)}
)
SELECT floor(k::numeric / :width)::bigint AS bucket, min(k) AS lo, max(k) AS hi,
       count(sh) AS source_rows, count(th) AS target_rows,
       to_hex(coalesce(bit_xor(('x' || left(sh, 16))::bit(64)::bigint), 0)) AS source_hash,
       to_hex(coalesce(bit_xor(('x' || left(th, 16))::bit(64)::bigint), 0)) AS target_hash,
       count(*) FILTER (WHERE sh IS DISTINCT FROM th AND k IS NOT NULL) AS differing,
       (array_agg(coalesce(k::text, 'target ' || tkey) ORDER BY k, tkey)
            FILTER (WHERE sh IS DISTINCT FROM th AND k IS NOT NULL))[1:5] AS sample
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
