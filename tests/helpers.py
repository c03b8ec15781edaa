"""Running the real CLI in a subprocess, as users and CI do."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

# The app login's password in the system tests (NUCLEUS_APP_PASSWORD, set by their conftest).
APP_PASSWORD = "test-app-password-Xq7!"


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def json(self):
        return json.loads(self.out)


def cli(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> Run:
    proc = subprocess.run(
        [sys.executable, "-m", "provision", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "provision", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def assert_clean_error(
    run: Run, *fragments: str, secrets: tuple[str, ...] = (), code: int = 1
) -> None:
    """One clear error line (plus an optional hint), exit `code` (1, or 3 when only a person
    can fix it: provision.exitcodes), no traceback, and none of `secrets`."""
    assert run.code == code, (run.code, run.out, run.err)
    for secret in secrets:
        assert secret not in run.out + run.err
    assert "Traceback" not in run.err and "Traceback" not in run.out
    # Progress on stderr ("waiting: ...", lock retries) may come first; then the one error line.
    lines = [line for line in run.err.strip().splitlines() if not line.startswith("waiting: ")]
    first = lines[0] if lines else ""
    assert first.startswith("error: "), run.err
    for fragment in fragments:
        assert fragment in run.err, (fragment, run.err)


def config_replacing(tmp_path, old: str, new: str):
    """A copy of environments.toml (and its privileges file) with one text replaced."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    source = (root / "environments.toml").read_text()
    assert old in source, old
    path = tmp_path / "environments.toml"
    path.write_text(source.replace(old, new))
    (tmp_path / "privileges.toml").write_text((root / "privileges.toml").read_text())
    return str(path)


def config_with_owner(tmp_path, owner: str):
    """A copy of environments.toml whose environments declare another owner role."""
    marker = '[environments.prod.users.owner]\nname = "nucleus"'
    return config_replacing(tmp_path, marker, f'[environments.prod.users.owner]\nname = "{owner}"')


def _repository_migrations():
    from pathlib import Path

    from provision.migrations import load_migrations

    return load_migrations(Path(__file__).resolve().parents[1] / "bootstrap_sql")


# The repository's migrations, so that adding bootstrap_sql/003_*.sql breaks no test: tests
# derive expected versions from these. Fixture migrations a test adds use versions 900+.
MIGRATIONS = _repository_migrations()
VERSIONS = [m.version for m in MIGRATIONS]
NAMES = [m.name for m in MIGRATIONS]
