"""models: relational models, versioned per name, with their training job, metrics and artefact

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 16:00:00.000000

One row per version of a named model (dust.models.registry). ``artefact`` holds torch.save's bytes of the
trained weights and the graph they fit; ``job_id`` names the training job without a foreign key (jobs are not
exported, models are).
"""

import sqlalchemy as sa
from alembic import op

import dust.storage.models

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("task", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=True),
        sa.Column("target", sa.JSON(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.String(length=2000), nullable=True),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.Column("data_version", dust.storage.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("artefact", sa.LargeBinary(), nullable=True),
        sa.Column("artefact_bytes", sa.BigInteger(), nullable=True),
        sa.Column("shared", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column("created_at", dust.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", dust.storage.models.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name", "version", name="uq_models_name_version"),
    )
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.create_index("ix_models_created", ["created_at", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_index("ix_models_created")
    op.drop_table("models")
