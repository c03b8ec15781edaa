"""The schema lock: the one expected schema, derived from the migrations and checked in.

`bootstrap_sql/schema.lock` is what the managed schemas look like once every migration of
`bootstrap_sql/` ran and the privileges declaration was applied, on a scratch PostgreSQL 16 +
pgvector set up like Cloud SQL (`nucleus-provision lock`, a development-time step: see
`provision.local.lock`). It holds the same model `diff` reads from a live database
(`provision.model.Snapshot`), so `verify`, `plan`, `inspect` and `diff` compare a live
database with it through one engine (`provision.diff.compare`), plus each migration file's
checksum (an integrity list, as atlas.sum), so that a file added, edited or deleted without
refreshing the lock is noticed (`stale`).

The text is made to be reviewed: one object per line (`kind {json}`), sorted by kind and name,
JSON with sorted keys, so that a migration's pull request shows exactly the objects it adds or
changes. This module is pure apart from reading and writing the file: no database.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provision.errors import ConfigError
from provision.model import (
    Column,
    Constraint,
    DefaultPrivilege,
    Function,
    Index,
    MigrationRecord,
    Owned,
    Policy,
    Relation,
    Rule,
    Snapshot,
    Trigger,
    TypeDef,
)

if TYPE_CHECKING:
    from provision.migrations import Migration

LOCK_NAME = "schema.lock"
FORMAT = 1
REFRESH = "nucleus-provision lock"

_HEADER = f"""\
# nucleus-provision schema lock: the managed schemas as the migrations of this directory and
# the privileges declaration leave them, read on a scratch PostgreSQL 16 + pgvector set up like
# Cloud SQL. Generated: do not edit. Refresh with `{REFRESH}` after changing a
# migration or privileges.toml, and commit it with the change (`make test` fails while stale).
# One object per line: `kind name {json}`, sorted.
"""


@dataclass(frozen=True)
class Lock:
    """The expected schema and the inputs it was derived from."""

    snapshot: Snapshot
    # migration file name -> its checksum (sha256 of the file, as `Migration.checksum`)
    files: Mapping[str, str]
    # the version of the migration that first created each schema and table ("dna",
    # "dna.entity"): where an object comes from, for the remedy of one that went missing
    created_by: Mapping[str, str] = field(default_factory=dict)
    # sha256 of the privileges declaration the lock was made with
    declaration: str = ""

    @property
    def schemas(self) -> tuple[str, ...]:
        """The managed schemas: those the migrations create (not `public`, where only the
        version table is ours)."""
        table_schema = self.snapshot.migrations_table.split(".", 1)[0]
        return tuple(s for s in sorted(self.snapshot.schemas) if s != table_schema)

    @property
    def tables(self) -> tuple[tuple[str, str], ...]:
        """The tables the migrations create, version table excluded."""
        vt = tuple(self.snapshot.migrations_table.split(".", 1))
        return tuple(
            key
            for key, rel in sorted(self.snapshot.relations.items())
            if rel.kind in ("table", "partitioned table") and key != vt
        )


def declaration_digest(declaration: object) -> str:
    """A stable hash of the privileges declaration (any JSON-able value)."""
    return hashlib.sha256(json.dumps(declaration, sort_keys=True).encode()).hexdigest()


# -- writing ----------------------------------------------------------------------------------


def _owned(owned: Owned) -> dict[str, Any]:
    return {"owner": owned.owner, "acl": sorted(owned.acl)}


def _line(kind: str, value: Mapping[str, Any], name: str | None = None) -> str:
    """`kind [name] {json}`: the name (for the reader and for `grep`) before the whole object."""
    head = f"{kind} {name}" if name else kind
    return f"{head} {json.dumps(value, sort_keys=True, ensure_ascii=False)}"


def render(lock: Lock) -> str:
    """The lock's text: header, the inputs, then one object per line, sorted."""
    s = lock.snapshot
    lines = [
        _line("format", {"version": FORMAT}),
        _line(
            "scope",
            {"schemas": list(s.schemas_in_scope), "version_table": s.migrations_table},
        ),
        _line("declaration", {"sha256": lock.declaration}),
    ]
    lines += [_line("file", {"name": n, "sha256": c}) for n, c in sorted(lock.files.items())]
    for name, owned in sorted(s.schemas.items()):
        created = lock.created_by.get(name)
        lines.append(_line("schema", {"name": name, "migration": created, **_owned(owned)}, name))
    for _, t in sorted(s.types.items()):
        lines.append(_line("type", t._asdict(), f"{t.schema}.{t.name}"))
    for key, rel in sorted(s.relations.items()):
        d = rel._asdict()
        d.update(_owned(rel.owned))
        del d["owned"]
        d["owned_by"] = list(rel.owned_by) if rel.owned_by else None
        # Left out where they are the defaults: a lock line changes only where one is set.
        d["options"] = list(rel.options)
        if not rel.options:
            del d["options"]
        if rel.replica_identity == "default":
            del d["replica_identity"]
        d["migration"] = lock.created_by.get(f"{key[0]}.{key[1]}")
        lines.append(_line("relation", d, f"{key[0]}.{key[1]}"))
    for _, col in sorted(s.columns.items(), key=lambda kv: (kv[0][:2], kv[1].position)):
        d = col._asdict()
        d["acl"] = sorted(col.acl)
        for optional in ("storage", "statistics"):
            if d[optional] is None:
                del d[optional]
        lines.append(_line("column", d, f"{col.schema}.{col.table}.{col.name}"))
    for _, con in sorted(s.constraints.items()):
        lines.append(_line("constraint", con._asdict(), f"{con.schema}.{con.table}.{con.name}"))
    for _, idx in sorted(s.indexes.items()):
        lines.append(_line("index", idx._asdict(), f"{idx.schema}.{idx.name}"))
    for _, fn in sorted(s.functions.items()):
        d = fn._asdict()
        d.update(_owned(fn.owned))
        del d["owned"]
        lines.append(_line("function", d, f"{fn.schema}.{fn.signature}"))
    for _, tg in sorted(s.triggers.items()):
        lines.append(_line("trigger", tg._asdict(), f"{tg.schema}.{tg.table}.{tg.name}"))
    for _, rl in sorted(s.rules.items()):
        lines.append(_line("rule", rl._asdict(), f"{rl.schema}.{rl.table}.{rl.name}"))
    for _, p in sorted(s.policies.items()):
        d = p._asdict()
        d["roles"] = sorted(p.roles)
        lines.append(_line("policy", d, f"{p.schema}.{p.table}.{p.name}"))
    for _, dp in sorted(s.default_privileges.items()):
        d = dp._asdict()
        d["acl"] = sorted(dp.acl)
        lines.append(
            _line("default-privilege", d, f"{dp.role}.{dp.schema or '*'}.{dp.object_type}")
        )
    return _HEADER + "\n".join(lines) + "\n"


