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
#
# A static check of the parse tree, before anything runs. Reading a legacy table is allowed
# (SELECT, including the source of INSERT ... SELECT, CREATE VIEW, CREATE TABLE AS); naming a
# protected schema anywhere else (DDL, DML targets, foreign keys, function calls) is refused.
# What the parse tree cannot show (code in DO blocks or called procedures, a changed
# search_path) is refused outright, and the executor pins search_path for every migration.

_WRITES = (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)
_SESSION_SETTINGS = {"search_path", "role", "session_authorization"}
_FORBIDDEN: dict[type, str] = {
    ast.TransactionStmt: "transaction control belongs to nucleus-provision (each file runs as one transaction)",
    ast.DoStmt: "DO blocks run code the guard rail cannot check; write plain statements",
    ast.CallStmt: "CALL runs code the guard rail cannot check",
    ast.ReassignOwnedStmt: "REASSIGN OWNED changes every object of a role",
    ast.DropOwnedStmt: "DROP OWNED drops every object of a role",
    ast.CreateRoleStmt: "roles and passwords belong to Terraform (google_sql_user), not to migrations",
    ast.AlterRoleStmt: "roles and passwords belong to Terraform (google_sql_user), not to migrations",
    ast.AlterRoleSetStmt: "role settings belong to Terraform, not to migrations",
    ast.DropRoleStmt: "roles belong to Terraform (google_sql_user), not to migrations",
    ast.GrantRoleStmt: "role memberships are managed by nucleus-provision and Terraform, not by migrations",
}


def _walk(node: object, reading: bool = False) -> Iterable[tuple[object, bool]]:
    """Every node with whether it sits in a read (a SELECT that is not itself inside a write)."""
    if isinstance(node, ast.A_Const):  # a string literal is data, not a name
        return
    if isinstance(node, ast.Node):
        if isinstance(node, ast.SelectStmt):
            reading = True
        elif isinstance(node, _WRITES):
            reading = False
        yield node, reading
        for attr in node:
            yield from _walk(getattr(node, attr), reading)
    elif isinstance(node, (tuple, list)):
        for item in node:
            yield from _walk(item, reading)


def _names(node: object) -> list[str]:
    if isinstance(node, ast.RangeVar):
        return [node.schemaname or "", node.relname or ""]
    if isinstance(node, ast.String):
        return [node.sval or ""]
    if isinstance(node, ast.RenameStmt) and node.subname:  # ALTER SCHEMA x RENAME TO y
        return [node.subname]
    return []


def _problem(stmt: object, protected: set[str], version_table: tuple[str, str]) -> str | None:
    for node, reading in _walk(stmt):
        reason = _FORBIDDEN.get(type(node))
        if reason:
            return reason
        if isinstance(node, ast.VariableSetStmt) and (node.name or "").lower() in _SESSION_SETTINGS:
            return f"changing {node.name} would let unqualified names reach other schemas"
        if isinstance(node, ast.FuncCall):
            name = [n.sval or "" for n in node.funcname or () if isinstance(n, ast.String)]
            if name and name[-1] == "set_config":
                return (
                    "set_config() can change search_path or the role behind the guard rail's back"
                )
            if len(name) > 1 and name[0] in protected:
                return f"calls a function of protected schema {name[0]}"
        if reading and not isinstance(node, ast.FuncCall):
            continue
        if (
            isinstance(node, ast.RangeVar)
            and (node.schemaname or "public", node.relname) == version_table
        ):
            return f"{'.'.join(version_table)} is managed by nucleus-provision; its legacy rows are never changed"
        touched = protected.intersection(_names(node))
        if touched:
            return f"touches protected schema {', '.join(sorted(touched))}"
    return None


def check_protected(
    migration: Migration,
    protected: Iterable[str],
    version_table: tuple[str, str] = ("public", "migrations"),
) -> None:
    """Refuse, before anything runs, a statement that could change a protected schema, its
    contents or the version table's rows, or that escapes what this check can see."""
    protected = set(protected)
    for statement in migration.statements:
        for raw in pglast.parse_sql(statement.sql):
            problem = _problem(raw.stmt, protected, version_table)
            if problem:
                kind = type(raw.stmt).__name__.removesuffix("Stmt")
                raise MigrationFileError(
                    f"{migration.filename}:{statement.line}: refused {kind} statement: {problem}",
                    hint="legacy schemas and their rows are never altered or dropped; create new objects "
                    "in the new schemas (reading legacy tables in a SELECT is fine)",
                )
