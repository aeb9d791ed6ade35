"""triggers, their versions and firings, alerts, the webhook outbox, background jobs, weight policies

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29 15:53:07.079350

Alerts, firings and webhook deliveries are paged lists, newest first by id, so they get what migration 0007
gave the audit log: ``txid`` (the inserting transaction) and, on PostgreSQL, an id drawn only once the
transaction has its own.
"""

import sqlalchemy as sa
from alembic import op

import dust.storage.models

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    inserted_by = sa.text("(pg_current_xact_id()::text::bigint)") if postgres else None
    op.create_table(
        "jobs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("message", sa.String(length=1000), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.String(length=2000), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column("created_at", dust.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", dust.storage.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", dust.storage.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("worker", sa.String(length=128), nullable=True),
        sa.Column("heartbeat_at", dust.storage.models.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_state", ["state", "created_at"], unique=False)

    op.create_table(
        "triggers",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("event", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=True),
        sa.Column("schema_name", sa.String(length=128), nullable=True),
        sa.Column("label", sa.String(length=128), nullable=True),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("secret", sa.String(length=128), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column("created_at", dust.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", dust.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name", name="uq_triggers_name"),
    )
    with op.batch_alter_table("triggers", schema=None) as batch_op:
        batch_op.create_index("ix_triggers_scope", ["schema_name"], unique=False)

    op.create_table(
        "weight_policies",
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("reinforce", sa.Float(), nullable=False),
        sa.Column("half_life_seconds", sa.Float(), nullable=True),
        sa.Column("cap", sa.Float(), nullable=True),
        sa.Column("floor", sa.Float(), nullable=False),
        sa.Column("updated_at", dust.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("type"),
    )
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("entity_id", sa.Uuid(), nullable=False),
        sa.Column("subject_id", sa.Uuid(), nullable=False),
        sa.Column("trigger_id", sa.Uuid(), nullable=True),
        sa.Column("firing_id", sa.Integer(), nullable=True),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("message", sa.String(length=1000), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("schema_name", sa.String(length=128), nullable=True),
        sa.Column("label", sa.String(length=128), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("time_index", sa.BigInteger(), nullable=True),
        sa.Column("at", dust.storage.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", dust.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", dust.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=True),
        sa.Column("note", sa.String(length=1000), nullable=True),
        sa.Column("txid", sa.BigInteger(), server_default=inserted_by, nullable=True),
        sa.ForeignKeyConstraint(["entity_id"], ["entities.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["trigger_id"], ["triggers.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_index("ix_alerts_entity", ["entity_id", "id"], unique=False)
        batch_op.create_index("ix_alerts_state", ["state", "id"], unique=False)
        batch_op.create_index("ix_alerts_txid", ["txid"], unique=False)

    op.create_table(
        "trigger_firings",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("trigger_id", sa.Uuid(), nullable=False),
        sa.Column("trigger_version", sa.Integer(), nullable=False),
        sa.Column("entity_id", sa.Uuid(), nullable=False),
        sa.Column("tensor_id", sa.Uuid(), nullable=True),
        sa.Column("schema_name", sa.String(length=128), nullable=True),
        sa.Column("label", sa.String(length=128), nullable=True),
        sa.Column("time_index", sa.BigInteger(), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("cause", sa.JSON(), nullable=False),
        sa.Column("effects", sa.JSON(), nullable=False),
        sa.Column("created_at", dust.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("txid", sa.BigInteger(), server_default=inserted_by, nullable=True),
        sa.ForeignKeyConstraint(["trigger_id"], ["triggers.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("trigger_firings", schema=None) as batch_op:
        batch_op.create_index("ix_trigger_firings_trigger", ["trigger_id", "id"], unique=False)
        batch_op.create_index("ix_trigger_firings_txid", ["txid"], unique=False)

    op.create_table(
        "trigger_versions",
        sa.Column("trigger_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("changed_by", sa.String(length=64), nullable=True),
        sa.Column("changed_at", dust.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["trigger_id"], ["triggers.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("trigger_id", "version"),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("trigger_id", sa.Uuid(), nullable=True),
        sa.Column("firing_id", sa.Integer(), nullable=True),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("body", sa.String(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=64), nullable=False),
        sa.Column("secret", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", dust.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=1000), nullable=True),
        sa.Column("created_at", dust.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", dust.storage.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("txid", sa.BigInteger(), server_default=inserted_by, nullable=True),
        sa.ForeignKeyConstraint(["trigger_id"], ["triggers.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_webhook_deliveries_due", ["state", "next_attempt_at"], unique=False)
        batch_op.create_index("ix_webhook_deliveries_trigger", ["trigger_id", "id"], unique=False)
        batch_op.create_index("ix_webhook_deliveries_txid", ["txid"], unique=False)

    if postgres:
        for table in ("alerts", "trigger_firings", "webhook_deliveries"):
            op.execute(f"ALTER TABLE {table} ALTER COLUMN id SET DEFAULT dust_next_id('{table}_id_seq')")


def downgrade() -> None:
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_deliveries_txid")
        batch_op.drop_index("ix_webhook_deliveries_trigger")
        batch_op.drop_index("ix_webhook_deliveries_due")

    op.drop_table("webhook_deliveries")
    op.drop_table("trigger_versions")
    with op.batch_alter_table("trigger_firings", schema=None) as batch_op:
        batch_op.drop_index("ix_trigger_firings_txid")
        batch_op.drop_index("ix_trigger_firings_trigger")

    op.drop_table("trigger_firings")
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index("ix_alerts_txid")
        batch_op.drop_index("ix_alerts_state")
        batch_op.drop_index("ix_alerts_entity")

    op.drop_table("alerts")
    op.drop_table("weight_policies")
    with op.batch_alter_table("triggers", schema=None) as batch_op:
        batch_op.drop_index("ix_triggers_scope")

    op.drop_table("triggers")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_state")

    op.drop_table("jobs")
