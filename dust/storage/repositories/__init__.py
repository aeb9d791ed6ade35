"""Repository functions: every query the engine runs, one module per resource."""

import functools
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import CompoundSelect, Connection, Select, any_, bindparam, inspect, literal_column, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from dust.storage.db import DriverQuery, statement_connection
from dust.storage.loop import for_all
from dust.storage.models import Base
from dust.storage.repositories.epochs import decoded, every_epoch

StoredBlock = tuple[str, bytes, bytes]  # shape, data, stamps
Visible = Select[Any] | CompoundSelect[Any]  # a query of the entity ids a principal may see (engine.access)
M = TypeVar("M", bound=Base)
_READ_ALONG = "dust.read_along"  # session.info: copies read along with the epochs, by (Copies, id), for their call


class Copies(Generic[M]):
    """``copies(session, id, within=None)``: the ``model`` row of that id as a copy outside the session, for a
    read that changes nothing; ``within``: only if its ``owner`` column (an entity id) is among these visible ids.

    One row through Core, made into a ``model`` that no session tracks: half the CPU of loading it into the
    session, whose identity map and instance state a request that only reads does not need (a tensor or an
    entity: ~50 against ~100 µs, of a point read's ~1.2 ms). Nothing done to the copy is ever saved."""

    def __init__(self, model: type[M], owner: str) -> None:
        table, mapper = model.__table__, inspect(model)
        if {a.key for a in mapper.column_attrs} != set(table.c.keys()):
            raise TypeError(f"{model.__name__}: Copies needs its attributes named as its columns")
        self._manager = mapper.class_manager
        self._by_id = select(*table.c).where(table.c.id == bindparam("b_id"))
        self._owner = table.c[owner]
        # One row whether or not the id exists: the epochs, and the row's columns (all NULL if it does not).
        one = select(literal_column("1").label("one")).subquery("one")
        self._with_epochs = DriverQuery(
            select(every_epoch().label("dust_epochs"), *table.c).select_from(
                one.outerjoin(table, table.c.id == bindparam("b_id"))
            )
        )
        # The same for several ids (PostgreSQL: for_all's shared runs): a row for each id that exists, or one row
        # of the epochs alone if none does.
        ids = bindparam("b_ids", type_=postgresql.ARRAY(table.c.id.type))
        self._many_with_epochs = DriverQuery(
            select(every_epoch().label("dust_epochs"), *table.c).select_from(
                one.outerjoin(table, table.c.id == any_(ids))
            )
        )

    def __call__(self, session: Session, key: uuid.UUID, *, within: Visible | None = None) -> M | None:
        if within is None and (along := session.info.get(_READ_ALONG, {}).pop((self, key), None)):
            return along[0]
        stmt = self._by_id if within is None else self._among(within)
        row = session.execute(stmt, {"b_id": key}).first()
        return None if row is None else self._copy(row._mapping)

    def with_epochs(self, session: Session, key: uuid.UUID) -> Mapping[str, int]:
        """The epochs (as ``epochs.read`` gives them) and, in the same statement, the row of ``key``, which this
        session's next call for ``key`` without ``within`` then returns: for a transaction whose first statement
        would read the epochs, one statement less (a round trip, on PostgreSQL). Sent to the driver itself, as
        the epochs alone are (``DriverQuery``): SQLAlchemy's execution of it cost more than the query, ~55 µs of
        an entity get on either database (bench/request_cpu.py). On the loop's PostgreSQL reads, one statement
        answers every read that asked for a row of this table before it was sent (``dust.storage.loop.for_all``)."""
        connection = statement_connection(session)
        text, values = for_all(session, self, key, lambda keys: self._rows_with_epochs(connection, keys))
        session.info.setdefault(_READ_ALONG, {})[self, key] = (None if values is None else self._copy(values),)
        return decoded(text)

    def _rows_with_epochs(
        self, connection: Connection, keys: list[Any]
    ) -> dict[Any, tuple[str | None, dict[str, Any] | None]]:
        """For each of ``keys``: the epochs' text, and the row's columns (None if there is none)."""
        rows: Sequence[dict[str, Any] | None]
        if len(keys) == 1:
            rows = [self._with_epochs.first(connection, {"b_id": keys[0]})]
        else:
            rows = self._many_with_epochs.all(connection, {"b_ids": keys})
        text: str | None = None
        found = {}
        for row in rows:
            assert row is not None  # one row at least, always
            text = row.pop("dust_epochs")  # the same in every row: one statement
            if row["id"] is not None:
                found[row["id"]] = row
        return {key: (text, found.get(key)) for key in keys}

    def _copy(self, values: Mapping[Any, Any]) -> M:
        # Filled in as the ORM fills a row it loads, into the instance's __dict__ with no event per attribute:
        # ~5 µs, where calling the model cost ~23 (a tensor).
        made = self._manager.new_instance()
        made.__dict__.update(values)
        return cast(M, made)

    @functools.lru_cache(maxsize=1024)  # noqa: B019 (one per principal, kept as long as the repository)
    def _among(self, within: Visible) -> Select[Any]:
        """Built once per ``within``: SQLAlchemy keys its compiled-statement cache by walking the whole
        statement, reach query included, once per statement object."""
        return self._by_id.where(self._owner.in_(within))
