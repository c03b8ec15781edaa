"""Plans as data: the JSON a plan is shown and saved as, its fingerprints, and its digest.

Pure (no database): `plan --format json` and `plan --out FILE` write `plan_document`; `apply
FILE` reads it back with `load` and runs it only while both fingerprints still hold (`check`);
`digest` is what Terraform's `external` data source sees. The format is documented, with its
JSON Schema, in docs/plans.md (a test validates real output against it); `FORMAT_VERSION`
changes whenever a field changes meaning or goes away (new optional fields do not change it).

Fingerprints (sha256 over canonical JSON: sorted keys, sets sorted):
- the declaration: what the plan is derived from on our side: the owner, admin, layout,
  privileges (roles, groups, members), and each migration file's checksum, with the schema
  lock's inputs. An edited privileges.toml, environments.toml or migration changes it.
- the catalog: everything the planner read from the live database (`Catalog`, less `access`,
  which only `inspect` reads). A grant, a role, a migration record or an object changed by
  someone else between `plan --out` and `apply FILE` changes it.
Neither holds a secret: the catalog holds names, owners and privileges; the app login's
password enters a plan only as a slot filled at run time (`Sql.secret`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provision.errors import ConfigError

if TYPE_CHECKING:
    from provision.actions import Action, Sql
    from provision.catalog import Catalog
    from provision.desired import DesiredState
    from provision.findings import Finding
    from provision.planner import Plan

FORMAT = "nucleus-provision-plan"
FORMAT_VERSION = 1


def canonical(value: Any) -> Any:
    """A JSON-able value whose text does not depend on hash order or the process: sets and
    frozensets sorted, dataclasses as dicts, enums by value, mapping keys as strings."""
    if isinstance(value, Enum):
        return value.value
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: canonical(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        items = [
            (k if isinstance(k, str) else json.dumps(canonical(k)), canonical(v))
            for k, v in value.items()
        ]
        return dict(sorted(items))
    if isinstance(value, (set, frozenset)):
        return sorted((canonical(v) for v in value), key=_text)
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Path):
        return value.name
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    # Anything else (a named tuple of diff's model is a tuple, so handled above).
    return str(value)


def _text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def sha256(value: Any) -> str:
    return hashlib.sha256(_text(canonical(value)).encode()).hexdigest()


def declaration_fingerprint(desired: DesiredState) -> str:
    lock = desired.expected
    return sha256(
        {
            "owner": desired.owner,
            "admin": desired.admin,
            "layout": desired.layout,
            "privileges": desired.privileges,
            "migrations": [(m.filename, m.checksum, m.transactional) for m in desired.migrations],
            "lock": None
            if lock is None
            else {"files": lock.files, "declaration": lock.declaration},
        }
    )


def catalog_fingerprint(catalog: Catalog) -> str:
    # `access` is read by `inspect` only: the planner never looks at it.
    return sha256({f.name: getattr(catalog, f.name) for f in fields(catalog) if f.name != "access"})


# -- the document -----------------------------------------------------------------------------


def display_sql(sql: Sql) -> str:
    """A statement as shown: bound values as literals, a secret slot as its description."""
    from pg8000.native import literal

    from provision.actions import APP_VERIFIER_SLOT

    shown = sql.text
    if sql.secret:
        return shown.replace(
            "{" + APP_VERIFIER_SLOT + "}",
            "<SCRAM-SHA-256 verifier of the password in users.app's secret: never shown>",
        )
    for name, value in sorted(sql.params.items(), key=lambda kv: -len(kv[0])):
        shown = shown.replace(f":{name}", literal(value))
    return shown


def action_dict(action: Action) -> dict[str, Any]:
    return {
        "kind": action.kind.value,
        "session": action.session.value,
        "phase": action.phase.name.lower(),
        "reason": action.reason,
        "transactional": action.transactional,
        "migration": action.migration.filename if action.migration else None,
        "known_after_apply": action.deferred,
        "sql": [display_sql(s) for s in action.all_statements],
    }


def plan_document(
    plan: Plan,
    manual: Sequence[Finding] = (),
    *,
    desired: DesiredState | None = None,
    catalog: Catalog | None = None,
    accept_changed: Sequence[str] = (),
) -> dict[str, Any]:
    """The JSON plan (docs/plans.md). With `desired` and `catalog`, its fingerprints: what
    `apply FILE` checks before it runs the saved actions."""
    document: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "changes": len(plan.actions),
        "manual": [
            {
                "code": f.code,
                "message": f.message,
                "details": list(f.details),
                "remedy": f.remedy,
            }
            for f in manual
        ],
        "route": {"name": plan.route.name.value, "reason": plan.route.reason}
        if plan.route
        else None,
        "pending_migrations": list(plan.pending),
        "accept_changed": list(accept_changed),
        "actions": [action_dict(a) for a in plan.actions],
        "digest": digest(plan),
    }
    if desired is not None and catalog is not None:
        document["fingerprints"] = {
            "declaration": declaration_fingerprint(desired),
            "catalog": catalog_fingerprint(catalog),
        }
    return document


def digest(plan: Plan) -> str:
    """sha256 over the plan's canonical actions (kind, session, SQL as shown): equal plans,
    equal digests; "" never. The empty plan has a digest too (of an empty list)."""
    return sha256(
        [
            {
                "kind": a.kind.value,
                "session": a.session.value,
                "deferred": a.deferred,
                "sql": [display_sql(x) for x in a.all_statements],
            }
            for a in plan.actions
        ]
    )


# -- saved plans ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SavedPlan:
    path: Path
    document: dict[str, Any]

    @property
    def accept_changed(self) -> tuple[str, ...]:
        return tuple(self.document.get("accept_changed", ()))

    @property
    def environment(self) -> str | None:
        value = self.document.get("environment")
        return value if isinstance(value, str) else None


def load(path: Path) -> SavedPlan:
    """A plan file written by `plan --out`; a clear error for anything else."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read the plan file {path}: {exc}",
            hint="give a file written by `nucleus-provision plan --out FILE`",
        ) from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ConfigError(
            f"{path} is not a nucleus-provision plan",
            hint="give a file written by `nucleus-provision plan --out FILE`",
        )
    if document.get("format_version") != FORMAT_VERSION:
        raise ConfigError(
            f"{path} is a plan of format version {document.get('format_version')!r}; this "
            f"version of nucleus-provision reads version {FORMAT_VERSION}",
            hint="run `plan --out FILE` again with this version",
        )
    prints = document.get("fingerprints")
    if not isinstance(prints, dict) or not {"declaration", "catalog"} <= set(prints):
        raise ConfigError(
            f"{path} has no fingerprints",
            hint="give a file written by `nucleus-provision plan --out FILE`",
        )
    return SavedPlan(path, document)


def stale(saved: SavedPlan, current: Mapping[str, Any]) -> list[str]:
    """Why a saved plan may not run against the state `current` (a fresh `plan_document` of
    the same target, made under apply's lock); empty when it may."""
    was, now = saved.document["fingerprints"], current["fingerprints"]
    reasons = []
    if was["declaration"] != now["declaration"]:
        reasons.append(
            "the declaration changed (environments.toml, privileges.toml, a migration file or "
            "schema.lock)"
        )
    if was["catalog"] != now["catalog"]:
        reasons.append("the live database changed (a role, grant, object or migration record)")
    if not reasons and saved.document["actions"] != current["actions"]:
        reasons.append("the plan's actions differ (another target or session?)")
    return reasons
