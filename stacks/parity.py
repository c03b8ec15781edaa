"""Staging reproduces prod: the reviewed list of allowed differences, and the comparison.

Staging is only worth having if it is built like prod. Both stacks come from the same
code, so they can only drift through configuration; this module makes any such drift
visible. `compare` walks two synthesized stacks (the parsed cdk.tf.json) field by field
and sorts every difference into allowed (listed in ALLOWED_DIFFERENCES, with the reason
it was accepted) or unexpected. The test suite fails on any unexpected difference, and
on any difference in resource types, counts or names.

A difference is identified by (block, field path):
- for resources, the block is the resource type and the path is the field inside one
  resource (`settings.tier`), so that an entry covers every resource of that type;
- for the other top-level sections the block is the section (`provider`, `terraform`,
  `import`, `output`) and the path starts below it (`backend.gcs.prefix`);
- a path of "" allows the whole block to differ (only `import`, whose content is
  checked exactly by its own test);
- an entry also covers everything below it (`random_password.admin_password` covers its
  `length`), and `[*]` stands for any list index (`depends_on[*]`).

Resources that may exist in one stack only are listed apart (ALLOWED_ONLY_IN_ONE), each with
its reason; any other missing or extra resource fails.

cdktf's "//" metadata (construct paths, which contain the stack name) is not Terraform
configuration and is ignored.

Adding an entry here is a design decision about what staging may leave untested; it
should be reviewed like one.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

ALLOWED_DIFFERENCES: Mapping[tuple[str, str], str] = {
    ("provider", "google[0].project"): "each environment lives in its own Google Cloud project",
    ("terraform", "backend.gcs.prefix"): "each stack keeps its own Terraform state",
    ("google_sql_database_instance", "name"): "each environment has its own instance",
    ("google_sql_database_instance", "settings.tier"): "staging runs on a smaller machine",
    ("google_sql_database_instance", "settings.availability_type"): (
        "prod is REGIONAL (high availability); staging is ZONAL to halve its cost"
    ),
    ("google_sql_database_instance", "deletion_protection"): (
        "staging may be destroyed and rebuilt; prod may not"
    ),
    ("google_sql_database_instance", "settings.deletion_protection_enabled"): (
        "staging may be destroyed and rebuilt; prod may not"
    ),
    # Connection hardening: staging runs the target posture first; prod keeps settings that
    # lock out no live client until the README's client inventory has been done for it.
    ("google_sql_database_instance", "settings.connector_enforcement"): (
        "staging refuses direct connections (REQUIRED); prod may still have direct clients, "
        "so it stays NOT_REQUIRED until the client inventory says otherwise"
    ),
    ("google_sql_database_instance", "settings.ip_configuration.ssl_mode"): (
        "staging requires Connector client certificates; prod stays ENCRYPTED_ONLY so that "
        "direct TLS clients with a password keep working until the client inventory"
    ),
    ("google_sql_database_instance", "settings.ip_configuration.server_ca_mode"): (
        "staging rehearses Google's CA Service (the server certificate names the instance by "
        "DNS); prod keeps its per-instance CA, which direct clients may have pinned"
    ),
    ("google_secret_manager_secret", "secret_id"): "secret ids carry the instance name",
    ("google_secret_manager_secret", "deletion_protection"): (
        "follows the environment's deletion_protection"
    ),
    ("terraform_data", "provisioner[0].local-exec.command"): "`--env` names the environment",
    ("import", ""): "prod adopts the existing instance, database and users (import_existing)",
    # Adopted users keep their passwords (README, "First deploy of prod"): prod's postgres and
    # nucleus get no password argument, no first secret version, no ephemeral password.
    ("google_sql_user", "password_wo"): "a user the stack creates gets a first password; an "
    "adopted one (prod) keeps its own",
    ("google_sql_user", "password_wo_version"): "a user the stack creates gets a first "
    "password; an adopted one (prod) keeps its own",
    ("ephemeral", "random_password.admin_password"): "the first password of a created postgres",
    ("ephemeral", "random_password.owner_password"): "the first password of a created nucleus",
    ("terraform_data", "depends_on[*]"): "the hook waits for the first secret versions the "
    "stack writes, which adopted users do not have",
    ("data", "external.live_plan.query.env"): "the live plan's digest is the environment's",
    ("data", "external.live_plan.depends_on[*]"): "the digest is read after what the hook "
    "needs, which includes the first secret versions adopted users do not have",
}

# (resource type, name) -> why it may exist in only one of the two stacks.
ALLOWED_ONLY_IN_ONE: Mapping[tuple[str, str], str] = {
    ("google_secret_manager_secret_version", "admin_secret_version"): (
        "the first version of a created postgres' secret; prod's adopted postgres keeps its "
        "password, and its secret starts empty"
    ),
    ("google_secret_manager_secret_version", "owner_secret_version"): (
        "the first version of a created nucleus' secret; prod's adopted nucleus keeps its "
        "password, and its secret starts empty"
    ),
}

METADATA_KEY = "//"


@dataclass(frozen=True)
class Difference:
    """One field that differs between the reference (prod) and the candidate (staging)."""

    block: str
    resource: str
    path: str
    reference: Any
    candidate: Any

    @property
    def allowed(self) -> bool:
        covering: set[str] = set()
        for path in (self.path, re.sub(r"\[\d+\]", "[*]", self.path)):
            parts = path.split(".")
            covering |= {".".join(parts[:n]) for n in range(len(parts) + 1)}
        return any((self.block, entry) in ALLOWED_DIFFERENCES for entry in covering)

    def __str__(self) -> str:
        where = f"{self.block}.{self.resource}" if self.resource else self.block
        return f"{where}: {self.path or '(block)'}: {self.reference!r} != {self.candidate!r}"


@dataclass(frozen=True)
class ParityReport:
    """The outcome of comparing two stacks."""

    structure: list[str]
    differences: list[Difference]

    @property
    def unexpected(self) -> list[Difference]:
        return [difference for difference in self.differences if not difference.allowed]

    @property
    def ok(self) -> bool:
        return not self.structure and not self.unexpected

    def describe(self) -> str:
        lines = [*self.structure, *(str(difference) for difference in self.unexpected)]
        return "\n".join(lines) or "no unexpected difference"


class _Absent:
    """Stands for a field or block that one of the two stacks does not have."""

    def __repr__(self) -> str:
        return "<absent>"


_MISSING = _Absent()


def _leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, value) for every scalar in a JSON value; empty containers count as leaves."""
    if isinstance(value, dict) and value:
        for key, child in value.items():
            if key != METADATA_KEY:
                yield from _leaves(child, f"{path}.{key}" if path else key)
    elif isinstance(value, list) and value:
        for index, child in enumerate(value):
            yield from _leaves(child, f"{path}[{index}]")
    else:
        yield path, value


