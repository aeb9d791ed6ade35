"""``Copies``: a row as a model outside the session, for reads that change nothing."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import String, event, select
from sqlalchemy.engine.default import CacheStats
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dust.embedded import Dust
from dust.storage.models import Entity
from dust.storage.repositories import Copies, epochs
from dust.storage.repositories import entities as entity_repo


def test_a_copy_holds_what_the_orm_loads_and_no_session_tracks_it(db: Dust) -> None:
    made = db.create_entity(kind="person", name="Jane", attributes={"mrn": "1"})
    with db.session() as session:
        copy = entity_repo.peek(session, made.id)
        loaded = session.get(Entity, made.id)
        assert copy is not None and loaded is not None and copy is not loaded
        columns = [c.key for c in Entity.__table__.c]
        assert {k: getattr(copy, k) for k in columns} == {k: getattr(loaded, k) for k in columns}
        assert copy not in session
        copy.name = "changed"  # nothing done to a copy is saved
    assert db.get_entity(made.id).name == "Jane"


def test_within_keeps_only_the_visible_and_a_missing_id_is_none(db: Dust) -> None:
    jane, john = (db.create_entity(kind="person", name=n).id for n in ("Jane", "John"))
    with db.session() as session:
        visible = select(Entity.id).where(Entity.id == jane)
        assert entity_repo.peek(session, jane, within=visible) is not None
        assert entity_repo.peek(session, john, within=visible) is None
        assert entity_repo.peek(session, uuid.uuid4()) is None


def test_a_model_whose_attributes_are_not_named_as_its_columns_is_refused() -> None:
    class Base(DeclarativeBase):
        pass

    class Renamed(Base):
        __tablename__ = "renamed"
        id: Mapped[str] = mapped_column(String, primary_key=True)
        label: Mapped[str] = mapped_column("name", String)

    with pytest.raises(TypeError, match="named as its columns"):
        Copies(Renamed, owner="id")


def test_with_epochs_reads_the_epochs_and_the_row_in_one_statement(db: Dust) -> None:
    made = db.create_entity(kind="person", name="Jane")
    statements: list[str] = []

    def seen(conn: object, cursor: object, statement: str, *rest: object) -> None:
        statements.append(statement)

    with db.session() as session:
        event.listen(db.engine, "before_cursor_execute", seen)
        along = entity_repo.peek.with_epochs(session, made.id)
        copy = entity_repo.peek(session, made.id)  # taken from what came along: no statement
        event.remove(db.engine, "before_cursor_execute", seen)
        assert along == epochs.read(session) and along[epochs.IDENTITY]
    assert copy is not None and copy.name == "Jane"
    assert len([s for s in statements if not s.startswith("BEGIN")]) == 1


def test_with_epochs_of_a_missing_id_gives_the_epochs_and_then_none(db: Dust) -> None:
    with db.session() as session:
        assert entity_repo.peek.with_epochs(session, uuid.uuid4()) == epochs.read(session)
        assert entity_repo.peek(session, uuid.uuid4()) is None


def test_a_read_along_is_compiled_once(db: Dust) -> None:
    """Its epochs column is a construct of ours: without a cache key, SQLAlchemy compiled the statement anew at
    every read, which cost more than the query it saves."""
    made = db.create_entity(kind="person", name="Jane")
    hits: list[CacheStats] = []

    def seen(conn: object, cursor: object, statement: str, params: object, context: Any, many: bool) -> None:
        if context is not None:  # None: a statement sent straight to the driver (BEGIN; dust.storage.db.driver_scalar)
            hits.append(context.cache_hit)

    with db.session() as session:
        event.listen(db.engine, "before_cursor_execute", seen)
        for _ in range(2):
            entity_repo.peek.with_epochs(session, made.id)
        event.remove(db.engine, "before_cursor_execute", seen)
    assert hits[-1] is CacheStats.CACHE_HIT
