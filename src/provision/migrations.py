"""The versioned SQL files in bootstrap_sql/: naming, parsing, checksums, guard rails.

A migration is `NNN_description.sql`. Its version is the numeric prefix, compared as a number
everywhere (`001` and `1` are the same version), its checksum the SHA-256 of the file's
bytes (Flyway keeps a CRC32; a cryptographic hash costs nothing here). Each file runs in one
transaction unless its header (the comment lines before the first statement) declares
`-- nucleus-provision: no-transaction`; such a file may only hold statements that are safe
outside a transaction and can be checked afterwards (`CREATE INDEX CONCURRENTLY` and its
kin, on the new schemas).

Loading reads and checks every file (name, UTF-8, no NUL byte, unique version) but parses
none: a file is parsed with PostgreSQL's own parser (pglast/libpg_query) only when it is
about to run, once, linearly in its size, and its parse tree feeds the guard rail, which
refuses up front a statement that would touch a protected (legacy) schema. The guard rail is
a friendly early warning; the proof that nothing outside the managed scope changed is taken
by the database itself when the file runs (`provision.safety`).
"""

from __future__ import annotations

import bisect
import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from types import ModuleType
from typing import Any

from provision.errors import ConfigError, MigrationFileError

MIGRATIONS_ENV_VAR = "NUCLEUS_BOOTSTRAP_SQL"
FILE_PATTERN = re.compile(r"^(?P<version>\d+)_(?P<name>[a-z0-9][a-z0-9_]*)\.sql$")
# What a migration file name might have meant to be: digits first, or a .sql suffix in any case.
_NEAR_MISS = re.compile(r"^\d|\.sql\s*$", re.IGNORECASE)
NO_TRANSACTION_MARK = re.compile(r"^\s*--\s*nucleus-provision:\s*no-transaction\s*$")
_MARK_ANYWHERE = re.compile(r"nucleus-provision:\s*no-transaction", re.IGNORECASE)
# Each statement of a migration runs under a statement_timeout: a runaway statement must not
# hold its locks (on the new schemas: legacy ones it may not lock at all) for hours. A file
# that needs longer says so in its header: `-- nucleus-provision: statement-timeout 30min`.
DEFAULT_STATEMENT_TIMEOUT = "5min"
STATEMENT_TIMEOUT_MARK = re.compile(
    r"^\s*--\s*nucleus-provision:\s*statement-timeout\s+(?P<value>\S+)\s*$"
)
_TIMEOUT_VALUE = re.compile(r"^(?P<n>[1-9]\d{0,8})(?P<unit>ms|s|min|h)$")
_NAMING_HINT = "name migrations NNN_lower_case_description.sql, e.g. 003_add_index.sql"


@dataclass(frozen=True)
class Statement:
    sql: str
    line: int
    tree: Any = field(default=None, repr=False, compare=False)  # the pglast node


def version_number(version: str | None) -> int | None:
    """A version as the number it names (`001` -> 1); None for what is not a version."""
    if version is None:
        return None
    text = str(version).strip()
    return int(text) if text.isdigit() else None


@dataclass(frozen=True)
class Migration:
    version: str  # as written in the file name, e.g. "001"
    name: str  # the file's stem, e.g. 001_init_schemas: what legacy tooling called migration_name
    description: str
    path: Path
    checksum: str
    transactional: bool
    text: str = field(repr=False)
    statement_timeout: str = DEFAULT_STATEMENT_TIMEOUT

    @property
    def filename(self) -> str:
        return self.path.name

    @property
    def number(self) -> int:
        return int(self.version)

    @property
    def slug(self) -> str:
        """The name without its version (`init_schemas`): what stays when a file is renumbered."""
        return self.name.split("_", 1)[1]

    @cached_property
    def statements(self) -> tuple[Statement, ...]:
        """The file's statements with their line numbers and parse trees: parsed on first use,
        once, in one pass of PostgreSQL's parser."""
        import pglast  # only when a file is about to run: a no-op run never pays its import
        from pglast.parser import ParseError

        try:
            raw = pglast.parse_sql(self.text)
        except ParseError as exc:
            message, offset = exc.args[0], exc.args[1]
            line, col = _LineIndex(self.text).line_col(offset)
            raise MigrationFileError(
                f"{self.filename}:{line}:{col}: {message}",
                hint="fix the SQL at that position; nothing was applied",
            ) from None
        if not raw:
            raise MigrationFileError(
                f"{self.filename}: contains no SQL statement",
                hint="remove the file or add its SQL",
            )
        lines = _LineIndex(self.text)
        statements = []
        for node in raw:
            start = node.stmt_location or 0
            end = start + node.stmt_len if node.stmt_len else len(self.text)
            statements.append(
                Statement(self.text[start:end].strip(), lines.line_col(start)[0], node.stmt)
            )
        return tuple(statements)


