"""Comparing two snapshots: a pure function from (left, right, options) to differences.

Each difference is `Difference(kind, object, left, right)`: `left`/`right` is the value on
each side, `None` where the object does not exist on that side. An object missing on one
side is one difference; its columns, indexes, grants, ... are not listed again.

Decisions worth knowing:
- Roles are compared through `Options.role_map` (`prod_name -> staging_name`), applied to
  every role name read on the left: owners, grantees, default-privilege roles, policy roles,
  memberships.
- Privileges are sets of (grantee, privilege, grantable): order and grantor do not matter.
  The owner's own entry is compared as the grantee `owner`, so handing an object to another
  role is one `owner` difference, not also two privilege differences.
- Memberships are compared for the managed roles: every role that owns or is granted
  something in the compared objects (plus `Options.managed_roles`), minus the platform's own
  roles (`cloudsql*`, `pg_*`). A membership counts when both ends are managed, or when a
  managed role is a member of a platform role (`cloudsqlsuperuser`, `pg_read_all_data`).
- Migration records: the versions and checksums of the adopted version table, not when
  they ran; rows of the old tooling (no version) by `migration_name`, under their own
  category `legacy-migrations` (production has a history a fresh environment never will).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from provision.errors import ConfigError, PermissionProblem
from provision.model import (
    Column,
    Constraint,
    Index,
    MigrationRecord,
    Owned,
    Policy,
    Relation,
    Rule,
    Snapshot,
    Trigger,
)

# A side's value: a scalar, a list of privileges, or None where the object is absent.
Value = str | bool | list[str] | None

# The categories `--ignore` accepts, each with the kinds of difference it covers.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "schemas": ("schema",),
    "tables": (
        "table",
        "partitioned table",
        "foreign table",
        "relation-kind",
        "table-definition",
        "table-options",
        "replica-identity",
    ),
    "columns": (
        "column",
        "column-type",
        "column-nullable",
        "column-default",
        "column-identity",
        "column-generated",
        "column-collation",
        "column-position",
        "column-storage",
        "column-statistics",
    ),
    "constraints": ("constraint", "constraint-definition"),
    "indexes": ("index", "index-definition", "index-validity"),
    "sequences": ("sequence", "sequence-definition"),
    "types": ("type", "type-definition"),
    "views": ("view", "materialized view", "view-definition"),
    "functions": ("function", "function-definition"),
    "triggers": ("trigger", "trigger-definition", "rule", "rule-definition"),
    "policies": ("policy", "policy-definition", "row-security"),
    "extensions": ("extension", "extension-version", "extension-schema"),
    "owners": ("owner",),
    "privileges": ("privilege",),
    "default-privileges": ("default-privilege",),
    "memberships": ("membership",),
    "migrations": ("migration-record", "migration-checksum"),
    "legacy-migrations": ("legacy-migration-record",),
}
CATEGORY_OF: dict[str, str] = {kind: cat for cat, kinds in CATEGORIES.items() for kind in kinds}

OWNER_GRANTEE = "owner"  # how the owner's own privileges are compared


def is_platform_role(name: str) -> bool:
    """Roles Cloud SQL (or PostgreSQL) creates and manages itself."""
    return name.startswith(("cloudsql", "pg_")) or name == "PUBLIC"


@dataclass(frozen=True)
class Difference:
    kind: str
    object: str
    left: Value
    right: Value
    group: str = field(default="", compare=False)  # the object it is listed under in text

    @property
    def category(self) -> str:
        return CATEGORY_OF[self.kind]

    def to_dict(self) -> dict[str, Value]:
        return {"kind": self.kind, "object": self.object, "left": self.left, "right": self.right}


@dataclass(frozen=True)
class Options:
    ignore: frozenset[str] = frozenset()
    role_map: Mapping[str, str] = field(default_factory=dict)  # left name -> right name
    # Roles always compared (in the right side's names), e.g. an environment's owner and admin.
    managed_roles: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        unknown = sorted(set(self.ignore) - set(CATEGORIES))
        if unknown:
            raise ConfigError(
                f"unknown category to ignore: {', '.join(unknown)}",
                hint=f"choose among: {', '.join(CATEGORIES)}",
            )


def parse_role_map(pairs: Iterable[str]) -> dict[str, str]:
    """`prod_name=staging_name` pairs as a mapping (left name -> right name)."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        left, sep, right = pair.partition("=")
        if not sep or not left or not right:
            raise ConfigError(
                f"--map-role {pair!r} is not LEFT=RIGHT",
                hint="e.g. --map-role nucleus_prod=nucleus_staging",
            )
        if left in mapping and mapping[left] != right:
            raise ConfigError(
                f"--map-role maps {left!r} twice", hint="give each left role one right name"
            )
        mapping[left] = right
    return mapping


