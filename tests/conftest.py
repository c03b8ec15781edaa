"""Settings every test shares: the unit tests (tests/unit: pure, no server, no subprocess) and
the system tests (tests/system: the emulation, the real CLI, the Connector, cdktf synth)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

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


# `make test` runs the system tests on one pytest-xdist worker per core (`-n auto --dist
# loadfile`, see the Makefile). Each worker gets whole files, so a module's fixtures (its own
# emulation, its templates) are built once; the stack tests all go to one worker, because they
# share session fixtures that cost tens of seconds each (one cdktf synthesis, the scanner
# gates). Every worker has its own emulations: ports, state and temporary directories are per
# worker (free ports, tmp_path_factory), so nothing else needs to be told apart.
_ONE_WORKER_DIRS = {"tests/system/stacks/": "tests/system/stacks/"}
# The groups that took longest (`pytest --durations`, 2026-12-08) are handed out first, so that
# no long file starts when the other worker has nothing left; the rest in collection order.
_LONGEST_FIRST = (
    "tests/system/stacks/",
    "tests/system/test_move_safety.py",
    "tests/system/test_move.py",
    "tests/system/test_retire.py",
    "tests/system/engine/test_drift.py",
    "tests/system/test_readme.py",
    "tests/system/engine/test_hostile_migrations.py",
    "tests/system/test_diff.py",
    "tests/system/engine/test_apply.py",
    "tests/system/connector/test_rotate.py",
    "tests/system/engine/test_privileges.py",
    "tests/system/test_local_cli.py",
    "tests/system/engine/test_declared_access.py",
    "tests/system/test_move_control.py",
)


def _group(nodeid: str) -> str:
    """The unit of work of a test for xdist: its file, or the directory that goes whole."""
    path = nodeid.split("::", 1)[0]
    return next(
        (name for prefix, name in _ONE_WORKER_DIRS.items() if path.startswith(prefix)), path
    )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if hasattr(config, "workerinput"):  # an xdist worker: the scheduler takes this order
        rank = {name: n for n, name in enumerate(_LONGEST_FIRST)}
        # Stable: the tests of one group keep their order and stay together.
        items.sort(key=lambda item: rank.get(_group(item.nodeid), len(rank)))


# optionalhook: `pytest -p no:xdist` (one process) still loads this conftest.
@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadfile`, with the directories of _ONE_WORKER_DIRS as one unit each. (xdist's
    own `loadgroup` marks do not group under pytest 9: it renames `item._nodeid`, which pytest
    9 no longer reads.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class _Scheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _group(nodeid)

    return _Scheduling(config, log)
