"""idempotency owner: who runs a claimed key, until when, and whether its work committed

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 16:00:00.000000

A claim is held by one process (``owner``: host, pid, process start, a random token) under a lease it renews
while the request runs (``lease_until``). The request's own transaction stamps ``committed_at`` just before it
commits, so a retry can tell work that never committed (its claim may be taken over once the owner is gone)
from work that did (never run again). dust/api/idempotency.py; docs/reliability.md#idempotency.
"""

import sqlalchemy as sa
from alembic import op

import dust.storage.models

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("lease_until", dust.storage.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("committed_at", dust.storage.models.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_column("committed_at")
        batch_op.drop_column("lease_until")
        batch_op.drop_column("owner")
