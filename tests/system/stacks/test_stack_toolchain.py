"""The real toolchain: `cdktf synth` from the pinned npm packages, on a supported Node.

These run subprocesses (the cdktf CLI, a second Python with the full Google bindings), so
they take seconds each, and are marked slow.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from stack_support import EOL_MARKERS, NODE_BIN, REAL_STACKS, REPO_ROOT, toolchain_env


def _without_hook_dir(stack: dict[str, Any]) -> dict[str, Any]:
    """A stack with the hook's working_dir (and its digest program's) blanked: it is relative
    to the output directory, which differs between two synths into two directories, by design."""
    stack = json.loads(json.dumps(stack))
    stack["resource"]["terraform_data"]["post_provision"]["provisioner"][0]["local-exec"][
        "working_dir"
    ] = ""
    stack["data"]["external"]["live_plan"]["working_dir"] = ""
    return stack


def _assert_no_eol_banner(output: str) -> None:
    for marker in EOL_MARKERS:
        assert marker not in output, f"{marker!r} in output:\n{output}"
    assert "DeprecationWarning" not in output, output


@pytest.mark.slow
def test_cdktf_synth_cli_writes_every_stack_on_a_supported_node_without_eol_banner(
    tmp_path: Path, stacks: dict[str, Any]
) -> None:
    outdir = tmp_path / "cdktf.out"
    # No timed assertion (the project's rule): how long synth takes is measured in
    # docs/benchmarks.md ("cdktf synth"); the timeout only guards against a hang.
    result = subprocess.run(
        [str(NODE_BIN / "cdktf"), "synth", "--output", str(outdir)],
        cwd=REPO_ROOT,
        env=toolchain_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Generated Terraform code for the stacks: prod, staging" in output
    _assert_no_eol_banner(output)
    assert sorted(path.name for path in (outdir / "stacks").iterdir()) == sorted(REAL_STACKS)
    for name in REAL_STACKS:
        written = json.loads((outdir / "stacks" / name / "cdk.tf.json").read_text())
        # What the CLI writes is exactly what the other tests checked.
        assert _without_hook_dir(written) == _without_hook_dir(stacks[name]), name


@pytest.mark.slow
def test_loading_only_the_used_bindings_synthesizes_the_same_json_as_the_full_import(
    tmp_path: Path, synth_dir: Path
) -> None:
    # A fresh interpreter that imports the whole Google package first, the ordinary way;
    # stacks.bindings then leaves it alone.
    script = textwrap.dedent(
        f"""
        import sys
        sys.path[:0] = [{str(REPO_ROOT)!r}, {str(REPO_ROOT / "src")!r}]
        import cdktf_cdktf_provider_google
        import stacks.bindings
        assert stacks.bindings.register_google_package_without_init() is False
        from main import build_app
        from provision.config import load_environments
        envs = load_environments({str(REPO_ROOT / "environments.toml")!r})
        build_app(envs.values(), outdir={str(tmp_path)!r}).synth()
        print(len([m for m in sys.modules if m.startswith("cdktf_cdktf_provider_google.")]))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env=toolchain_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert int(result.stdout.split()[-1]) > 1000  # really the full import
    for name in REAL_STACKS:
        full = json.loads((tmp_path / "stacks" / name / "cdk.tf.json").read_text())
        lean = json.loads((synth_dir / "stacks" / name / "cdk.tf.json").read_text())
        assert _without_hook_dir(full) == _without_hook_dir(lean), name


def test_the_session_synth_loaded_only_the_bindings_the_stack_uses(synth_dir: Path) -> None:
    loaded = [name for name in sys.modules if name.startswith("cdktf_cdktf_provider_google.")]
    assert "cdktf_cdktf_provider_google.sql_database_instance" in loaded
    assert len(loaded) < 50, len(loaded)


def test_jsii_runs_on_the_pinned_node_even_when_an_older_node_comes_first_on_path(
    tmp_path: Path,
) -> None:
    # conftest.py pins JSII_NODE; a bare `node` on PATH (the system's Node 20) must not be
    # what runs the jsii kernel.
    env = toolchain_env()
    env["PATH"] = f"/usr/bin{':'}{env['PATH']}"
    result = subprocess.run(
        [sys.executable, "-c", "import cdktf"],
        env={**env, "JSII_NODE": str(NODE_BIN / "node")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    _assert_no_eol_banner(result.stdout + result.stderr)
