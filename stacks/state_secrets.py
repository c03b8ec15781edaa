"""The check that no synthesized stack can carry a secret into Terraform's state or a plan.

Terraform stores every argument and every computed attribute of a resource or data source in
its state, in plain text, and a saved plan holds the same. A secret stays out of both only
when it lives in an *ephemeral* block (never stored) and reaches resources through
*write-only* arguments (`*_wo`, Terraform 1.11+, never stored). So a stack fails this check
when it has (each rule is a denylist; a new kind of carrier is added here):

- a resource or data source of a type whose state holds a secret it generates or reads
  (`random_password`, `tls_private_key`, a Secret Manager version read as data, ...), and
  any `random_*` resource: `random_id`, `random_bytes` or `random_uuid` make as good a
  password as `random_password`, and the stacks use randomness only as ephemeral blocks;
- an input variable marked `sensitive` that is not `ephemeral`: its value is saved in every
  plan file, and in the state of any resource it reaches;
- a resource argument that is known to carry a secret (`password`, `secret_data`,
  `root_password`, `private_key`, ...), whatever its value: even a variable or a reference
  lands in the state;
- a reference to such a type or attribute anywhere (an output, a trigger, a provisioner's
  environment);
- a reference to an ephemeral value anywhere but in a write-only argument, or an output
  marked sensitive (a sensitive output is still in the state).

`secret_carriers(stack)` is pure: it takes the parsed cdk.tf.json and names every problem,
so that it is tested on hand-made documents (tests/unit) and run on every synthesized stack
(tests/system/stacks), both in `make test`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

# Resource types whose state holds a generated or read secret.
SECRET_RESOURCE_TYPES = frozenset(
    {
        "random_password",
        "random_string",  # as secret-like as random_password, and its result is stored
        "tls_private_key",
        "google_service_account_key",
        "google_sql_ssl_cert",
        "google_secret_manager_secret_version_access",
        "google_apikeys_key",
    }
)
# Data sources whose state holds what they read.
SECRET_DATA_TYPES = frozenset(
    {
        "google_secret_manager_secret_version",
        "google_secret_manager_secret_version_access",
        "google_service_account_access_token",
        "google_service_account_id_token",
        "google_service_account_key",
        "google_sql_ca_certs",
        "google_client_config",  # its access_token
    }
)
# Argument names that carry a secret value into the state (any resource type).
SECRET_ARGUMENTS = frozenset(
    {
        "password",
        "root_password",
        "secret_data",
        "private_key",
        "private_key_pem",
        "client_key",
        "access_token",
        "credentials",
        "sensitive_labels",
        "payload",
    }
)
_WRITE_ONLY = re.compile(r"_wo$")
# Every resource of the random provider stores its result in the state.
_RANDOM_PREFIX = "random_"


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _strings(child, f"{path}.{key}")
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _strings(child, f"{path}[{index}]")
    elif isinstance(value, str):
        yield path, value


def _keys(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """(path, key) for every key of every object below `value`."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield f"{path}.{key}", key
            yield from _keys(child, f"{path}.{key}")
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _keys(child, f"{path}[{index}]")


def _denied_reference(text: str) -> str | None:
    for kind in sorted(SECRET_RESOURCE_TYPES):
        if re.search(rf"(?<![\w.]){re.escape(kind)}\.", text):
            return kind
    for kind in sorted(SECRET_DATA_TYPES):
        if f"data.{kind}." in text:
            return f"data.{kind}"
    for attribute in sorted(SECRET_ARGUMENTS):
        if re.search(rf"\.{attribute}(?![\w])", text):
            return f".{attribute}"
    return None


def secret_carriers(stack: dict[str, Any]) -> list[str]:
    """Every way the synthesized `stack` could put a secret into Terraform's state or a plan,
    one sentence each (naming the path, never a value); empty when there is none."""
    problems: list[str] = []
    for kind, blocks in stack.get("resource", {}).items():
        if kind in SECRET_RESOURCE_TYPES or kind.startswith(_RANDOM_PREFIX):
            problems += [f"resource.{kind}.{name}: its state holds a secret" for name in blocks]
    for kind, blocks in stack.get("data", {}).items():
        if kind in SECRET_DATA_TYPES:
            problems += [f"data.{kind}.{name}: its state holds what it reads" for name in blocks]
    for block in ("resource", "data"):
        for path, key in _keys(stack.get(block, {}), block):
            if key in SECRET_ARGUMENTS:
                problems.append(f"{path}: argument {key!r} is stored in the state")
    for name, variable in stack.get("variable", {}).items():
        if (
            isinstance(variable, dict)
            and variable.get("sensitive")
            and not variable.get("ephemeral")
        ):
            problems.append(
                f"variable.{name}: sensitive but not ephemeral (its value is saved in plan files)"
            )
    for name, output in stack.get("output", {}).items():
        if isinstance(output, dict) and output.get("sensitive"):
            problems.append(f"output.{name}: marked sensitive (outputs are stored in the state)")
    for path, text in _strings(stack, ""):
        path = path.lstrip(".")
        if path.startswith("ephemeral."):
            continue  # the ephemeral blocks themselves are never stored
        argument = path.rsplit(".", 1)[-1]
        denied = _denied_reference(text) if "${" in text else None
        if denied is not None:
            problems.append(f"{path}: refers to {denied}, which carries a secret")
        ephemeral = "${" in text and "ephemeral." in text
        if ephemeral and not _WRITE_ONLY.search(argument):
            problems.append(f"{path}: an ephemeral value outside a write-only (*_wo) argument")
        if _WRITE_ONLY.search(argument) and not ephemeral:
            # Not stored, but a literal (or a stored value) is a secret in the code itself.
            problems.append(f"{path}: a write-only argument must take an ephemeral value")
    return sorted(set(problems))
