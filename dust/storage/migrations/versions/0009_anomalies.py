"""anomalies: rules per schema label, detector state per series, and the values flagged

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 18:00:00.000000

Streaming scoring (dust/engine/anomalies.py) keeps each series' detector state in ``anomaly_states`` so that it
carries on after a restart without reading history again. ``anomalies`` is a paged list, newest first by id, so
it gets what migration 0007 gave the audit log: ``txid`` (the inserting transaction) and, on PostgreSQL, an id
drawn only once the transaction has its own (``dust_next_id``).
"""

import sqlalchemy as sa
from alembic import op

import dust.storage.models

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    inserted_by = sa.text("(pg_current_xact_id()::text::bigint)") if postgres else None
    op.create_table(
        "anomaly_rules",
        sa.Column("schema_name", sa.String(length=128), nullable=False),
        sa.Column("label", sa.String(length=128), nullable=False),
        sa.Column("detector", sa.String(length=64), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("updated_at", dust.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("schema_name", "label"),
    )
    op.create_table(
        "anomaly_states",
        sa.Column("tensor_id", sa.Uuid(), nullable=False),
        sa.Column("cell", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("detector", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=128), nullable=False),
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("last_time", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["tensor_id"], ["tensors.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tensor_id", "cell", "detector"),
    )
    op.create_table(
        "anomalies",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tensor_id", sa.Uuid(), nullable=False),
        sa.Column("entity_id", sa.Uuid(), nullable=False),
        sa.Column("schema_name", sa.String(length=128), nullable=False),
        sa.Column("label", sa.String(length=128), nullable=False),
        sa.Column("cell", sa.BigInteger(), nullable=False),
        sa.Column("time_index", sa.BigInteger(), nullable=False),
        sa.Column("at", dust.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("detector", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=1000), nullable=True),
        sa.Column("created_at", dust.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("txid", sa.BigInteger(), nullable=True, server_default=inserted_by),
        sa.ForeignKeyConstraint(["tensor_id"], ["tensors.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("anomalies", schema=None) as batch_op:
        batch_op.create_index("ix_anomalies_entity", ["entity_id", "id"], unique=False)
        batch_op.create_index("ix_anomalies_schema", ["schema_name", "label", "id"], unique=False)
        batch_op.create_index("ix_anomalies_series", ["tensor_id", "cell", "time_index"], unique=False)
        batch_op.create_index("ix_anomalies_txid", ["txid"], unique=False)
    if postgres:
        op.execute("ALTER TABLE anomalies ALTER COLUMN id SET DEFAULT dust_next_id('anomalies_id_seq')")


def downgrade() -> None:
    with op.batch_alter_table("anomalies", schema=None) as batch_op:
        batch_op.drop_index("ix_anomalies_txid")
        batch_op.drop_index("ix_anomalies_series")
        batch_op.drop_index("ix_anomalies_schema")
        batch_op.drop_index("ix_anomalies_entity")
    op.drop_table("anomalies")
    op.drop_table("anomaly_states")
    op.drop_table("anomaly_rules")