# Keys of the snapshot's mappings: a name, or a (schema, name[, name]) tuple.
K = TypeVar("K", str, tuple[str, str], tuple[str, str, str])
V = TypeVar("V")


def _split(
    left: Mapping[K, V],
    right: Mapping[K, V],
    *,
    skip_equal: bool = False,
    keep: Callable[[K, V], object] | None = None,
) -> tuple[list[tuple[K, V]], list[tuple[K, V]], list[tuple[K, V, V]]]:
    """(only left, only right, both) by key; `both` unsorted (it is large, and the differences
    are put in order at the end). `skip_equal` leaves out of `both` the pairs equal as read;
    `keep(key, value)` drops what is not to be compared. Both are applied here, in one pass,
    so that at 10,000 tables the 40,000 equal columns cost a comparison each and nothing more."""
    lk, rk = left.keys(), right.keys()
    only_left = [(k, left[k]) for k in sorted(lk - rk)]
    only_right = [(k, right[k]) for k in sorted(rk - lk)]
    if skip_equal:
        both = [(k, lv, rv) for k in lk & rk if (lv := left[k]) != (rv := right[k])]
    else:
        both = [(k, left[k], right[k]) for k in lk & rk]
    if keep is not None:
        only_left = [(k, v) for k, v in only_left if keep(k, v)]
        only_right = [(k, v) for k, v in only_right if keep(k, v)]
        both = [(k, lv, rv) for k, lv, rv in both if keep(k, rv)]
    return only_left, only_right, both


def _q(*parts: str) -> str:
    """A dotted name for display (`dna.values`); never used as SQL."""
    return ".".join(parts)


def _constraint_text(con: Constraint) -> str:
    return f"{con.type}: {con.definition}" + ("" if con.validated else " NOT VALID")


def _trigger_text(trigger: Trigger | Rule) -> str:
    return trigger.definition + ("" if trigger.enabled == "enabled" else f" ({trigger.enabled})")


def _policy_text(policy: Policy, rename: Callable[[str], str]) -> str:
    roles = ", ".join(sorted(rename(r) for r in policy.roles))
    parts = [
        f"{'PERMISSIVE' if policy.permissive else 'RESTRICTIVE'} FOR {policy.command} TO {roles}"
    ]
    if policy.using is not None:
        parts.append(f"USING ({policy.using})")
    if policy.with_check is not None:
        parts.append(f"WITH CHECK ({policy.with_check})")
    return " ".join(parts)


def _storage(rel: Relation) -> str:
    parts = [rel.persistence]
    if rel.partition_key:
        parts.append(f"partition by {rel.partition_key}")
    if rel.partition_of:
        parts.append(f"partition of {rel.partition_of}")
    return ", ".join(parts)


def _rls(rel: Relation) -> str:
    return ("enabled" if rel.row_security else "disabled") + (
        ", forced" if rel.force_row_security else ""
    )


def _not_null(column: Column) -> str:
    return "NOT NULL" if column.not_null else "NULL"


def _validity(index: Index) -> str:
    return "valid" if index.valid else "INVALID"


def _times(count: int) -> str | None:
    return None if count == 0 else ("recorded" if count == 1 else f"recorded {count} times")


def _all_owned(snapshot: Snapshot) -> list[Owned]:
    return [
        snapshot.database_owned,
        *snapshot.schemas.values(),
        *(r.owned for r in snapshot.relations.values()),
        *(f.owned for f in snapshot.functions.values()),
    ]


def _same(name: str) -> str:
    return name