def schemas_created(migration: Migration) -> tuple[str, ...]:
    """The schemas a migration's CREATE SCHEMA statements name: where the managed schemas come
    from when no fresh lock says it (a new migration, a directory without a lock). Parsed with
    PostgreSQL's own parser; what a migration then does is still proven by the database."""
    ast = _ast()
    found = []
    for statement in migration.statements:
        node = statement.tree
        if isinstance(node, ast.CreateSchemaStmt):
            name = node.schemaname or (node.authrole.rolename if node.authrole else None)
            if name:
                found.append(name)
    return tuple(dict.fromkeys(found))


class _LineIndex:
    """Line and column of an offset, in O(log n): counting newlines from the start for every
    statement made parsing quadratic in the file's size."""

    def __init__(self, text: str) -> None:
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def line_col(self, offset: int) -> tuple[int, int]:
        line = bisect.bisect_right(self.starts, offset)
        return line, offset - self.starts[line - 1] + 1


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


def _header_end(lines: list[str]) -> int:
    """Index of the first line that is neither blank nor a `--` comment."""
    for n, line in enumerate(lines):
        stripped = line.strip()
        if stripped and not stripped.startswith("--"):
            return n
    return len(lines)


def _transactional(path: Path, text: str) -> bool:
    """False when the header declares no-transaction. The marker anywhere else (after the
    first statement, inside a string, or misspelt) is an error: a file must not silently run
    in the other mode than its author meant."""
    lines = text.splitlines()
    header = _header_end(lines)
    marked = any(NO_TRANSACTION_MARK.match(line) for line in lines[:header])
    for n, line in enumerate(lines, 1):
        if _MARK_ANYWHERE.search(line) and not (n <= header and NO_TRANSACTION_MARK.match(line)):
            raise MigrationFileError(
                f"{path.name}:{n}: the no-transaction marker must be a comment line of its own "
                "in the file's header, before the first statement",
                hint="write `-- nucleus-provision: no-transaction` as one of the first lines",
            )
    return not marked


def _statement_timeout(path: Path, text: str) -> str:
    """The header's `statement-timeout VALUE` (a number and ms, s, min or h), else the default."""
    lines = text.splitlines()
    found = DEFAULT_STATEMENT_TIMEOUT
    for n, line in enumerate(lines[: _header_end(lines)], 1):
        match = STATEMENT_TIMEOUT_MARK.match(line)
        if match is None:
            continue
        if not _TIMEOUT_VALUE.match(match["value"]):
            raise MigrationFileError(
                f"{path.name}:{n}: statement-timeout {match['value']!r} is not a duration",
                hint="write e.g. `-- nucleus-provision: statement-timeout 30min` (a whole number "
                "and ms, s, min or h)",
            )
        found = match["value"]
    return found


def read_migration(path: Path) -> Migration:
    """One file, named, decoded and checksummed; its SQL is parsed on first use."""
    match = FILE_PATTERN.match(path.name)
    if match is None:
        raise MigrationFileError(f"{path.name}: not a migration file name", hint=_NAMING_HINT)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MigrationFileError(
            f"{path.name}: not valid UTF-8 (byte {exc.start})", hint="save the file as UTF-8"
        ) from None
    if "\0" in text:
        line = text.count("\n", 0, text.index("\0")) + 1
        raise MigrationFileError(
            f"{path.name}:{line}: contains a NUL byte, which would cut the SQL short",
            hint="remove the NUL byte (the file is probably binary or corrupted)",
        )
    return Migration(
        version=match["version"],
        name=path.stem,
        description=match["name"].replace("_", " "),
        path=path,
        checksum=hashlib.sha256(raw).hexdigest(),
        transactional=_transactional(path, text),
        text=text,
        statement_timeout=_statement_timeout(path, text),
    )


