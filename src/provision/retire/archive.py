"""The verified archive of a frozen table, without pg_dump.

`write`: `COPY table (columns) TO STDOUT` in a read-only transaction, streamed into
`<bucket>/<schema.table>/<UTC time>/rows.copy`, and a `manifest.json` beside it: the table,
its move and key, the object's sha256 and size, the rows, the columns with their types (and
the DDL they make), and the count and hash of every range of keys (`move.plan.summary`, the
move's own per-range hashes). `check`: the object's sha256 and size against the manifest (a
truncated or changed file is refused before anything is restored), then a restore into a
scratch table (a temporary table of the run's session, gone at its transaction's end) and
the per-range counts and hashes of the restored rows against the manifest's and against the
live table's. Only a frozen table is archived: its rows cannot change under the export.

The bucket is a local directory: the emulation's stand-in for a Cloud Storage bucket (the
Admin API export is not built; docs/retire.md).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from provision.errors import ProvisionError
from provision.move.plan import RANGE_BITS, summary
from provision.retire.state import OWN_READ_SQL, XACT_SCANS_SQL
from provision.sql import ident

FORMAT = "nucleus-retire-archive/1"
OBJECT = "rows.copy"
MANIFEST = "manifest.json"
SCRATCH = "nucleus_retire_restore"

COLUMNS_SQL = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull
FROM pg_attribute a
WHERE a.attrelid = CAST(:table AS regclass) AND a.attnum > 0 AND NOT a.attisdropped
  AND a.attgenerated = ''
ORDER BY a.attnum
"""


class ArchiveRefused(ProvisionError):
    """The archive does not hold what its manifest says, or not what the table holds."""


@dataclass(frozen=True)
class Archive:
    directory: Path
    manifest: dict[str, Any]
    # The scans of the live table the export itself made (sequential, index): the tool's own
    # reads, recorded so that they are not taken for a service's use.
    own_scans: tuple[int, int] = (0, 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            **{k: v for k, v in self.manifest.items() if k != "ranges"},
        }


def _ranges(conn: Connection, table: tuple[str, str], key: str, hashed: bool) -> list[list[int]]:
    rows = conn.execute(text(summary(table, key, hashed=hashed) + " ORDER BY 1")).all()
    return [[int(r.bucket), int(r.rows), int(r.hash)] for r in rows]


def _hashable(conn: Connection, table: tuple[str, str]) -> bool:
    """Whether the rows hash with `hash_record_extended` (fast; every column's type needs a
    hash function), tried on one row under a savepoint; else rows are hashed through their
    text (slower, any type)."""
    conn.execute(text("SAVEPOINT nucleus_retire_hashable"))
    try:
        conn.execute(
            text(f"SELECT hash_record_extended(t, 0) FROM {ident(*table)} t LIMIT 1")
        ).all()
    except DBAPIError:
        conn.execute(text("ROLLBACK TO SAVEPOINT nucleus_retire_hashable"))
        return False
    conn.execute(text("RELEASE SAVEPOINT nucleus_retire_hashable"))
    return True


