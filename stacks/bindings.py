"""Load only the Google provider binding modules the stack uses, not all 1,470 of them.

`import cdktf_cdktf_provider_google.sql_user` first runs the package's `__init__`, which
imports every resource module of the provider (1,470 modules, about 6 of the 10 seconds
a synth used to take) although the stack needs eight. Each of those modules is
self-contained: it loads the shared jsii assembly through `.._jsii` and defines its
classes, nothing else, and the package `__init__` adds nothing they depend on.

Importing this module therefore registers the package in `sys.modules` without running
its `__init__` (the import system then finds the submodules through the package's
`__path__` as usual). Two guards keep this honest:

- it only acts when the package is not imported yet, so code that imports the package
  the ordinary way first gets exactly the ordinary behaviour;
- the prebuilt bindings were archived by HashiCorp on 2025-12-10 and are pinned
  (pyproject.toml), so the package layout this relies on does not move; and the tests
  check that a synth through this path is identical to a synth after the full import.
"""

from __future__ import annotations

import importlib.util
import sys

GOOGLE_PACKAGE = "cdktf_cdktf_provider_google"


def register_google_package_without_init() -> bool:
    """Put the Google binding package in sys.modules without running its __init__.

    Returns True when it did, False when the package was already imported (or is not
    installed, in which case the stack's own import raises the usual error).
    """
    if GOOGLE_PACKAGE in sys.modules:
        return False
    spec = importlib.util.find_spec(GOOGLE_PACKAGE)
    if spec is None or spec.submodule_search_locations is None:
        return False
    sys.modules[GOOGLE_PACKAGE] = importlib.util.module_from_spec(spec)
    return True


register_google_package_without_init()
