"""One plain function per CLI verb (as alembic's command.py): `fn(target, ...)`.

They return data and raise ProvisionError; printing and exit codes belong to the CLI.
"""

from __future__ import annotations

from provision import db
from provision.analysis import Report, analyze
from provision.catalog import read_catalog
from provision.layout import NUCLEUS, Layout


def inspect(target: db.Target, layout: Layout = NUCLEUS) -> Report:
    """Read the catalog (read-only) and compare it with the expected layout."""
    try:
        with db.connect(target.admin, target.description) as conn:
            return analyze(layout, read_catalog(conn, layout))
    finally:
        target.dispose()
