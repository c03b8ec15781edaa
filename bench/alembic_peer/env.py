"""alembic's environment for the peer project: online migrations only, on $BENCH_ALEMBIC_URL.

The version table lives in schema `bench_alembic` (created by the bench before the first
run, as a deploy would), so alembic and nucleus-provision share the database, not the table.
"""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool

SCHEMA = "bench_alembic"

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name)

engine = create_engine(os.environ["BENCH_ALEMBIC_URL"], poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, version_table_schema=SCHEMA)
    with context.begin_transaction():
        context.run_migrations()