def parse_migration(path: Path) -> Migration:
    """Read and parse one file now (tests and tools that want every error at once)."""
    migration = read_migration(path)
    migration.statements  # noqa: B018 - parsing raises the file's errors
    return migration


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """Every migration of the directory, ordered by version. A file that looks meant as a
    migration but is misnamed (`003_x.SQL`, `3-x.sql`) and two files of one version are
    errors; other files (a README) are ignored."""
    directory = directory or default_directory()
    if not directory.is_dir():
        raise ConfigError(
            f"migrations directory {directory} does not exist",
            hint=f"run from the project checkout or set {MIGRATIONS_ENV_VAR}",
        )
    migrations = []
    for path in sorted(p for p in directory.iterdir() if p.is_file()):
        if FILE_PATTERN.match(path.name):
            migrations.append(read_migration(path))
        elif _NEAR_MISS.search(path.name):
            raise MigrationFileError(
                f"{path.name}: looks like a migration but is not named like one, so it would "
                "never run",
                hint=_NAMING_HINT + " (lower case, .sql)",
            )
    seen: dict[int, Migration] = {}
    for migration in migrations:
        other = seen.get(migration.number)
        if other is not None:
            raise MigrationFileError(
                f"{migration.filename} and {other.filename} have the same version "
                f"{migration.number}",
                hint="give every migration a unique numeric prefix",
            )
        seen[migration.number] = migration
    return sorted(migrations, key=lambda m: m.number)


# -- guard rail: migrations must not touch protected schemas ---------------------------------
#
# A static check of the parse tree, before anything runs. Reading a legacy table is allowed
# (SELECT, including the source of INSERT ... SELECT, CREATE VIEW, CREATE TABLE AS); naming a
# protected schema anywhere else (DDL, DML targets, foreign keys, function calls) is refused.
# What the parse tree cannot show (code in DO blocks or called procedures, a changed
# search_path) is refused outright, and the executor pins search_path for every migration.


@cache
def _ast() -> ModuleType:
    """pglast's node classes, imported on first use (only pending files are checked)."""
    from pglast import ast

    return ast


@cache
def _writes() -> tuple[type, ...]:
    ast = _ast()
    return (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)


_SESSION_SETTINGS = {"search_path", "role", "session_authorization"}
# Settings that bound the migration itself: set by nucleus-provision (the file's header may
# ask for a longer statement_timeout), never by the file.
_BOUNDS = {"statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout"}
# Calls that write large objects or sequences, which no transaction undoes.
_LARGE_OBJECT_WRITES = {
    "lo_create",
    "lo_creat",
    "lo_import",
    "lo_from_bytea",
    "lo_put",
    "lo_unlink",
    "lowrite",
    "lo_truncate",
    "lo_truncate64",
    "lo_open",
}
_SEQUENCE_CALLS = {"nextval", "setval"}


@cache
def _forbidden() -> dict[type, str]:
    ast = _ast()
    return {
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
        ast.AlterDatabaseStmt: "the database belongs to Terraform (google_sql_database), not to migrations",
        ast.AlterDatabaseSetStmt: "database settings belong to Terraform (database flags), not to migrations",
        ast.AlterSystemStmt: "server settings belong to Terraform (database flags)",
        ast.CreatePublicationStmt: "publications reach beyond the new schemas; they are not for migrations",
        ast.AlterPublicationStmt: "publications reach beyond the new schemas; they are not for migrations",
        ast.CreateSubscriptionStmt: "subscriptions are not for migrations",
        ast.CreateCastStmt: "a cast changes what every query of the database means, legacy ones too",
        ast.CreateEventTrigStmt: "an event trigger runs on every DDL of the database",
        ast.CreateFdwStmt: "foreign-data wrappers are global objects, not for migrations",
        ast.CreateForeignServerStmt: "foreign servers are global objects, not for migrations",
        ast.CreateUserMappingStmt: "user mappings hold credentials; not for migrations",
        ast.CreateTableSpaceStmt: "tablespaces are not for migrations",
        ast.LoadStmt: "LOAD runs a shared library's code",
    }


def _walk(node: object, reading: bool = False) -> Iterable[tuple[object, bool]]:
    """Every node with whether it sits in a read (a SELECT that is not itself inside a write)."""
    ast = _ast()
    if isinstance(node, ast.A_Const):  # a string literal is data, not a name
        return
    if isinstance(node, ast.Node):
        if isinstance(node, ast.SelectStmt):
            reading = True
        elif isinstance(node, _writes()):
            reading = False
        yield node, reading
        for attr in node:
            yield from _walk(getattr(node, attr), reading)
    elif isinstance(node, (tuple, list)):
        for item in node:
            yield from _walk(item, reading)


def _names(node: object) -> list[str]:
    ast = _ast()
    if isinstance(node, ast.RangeVar):
        return [node.schemaname or "", node.relname or ""]
    if isinstance(node, ast.String):
        return [node.sval or ""]
    if isinstance(node, ast.RenameStmt) and node.subname:  # ALTER SCHEMA x RENAME TO y
        return [node.subname]
    return []