def _diff(block: str, resource: str, reference: Any, candidate: Any) -> list[Difference]:
    left, right = dict(_leaves(reference)), dict(_leaves(candidate))
    return [
        Difference(block, resource, path, left.get(path, _MISSING), right.get(path, _MISSING))
        for path in sorted(left.keys() | right.keys())
        if left.get(path, _MISSING) != right.get(path, _MISSING)
    ]


def resource_counts(stack: Mapping[str, Any]) -> Counter[str]:
    """How many resources of each type a synthesized stack declares, not counting those that
    may exist in one stack only (ALLOWED_ONLY_IN_ONE)."""
    return Counter(
        {
            kind: count
            for kind, named in stack.get("resource", {}).items()
            if (count := sum((kind, name) not in ALLOWED_ONLY_IN_ONE for name in named))
        }
    )


def compare(reference: Mapping[str, Any], candidate: Mapping[str, Any]) -> ParityReport:
    """Compare two synthesized stacks (prod as the reference, staging as the candidate)."""
    structure: list[str] = []
    if resource_counts(reference) != resource_counts(candidate):
        structure.append(
            f"resource types or counts differ: {dict(sorted(resource_counts(reference).items()))} "
            f"!= {dict(sorted(resource_counts(candidate).items()))}"
        )
    differences: list[Difference] = []
    reference_resources = reference.get("resource", {})
    candidate_resources = candidate.get("resource", {})
    for kind in sorted(reference_resources.keys() | candidate_resources.keys()):
        left, right = reference_resources.get(kind, {}), candidate_resources.get(kind, {})
        for name in sorted(left.keys() ^ right.keys()):
            if (kind, name) in ALLOWED_ONLY_IN_ONE:
                continue
            side = "reference" if name in left else "candidate"
            structure.append(f"{kind}.{name} exists only in the {side}")
        for name in sorted(left.keys() & right.keys()):
            differences += _diff(kind, name, left[name], right[name])
    for section in sorted((reference.keys() | candidate.keys()) - {"resource", METADATA_KEY}):
        differences += _diff(
            section, "", reference.get(section, _MISSING), candidate.get(section, _MISSING)
        )
    return ParityReport(structure=structure, differences=differences)
