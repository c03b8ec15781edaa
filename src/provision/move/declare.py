"""Move files: read, validate, and turn into frozen `Move` values (no database).

A move file (`moves/NN_name.toml`) declares how the rows of one legacy table become rows of
one table of the new layout: the source and its integer key (the keyset of the copy), an
optional FROM clause joining other legacy tables (the source as `s`), the target and the
unique key that identifies a moved row, one SQL expression per target column, and the rows
the target's constraints would refuse (`[[skip]]`: a condition and a reason, reported, never
silently dropped). `not-moved.toml` lists the legacy tables deliberately not moved.

Everything that can be checked without a database is checked here, and every error names the
file: `FILE: what is wrong`. The SQL fragments are parsed with PostgreSQL's own parser: each
must be one expression (or a FROM clause) that only reads tables of the legacy schemas.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pglast
from pglast import ast
from pglast.parser import ParseError
from pglast.visitors import Visitor

from provision.desired import Layout, default_layout
from provision.errors import ConfigError, MoveFileError

MOVES_ENV_VAR = "NUCLEUS_MOVES"
NOT_MOVED_FILE = "not-moved.toml"
# The retirement of the legacy tables (provision.retire.declare) is declared beside the moves.
RETIRE_FILE = "retire.toml"
FILE_PATTERN = re.compile(r"^(\d+)_([a-z][a-z0-9_]*)\.toml$")
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_QUALIFIED = re.compile(r"^([a-z_][a-z0-9_]*)\.([a-z_][a-z0-9_]*)$")
_KEYS = {"source", "key", "from", "target", "target_key", "columns", "skip", "trigger"}
_REQUIRED = ("source", "key", "target", "target_key", "columns")
# Statements that write: never inside a fragment of a move file (a WITH ... DELETE, say).
_WRITES = (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)


@dataclass(frozen=True)
class Rule:
    """Rows matching `when` are not moved, and are counted under `reason`."""

    when: str
    reason: str


@dataclass(frozen=True)
class Trigger:
    """A trigger of the target that may fire on the move's writes, and why that is safe."""

    name: str
    reason: str


@dataclass(frozen=True)
class Move:
    name: str
    filename: str
    source: tuple[str, str]
    key: str
    from_clause: str
    target: tuple[str, str]
    target_key: tuple[str, ...]
    columns: tuple[tuple[str, str], ...]  # (target column, SQL expression over from_clause)
    skip: tuple[Rule, ...]
    reads: tuple[tuple[str, str], ...]  # every legacy table the fragments read
    checksum: str
    # Functions the fragments call, as written ((schema or None, name)): each must resolve to
    # immutable functions only (checked against pg_proc before anything runs).
    functions: tuple[tuple[str | None, str], ...] = ()
    # Triggers of the target the file accepts firing during the move (name, reason).
    triggers: tuple[Trigger, ...] = ()
    # True when a fragment reads the source table again (a rule comparing a row with its
    # neighbours): a change to any source row may change how another one maps.
    self_reference: bool = False

    @property
    def source_name(self) -> str:
        return ".".join(self.source)

    @property
    def target_name(self) -> str:
        return ".".join(self.target)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.columns)


@dataclass(frozen=True)
class NotMoved:
    table: tuple[str, str]
    reason: str


@dataclass(frozen=True)
class Declaration:
    """Every move of the directory, in order, and the tables deliberately not moved."""

    directory: Path
    moves: tuple[Move, ...]
    not_moved: tuple[NotMoved, ...]

    def only(self, name: str | None) -> tuple[Move, ...]:
        if name is None:
            return self.moves
        chosen = tuple(m for m in self.moves if m.name == name)
        if not chosen:
            raise ConfigError(
                f"no move named {name!r} in {self.directory}",
                hint=f"choose one of: {', '.join(m.name for m in self.moves)}",
            )
        return chosen

    def uncovered(self, legacy_tables: Iterable[tuple[str, str]]) -> list[str]:
        """Legacy tables neither moved nor listed as deliberately not moved."""
        covered = {m.source for m in self.moves} | {n.table for n in self.not_moved}
        return sorted(".".join(t) for t in legacy_tables if t not in covered)


