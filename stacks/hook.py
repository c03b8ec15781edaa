"""The post-provision hook: which command Terraform runs, where, and when it runs again.

After the instance, database and users exist, Terraform runs `nucleus-provision apply
--env NAME` from the repository root (a `terraform_data` resource with a `local-exec`
provisioner). The command reads the passwords itself from Secret Manager, so nothing
secret appears on its command line or in the synthesized Terraform.

The resource is replaced, and the command re-run, when the desired database state
changes: `desired_state_sha256` hashes the content of every `bootstrap_sql/*.sql` file, of
`src/provision/layout.py` (the desired layout) and of `src/provision/planner.py` (what the
desired state requires beyond the layout: grants, the version table's shape, hand-offs). The hash is computed at synth time, so `cdktf diff` shows
that the hook will run again before anyone deploys.
"""

from __future__ import annotations

import hashlib
import os
import shlex
from pathlib import Path

from provision.config import CONFIG_ENV_VAR, CONFIG_FILE_NAME
from provision.migrations import MIGRATIONS_ENV_VAR

# Files, relative to the repository root, whose content is the desired database state.
MIGRATIONS_DIR = "bootstrap_sql"
DESIRED_STATE_GLOBS: tuple[str, ...] = (
    f"{MIGRATIONS_DIR}/*.sql",
    "src/provision/layout.py",
    "src/provision/planner.py",
)

CLI_NAME = "nucleus-provision"


def hook_command(env_name: str) -> str:
    """The shell command Terraform runs after the database and its users exist."""
    return f"{CLI_NAME} apply --env {shlex.quote(env_name)}"


def hook_environment() -> dict[str, str]:
    """Variables set for the hook, as paths relative to its working directory (the
    repository root). local-exec inherits the operator's environment; pinning these keeps
    an operator's own $NUCLEUS_PROVISION_CONFIG or $NUCLEUS_BOOTSTRAP_SQL from pointing
    the hook at other files than the ones the stack was synthesized (and hashed) from."""
    return {CONFIG_ENV_VAR: CONFIG_FILE_NAME, MIGRATIONS_ENV_VAR: MIGRATIONS_DIR}


def hook_working_dir(repo_root: Path, stack_dir: Path) -> str:
    """The repository root as seen from the directory Terraform runs in for one stack
    (`cdktf.out/stacks/NAME` gives `../../..`). Relative, so that the synthesized JSON
    holds no path of the machine that synthesized it."""
    return Path(os.path.relpath(repo_root.resolve(), stack_dir.resolve())).as_posix()


def desired_state_files(repo_root: Path) -> list[Path]:
    """The files that define the desired state, sorted by their path relative to the root.

    A file that does not exist yet (layout.py before its issue lands) is simply absent."""
    found: set[Path] = set()
    for pattern in DESIRED_STATE_GLOBS:
        found.update(path for path in repo_root.glob(pattern) if path.is_file())
    return sorted(found, key=lambda path: path.relative_to(repo_root).as_posix())


def desired_state_sha256(repo_root: Path) -> str:
    """sha256 over (relative path, content digest) of every desired-state file.

    The path is part of the hash so that renaming a migration re-runs the hook too; the
    NUL and newline separators keep two different file lists from hashing alike."""
    digest = hashlib.sha256()
    for path in desired_state_files(repo_root):
        relative = path.relative_to(repo_root).as_posix()
        content = hashlib.sha256(path.read_bytes()).hexdigest()
        digest.update(f"{relative}\0{content}\n".encode())
    return digest.hexdigest()
