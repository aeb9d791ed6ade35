"""api keys expire

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 10:00:00.000000
"""

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

import dust.storage.models

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# The default key lifetime (DUST_API_KEY_DAYS) when this revision was written. A fixed number, not the setting:
# a migration must do the same thing whenever and wherever it runs.
EXISTING_KEY_DAYS = 90


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires_at", dust.storage.models.UTCDateTime(timezone=True), nullable=True))

    # Keys made before keys expired get the default lifetime from today, not an instant expiry: machine
    # clients keep working through the upgrade and have that long to be given new keys. Then the column is
    # NOT NULL, so no key is ever without an expiry.
    keys = sa.table("api_keys", sa.column("expires_at", dust.storage.models.UTCDateTime(timezone=True)))
    expiry = datetime.now(UTC) + timedelta(days=EXISTING_KEY_DAYS)
    op.execute(keys.update().where(keys.c.expires_at.is_(None)).values(expires_at=expiry))
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.alter_column(
            "expires_at", existing_type=dust.storage.models.UTCDateTime(timezone=True), nullable=False
        )


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("expires_at")