def default_directory() -> Path:
    """$NUCLEUS_MOVES, else moves/ in the working directory or a parent, else the one beside
    this package's source checkout."""
    configured = os.environ.get(MOVES_ENV_VAR)
    if configured:
        return Path(configured)
    here = Path.cwd().resolve()
    for directory in (here, *here.parents):
        if (directory / "moves").is_dir() and (directory / "moves" / NOT_MOVED_FILE).exists():
            return directory / "moves"
    return Path(__file__).resolve().parents[3] / "moves"


def load(directory: Path | None = None, layout: Layout | None = None) -> Declaration:
    """Read and validate every move file of `directory` (raises MoveFileError)."""
    layout = layout or default_layout()
    directory = directory or default_directory()
    if not directory.is_dir():
        raise ConfigError(
            f"moves directory {directory} does not exist",
            hint=f"run from the project checkout, give --moves DIR or set {MOVES_ENV_VAR}",
        )
    moves: list[Move] = []
    for path in sorted(directory.iterdir(), key=lambda p: p.name):
        if (
            not path.is_file()
            or path.name in (NOT_MOVED_FILE, RETIRE_FILE)
            or path.suffix != ".toml"
        ):
            continue
        match = FILE_PATTERN.match(path.name)
        if match is None:
            raise MoveFileError(
                f"{path.name}: a move file is named NN_lower_case_name.toml",
                hint="rename it (e.g. 60_goals.toml); the number orders the moves",
            )
        moves.append(parse_move(path.name, path.read_bytes(), match.group(2), layout))
    seen: dict[object, str] = {}
    for move in moves:
        for what, value in (("name", move.name), ("target", move.target_name)):
            other = seen.setdefault((what, value), move.filename)
            if other != move.filename:
                raise MoveFileError(
                    f"{move.filename}: {what} {value} is already the {what} of {other}",
                    hint="one move per legacy table and per target table",
                )
    not_moved_path = directory / NOT_MOVED_FILE
    not_moved = (
        parse_not_moved(NOT_MOVED_FILE, not_moved_path.read_bytes(), layout)
        if not_moved_path.exists()
        else ()
    )
    moved = {m.source: m.filename for m in moves}
    for entry in not_moved:
        if entry.table in moved:
            raise MoveFileError(
                f"{NOT_MOVED_FILE}: {'.'.join(entry.table)} is listed as not moved, but "
                f"{moved[entry.table]} moves it",
                hint="keep one of the two",
            )
    if not moves:
        raise MoveFileError(f"{directory}: no move file (NN_name.toml)", hint="add one")
    return Declaration(directory, tuple(moves), not_moved)


