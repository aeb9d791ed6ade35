"""stable paging: the inserting transaction of every listed row, and keys taken once it has an id

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 14:00:00.000000

Lists page by keyset: entities and relations on (created_at, id), the audit log on id. On PostgreSQL a row's
key is taken before its transaction commits, so a page read meanwhile may hand out a cursor past it. Pages
therefore remember the transactions in progress when they were read, and the next page returns the rows of
those that commit behind its cursor (dust.engine.paging, docs/reliability.md#paging). That needs

- ``txid`` on each listed table: the inserting transaction (pg_current_xact_id()); NULL on SQLite, whose
  writers are serialised and whose keys are taken under the write lock, so none is ever behind a cursor;
- keys taken only once the transaction has its id: ``dust_stamp()`` for created_at, and ``dust_next_id`` for
  the audit log's id. A transaction that got its id after a page was read is not in that page's list of
  transactions in progress, so its keys must come after everything the page saw: a key taken first and an id
  given after the page could land behind the cursor unremembered.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TABLES = ("entities", "relations", "audit_log")
INDEXES = {"entities": "ix_entities_txid", "relations": "ix_relations_txid", "audit_log": "ix_audit_txid"}

# The creation time of the rows a transaction inserts: the database's clock (one clock for every API worker),
# read once the transaction has its id, and the same for all its rows (kept in a transaction-local setting).
STAMP = """
CREATE OR REPLACE FUNCTION dust_stamp() RETURNS timestamptz LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    stamped text := current_setting('dust.stamp', true);
BEGIN
    IF stamped IS NULL OR stamped = '' THEN
        PERFORM pg_current_xact_id();
        stamped := clock_timestamp()::text;
        PERFORM set_config('dust.stamp', stamped, true);
    END IF;
    RETURN stamped::timestamptz;
END $$
"""

# The next value of a sequence, drawn once the transaction has its id (a column default is evaluated before the
# row is written, which is when a transaction that has not written yet gets its id).
NEXT_ID = """
CREATE OR REPLACE FUNCTION dust_next_id(sequence regclass) RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_current_xact_id();
    RETURN nextval(sequence);
END $$
"""


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    inserted_by = sa.text("(pg_current_xact_id()::text::bigint)") if postgres else None
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("txid", sa.BigInteger(), nullable=True, server_default=inserted_by))
            batch_op.create_index(INDEXES[table], ["txid"], unique=False)
    if postgres:
        op.execute(STAMP)
        op.execute(NEXT_ID)
        op.execute("ALTER TABLE audit_log ALTER COLUMN id SET DEFAULT dust_next_id('audit_log_id_seq')")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE audit_log ALTER COLUMN id SET DEFAULT nextval('audit_log_id_seq')")
        op.execute("DROP FUNCTION dust_next_id(regclass)")
        op.execute("DROP FUNCTION dust_stamp()")
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(INDEXES[table])
            batch_op.drop_column("txid")
