"""Settings every test shares: the unit tests (tests/unit: pure, no server, no subprocess) and
the system tests (tests/system: the emulation, the real CLI, the Connector, cdktf synth)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Never let anything under test reach Google's metadata server or a user's gcloud setup.
os.environ.setdefault("GCE_METADATA_HOST", "127.0.0.1:9")
# The repository's environments.toml, whatever the working directory.
os.environ["NUCLEUS_PROVISION_CONFIG"] = str(ROOT / "environments.toml")

# This workplace sets PYTHONDONTWRITEBYTECODE=1, so each of the hundreds of CLI subprocesses of
# the system tests would compile our modules from source again (about 60 ms a process, see
# docs/benchmarks.md). Their bytecode goes to a cache outside the tree instead, as an
# installed wheel has it; Python checks each cached file against its source, so it is never
# stale, and the path mirrors the source's, so worktrees do not share entries.
if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
    os.environ.setdefault(
        "PYTHONPYCACHEPREFIX",
        str(Path(tempfile.gettempdir()) / f"nucleus-provision-pycache-{os.getuid()}"),
    )


# `make test` runs the suite on one pytest-xdist worker per core (`-n auto --dist loadgroup`,
# see the Makefile). Each worker gets whole files, so a module's fixtures (its own emulation,
# its templates) are built once; the stack tests all go to one worker, because they share
# session fixtures that cost tens of seconds each (one cdktf synthesis, the scanner gates).
# Every worker has its own emulations: ports, state and temporary directories are per worker
# (free ports, tmp_path_factory), so nothing else needs to be told apart.
_ONE_WORKER_DIRS = {"tests/system/stacks/": "stacks"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        group = next(
            (name for prefix, name in _ONE_WORKER_DIRS.items() if path.startswith(prefix)), path
        )
        item.add_marker(pytest.mark.xdist_group(group))
