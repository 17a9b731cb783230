"""tenants and API keys: a tenant on datasets and jobs, api_keys, idempotency_keys

Rows that existed before tenants belong to the tenant `default` (the bootstrap key's tenant
unless LETHE_BOOTSTRAP_TENANT says otherwise).

Revision ID: 0002
Revises: 0001
Create Date: 2025-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("datasets", "jobs"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("tenant", sa.String(64), nullable=False, server_default="default"))
            batch.create_index(f"ix_{table}_tenant", ["tenant"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False, index=True),
        sa.Column("scopes", sa.String(64), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime()),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("endpoint", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.Uuid()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("idempotency_keys")
    op.drop_table("api_keys")
    for table in ("jobs", "datasets"):
        with op.batch_alter_table(table) as batch:
            batch.drop_index(f"ix_{table}_tenant")
            batch.drop_column("tenant")
