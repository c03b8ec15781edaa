"""Settings every test shares: the unit tests (tests/unit: pure, no server, no subprocess) and
the system tests (tests/system: the emulation, the real CLI, the Connector, cdktf synth)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Never let anything under test reach Google's metadata server or a user's gcloud setup.
os.environ.setdefault("GCE_METADATA_HOST", "127.0.0.1:9")
# The repository's environments.toml, whatever the working directory.
os.environ["NUCLEUS_PROVISION_CONFIG"] = str(ROOT / "environments.toml")
