"""Fixtures for the stack tests: one synthesis per test session, parsed once.

Loading the Google provider bindings dominates the cost of a synth, so the whole session
shares one app: the real prod and staging environments from environments.toml, plus two
variants of prod that switch on what the real file leaves off (private IP, IAM users,
secret readers, authorized networks, extra flags). Tests read the synthesized
cdk.tf.json files, exactly what `cdktf deploy` would hand to Terraform.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]

# main.py and the stacks package live at the repository root, outside src/.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# jsii starts `node` from PATH unless JSII_NODE says otherwise. The system Node may be
# end-of-life (it prints a banner on every run); the project pins Node 22 in
# node_modules. Set before anything imports cdktf, so the kernel starts on the right one.
os.environ["JSII_NODE"] = str(REPO_ROOT / "node_modules" / ".bin" / "node")

from stack_support import variants  # noqa: E402

from provision.config import Environment, load_environments  # noqa: E402


@pytest.fixture(scope="session")
def environments() -> dict[str, Environment]:
    """Every environment of the real environments.toml, plus the two variants."""
    real = load_environments(REPO_ROOT / "environments.toml")
    return {**real, **{env.name: env for env in variants(real["prod"])}}


@pytest.fixture(scope="session")
def synth_dir(
    environments: dict[str, Environment], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Synthesize every stack once for the whole session; return the output directory."""
    from main import build_app

    outdir = tmp_path_factory.mktemp("cdktf.out")
    build_app(environments.values(), outdir=outdir).synth()
    return outdir


@pytest.fixture(scope="session")
def stack_text(synth_dir: Path) -> dict[str, str]:
    """The raw cdk.tf.json of each synthesized stack, by stack name."""
    return {
        path.parent.name: path.read_text()
        for path in sorted(synth_dir.glob("stacks/*/cdk.tf.json"))
    }


@pytest.fixture(scope="session")
def stacks(stack_text: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The parsed cdk.tf.json of each synthesized stack, by stack name."""
    return {name: json.loads(text) for name, text in stack_text.items()}


@pytest.fixture(scope="session")
def prod(stacks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return stacks["prod"]


@pytest.fixture(scope="session")
def staging(stacks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return stacks["staging"]
