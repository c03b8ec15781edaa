"""The peer's second revision: a table referring to the first.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "entity_link",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column(
            "entity_id",
            sa.BigInteger,
            sa.ForeignKey("bench_alembic.entity.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("url", sa.Text, nullable=False),
        schema="bench_alembic",
    )
    op.create_index(
        "entity_link_entity_id_idx", "entity_link", ["entity_id"], schema="bench_alembic"
    )


def downgrade() -> None:
    op.drop_table("entity_link", schema="bench_alembic")
