"""Queries over ``cache_epochs``: read them all, raise one."""

from __future__ import annotations

from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from dust.storage.models import CacheEpoch

# Plain SQL, straight to the driver: every signed-in request runs it, and building, caching and reading back a
# statement through the ORM cost more than the query (bench/serve.py: /auth/me runs only this one).
_READ = f"SELECT name, value FROM {CacheEpoch.__tablename__}"


def read(session: Session) -> dict[str, int]:
    """Every epoch by name; one never raised is absent (read it as 0)."""
    return {name: value for name, value in session.connection().exec_driver_sql(_READ)}


def bump(session: Session, name: str) -> None:
    """Raise epoch ``name`` by one, creating it at 1. Commits with the change it announces, so no process can see
    the new epoch and still read the old state."""
    insert = sqlite_insert if session.get_bind().dialect.name == "sqlite" else postgresql_insert
    stmt = insert(CacheEpoch).values(name=name, value=1)
    session.execute(stmt.on_conflict_do_update(index_elements=["name"], set_={"value": CacheEpoch.value + 1}))