class _Comparer:
    """Collects the differences of one comparison; one method per concern."""

    def __init__(self, left: Snapshot, right: Snapshot, options: Options) -> None:
        self.left, self.right, self.options = left, right, options
        self.out: list[Difference] = []
        self._names: list[dict[tuple[str, str], set[str]]] | None = None
        # With no roles to map, objects equal as read are equal as compared: skip them whole
        # (at 10,000 tables, most of the comparison's time).
        self.fast = not options.role_map
        # Relations present on both sides with the same kind: only their children are compared.
        self.paired = {
            key: f"{rel.kind} {_q(*key)}"
            for key, rel in right.relations.items()
            if (other := left.relations.get(key)) is not None and other.kind == rel.kind
        }

    def role(self, name: str) -> str:
        """A left-side role name in the right side's names."""
        return self.options.role_map.get(name, name)

    def add(self, kind: str, obj: str, left: Value, right: Value, group: str | None = None) -> None:
        if CATEGORY_OF[kind] not in self.options.ignore and left != right:
            self.out.append(Difference(kind, obj, left, right, group or obj))

    def on_both(self, schema: str, table: str) -> str | None:
        """`kind schema.name` of a relation present on both sides with the same kind, else None:
        the children of a relation missing on one side are not listed again."""
        return self.paired.get((schema, table))

    def grants(self, obj: str, left: Owned, right: Owned, kind: str = "privilege") -> None:
        if self.fast and left == right:
            return

        def by_grantee(owned: Owned, rename: Callable[[str], str]) -> dict[str, list[str]]:
            owner = rename(owned.owner) if owned.owner else None
            found: dict[str, set[str]] = {}
            for grantee, privilege, grantable in owned.grants:
                who = rename(grantee)
                found.setdefault(OWNER_GRANTEE if who == owner else who, set()).add(
                    privilege + (" WITH GRANT OPTION" if grantable else "")
                )
            return {k: sorted(v) for k, v in found.items()}

        lg, rg = by_grantee(left, self.role), by_grantee(right, _same)
        for grantee in sorted(set(lg) | set(rg)):
            self.add(kind, f"{obj} to {grantee}", lg.get(grantee, []), rg.get(grantee, []), obj)

    def ownership(self, obj: str, left: Owned, right: Owned, *, owner: bool = True) -> None:
        if owner:
            self.add("owner", obj, self.role(left.owner), right.owner)
        self.grants(obj, left, right)

    # -- the concerns -----------------------------------------------------------------------------

    def database(self) -> None:
        self.ownership("database", self.left.database_owned, self.right.database_owned)

    def schemas(self) -> None:
        only_left, only_right, both = _split(self.left.schemas, self.right.schemas)
        for name, lo in only_left:
            self.add("schema", f"schema {name}", f"owner {self.role(lo.owner)}", None)
        for name, ro in only_right:
            self.add("schema", f"schema {name}", None, f"owner {ro.owner}")
        for name, lo, ro in both:
            self.ownership(f"schema {name}", lo, ro)

    def listed(self, rel: Relation, other: Snapshot) -> bool:
        """Whether a relation found on one side only is a difference of its own: not when its
        schema, or the table whose column owns it (a serial's sequence), is missing too."""
        if rel.schema not in other.schemas:
            return False
        return rel.owned_by is None or (rel.owned_by[0], rel.owned_by[1]) in other.relations

    def relations(self) -> None:
        only_left, only_right, both = _split(
            self.left.relations, self.right.relations, skip_equal=self.fast
        )
        only_left = [(k, r) for k, r in only_left if self.listed(r, self.right)]
        only_right = [(k, r) for k, r in only_right if self.listed(r, self.left)]
        for (s, n), rel in only_left:
            self.add(
                rel.kind, f"{rel.kind} {_q(s, n)}", f"owner {self.role(rel.owned.owner)}", None
            )
        for (s, n), rel in only_right:
            self.add(rel.kind, f"{rel.kind} {_q(s, n)}", None, f"owner {rel.owned.owner}")
        for (s, n), lr, rr in both:
            if self.fast and lr == rr:
                continue
            obj = f"{rr.kind} {_q(s, n)}"
            if lr.kind != rr.kind:
                self.add("relation-kind", f"relation {_q(s, n)}", lr.kind, rr.kind)
                continue
            # A sequence owned by a column has its table's owner: the table's difference says it.
            self.ownership(obj, lr.owned, rr.owned, owner=not (lr.owned_by and rr.owned_by))
            # Storage parameters, and a view's security_invoker: whose rights its reads use.
            self.add("table-options", obj, list(lr.options), list(rr.options))
            if rr.kind in ("view", "materialized view"):
                self.add("view-definition", obj, lr.definition, rr.definition)
            elif rr.kind == "sequence":
                self.add("sequence-definition", obj, lr.sequence, rr.sequence)
            else:
                self.add("table-definition", obj, _storage(lr), _storage(rr))
                self.add("row-security", obj, _rls(lr), _rls(rr))
                # What logical replication sends for an UPDATE or DELETE (a publication of the
                # table fails writes without one).
                self.add("replica-identity", obj, lr.replica_identity, rr.replica_identity)

    def columns(self) -> None:
        only_left, only_right, both = _split(
            self.left.columns,
            self.right.columns,
            skip_equal=self.fast,
            keep=lambda k, _v: self.on_both(k[0], k[1]),
        )
        for (s, t, c), col in only_left:
            self.add("column", f"column {_q(s, t, c)}", col.type, None, self.on_both(s, t))
        for (s, t, c), col in only_right:
            self.add("column", f"column {_q(s, t, c)}", None, col.type, self.on_both(s, t))
        for (s, t, c), lc, rc in both:
            if self.fast and lc == rc:
                continue
            obj, group = f"column {_q(s, t, c)}", self.on_both(s, t)
            self.add("column-type", obj, lc.type, rc.type, group)
            self.add("column-nullable", obj, _not_null(lc), _not_null(rc), group)
            self.add("column-default", obj, lc.default, rc.default, group)
            self.add("column-identity", obj, lc.identity, rc.identity, group)
            self.add("column-generated", obj, lc.generated, rc.generated, group)
            self.add("column-collation", obj, lc.collation, rc.collation, group)
            self.add("column-storage", obj, lc.storage, rc.storage, group)
            self.add(
                "column-statistics",
                obj,
                None if lc.statistics is None else str(lc.statistics),
                None if rc.statistics is None else str(rc.statistics),
                group,
            )
            # The order `SELECT *` and COPY show; only a changed column is listed, not each one
            # a dropped column moved up (a column missing on one side is its own difference).
            if self._positions_comparable(s, t):
                self.add("column-position", obj, str(lc.position), str(rc.position), group)
            # Column privileges have no owner of their own: every grantee is compared as is.
            self.grants(obj, Owned("", lc.acl), Owned("", rc.acl))

    def _positions_comparable(self, schema: str, table: str) -> bool:
        """Positions say something only when both sides have the same columns (otherwise the
        missing column is the difference, and every later position shifts with it)."""
        if self._names is None:
            self._names = []
            for side in (self.left, self.right):
                names: dict[tuple[str, str], set[str]] = {}
                for s, t, c in side.columns:
                    names.setdefault((s, t), set()).add(c)
                self._names.append(names)
        key = (schema, table)
        return self._names[0].get(key) == self._names[1].get(key)

    def types(self) -> None:
        only_left, only_right, both = _split(self.left.types, self.right.types)
        only_left = [(k, t) for k, t in only_left if t.schema in self.right.schemas]
        only_right = [(k, t) for k, t in only_right if t.schema in self.left.schemas]
        for (s, n), ty in only_left:
            self.add("type", f"{ty.kind} {_q(s, n)}", ty.definition, None)
        for (s, n), ty in only_right:
            self.add("type", f"{ty.kind} {_q(s, n)}", None, ty.definition)
        for (s, n), lt, rt in both:
            obj = f"{rt.kind} {_q(s, n)}"
            self.add(
                "type-definition", obj, f"{lt.kind} {lt.definition}", f"{rt.kind} {rt.definition}"
            )
            self.add("owner", obj, self.role(lt.owner), rt.owner)

    def constraints(self) -> None:
        # Constraints name no role: equal as read is equal as compared, role map or not.
        only_left, only_right, both = _split(
            self.left.constraints,
            self.right.constraints,
            skip_equal=True,
            keep=lambda k, _v: self.on_both(k[0], k[1]),
        )
        for (s, t, n), con in only_left:
            self.add(
                "constraint",
                f"constraint {n} on {_q(s, t)}",
                _constraint_text(con),
                None,
                self.on_both(s, t),
            )
        for (s, t, n), con in only_right:
            self.add(
                "constraint",
                f"constraint {n} on {_q(s, t)}",
                None,
                _constraint_text(con),
                self.on_both(s, t),
            )
        for (s, t, n), lc, rc in both:
            if lc == rc:
                continue
            self.add(
                "constraint-definition",
                f"constraint {n} on {_q(s, t)}",
                _constraint_text(lc),
                _constraint_text(rc),
                self.on_both(s, t),
            )

    def indexes(self) -> None:
        only_left, only_right, both = _split(
            self.left.indexes,
            self.right.indexes,
            skip_equal=True,
            keep=lambda _k, v: self.on_both(v.schema, v.table),
        )
        for (s, n), idx in only_left:
            self.add("index", f"index {_q(s, n)}", idx.definition, None, self.on_both(s, idx.table))
        for (s, n), idx in only_right:
            self.add("index", f"index {_q(s, n)}", None, idx.definition, self.on_both(s, idx.table))
        for (s, n), li, ri in both:
            if li == ri:
                continue
            obj, group = f"index {_q(s, n)}", self.on_both(s, ri.table)
            self.add("index-definition", obj, li.definition, ri.definition, group)
            self.add("index-validity", obj, _validity(li), _validity(ri), group)

    def functions(self) -> None:
        only_left, only_right, both = _split(
            self.left.functions, self.right.functions, skip_equal=self.fast
        )
        only_left = [(k, f) for k, f in only_left if f.schema in self.right.schemas]
        only_right = [(k, f) for k, f in only_right if f.schema in self.left.schemas]
        for (s, sig), fn in only_left:
            self.add(
                "function", f"{fn.kind} {_q(s, sig)}", f"owner {self.role(fn.owned.owner)}", None
            )
        for (s, sig), fn in only_right:
            self.add("function", f"{fn.kind} {_q(s, sig)}", None, f"owner {fn.owned.owner}")
        for (s, sig), lf, rf in both:
            if self.fast and lf == rf:
                continue
            obj = f"{rf.kind} {_q(s, sig)}"
            self.add("function-definition", obj, lf.definition, rf.definition)
            self.ownership(obj, lf.owned, rf.owned)

    def triggers(self) -> None:
        def keep(m: Mapping[tuple[str, str, str], Trigger]) -> dict[tuple[str, str, str], Trigger]:
            return {k: v for k, v in m.items() if self.on_both(k[0], k[1])}

        only_left, only_right, both = _split(keep(self.left.triggers), keep(self.right.triggers))
        for (s, t, n), tg in only_left:
            self.add(
                "trigger", f"trigger {n} on {_q(s, t)}", _trigger_text(tg), None, self.on_both(s, t)
            )
        for (s, t, n), tg in only_right:
            self.add(
                "trigger", f"trigger {n} on {_q(s, t)}", None, _trigger_text(tg), self.on_both(s, t)
            )
        for (s, t, n), lt, rt in both:
            self.add(
                "trigger-definition",
                f"trigger {n} on {_q(s, t)}",
                _trigger_text(lt),
                _trigger_text(rt),
                self.on_both(s, t),
            )

    def rules(self) -> None:
        def keep(m: Mapping[tuple[str, str, str], Rule]) -> dict[tuple[str, str, str], Rule]:
            return {k: v for k, v in m.items() if self.on_both(k[0], k[1])}

        only_left, only_right, both = _split(keep(self.left.rules), keep(self.right.rules))
        for (s, t, n), r in only_left:
            self.add("rule", f"rule {n} on {_q(s, t)}", _trigger_text(r), None, self.on_both(s, t))
        for (s, t, n), r in only_right:
            self.add("rule", f"rule {n} on {_q(s, t)}", None, _trigger_text(r), self.on_both(s, t))
        for (s, t, n), lr, rr in both:
            self.add(
                "rule-definition",
                f"rule {n} on {_q(s, t)}",
                _trigger_text(lr),
                _trigger_text(rr),
                self.on_both(s, t),
            )

    def policies(self) -> None:
        def keep(m: Mapping[tuple[str, str, str], Policy]) -> dict[tuple[str, str, str], Policy]:
            return {k: v for k, v in m.items() if self.on_both(k[0], k[1])}

        only_left, only_right, both = _split(keep(self.left.policies), keep(self.right.policies))
        for (s, t, n), p in only_left:
            self.add(
                "policy",
                f"policy {n} on {_q(s, t)}",
                _policy_text(p, self.role),
                None,
                self.on_both(s, t),
            )
        for (s, t, n), p in only_right:
            self.add(
                "policy",
                f"policy {n} on {_q(s, t)}",
                None,
                _policy_text(p, _same),
                self.on_both(s, t),
            )
        for (s, t, n), lp, rp in both:
            self.add(
                "policy-definition",
                f"policy {n} on {_q(s, t)}",
                _policy_text(lp, self.role),
                _policy_text(rp, _same),
                self.on_both(s, t),
            )

    def extensions(self) -> None:
        only_left, only_right, both = _split(self.left.extensions, self.right.extensions)
        for name, ext in only_left:
            self.add("extension", f"extension {name}", ext.version, None)
        for name, ext in only_right:
            self.add("extension", f"extension {name}", None, ext.version)
        for name, le, re_ in both:
            obj = f"extension {name}"
            self.add("extension-version", obj, le.version, re_.version)
            self.add("extension-schema", obj, le.schema, re_.schema)
            self.add("owner", obj, self.role(le.owner), re_.owner)

    def default_privileges(self) -> None:
        def keyed(
            snapshot: Snapshot, rename: Callable[[str], str]
        ) -> dict[tuple[str, str, str], Owned]:
            return {
                (rename(d.role), d.schema, d.object_type): Owned("", d.acl)
                for d in snapshot.default_privileges.values()
                if not is_platform_role(d.role)
            }

        left, right = keyed(self.left, self.role), keyed(self.right, _same)
        for key in sorted(set(left) | set(right)):
            role, schema, objtype = key
            where = f"in schema {schema}" if schema else "in every schema"
            self.grants(
                f"default privileges of {role} on {objtype} {where}",
                left.get(key, Owned("")),
                right.get(key, Owned("")),
                kind="default-privilege",
            )

    def memberships(self) -> None:
        managed = set(self.options.managed_roles)
        for snapshot, rename in ((self.left, self.role), (self.right, _same)):
            # Thousands of objects share a handful of (owner, ACL) pairs.
            for owned in set(_all_owned(snapshot)):
                managed.add(rename(owned.owner))
                managed.update(rename(g[0]) for g in owned.grants)
        managed = {m for m in managed if not is_platform_role(m)}

        def keyed(snapshot: Snapshot, rename: Callable[[str], str]) -> dict[tuple[str, str], str]:
            out: dict[tuple[str, str], str] = {}
            for m in snapshot.memberships:
                group, member = rename(m.role), rename(m.member)
                # Among the managed roles, or a managed role in one of the platform's own roles
                # (cloudsqlsuperuser, pg_read_all_data, ...), which carry privileges. Not the
                # ADMIN option PostgreSQL 16 gives `postgres` on every role it ever created.
                if member in managed and (group in managed or is_platform_role(group)):
                    flags = (("ADMIN", m.admin), ("INHERIT", m.inherit), ("SET", m.set))
                    out[(member, group)] = ", ".join(f for f, on in flags if on) or "member"
            return out

        left, right = keyed(self.left, self.role), keyed(self.right, _same)
        for member, group in sorted(set(left) | set(right)):
            self.add(
                "membership",
                f"role {member} in {group}",
                left.get((member, group)),
                right.get((member, group)),
                f"role {member}",
            )

    def migrations(self) -> None:
        if {"migrations", "legacy-migrations"} <= self.options.ignore:
            return
        for side, snapshot in (("left", self.left), ("right", self.right)):
            if snapshot.migration_records is None:
                raise PermissionProblem(
                    f"the {side} session ({snapshot.current_user}) may not read "
                    f"{snapshot.migrations_table}, so its migration records cannot be compared",
                    hint=f"GRANT SELECT ON {snapshot.migrations_table} TO {snapshot.current_user}, "
                    "or leave them out with --ignore migrations,legacy-migrations",
                )
        left = self.left.migration_records or ()
        right = self.right.migration_records or ()
        table = self.right.migrations_table

        def versions(records: Iterable[MigrationRecord]) -> dict[str, str]:
            return {
                r.version: r.checksum or "no checksum" for r in records if r.version is not None
            }

        lv, rv = versions(left), versions(right)
        for version in sorted(set(lv) | set(rv)):
            kind = "migration-checksum" if version in lv and version in rv else "migration-record"
            self.add(kind, f"migration {version}", lv.get(version), rv.get(version), table)

        def legacy(records: Iterable[MigrationRecord]) -> Counter[str]:
            return Counter(r.migration_name or "" for r in records if r.version is None)

        ll, rl = legacy(left), legacy(right)
        for name in sorted(set(ll) | set(rl)):
            self.add(
                "legacy-migration-record",
                f"legacy migration {name}",
                _times(ll[name]),
                _times(rl[name]),
                table,
            )


def compare(left: Snapshot, right: Snapshot, options: Options | None = None) -> list[Difference]:
    """Every difference between two snapshots that `options` does not ignore, in a stable order."""
    c = _Comparer(left, right, options or Options())
    c.database()
    c.schemas()
    c.relations()
    c.columns()
    c.types()
    c.constraints()
    c.indexes()
    c.functions()
    c.triggers()
    c.rules()
    c.policies()
    c.extensions()
    c.default_privileges()
    c.memberships()
    c.migrations()
    # Grouped by concern (the order above), then by object.
    order = {concern: n for n, concern in enumerate(CATEGORIES)}
    return sorted(c.out, key=lambda d: (order[d.category], d.group, d.object, d.kind))
