"""The database objects `diff`, the schema lock and the structure concern compare.

A low module of plain data, no I/O and no other project import: `diff.snapshot` reads a live
database into it, `lockfile` reads and writes it as text, `diff.compare` compares two of it,
the catalog and the `structure` concern hold one. Keeping it here, below all of them, lets
every import run downwards (the lock no longer reaches into diff's reader, nor diff into the
desired state, to share these types).

ACLs are kept as the server prints them (`aclitem` text); `parse_acl` turns them into
(grantee, privilege, grantable) triples, leaving the grantor out on purpose: an ownership
hand-off rewrites it and it grants nothing by itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

# A privilege entry: (grantee, privilege, grantable). PUBLIC is spelled "PUBLIC".
Grant = tuple[str, str, bool]
# An ACL as the server prints it: `grantee=privileges/grantor` items.
Acl = tuple[str, ...]

_PRIVILEGES = {
    "r": "SELECT",
    "w": "UPDATE",
    "a": "INSERT",
    "d": "DELETE",
    "D": "TRUNCATE",
    "x": "REFERENCES",
    "t": "TRIGGER",
    "X": "EXECUTE",
    "U": "USAGE",
    "C": "CREATE",
    "c": "CONNECT",
    "T": "TEMPORARY",
    "s": "SET",
    "A": "ALTER SYSTEM",
    "m": "MAINTAIN",
}


def _read_role(item: str, start: int) -> tuple[str, int]:
    """A role name of an aclitem at `start` (double-quoted when it needs to be), and where it ends."""
    if item.startswith('"', start):
        out, i = [], start + 1
        while i < len(item):
            if item[i] == '"':
                if item.startswith('"', i + 1):
                    out.append('"')
                    i += 2
                    continue
                return "".join(out), i + 1
            out.append(item[i])
            i += 1
        return "".join(out), i
    end = start
    while end < len(item) and item[end] not in "=/":
        end += 1
    return item[start:end], end


@lru_cache(maxsize=8192)
def parse_acl(acl: Acl) -> frozenset[Grant]:
    """`("nucleus=arwdDxtm/nucleus", "=X/nucleus")` as (grantee, privilege, grantable) triples.

    Cached: thousands of tables of one environment share a handful of distinct ACLs."""
    grants: set[Grant] = set()
    for item in acl:
        grantee, i = _read_role(item, 0)
        privileges = item[i + 1 : item.index("/", i + 1) if "/" in item[i + 1 :] else len(item)]
        for n, letter in enumerate(privileges):
            if letter == "*":
                continue
            grantable = privileges[n + 1 : n + 2] == "*"
            grants.add((grantee or "PUBLIC", _PRIVILEGES.get(letter, letter), grantable))
    return frozenset(grants)


class Owned(NamedTuple):
    """Owner and privileges of an object (a schema, relation, function or the database)."""

    owner: str
    acl: Acl = ()

    @property
    def grants(self) -> frozenset[Grant]:
        return parse_acl(self.acl)


class Relation(NamedTuple):
    schema: str
    name: str
    kind: str  # table, partitioned table, view, materialized view, sequence, foreign table
    owned: Owned
    persistence: str = "permanent"
    row_security: bool = False
    force_row_security: bool = False
    partition_key: str | None = None
    partition_of: str | None = None  # "parent FOR VALUES ..."
    definition: str | None = None  # views and materialized views
    sequence: str | None = None  # a sequence's type, start, increment, bounds, cache, cycle
    owned_by: tuple[str, str, str] | None = None  # a sequence's (schema, table, column)
    # Storage parameters (`fillfactor=70`, `autovacuum_enabled=false`, a view's
    # `security_invoker=true`), as pg_class.reloptions lists them, sorted.
    options: tuple[str, ...] = ()
    # REPLICA IDENTITY of a table: default, nothing, full, or `index NAME`.
    replica_identity: str = "default"


class Column(NamedTuple):
    schema: str
    table: str
    name: str
    type: str
    not_null: bool
    default: str | None
    identity: str | None  # "always", "by default"
    generated: str | None  # the expression of a stored generated column
    collation: str | None
    acl: Acl = ()  # column-level privileges only
    position: int = 0  # 1, 2, ... among the live columns: the order `SELECT *` shows them in
    # ALTER COLUMN ... SET STORAGE where it differs from its type's (plain, external, main,
    # extended), and SET STATISTICS where one is set; None: the defaults.
    storage: str | None = None
    statistics: int | None = None

    @property
    def grants(self) -> frozenset[Grant]:
        return parse_acl(self.acl)


class Constraint(NamedTuple):
    schema: str
    table: str
    name: str
    type: str  # primary key, foreign key, unique, check, exclusion, trigger
    definition: str
    validated: bool


class Index(NamedTuple):
    schema: str
    table: str
    name: str
    definition: str
    valid: bool


class Function(NamedTuple):
    schema: str
    signature: str  # name(identity arguments)
    kind: str  # function, procedure, aggregate, window
    owned: Owned
    definition: str | None  # pg_get_functiondef; None for aggregates


class Trigger(NamedTuple):
    schema: str
    table: str
    name: str
    definition: str
    enabled: str


class Rule(NamedTuple):
    """A rewrite rule (CREATE RULE): like a trigger, it changes what a write does (DO INSTEAD
    NOTHING swallows it), so it is compared as one. Views' own _RETURN rules are not listed."""

    schema: str
    table: str
    name: str
    definition: str
    enabled: str


class Policy(NamedTuple):
    schema: str
    table: str
    name: str
    command: str
    permissive: bool
    roles: frozenset[str]
    using: str | None
    with_check: str | None


class DefaultPrivilege(NamedTuple):
    role: str
    schema: str  # "" for the role's objects in every schema
    object_type: str  # tables, sequences, functions, types, schemas
    acl: Acl

    @property
    def grants(self) -> frozenset[Grant]:
        return parse_acl(self.acl)


class TypeDef(NamedTuple):
    """An enum (its labels, in order) or a domain (base type, NOT NULL, default, checks)."""

    schema: str
    name: str
    kind: str  # enum, domain
    definition: str
    owner: str


class Extension(NamedTuple):
    name: str
    version: str
    schema: str
    owner: str


class Membership(NamedTuple):
    role: str  # the group
    member: str
    admin: bool
    inherit: bool
    set: bool


class MigrationRecord(NamedTuple):
    version: str | None  # None: a row of the old tooling (migration_name only)
    checksum: str | None
    migration_name: str | None


@dataclass(frozen=True)
class Snapshot:
    database: str
    current_user: str
    server_version_num: int
    schemas_in_scope: tuple[str, ...]
    database_owned: Owned
    schemas: Mapping[str, Owned]
    relations: Mapping[tuple[str, str], Relation]
    columns: Mapping[tuple[str, str, str], Column]
    constraints: Mapping[tuple[str, str, str], Constraint]
    indexes: Mapping[tuple[str, str], Index]
    functions: Mapping[tuple[str, str], Function]
    triggers: Mapping[tuple[str, str, str], Trigger]
    policies: Mapping[tuple[str, str, str], Policy]
    default_privileges: Mapping[tuple[str, str, str], DefaultPrivilege]
    extensions: Mapping[str, Extension]
    memberships: tuple[Membership, ...]
    migrations_table: str  # schema.name of the version table
    # None: the table exists but this session may not read it; () when it does not exist.
    migration_records: tuple[MigrationRecord, ...] | None
    types: Mapping[tuple[str, str], TypeDef] = field(default_factory=dict)
    rules: Mapping[tuple[str, str, str], Rule] = field(default_factory=dict)
    queries: int = field(default=0, compare=False)
