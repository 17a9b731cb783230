"""who submitted a job: jobs.submitted_by (the API key's id) and jobs.submitted_by_name

Both are copied from the key at submit time (keys are revoked, never renamed or deleted), so the
jobs list shows who asked without a join. Jobs made before this revision keep null: the audit
log's `POST /v1/jobs` lines name the key of those.

Revision ID: 0004
Revises: 0003
Create Date: 2025-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("submitted_by", sa.String(32)))
        batch.add_column(sa.Column("submitted_by_name", sa.String(200)))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("submitted_by_name")
        batch.drop_column("submitted_by")