def _outside(schema: str | None, managed: set[str] | None) -> bool:
    """A relation's schema (None: unqualified, which resolves to public) outside the managed."""
    return managed is not None and (schema or "public") not in managed


def _scope_problem(node: object, managed: set[str] | None) -> str | None:
    """What the managed scope forbids, seen in the text: new schemas, locks outside."""
    ast = _ast()
    if managed is None:
        return None
    if isinstance(node, ast.CreateSchemaStmt) and (node.schemaname or "") not in managed:
        return (
            f"creates schema {node.schemaname}: only the managed schemas "
            f"({', '.join(sorted(managed))}) may be created (a schema named after a login "
            'captures its unqualified names through "$user" in the default search path)'
        )
    if isinstance(node, ast.RenameStmt) and getattr(node.renameType, "name", "") == "OBJECT_SCHEMA":
        return "renames a schema: the managed schemas keep their names, others are not ours"
    if isinstance(node, ast.LockStmt):
        outside = [r for r in node.relations or () if _outside(r.schemaname, managed)]
        if outside:
            return "LOCK outside the managed schemas would make live traffic wait"
    if isinstance(node, ast.SelectStmt) and node.lockingClause:
        for sub, _ in _walk(node.fromClause):
            if isinstance(sub, ast.RangeVar) and _outside(sub.schemaname, managed):
                return (
                    "FOR UPDATE/SHARE locks rows outside the managed schemas, which live "
                    "traffic would wait for"
                )
    if isinstance(node, ast.AlterDefaultPrivilegesStmt):
        schemas = [
            getattr(o, "sval", "")
            for opt in node.options or ()
            if getattr(opt, "defname", "") == "schemas"
            for o in (opt.arg or ())
        ]
        if not schemas or not set(schemas) <= managed:
            return "default privileges outside the managed schemas reach objects that are not ours"
    if isinstance(node, ast.CommentStmt) and getattr(node.objtype, "name", "") in (
        "OBJECT_DATABASE",
        "OBJECT_ROLE",
        "OBJECT_TABLESPACE",
    ):
        return "comments on the database or roles belong to Terraform, not to migrations"
    return None


def _problem(
    stmt: object,
    protected: set[str],
    version_table: tuple[str, str],
    managed: set[str] | None = None,
) -> str | None:
    ast = _ast()
    for node, reading in _walk(stmt):
        reason = _forbidden().get(type(node)) or _scope_problem(node, managed)
        if reason:
            return reason
        if isinstance(node, ast.VariableSetStmt) and (node.name or "").lower() in _SESSION_SETTINGS:
            return f"changing {node.name} would let unqualified names reach other schemas"
        if isinstance(node, ast.VariableSetStmt) and (node.name or "").lower() in _BOUNDS:
            return (
                f"{node.name} is set by nucleus-provision; a file that needs longer says so in "
                "its header: -- nucleus-provision: statement-timeout 30min"
            )
        if isinstance(node, ast.FuncCall):
            name = [n.sval or "" for n in node.funcname or () if isinstance(n, ast.String)]
            if name and name[-1] == "set_config":
                return (
                    "set_config() can change search_path or the role behind the guard rail's back"
                )
            if name and name[-1] in _LARGE_OBJECT_WRITES:
                return f"{name[-1]}() writes large objects, which are outside every schema"
            if name and name[-1] in _SEQUENCE_CALLS and managed is not None:
                first = (node.args or (None,))[0]
                value = getattr(getattr(first, "val", None), "sval", None)
                if not isinstance(value, str) or value.split(".", 1)[0].strip('"') not in managed:
                    return (
                        f"{name[-1]}() on a sequence that is not named as one of the managed "
                        "schemas' (sequences are not transactional: nothing would undo it)"
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
    managed: Iterable[str] | None = None,
) -> None:
    """Refuse, before anything runs, a statement that could change a protected schema, its
    contents or the version table's rows, or that escapes what this check can see; with
    `managed`, also one the text shows reaching beyond the managed schemas (a new schema, a
    lock, default privileges, a sequence or large object outside)."""
    protected = set(protected)
    scope = set(managed) if managed is not None else None
    for statement in migration.statements:
        problem = _problem(statement.tree, protected, version_table, scope)
        if problem:
            kind = type(statement.tree).__name__.removesuffix("Stmt")
            raise MigrationFileError(
                f"{migration.filename}:{statement.line}: refused {kind} statement: {problem}",
                hint="legacy schemas and their rows are never altered or dropped; create new "
                "objects in the new schemas (reading legacy tables in a SELECT is fine)",
            )


