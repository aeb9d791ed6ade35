"""commit stamps: a tensor's last write stamp, and erased values in the history

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 11:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # 0 for existing tensors: a lower bound of their last stamp, which is all readers and writers rely on (an "as
    # of" read waits for writes in flight, and the next write stamps after the cells it replaces).
    with op.batch_alter_table("tensors", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stamped_us", sa.BigInteger(), nullable=False, server_default="0"))
    with op.batch_alter_table("tensor_history", schema=None) as batch_op:
        batch_op.alter_column("new_value", existing_type=sa.Float(), nullable=True)


def downgrade() -> None:
    # Erases (new_value null) cannot be told apart from writes before this revision: they go, and the erased
    # values read as replaced by nothing.
    op.execute(sa.text("DELETE FROM tensor_history WHERE new_value IS NULL"))
    with op.batch_alter_table("tensor_history", schema=None) as batch_op:
        batch_op.alter_column("new_value", existing_type=sa.Float(), nullable=False)
    with op.batch_alter_table("tensors", schema=None) as batch_op:
        batch_op.drop_column("stamped_us")
