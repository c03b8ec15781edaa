"""The cdktf app: one Terraform stack per deployable environment of environments.toml.

`npx cdktf synth` runs this file (see cdktf.json) and writes
`cdktf.out/stacks/<env>/cdk.tf.json` for every environment that is not the local
emulation (today: prod and staging). Tests call `build_app` with their own output
directory instead.

The configuration is always the repository's own environments.toml, never
$NUCLEUS_PROVISION_CONFIG: what gets deployed must not depend on the shell of whoever
runs the synth. The post-provision hook pins the same file for the same reason.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent
# The CLI package lives under src/ (an editable install puts it on sys.path already);
# adding it here keeps `python main.py` working from a bare checkout too.
if str(REPO_ROOT / "src") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "src"))

from cdktf import App  # noqa: E402

from provision.config import CONFIG_FILE_NAME, Environment, load_environments  # noqa: E402
from stacks import hook  # noqa: E402
from stacks.checks import check_deployable, deployable  # noqa: E402


def build_app(
    environments: Iterable[Environment],
    outdir: str | Path | None = None,
    *,
    repo_root: Path = REPO_ROOT,
) -> App:
    """Build (not synthesize) the app: one `NucleusDatabaseStack` per deployable environment.

    Raises ConfigError, before loading any provider binding, when an environment cannot
    be deployed as configured.
    """
    environments = list(environments)
    check_deployable(environments)
    # Imported here, after the checks: loading the Google bindings takes about 10 s, and a
    # configuration error should not wait for it.
    from stacks.database import NucleusDatabaseStack

    app = App(outdir=str(outdir)) if outdir is not None else App()
    for env in deployable(environments):
        # cdktf writes each stack to <outdir>/stacks/<name>, and Terraform runs there.
        stack_dir = Path(app.outdir) / "stacks" / env.name
        NucleusDatabaseStack(
            app,
            env,
            desired_state_sha256=hook.desired_state_sha256(env, repo_root),
            hook_working_dir=hook.hook_working_dir(repo_root, stack_dir),
        )
    return app


def append_hcl_blocks(app: App) -> None:
    """After an HCL synth (`cdktf synth --hcl`, the scanner gate), append each stack's raw
    blocks (the `ephemeral` passwords and `required_version`), which cdktf's HCL renderer
    cannot write (`NucleusDatabaseStack.hcl_blocks`). Nothing to do for the JSON synth."""
    from stacks.database import HCL_MODE_VARIABLE, NucleusDatabaseStack

    if os.environ.get(HCL_MODE_VARIABLE, "").lower() not in ("1", "true"):
        return
    for stack in app.node.children:
        if isinstance(stack, NucleusDatabaseStack):
            path = Path(app.outdir) / "stacks" / stack.env.name / "cdk.tf"
            with path.open("a") as out:
                out.write("\n" + stack.hcl_blocks())


def main() -> None:
    app = build_app(load_environments(REPO_ROOT / CONFIG_FILE_NAME).values())
    app.synth()
    append_hcl_blocks(app)


if __name__ == "__main__":
    main()