# -- no-transaction files ---------------------------------------------------------------------
#
# Outside a transaction nothing can be rolled back, and the after-the-fact proof of
# `provision.safety` cannot undo anything either. So such files are limited to statements
# whose whole effect is one index of a new schema, which is checked after it runs (an index
# left invalid by a failed CONCURRENTLY build fails the step, and the next run rebuilds it).


def _index_target(node: object) -> tuple[str, ...] | None:
    """The qualified name an index statement acts on, if it is one of the allowed ones."""
    ast = _ast()
    if isinstance(node, ast.IndexStmt) and node.concurrent and node.relation is not None:
        return (node.relation.schemaname or "",)
    if isinstance(node, ast.DropStmt) and node.concurrent:
        kind = getattr(node.removeType, "name", str(node.removeType))
        if kind == "OBJECT_INDEX":
            names = [[getattr(p, "sval", "") or "" for p in obj] for obj in node.objects or ()]
            return tuple(n[0] if len(n) > 1 else "" for n in names)
    if isinstance(node, ast.ReindexStmt) and node.relation is not None:
        options = {getattr(p, "defname", "") for p in node.params or ()}
        if "concurrently" in options:
            return (node.relation.schemaname or "",)
    return None


def check_no_transaction(migration: Migration, managed: Iterable[str]) -> None:
    """A no-transaction file holds only index builds and drops done CONCURRENTLY on the new
    schemas, each naming its schema."""
    if migration.transactional:
        return
    allowed = set(managed)
    for statement in migration.statements:
        schemas = _index_target(statement.tree)
        if schemas is None or not schemas or not set(schemas) <= allowed:
            kind = type(statement.tree).__name__.removesuffix("Stmt")
            raise MigrationFileError(
                f"{migration.filename}:{statement.line}: refused {kind} statement in a "
                "no-transaction file: only CREATE INDEX CONCURRENTLY, DROP INDEX CONCURRENTLY "
                "and REINDEX ... CONCURRENTLY on a schema-qualified object of the new schemas "
                "may run outside a transaction (nothing else could be rolled back)",
                hint="move the other statements to a transactional migration file",
            )


def index_names(migration: Migration) -> tuple[tuple[str, str], ...]:
    """(schema, index) of each CREATE INDEX CONCURRENTLY of a no-transaction file: checked for
    validity after it runs."""
    ast = _ast()
    found = []
    for statement in migration.statements:
        node = statement.tree
        if isinstance(node, ast.IndexStmt) and node.concurrent and node.idxname and node.relation:
            found.append((node.relation.schemaname or "", node.idxname))
    return tuple(found)


@dataclass(frozen=True)
class IndexProbe:
    """A CREATE INDEX CONCURRENTLY of a no-transaction file, rewritten to build the same index
    on an empty temporary copy of its table, in a transaction: the database then resolves
    every function, operator, type and operator class its expressions and predicate use
    (pg_depend), without reading a row, before the real build runs them on every row."""

    line: int
    schema: str
    table: str
    sql: str


PROBE_TABLE = "nucleus_provision_probe"


def index_probes(migration: Migration) -> tuple[IndexProbe, ...]:
    import copy

    from pglast.stream import RawStream

    ast = _ast()
    found = []
    for statement in migration.statements:
        node = statement.tree
        if not (isinstance(node, ast.IndexStmt) and node.concurrent and node.relation):
            continue
        probe = copy.deepcopy(node)
        probe.concurrent = False
        probe.idxname = None
        probe.if_not_exists = False
        probe.relation = ast.RangeVar(
            schemaname="pg_temp", relname=PROBE_TABLE, inh=True, relpersistence="t"
        )
        found.append(
            IndexProbe(
                statement.line,
                node.relation.schemaname or "",
                node.relation.relname or "",
                RawStream()(probe),
            )
        )
    return tuple(found)


def reindex_targets(migration: Migration) -> tuple[tuple[int, str, str], ...]:
    """(line, schema, name) of each REINDEX INDEX|TABLE ... CONCURRENTLY of a no-transaction
    file: its existing indexes' expressions are checked like a new index's before it runs."""
    ast = _ast()
    return tuple(
        (statement.line, node.relation.schemaname or "", node.relation.relname or "")
        for statement in migration.statements
        if isinstance(node := statement.tree, ast.ReindexStmt) and node.relation is not None
    )
