"""The post-provision hook: which command Terraform runs, where, and when it runs again.

After the instance, database and users exist, Terraform runs `nucleus-provision apply
--env NAME` from the repository root (a `terraform_data` resource with a `local-exec`
provisioner). The command reads the passwords itself from Secret Manager, so nothing
secret appears on its command line or in the synthesized Terraform.

The resource is replaced, and the command re-run, when the live database drifted: an
`external` data source (hashicorp/external) runs `nucleus-provision digest` (`digest_program`),
whose `digest` (sha256 of the live pending plan) is one of the triggers, so a hand-made GRANT or
a dropped index shows in `cdktf diff` as the hook to re-run, and `cdktf deploy` repairs it. The
data source depends on what the hook depends on: before the instance exists its read waits
for the apply (Terraform defers it), so a first plan needs no database. The trigger stores the
digest read before the hook ran; after a repair (and after the first deploy) the next deploy
sees the converged digest, differs once, and re-runs the hook once: a no-op apply that confirms
the repair held; from then on the digest is stable.

It is also replaced, and the command re-run, when the desired database state
changes: `desired_state_sha256` is `provision.desired.DesiredState.fingerprint()` of the
environment with the migration files of `bootstrap_sql/` (roles, layout, version table,
each file's name and checksum). It is computed at synth time, so `cdktf diff` shows that the
hook will run again before anyone deploys; editing Python that does not change the declared
state does not re-run it.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from provision.config import CONFIG_ENV_VAR, CONFIG_FILE_NAME, Environment
from provision.desired import desired_state
from provision.lockfile import LOCK_NAME
from provision.lockfile import load as load_lock
from provision.migrations import MIGRATIONS_ENV_VAR, load_migrations

# The migrations directory, relative to the repository root.
MIGRATIONS_DIR = "bootstrap_sql"

CLI_NAME = "nucleus-provision"


def hook_command(env_name: str) -> str:
    """The shell command Terraform runs after the database and its users exist. Terraform
    runs it without a terminal: `--auto-approve`, or apply refuses (the plan it runs is the
    one `cdktf diff` announced through the digest below, re-planned under apply's lock)."""
    return f"{CLI_NAME} apply --env {shlex.quote(env_name)} --auto-approve"


def digest_program(env_name: str) -> list[str]:
    """The `external` data source's program: the live pending plan's digest (`nucleus-provision
    digest`). The files it reads are named on its command line (the data source sets no
    environment variables), the same ones `hook_environment` pins for the hook."""
    del env_name  # the environment travels in the query, as the external protocol intends
    return [CLI_NAME, "--config", CONFIG_FILE_NAME, "digest", "--migrations", MIGRATIONS_DIR]


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


def desired_state_sha256(environment: Environment, repo_root: Path) -> str:
    """The fingerprint of the environment's desired state with the repository's migrations."""
    directory = repo_root / MIGRATIONS_DIR
    # With the lock: its schemas and tables are the layout (without it, the files' CREATE
    # SCHEMA statements would be parsed at every synth).
    lock = load_lock(directory / LOCK_NAME)
    return desired_state(environment, load_migrations(directory), expected=lock).fingerprint()
