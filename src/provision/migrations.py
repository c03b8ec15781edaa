"""The versioned SQL files in bootstrap_sql/: naming, parsing, checksums, guard rails.

A migration is `NNN_description.sql`. Its version is the numeric prefix exactly as written
(`001`), its checksum the SHA-256 of the file's bytes (Flyway keeps a CRC32; a cryptographic
hash costs nothing here). Each file runs in one transaction unless its header declares
`-- nucleus-provision: no-transaction` (for statements such as CREATE INDEX CONCURRENTLY).

Files are parsed with PostgreSQL's own parser (pglast/libpg_query) before anything runs, so
a malformed file is reported with its name, line and column, and a statement that would
touch a protected (legacy) schema is refused up front.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pglast
from pglast import ast
from pglast.parser import ParseError

from provision.errors import ConfigError, MigrationFileError

MIGRATIONS_ENV_VAR = "NUCLEUS_BOOTSTRAP_SQL"
FILE_PATTERN = re.compile(r"^(?P<version>\d+)_(?P<name>[a-z0-9][a-z0-9_]*)\.sql$")
NO_TRANSACTION_MARK = re.compile(r"^\s*--\s*nucleus-provision:\s*no-transaction\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Statement:
    sql: str
    line: int


@dataclass(frozen=True)
class Migration:
    version: str
    name: str  # the file's stem, e.g. 001_init_schemas: what legacy tooling called migration_name
    description: str
    path: Path
    checksum: str
    transactional: bool
    statements: tuple[Statement, ...]

    @property
    def filename(self) -> str:
        return self.path.name


def default_directory() -> Path:
    """$NUCLEUS_BOOTSTRAP_SQL, else bootstrap_sql/ in the working directory or a parent,
    else the one beside this package's source checkout."""
    configured = os.environ.get(MIGRATIONS_ENV_VAR)
    if configured:
        return Path(configured)
    here = Path.cwd().resolve()
    for directory in (here, *here.parents):
        if (directory / "bootstrap_sql").is_dir():
            return directory / "bootstrap_sql"
    return Path(__file__).resolve().parents[2] / "bootstrap_sql"


def _line_col(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def parse_migration(path: Path) -> Migration:
    match = FILE_PATTERN.match(path.name)
    if match is None:
        raise MigrationFileError(
            f"{path.name}: not a migration file name",
            hint="name migrations NNN_lower_case_description.sql, e.g. 003_add_index.sql",
        )
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MigrationFileError(
            f"{path.name}: not UTF-8 (byte {exc.start})", hint="save the file as UTF-8"
        ) from None
    try:
        slices = list(pglast.split(text, with_parser=True, only_slices=True))
    except ParseError as exc:
        message, offset = exc.args[0], exc.args[1]
        line, col = _line_col(text, offset)
        raise MigrationFileError(
            f"{path.name}:{line}:{col}: {message}",
            hint="fix the SQL at that position; nothing was applied",
        ) from None
    if not slices:
        raise MigrationFileError(
            f"{path.name}: contains no SQL statement", hint="remove the file or add its SQL"
        )
    statements = tuple(Statement(text[s].strip(), _line_col(text, s.start)[0]) for s in slices)
    return Migration(
        version=match["version"],
        name=path.stem,
        description=match["name"].replace("_", " "),
        path=path,
        checksum=hashlib.sha256(raw).hexdigest(),
        transactional=NO_TRANSACTION_MARK.search(text) is None,
        statements=statements,
    )


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """Every migration of the directory, ordered by version; duplicates are an error."""
    directory = directory or default_directory()
    if not directory.is_dir():
        raise ConfigError(
            f"migrations directory {directory} does not exist",
            hint=f"run from the project checkout or set {MIGRATIONS_ENV_VAR}",
        )
    migrations = [parse_migration(p) for p in sorted(directory.glob("*.sql"))]
    seen: dict[int, Migration] = {}
    for migration in migrations:
        other = seen.get(int(migration.version))
        if other is not None:
            raise MigrationFileError(
                f"{migration.filename} and {other.filename} have the same version {int(migration.version)}",
                hint="give every migration a unique numeric prefix",
            )
        seen[int(migration.version)] = migration
    return sorted(migrations, key=lambda m: int(m.version))


# -- guard rail: migrations must not touch protected schemas ---------------------------------

_DESTRUCTIVE = (
    ast.DropStmt,
    ast.AlterTableStmt,
    ast.RenameStmt,
    ast.AlterObjectSchemaStmt,
    ast.AlterOwnerStmt,
    ast.TruncateStmt,
    ast.DeleteStmt,
    ast.UpdateStmt,
    ast.InsertStmt,
    ast.GrantStmt,
    ast.AlterDefaultPrivilegesStmt,
    ast.CommentStmt,
    ast.CreateTrigStmt,
    ast.RuleStmt,
    ast.IndexStmt,
    ast.AlterSeqStmt,
    ast.CreateStmt,
    ast.ViewStmt,
    ast.CreateTableAsStmt,
    ast.CreateFunctionStmt,
)


def _schemas_named(node: object) -> Iterable[str]:
    """Every schema name a statement mentions: qualified relations, schema objects, name lists."""
    for child in _walk(node):
        if isinstance(child, ast.RangeVar) and child.schemaname:
            yield child.schemaname
        elif isinstance(child, ast.String):
            yield child.sval
        elif isinstance(child, ast.RenameStmt) and child.subname:  # ALTER SCHEMA x RENAME TO y
            yield child.subname


def _walk(node: object) -> Iterable[object]:
    if isinstance(node, ast.A_Const):  # a string literal is data, not a name
        return
    if isinstance(node, ast.Node):
        yield node
        for attr in node:
            yield from _walk(getattr(node, attr))
    elif isinstance(node, (tuple, list)):
        for item in node:
            yield from _walk(item)


def check_protected(migration: Migration, protected: Iterable[str]) -> None:
    """Refuse, before anything runs, a statement that would change a protected schema or its contents."""
    protected = set(protected)
    for statement in migration.statements:
        for raw in pglast.parse_sql(statement.sql):
            stmt = raw.stmt
            touched = protected.intersection(_schemas_named(stmt))
            if touched and isinstance(stmt, _DESTRUCTIVE + (ast.CreateSchemaStmt,)):
                kind = type(stmt).__name__.removesuffix("Stmt")
                raise MigrationFileError(
                    f"{migration.filename}:{statement.line}: {kind} statement touches protected schema "
                    f"{', '.join(sorted(touched))}",
                    hint="legacy schemas are never altered or dropped; create new objects in the new schemas instead",
                )
