"""kind policies add to the default sensitive fields; `public` releases a default

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 04:10:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing policies are not translated into `public` lists: before this revision a policy replaced the
    # defaults, so a field it left out was shown to analysts, often by oversight (a patient's ssn). After it the
    # defaults apply to every kind again until an admin releases one by name: the upgrade hides more, never less.
    with op.batch_alter_table("entity_kinds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("public", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("entity_kinds", schema=None) as batch_op:
        batch_op.drop_column("public")