def write(path: Path, lock: Lock) -> None:
    path.write_text(render(lock), encoding="utf-8")


# -- reading ----------------------------------------------------------------------------------


def _bad(path: str, number: int, what: str) -> ConfigError:
    return ConfigError(
        f"{path}:{number}: {what}",
        hint=f"the lock is generated: run `{REFRESH}` instead of editing it",
    )


def parse(text: str, path: str = LOCK_NAME) -> Lock:
    """The lock from its text (the inverse of `render`)."""

    fields: dict[str, Any] = {
        "schemas": {},
        "relations": {},
        "columns": {},
        "constraints": {},
        "indexes": {},
        "functions": {},
        "triggers": {},
        "rules": {},
        "policies": {},
        "default_privileges": {},
        "types": {},
    }
    files: dict[str, str] = {}
    created: dict[str, str] = {}
    scope: dict[str, Any] = {}
    declaration = ""
    fmt = None
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip() or raw.startswith("#"):
            continue
        kind, _, rest = raw.partition(" ")
        start = rest.find("{")
        try:
            d = json.loads(rest[start:]) if start >= 0 else None
            if not isinstance(d, dict):
                raise ValueError(kind)
        except ValueError:
            raise _bad(path, number, "not `kind [name] {json}`") from None
        try:
            if kind == "format":
                fmt = d["version"]
            elif kind == "scope":
                scope = d
            elif kind == "declaration":
                declaration = d["sha256"]
            elif kind == "file":
                files[d["name"]] = d["sha256"]
            elif kind == "schema":
                fields["schemas"][d["name"]] = Owned(d["owner"], tuple(d["acl"]))
                if d.get("migration"):
                    created[d["name"]] = d["migration"]
            elif kind == "type":
                t = TypeDef(**d)
                fields["types"][(t.schema, t.name)] = t
            elif kind == "relation":
                owned = Owned(d.pop("owner"), tuple(d.pop("acl")))
                migration = d.pop("migration", None)
                ob = d.pop("owned_by")
                options = tuple(d.pop("options", ()))
                rel = Relation(
                    owned=owned, owned_by=tuple(ob) if ob else None, options=options, **d
                )
                fields["relations"][(rel.schema, rel.name)] = rel
                if migration:
                    created[f"{rel.schema}.{rel.name}"] = migration
            elif kind == "column":
                col = Column(**{**d, "acl": tuple(d["acl"])})
                fields["columns"][(col.schema, col.table, col.name)] = col
            elif kind == "constraint":
                con = Constraint(**d)
                fields["constraints"][(con.schema, con.table, con.name)] = con
            elif kind == "index":
                idx = Index(**d)
                fields["indexes"][(idx.schema, idx.name)] = idx
            elif kind == "function":
                owned = Owned(d.pop("owner"), tuple(d.pop("acl")))
                fn = Function(owned=owned, **d)
                fields["functions"][(fn.schema, fn.signature)] = fn
            elif kind == "trigger":
                tg = Trigger(**d)
                fields["triggers"][(tg.schema, tg.table, tg.name)] = tg
            elif kind == "rule":
                rl = Rule(**d)
                fields["rules"][(rl.schema, rl.table, rl.name)] = rl
            elif kind == "policy":
                p = Policy(**{**d, "roles": frozenset(d["roles"])})
                fields["policies"][(p.schema, p.table, p.name)] = p
            elif kind == "default-privilege":
                dp = DefaultPrivilege(**{**d, "acl": tuple(d["acl"])})
                fields["default_privileges"][(dp.role, dp.schema, dp.object_type)] = dp
            else:
                raise _bad(path, number, f"unknown kind {kind!r}")
        except (KeyError, TypeError) as exc:
            raise _bad(path, number, f"malformed {kind} ({exc})") from None
    if fmt != FORMAT or not scope:
        raise _bad(path, 1, f"not a schema lock of format {FORMAT}")
    records = tuple(
        sorted(
            MigrationRecord(name.split("_", 1)[0], checksum, name.removesuffix(".sql"))
            for name, checksum in files.items()
        )
    )
    snapshot = Snapshot(
        database="(lock)",
        current_user="",
        server_version_num=0,
        schemas_in_scope=tuple(scope["schemas"]),
        database_owned=Owned(""),
        extensions={},
        memberships=(),
        migrations_table=scope["version_table"],
        migration_records=records,
        **fields,
    )
    return Lock(snapshot, files, created, declaration)


def load(path: Path) -> Lock | None:
    """The lock at `path`, or None when there is none."""
    if not path.is_file():
        return None
    return parse(path.read_text(encoding="utf-8"), str(path))


# -- staleness --------------------------------------------------------------------------------


def stale(lock: Lock, migrations: Iterable[Migration], declaration: str) -> list[str]:
    """What changed since the lock was made: files added, edited or deleted, and the
    privileges declaration. Empty when the lock is fresh."""
    files = {m.filename: m.checksum for m in migrations}
    out = [f"{n} is not in the lock" for n in sorted(set(files) - set(lock.files))]
    out += [
        f"{n} is in the lock but not in the directory" for n in sorted(set(lock.files) - set(files))
    ]
    out += [
        f"{n} changed since the lock was made"
        for n in sorted(set(files) & set(lock.files))
        if files[n] != lock.files[n]
    ]
    if lock.declaration and declaration and lock.declaration != declaration:
        out.append("the privileges declaration changed since the lock was made")
    return out
