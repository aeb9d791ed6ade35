"""Alembic environment: runs on the connection that ``dust.storage.db.upgrade`` hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from dust.storage.models import Base

config = context.config
target_metadata = Base.metadata


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is None:  # called from the alembic command line
        engine = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite:///./dust.db")
        with engine.begin() as connection:
            _migrate(connection)
    else:
        _migrate(connection)


def _migrate(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
    )
    with context.begin_transaction():
        context.run_migrations()


run()
