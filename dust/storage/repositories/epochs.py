"""Queries over ``cache_epochs``: read them all, raise one."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from dust.storage.models import CacheEpoch


def read(session: Session) -> dict[str, int]:
    """Every epoch by name; one never raised is absent (read it as 0)."""
    return {name: value for name, value in session.execute(select(CacheEpoch.name, CacheEpoch.value))}


def bump(session: Session, name: str) -> None:
    """Raise epoch ``name`` by one, creating it at 1. Commits with the change it announces, so no process can see
    the new epoch and still read the old state."""
    insert = sqlite_insert if session.get_bind().dialect.name == "sqlite" else postgresql_insert
    stmt = insert(CacheEpoch).values(name=name, value=1)
    session.execute(stmt.on_conflict_do_update(index_elements=["name"], set_={"value": CacheEpoch.value + 1}))
