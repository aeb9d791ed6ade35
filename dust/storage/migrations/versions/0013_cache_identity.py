"""cache identity: a random number naming the database's contents, part of every shared cache key

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 18:00:00.000000

A row of ``cache_epochs`` named ``identity`` (dust.storage.repositories.epochs.IDENTITY). Entries of the shared
caches (dust.engine.caches) carry it in their keys, so two databases on one Redis never share an entry, and a
restore, which renews it, never finds one made of the contents it replaced. A database emptied since gets one at
its first change.
"""

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_EPOCHS = sa.table("cache_epochs", sa.column("name", sa.String), sa.column("value", sa.BigInteger))


def upgrade() -> None:
    op.execute(_EPOCHS.delete().where(_EPOCHS.c.name == "identity"))
    op.execute(_EPOCHS.insert().values(name="identity", value=secrets.randbits(62) + 1))


def downgrade() -> None:
    op.execute(_EPOCHS.delete().where(_EPOCHS.c.name == "identity"))
