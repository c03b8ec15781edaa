"""Shared helpers of the stack tests (the fixtures are in conftest.py).

Constants naming the variant environments, the subprocess environment for the Node
toolchain, and small accessors for synthesized cdk.tf.json documents.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from provision.config import Environment

REPO_ROOT = Path(__file__).resolve().parents[3]
NODE_BIN = REPO_ROOT / "node_modules" / ".bin"

REAL_STACKS = ("prod", "staging")
PRIVATE_VARIANT = "private-variant"
PUBLIC_VARIANT = "public-variant"

PROD_READER = "serviceAccount:nucleus-api@nucleus-prod.iam.gserviceaccount.com"
ADMIN_ONLY_READER = "group:nucleus-dba@example.com"
IAM_USERS = (
    "nucleus-api@nucleus-variant.iam.gserviceaccount.com",
    "nucleus-jobs@nucleus-variant.iam.gserviceaccount.com",
)
AUTHORIZED_NETWORK = "203.0.113.0/24"
PRIVATE_NETWORK = "projects/nucleus-variant/global/networks/nucleus"

# What jsii and the cdktf CLI print when they run on an end-of-life or deprecated Node.
EOL_MARKERS = ("end-of-life", "EOL", "not supported anymore", "upgrade to a supported node")


def toolchain_env() -> dict[str, str]:
    """The environment for a subprocess that runs cdktf or jsii: Node 22 first on PATH,
    no HashiCorp checkpoint call (there is no network here)."""
    env = dict(os.environ)
    env["PATH"] = f"{NODE_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["CHECKPOINT_DISABLE"] = "1"
    return env


def variants(prod: Environment) -> list[Environment]:
    """Prod with the optional features switched on, validated like environments.toml."""
    base = prod.model_dump(exclude={"name"})
    base.update(project="nucleus-variant", import_existing=False)
    private = {
        **base,
        "instance": "nucleus-private-db",
        "state_prefix": "nucleus/private-variant",
        "ip_type": "private",
        "private_network": PRIVATE_NETWORK,
        "iam_users": IAM_USERS,
        # One of each kind; one service account is also an iam_users entry (one user for it).
        "iam_members": {
            f"serviceAccount:{IAM_USERS[0]}": "nucleus_readwrite",
            "serviceAccount:nucleus-worker@nucleus-variant.iam.gserviceaccount.com": (
                "nucleus_readwrite"
            ),
            "group:nucleus-analysts@example.com": "nucleus_readonly",
            "user:alice@example.com": "nucleus_readonly",
        },
        "secret_accessors": (PROD_READER,),
        "database_flags": ({"name": "log_min_duration_statement", "value": "1000"},),
        # Longer than the stack's 32-character passwords: they must grow to match.
        "password_validation_policy": {**base["password_validation_policy"], "min_length": 40},
        "users": {
            "admin": {**base["users"]["admin"], "secret_accessors": (ADMIN_ONLY_READER,)},
            "owner": base["users"]["owner"],
        },
    }
    public = {
        **base,
        "instance": "nucleus-public-db",
        "state_prefix": "nucleus/public-variant",
        "authorized_networks": (AUTHORIZED_NETWORK,),
        "iam_auth": False,
        "query_insights": False,
        "password_validation_policy": {"enabled": False},
        "pgaudit": {"enabled": False},
    }
    return [
        Environment(name=PRIVATE_VARIANT, **private),
        Environment(name=PUBLIC_VARIANT, **public),
    ]


def resources(stack: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """The resources of one type, by Terraform name, without cdktf's "//" metadata."""
    return {
        name: {key: value for key, value in body.items() if key != "//"}
        for name, body in stack.get("resource", {}).get(kind, {}).items()
    }


def only(stack: dict[str, Any], kind: str) -> dict[str, Any]:
    """The single resource of a type; fails when there is not exactly one."""
    found = resources(stack, kind)
    assert len(found) == 1, f"expected one {kind}, found {sorted(found)}"
    return next(iter(found.values()))


def strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(path, string) for every string in a JSON value, keys included in the path."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield from strings(child, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from strings(child, f"{path}[{index}]")
    elif isinstance(value, str):
        yield path, value