def _toml(filename: str, data: bytes) -> dict[str, Any]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise MoveFileError(f"{filename}: not UTF-8", hint="save it as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MoveFileError(f"{filename}: not valid TOML ({exc})", hint="fix the syntax") from None


def _table(filename: str, field: str, value: object, schemas: Iterable[str]) -> tuple[str, str]:
    match = _QUALIFIED.match(value) if isinstance(value, str) else None
    if match is None:
        raise MoveFileError(
            f"{filename}: {field} must be a lower-case schema.table, not {value!r}",
            hint='e.g. source = "dna_schema.entities"',
        )
    schema, table = match.group(1), match.group(2)
    allowed = tuple(schemas)
    if schema not in allowed:
        raise MoveFileError(
            f"{filename}: {field} {value} is not in {', '.join(allowed)}",
            hint="a move reads a table of a legacy schema and writes one of the new layout",
        )
    return schema, table


def _text(filename: str, field: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise MoveFileError(
            f"{filename}: {field} must be a non-empty string", hint="see moves/README.md"
        )
    return value.strip()


class _Reads(Visitor):
    """The tables a fragment reads, and whether it writes anything."""

    def __init__(self) -> None:
        self.tables: list[tuple[str | None, str | None, str | None]] = []
        self.functions: list[tuple[str | None, str]] = []
        self.writes = False

    def visit(self, ancestors: object, node: object) -> None:
        if isinstance(node, ast.FuncCall):
            names = [n.sval for n in node.funcname or ()]
            self.functions.append((names[-2] if len(names) > 1 else None, names[-1]))
        elif isinstance(node, ast.RangeVar):
            alias = node.alias.aliasname if node.alias is not None else None
            self.tables.append((node.schemaname, node.relname, alias))
        elif isinstance(node, _WRITES):
            self.writes = True


def _parse_select(filename: str, field: str, sql: str) -> _Reads:
    try:
        statements = pglast.parse_sql(sql)
    except ParseError as exc:
        raise MoveFileError(
            f"{filename}: {field} is not valid SQL ({exc.args[0]})",
            hint="an expression (or a FROM clause) of PostgreSQL",
        ) from None
    if len(statements) != 1 or not isinstance(statements[0].stmt, ast.SelectStmt):
        raise MoveFileError(
            f"{filename}: {field} must be a single expression, not several statements",
            hint="no ';' inside a fragment",
        )
    reads = _Reads()
    reads(statements[0])
    if reads.writes:
        raise MoveFileError(
            f"{filename}: {field} writes (INSERT, UPDATE, DELETE or MERGE)",
            hint="a move file only reads the legacy tables",
        )
    return reads


def parse_move(filename: str, data: bytes, name: str, layout: Layout | None = None) -> Move:
    """One move file (its name without the number is the move's name)."""
    layout = layout or default_layout()
    doc = _toml(filename, data)
    unknown = sorted(set(doc) - _KEYS)
    if unknown:
        raise MoveFileError(
            f"{filename}: unknown key {unknown[0]!r}",
            hint=f"the keys of a move file: {', '.join(sorted(_KEYS))}",
        )
    for required in _REQUIRED:
        if required not in doc:
            raise MoveFileError(f"{filename}: {required} is missing", hint="see moves/README.md")
    source = _table(filename, "source", doc["source"], layout.protected_schemas)
    target = _table(filename, "target", doc["target"], [s.name for s in layout.schemas])
    if target not in {(t.schema, t.name) for t in layout.tables}:
        raise MoveFileError(
            f"{filename}: target {doc['target']} is not a table of the new layout",
            hint="move into a table the migrations create (bootstrap_sql/schema.lock lists them)",
        )
    key = doc["key"]
    if not isinstance(key, str) or not _NAME.match(key):
        raise MoveFileError(
            f"{filename}: key must be the name of the source's integer primary key column",
            hint='e.g. key = "id"',
        )
    columns_doc = doc["columns"]
    if not isinstance(columns_doc, dict) or not columns_doc:
        raise MoveFileError(
            f"{filename}: [columns] must map target columns to SQL expressions",
            hint='e.g. [columns] name = "s.name"',
        )
    columns: list[tuple[str, str]] = []
    for column, expression in columns_doc.items():
        if not _NAME.match(column):
            raise MoveFileError(
                f"{filename}: column {column!r} is not a lower-case column name",
                hint="name the target table's columns",
            )
        columns.append((column, _text(filename, f"columns.{column}", expression)))
    target_key = doc["target_key"]
    if (
        not isinstance(target_key, list)
        or not target_key
        or not all(isinstance(c, str) for c in target_key)
    ):
        raise MoveFileError(
            f"{filename}: target_key must be a list of target columns",
            hint='e.g. target_key = ["id"]',
        )
    missing = [c for c in target_key if c not in columns_doc]
    if missing:
        raise MoveFileError(
            f"{filename}: target_key column {missing[0]} has no expression in [columns]",
            hint="the key that identifies a moved row must be written by the move",
        )
    rules_doc = doc.get("skip", [])
    if not isinstance(rules_doc, list):
        raise MoveFileError(
            f"{filename}: skip must be a list of [[skip]] tables", hint="see moves/README.md"
        )
    rules: list[Rule] = []
    for n, rule in enumerate(rules_doc, 1):
        if not isinstance(rule, dict) or set(rule) != {"when", "reason"}:
            raise MoveFileError(
                f"{filename}: [[skip]] number {n} needs exactly 'when' and 'reason'",
                hint="rows the target refuses are declared with the reason they are not moved",
            )
        rules.append(
            Rule(
                _text(filename, f"skip {n}: when", rule["when"]),
                _text(filename, f"skip {n}: reason", rule["reason"]),
            )
        )
    triggers_doc = doc.get("trigger", [])
    if not isinstance(triggers_doc, list):
        raise MoveFileError(
            f"{filename}: trigger must be a list of [[trigger]] tables", hint="see moves/README.md"
        )
    triggers: list[Trigger] = []
    for n, entry in enumerate(triggers_doc, 1):
        if not isinstance(entry, dict) or set(entry) != {"name", "reason"}:
            raise MoveFileError(
                f"{filename}: [[trigger]] number {n} needs exactly 'name' and 'reason'",
                hint="a trigger of the target that may fire during the move, and why that is safe",
            )
        triggers.append(
            Trigger(
                _text(filename, f"trigger {n}: name", entry["name"]),
                _text(filename, f"trigger {n}: reason", entry["reason"]),
            )
        )
    from_clause = _text(filename, "from", doc["from"]) if "from" in doc else f"{'.'.join(source)} s"

    reads = _parse_select(filename, "from", f"SELECT 1 FROM {from_clause}")
    if not any((s, t, a) == (*source, "s") for s, t, a in reads.tables):
        raise MoveFileError(
            f"{filename}: from must name the source {'.'.join(source)} as s",
            hint=f'e.g. from = "{".".join(source)} s JOIN ..."',
        )
    fragments = [(f"columns.{c}", e) for c, e in columns] + [
        (f"skip {n}: when", r.when) for n, r in enumerate(rules, 1)
    ]
    tables = list(reads.tables)
    functions = list(reads.functions)
    for field, fragment in fragments:
        parsed = _parse_select(filename, field, f"SELECT ({fragment})")
        tables += parsed.tables
        functions += parsed.functions
    read_tables: list[tuple[str, str]] = []
    for schema, table, _alias in tables:
        if schema is None or table is None or schema not in layout.protected_schemas:
            raise MoveFileError(
                f"{filename}: reads {schema + '.' if schema else ''}{table}, not a table of a "
                "legacy schema",
                hint="qualify legacy tables with their schema; a move reads only legacy tables",
            )
        if (schema, table) not in read_tables:
            read_tables.append((schema, table))
    return Move(
        name=name,
        filename=filename,
        source=source,
        key=key,
        from_clause=from_clause,
        target=target,
        target_key=tuple(target_key),
        columns=tuple(columns),
        skip=tuple(rules),
        reads=tuple(read_tables),
        checksum=hashlib.sha256(data).hexdigest(),
        functions=tuple(dict.fromkeys(functions)),
        triggers=tuple(triggers),
        self_reference=sum(1 for s, t, _a in tables if (s, t) == source) > 1,
    )


def parse_not_moved(
    filename: str, data: bytes, layout: Layout | None = None
) -> tuple[NotMoved, ...]:
    layout = layout or default_layout()
    doc = _toml(filename, data)
    if set(doc) - {"table"} or not isinstance(doc.get("table", []), list):
        raise MoveFileError(
            f"{filename}: holds only [[table]] entries (name, reason)", hint="see moves/README.md"
        )
    entries = []
    for n, entry in enumerate(doc.get("table", []), 1):
        if not isinstance(entry, dict) or set(entry) != {"name", "reason"}:
            raise MoveFileError(
                f"{filename}: [[table]] number {n} needs exactly 'name' and 'reason'",
                hint="say why the table is deliberately not moved",
            )
        table = _table(filename, f"table {n}", entry["name"], layout.protected_schemas)
        entries.append(NotMoved(table, _text(filename, f"table {n}: reason", entry["reason"])))
    return tuple(entries)
