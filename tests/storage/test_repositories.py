"""``Copies``: a row as a model outside the session, for reads that change nothing."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import Select, String, bindparam, event, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dust.embedded import Dust
from dust.storage.db import DriverQuery
from dust.storage.models import Entity, Tensor
from dust.storage.repositories import Copies, epochs
from dust.storage.repositories import entities as entity_repo
from dust.storage.repositories import tensors as tensor_repo


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


def test_the_epochs_read_again_unchanged_are_the_same_mapping_and_a_raised_one_reads_raised(db: Dust) -> None:
    """Every signed-in request reads the epochs: text equal to the last decoded is not decoded again. What it gives
    is read-only, since later reads get the same mapping; a raised epoch reads raised at once."""
    with db.session() as session:
        first = epochs.read(session)
    with db.session() as session:
        again = epochs.read(session)
    assert again is first and first[epochs.IDENTITY]
    with pytest.raises(TypeError):
        first["test-kind"] = 7  # type: ignore[index]
    with db.session() as session:
        epochs.bump(session, "test-kind")
    with db.session() as session:
        raised = epochs.read(session)
    assert raised["test-kind"] == first.get("test-kind", 0) + 1
    assert {k: v for k, v in raised.items() if k != "test-kind"} == {k: v for k, v in first.items() if k != "test-kind"}


@pytest.mark.parametrize("make", ["entity", "tensor"])
def test_a_read_along_gives_the_row_as_the_orm_loads_it(db: Dust, make: str) -> None:
    """It is run on the driver, with the columns converted by hand as SQLAlchemy would (UUIDs, times, JSON)."""
    entity = db.create_entity(kind="person", name="Jane", attributes={"mrn": "1", "tags": ["a"], "n": 2.5})
    db.create_schema({"name": "vitals", "axes": [{"name": "metric", "labels": ["hr"]}], "time": {"unit": "day"}})
    tensor = db.create_tensor(entity.id, "vitals")
    model, peek, key = (Entity, entity_repo.peek, entity.id)
    if make == "tensor":
        model, peek, key = (Tensor, tensor_repo.peek, tensor.id)
    with db.session() as session:
        peek.with_epochs(session, key)
        along = peek(session, key)
        loaded = session.get(model, key)
        assert along is not None and loaded is not None
        columns = [c.key for c in model.__table__.c]
        assert {k: getattr(along, k) for k in columns} == {k: getattr(loaded, k) for k in columns}
        assert {k: type(getattr(along, k)) for k in columns} == {k: type(getattr(loaded, k)) for k in columns}


def test_a_driver_query_is_compiled_once_per_dialect(db: Dust, monkeypatch: pytest.MonkeyPatch) -> None:
    """Compiling cost more than the query it runs: the second read sends the first's SQL."""
    made = db.create_entity(kind="person", name="Jane")
    query = DriverQuery(select(Entity.__table__).where(Entity.__table__.c.id == bindparam("b_id")))
    compiled = []
    compile_ = Select.compile
    monkeypatch.setattr(Select, "compile", lambda self, *a, **k: compiled.append(1) or compile_(self, *a, **k))
    with db.session() as session:
        rows = [query.first(session.connection(), {"b_id": made.id}) for _ in range(2)]
        assert query.first(session.connection(), {"b_id": uuid.uuid4()}) is None
    assert rows[0] == rows[1] and rows[0] is not None and rows[0]["id"] == made.id and rows[0]["name"] == "Jane"
    assert len(compiled) == 1


def test_a_driver_query_hands_out_its_ids_and_times_again_but_never_one_readers_attributes_to_another(
    db: Dust,
) -> None:
    """Ids and times are converted once and handed out again (they cannot be changed); a JSON column is decoded
    for each read, so a reader that changes what it got changes nothing another reads. A row that changed reads as
    it is now."""
    made = db.create_entity(kind="person", name="Jane", attributes={"ward": "A"})
    query = DriverQuery(select(Entity.__table__).where(Entity.__table__.c.id == bindparam("b_id")))
    with db.session() as session:
        first = query.first(session.connection(), {"b_id": made.id})
        assert first is not None
        first["attributes"]["ward"] = "changed by this reader"
        second = query.first(session.connection(), {"b_id": made.id})
        loaded = session.get(Entity, made.id)
        assert second is not None and loaded is not None
        assert second["attributes"] == {"ward": "A"}
        assert {k: second[k] for k in ("id", "created_at", "updated_at")} == {
            "id": loaded.id,
            "created_at": loaded.created_at,
            "updated_at": loaded.updated_at,
        }
        assert second["updated_at"].tzinfo is not None
    db.update_entity(made.id, name="Jane Doe")
    with db.session() as session:
        third = query.first(session.connection(), {"b_id": made.id})
        now = session.get(Entity, made.id)
        assert third is not None and now is not None
        assert third["updated_at"] == now.updated_at > second["updated_at"] and third["name"] == "Jane Doe"