def _sha256(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _column_list(columns: list[dict[str, Any]]) -> str:
    return ", ".join(ident(c["name"]) for c in columns)


def write(conn: Connection, bucket: Path, table: tuple[str, str], move: str, key: str) -> Archive:
    """Export `table` (inside the caller's read-only transaction on `conn`)."""
    name = ".".join(table)
    stamp = conn.execute(text("SELECT now()")).scalar_one()
    directory = bucket / name / stamp.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    directory.mkdir(parents=True, exist_ok=False)
    columns = [
        {"name": r.attname, "type": r.type, "not_null": bool(r.attnotnull)}
        for r in conn.execute(text(COLUMNS_SQL), {"table": ident(*table)})
    ]
    before = xact_scans(conn, table)
    raw = conn.connection.dbapi_connection
    assert raw is not None
    cursor: Any = raw.cursor()  # pg8000's: COPY streams
    with (directory / OBJECT).open("wb") as out:
        cursor.execute(f"COPY {ident(*table)} ({_column_list(columns)}) TO STDOUT", stream=out)
    hashed = _hashable(conn, table)
    ranges = _ranges(conn, table, key, hashed)
    sha, size = _sha256(directory / OBJECT)
    ddl = (
        f"CREATE TABLE {ident(*table)} ("
        + ", ".join(
            f"{ident(c['name'])} {c['type']}{' NOT NULL' if c['not_null'] else ''}" for c in columns
        )
        + ")"
    )
    manifest = {
        "format": FORMAT,
        "table": name,
        "move": move,
        "key": key,
        "created_at": stamp.isoformat(),
        "object": OBJECT,
        "sha256": sha,
        "bytes": size,
        "rows": sum(r[1] for r in ranges),
        "columns": columns,
        "ddl": ddl,
        "hashed": "hash_record_extended" if hashed else "hashtextextended(row text)",
        "ranges": ranges,
    }
    after = xact_scans(conn, table)
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return Archive(directory, manifest, (after[0] - before[0], after[1] - before[1]))


def xact_scans(conn: Connection, table: tuple[str, str]) -> tuple[int, int]:
    """This backend's scans of `table` not yet published (its transaction's, and since
    PostgreSQL 15 maybe earlier ones'): read before and after a step, the difference is the
    step's own."""
    row = conn.execute(text(XACT_SCANS_SQL), {"table": ident(*table)}).one()
    return int(row.seq_scan), int(row.idx_scan)


def load(directory: Path) -> Archive:
    """Read a manifest and check the object against it (no database)."""
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArchiveRefused(
            f"{directory}: no {MANIFEST}", hint="give the directory `retire archive` printed"
        ) from None
    except ValueError as exc:
        raise ArchiveRefused(f"{path}: not JSON ({exc})", hint="the manifest was damaged") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArchiveRefused(
            f"{path}: not a manifest of {FORMAT}", hint="an archive of `retire archive`"
        )
    obj = directory / str(manifest.get("object", OBJECT))
    if not obj.is_file():
        raise ArchiveRefused(
            f"{directory}: the object {obj.name} is missing", hint="the archive is incomplete"
        )
    sha, size = _sha256(obj)
    if size != manifest.get("bytes") or sha != manifest.get("sha256"):
        raise ArchiveRefused(
            f"{obj}: {size} bytes with sha256 {sha}, but the manifest records "
            f"{manifest.get('bytes')} bytes with sha256 {manifest.get('sha256')}: the archive "
            "was truncated or changed",
            hint="do not use this archive; take a new one with `retire archive`",
        )
    return Archive(directory, manifest)


def check(conn: Connection, archive: Archive, live: bool = True) -> dict[str, Any]:
    """Restore into a scratch temporary table (inside the caller's transaction, which must
    roll back or commit: it is created ON COMMIT DROP) and compare per range with the
    manifest and (`live`) with the live table: left out right after `write`, whose manifest
    was computed from the live, frozen table in the same run. Raises ArchiveRefused naming
    the ranges that differ."""
    m = archive.manifest
    table = tuple(str(m["table"]).split(".", 1))
    assert len(table) == 2
    columns = m["columns"]
    conn.execute(
        text(
            f"CREATE TEMPORARY TABLE {SCRATCH} ("
            + ", ".join(f"{ident(c['name'])} {c['type']}" for c in columns)
            + ") ON COMMIT DROP"
        )
    )
    raw = conn.connection.dbapi_connection
    assert raw is not None
    cursor: Any = raw.cursor()  # pg8000's: COPY streams
    with (archive.directory / str(m["object"])).open("rb") as data:
        cursor.execute(f"COPY {SCRATCH} ({_column_list(columns)}) FROM STDIN", stream=data)
    restored_rows = conn.execute(text(f"SELECT count(*) FROM pg_temp.{SCRATCH}")).scalar_one()
    live_before = xact_scans(conn, (table[0], table[1]))
    hashed = m.get("hashed") == "hash_record_extended"
    compared = [("restored archive", _ranges(conn, ("pg_temp", SCRATCH), str(m["key"]), hashed))]
    if live:
        compared.append(("live table", _ranges(conn, (table[0], table[1]), str(m["key"]), hashed)))
    conn.execute(text(f"DROP TABLE pg_temp.{SCRATCH}"))
    live_after = xact_scans(conn, (table[0], table[1]))
    seq = archive.own_scans[0] + live_after[0] - live_before[0]
    idx = archive.own_scans[1] + live_after[1] - live_before[1]
    if seq or idx:
        conn.execute(
            text(OWN_READ_SQL),
            {"name": m["table"], "seq_scan": seq, "idx_scan": idx, "what": "archive"},
        )
    recorded = [list(r) for r in m["ranges"]]
    problems = []
    if restored_rows != m["rows"]:
        problems.append(f"{restored_rows} rows restored, the manifest records {m['rows']}")
    for what, ranges in compared:
        differ = sorted(
            {r[0] for r in ranges} ^ {r[0] for r in recorded}
            | {a[0] for a, b in zip(ranges, recorded, strict=False) if a != b}
        )
        if differ or len(ranges) != len(recorded):
            problems.append(
                f"the {what} differs from the manifest in key range(s) "
                + ", ".join(f"{b << RANGE_BITS}..{((b + 1) << RANGE_BITS) - 1}" for b in differ[:5])
            )
    if problems:
        raise ArchiveRefused(
            f"archive {archive.directory} refused: {'; '.join(problems)}",
            hint="do not use this archive; take a new one with `retire archive` (the table is frozen)",
        )
    return {
        "directory": str(archive.directory),
        "sha256": m["sha256"],
        "rows": restored_rows,
        "ranges": len(recorded),
        "checked_at": datetime.now(UTC).isoformat(),
    }
