"""Queries over ``cache_epochs``: read them all, raise one; the database's identity."""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from dust.storage.db import driver_scalar, statement_connection
from dust.storage.loop import for_all
from dust.storage.models import CacheEpoch

# Plain SQL, straight to the driver: every signed-in request runs it, and building, caching and reading back a
# statement through the ORM cost more than the query (bench/serve.py: /auth/me runs only this one). One row, as
# JSON text: SQLite's driver lets go of the GIL for every row it steps to, and under load each time costs a wait
# for it again behind every other request's thread.
_READ = {
    "sqlite": f"SELECT json_group_object(name, value) FROM {CacheEpoch.__tablename__}",
    "postgresql": f"SELECT json_object_agg(name, value)::text FROM {CacheEpoch.__tablename__}",
}
# Not an epoch: a random number naming this database's contents, which epochs are counted from. Renewed when the
# contents are replaced (a restore, an import), whose epochs may be lower than ones already counted: entries made
# under a number the epochs then reach again were made of other contents (dust.engine.caches).
IDENTITY = "identity"


def read(session: Session) -> Mapping[str, int]:
    """Every epoch by name, and the identity; one never raised is absent (read it as 0). On the loop's PostgreSQL
    reads, one run of the query answers every read that asked before it was sent (``dust.storage.loop.for_all``)."""
    connection = statement_connection(session)
    sql = _READ[connection.dialect.name]
    return decoded(for_all(session, sql, None, lambda _: {None: driver_scalar(connection, sql)}))


class every_epoch(FunctionElement[Any]):
    """``read``'s query as a column of another query, so that a read of one row brings the epochs along in the same
    statement (``dust.storage.repositories.Copies.with_epochs``); ``decoded`` makes its value what ``read`` gives."""

    inherit_cache = True  # a statement with it is compiled once, as any other
    name = "every_epoch"


@compiles(every_epoch)
def _every_epoch(element: every_epoch, compiler: SQLCompiler, **kw: Any) -> str:
    return f"({_READ[compiler.dialect.name]})"


def decoded(found: str | None) -> Mapping[str, int]:
    """The epochs from the query's JSON text (None: no rows), read-only. Every signed-in request reads them, and they
    change rarely: text equal to the last decoded gives the mapping decoded then (a comparison, where decoding cost
    ~5 µs on SQLite and twice that through psycopg's JSON loader)."""
    global _last
    text, epochs = _last
    if found != text:
        epochs = MappingProxyType(json.loads(found) if found else {})
        _last = (found, epochs)
    return epochs


_last: tuple[str | None, Mapping[str, int]] = (None, MappingProxyType({}))  # decoded's last text and mapping


def _insert(session: Session) -> Any:
    return sqlite_insert if session.get_bind().dialect.name == "sqlite" else postgresql_insert


def bump(session: Session, name: str) -> None:
    """Raise epoch ``name`` by one, creating it at 1. Commits with the change it announces, so no process can see
    the new epoch and still read the old state."""
    stmt = _insert(session)(CacheEpoch).values(name=name, value=1)
    session.execute(stmt.on_conflict_do_update(index_elements=["name"], set_={"value": CacheEpoch.value + 1}))


def ensure_identity(session: Session) -> None:
    """Give the database an identity if it has none (a new or emptied one): a no-op otherwise."""
    stmt = _insert(session)(CacheEpoch).values(name=IDENTITY, value=_new_identity())
    session.execute(stmt.on_conflict_do_nothing(index_elements=["name"]))


def renew_identity(session: Session) -> None:
    """A new identity: its contents were replaced."""
    session.execute(delete(CacheEpoch).where(CacheEpoch.name == IDENTITY))
    session.add(CacheEpoch(name=IDENTITY, value=_new_identity()))
    session.flush()


def _new_identity() -> int:
    return secrets.randbits(62) + 1  # never 0, which reads as "none"; fits a signed BIGINT
