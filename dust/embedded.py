"""DUST in-process: the engine without HTTP, for notebooks, scripts and importers.

    db = dust.open("sqlite:///./dust.db")
    vitals = db.create_schema({"name": "vitals", "axes": [{"name": "metric", "labels": ["hr", "temp"]}]})
    jane = db.create_entity(kind="patient", name="Jane Doe")
    t = db.create_tensor(jane.id, "vitals", origin="2026-01-01T00:00:00Z")
    db.write_values(t.id, [{"time": 3, "metric": "hr", "value": 72}])
    db.read_tensor(t.id).to_xarray()

Each method is one transaction; ``with db.session() as s:`` groups many engine calls into one.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from dust.core.config import Settings
from dust.engine import entities, insights, relations, schemas, tensors
from dust.engine.entities import EntityCreate, EntityList, EntityPublic, EntityUpdate
from dust.engine.relations import MasterTensor, Neighbourhood, RelationCreate, RelationPublic
from dust.engine.schemas import SchemaCreate, SchemaPublic
from dust.engine.tensors import TensorCreate, TensorPublic, WriteResult
from dust.engine.views import TensorView
from dust.storage.db import make_engine, make_sessionmaker, unit_of_work, upgrade


class Dust:
    """A DUST database opened in this process."""

    def __init__(self, url: str | None = None, *, migrate: bool = True) -> None:
        self.settings = Settings() if url is None else Settings(database_url=url)
        self.engine = make_engine(self.settings.database_url)
        if migrate:
            upgrade(self.engine)
        self._sessions = make_sessionmaker(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction for many engine calls (``dust.engine.*`` functions take it first)."""
        with unit_of_work(self._sessions) as session:
            yield session

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Dust:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # entities
    def create_entity(self, kind: str, name: str, **fields: Any) -> EntityPublic:
        with self.session() as s:
            return entities.create(s, EntityCreate(kind=kind, name=name, **fields))

    def create_entities(self, items: Iterable[EntityCreate | Mapping[str, Any]]) -> builtins.list[EntityPublic]:
        """Many entities in one transaction and a few statements (for importers), in the order given."""
        with self.session() as s:
            return entities.create_many(s, [EntityCreate.model_validate(item) for item in items])

    def get_entity(self, entity_id: uuid.UUID) -> EntityPublic:
        with self.session() as s:
            return entities.get(s, entity_id)

    def update_entity(self, entity_id: uuid.UUID, **changes: Any) -> EntityPublic:
        with self.session() as s:
            return entities.update(s, entity_id, EntityUpdate(**changes))

    def delete_entity(self, entity_id: uuid.UUID) -> None:
        with self.session() as s:
            entities.delete(s, entity_id)

    def entities(
        self,
        kind: str | None = None,
        q: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        **attributes: Any,
    ) -> EntityList:
        with self.session() as s:
            return entities.list_(s, kind=kind, q=q, attributes=attributes, limit=limit, cursor=cursor)

    # schemas
    def create_schema(self, definition: Mapping[str, Any] | SchemaCreate) -> SchemaPublic:
        with self.session() as s:
            return schemas.create(s, SchemaCreate.model_validate(definition))

    def schemas(self) -> builtins.list[SchemaPublic]:
        with self.session() as s:
            return schemas.list_(s)

    # tensors
    def create_tensor(self, entity_id: uuid.UUID, schema: str, origin: datetime | str | None = None) -> TensorPublic:
        with self.session() as s:
            return tensors.create(
                s, TensorCreate.model_validate({"entity_id": entity_id, "schema": schema, "origin": origin})
            )

    def create_tensors(self, items: Iterable[TensorCreate | Mapping[str, Any]]) -> builtins.list[TensorPublic]:
        """Many tensors, ``{entity_id, schema, origin}`` each, in one transaction and a few statements."""
        with self.session() as s:
            return tensors.create_many(s, [TensorCreate.model_validate(item) for item in items])

    def write_values(self, tensor_id: uuid.UUID, values: Sequence[Mapping[str, Any]]) -> WriteResult:
        with self.session() as s:
            return tensors.write_values(s, tensor_id, values, max_batch=self.settings.max_batch_values)

    def write_array(self, tensor_id: uuid.UUID, array: np.ndarray, start: int = 0) -> WriteResult:
        with self.session() as s:
            return tensors.write_array(s, tensor_id, array, start)

    def write_arrays(self, arrays: Mapping[uuid.UUID, np.ndarray], start: int = 0) -> dict[uuid.UUID, int]:
        """``write_array`` for many tensors in one transaction and a few statements; values written per tensor."""
        with self.session() as s:
            return tensors.write_arrays(s, arrays, start)

    def read_tensor(self, tensor_id: uuid.UUID, **selection: Any) -> TensorView:
        """``time=``, ``start=``, ``stop=``, ``labels={axis: label}``, ``as_of=``, ``latest=True``."""
        with self.session() as s:
            return tensors.read(s, tensor_id, max_cells=self.settings.max_read_cells, **selection)

    def delete_tensor(self, tensor_id: uuid.UUID) -> None:
        with self.session() as s:
            tensors.delete(s, tensor_id)

    # insights
    def aggregate(
        self, schema: str, label: str, agg: str = "mean", kind: str | None = None
    ) -> builtins.list[dict[str, Any]]:
        """``[{time, value, count}]``: ``agg`` (mean|min|max|sum|count) of ``label`` across all tensors, per step."""
        with self.session() as s:
            return insights.aggregate_by_step(s, schema, label, agg=agg, kind=kind)

    # relations
    def relate(
        self, source_id: uuid.UUID, target_id: uuid.UUID, type: str, weight: float = 1.0, **fields: Any
    ) -> RelationPublic:
        with self.session() as s:
            return relations.create(
                s, RelationCreate(source_id=source_id, target_id=target_id, type=type, weight=weight, **fields)
            )

    def neighbours(self, entity_id: uuid.UUID, **query: Any) -> Neighbourhood:
        with self.session() as s:
            return relations.neighbourhood(s, entity_id, **query)

    def master_tensor(self, types: builtins.list[str] | None = None, at: datetime | None = None) -> MasterTensor:
        with self.session() as s:
            return relations.master_tensor(s, types=types, at=at)


def open(url: str | None = None, *, migrate: bool = True) -> Dust:
    """Open (and migrate) the DUST database at ``url`` (default: ``DUST_DATABASE_URL`` or ./dust.db)."""
    return Dust(url, migrate=migrate)
