"""The layout the Nucleus code expects: one declarative description, used by `inspect` to
report drift and by the engine as its desired state.

Nothing here talks to a database. Names only: the column definitions live in the migration
files that create the objects, and each object names the migration that introduces it, so
an object that exists without that migration being recorded can be reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from provision.sql import ident


@dataclass(frozen=True)
class Schema:
    name: str
    migration: str  # version of the migration that creates it
    legacy: str | None = None  # the old schema the code used to expect instead


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    migration: str
    legacy: tuple[str, str] | None = None  # (schema, table) of its old counterpart

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class MigrationsTable:
    """The version table: adopted in place, its legacy columns and rows kept."""

    schema: str = "public"
    name: str = "migrations"
    legacy_columns: tuple[str, ...] = ("id", "migration_name", "applied_at")
    expected_columns: tuple[str, ...] = ("id", "version", "description", "executed_at")
    # Kept as Flyway keeps them: detect edited files, show how long each migration took.
    bookkeeping_columns: tuple[str, ...] = ("checksum", "execution_time_ms")

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def ident(self) -> str:
        """The quoted, qualified name for SQL."""
        return ident(self.schema, self.name)

    @property
    def required_columns(self) -> tuple[str, ...]:
        return self.expected_columns + self.bookkeeping_columns


@dataclass(frozen=True)
class Layout:
    owner: str
    admin: str
    database: str
    schemas: tuple[Schema, ...]
    tables: tuple[Table, ...]
    extensions: tuple[str, ...]
    protected_schemas: tuple[str, ...]
    migrations_table: MigrationsTable = field(default_factory=MigrationsTable)

    @property
    def schema_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.schemas)

    def with_owner(self, owner: str, admin: str | None = None) -> Layout:
        """The same layout for other role names (e.g. a test's own owner role)."""
        return replace(self, owner=owner, admin=admin or self.admin)


NUCLEUS = Layout(
    owner="nucleus",
    admin="postgres",
    database="nucleus_v12",
    schemas=(
        Schema("dna", "001", legacy="dna_schema"),
        Schema("tasks", "001", legacy="tasks_schema"),
        Schema("agents", "001", legacy="agents_schema"),
        Schema("results", "001", legacy="results_schema"),
        Schema("memory", "001"),
        Schema("assembly", "001"),
        Schema("execution", "001"),
    ),
    tables=(
        Table("dna", "entity", "001", legacy=("dna_schema", "entities")),
        Table("dna", "interests", "001"),
        Table("dna", "goals", "001"),
        Table("dna", "values", "001"),
        Table("dna", "raw_data", "001"),
        Table("dna", "entity_integrations", "002"),
        Table("tasks", "task", "001"),
        Table("agents", "agent", "001"),
        Table("results", "result", "001"),
        Table("memory", "memory", "001"),
        Table("assembly", "blueprint", "001"),
        Table("execution", "run", "001"),
    ),
    extensions=("vector",),
    protected_schemas=("dna_schema", "tasks_schema", "agents_schema", "results_schema"),
)
