"""DUST in-process: the engine without HTTP, for notebooks, scripts and importers.

    db = dust.open("sqlite:///./dust.db")
    vitals = db.create_schema({"name": "vitals", "axes": [{"name": "metric", "labels": ["hr", "temp"]}]})
    jane = db.create_entity(kind="patient", name="Jane Doe")
    t = db.create_tensor(jane.id, "vitals", origin="2026-01-01T00:00:00Z")
    db.write_values(t.id, [{"time": 3, "metric": "hr", "value": 72}])
    db.read_tensor(t.id).to_xarray()

Every REST operation has a method here with the same name, parameters and meaning (docs/python.md lists them,
and the few that only HTTP needs). Each method is one transaction; ``with db.session() as s:`` groups many engine
calls into one. Bad input raises ``InvalidInput`` worded as the REST 422s, never pydantic's ``ValidationError``.
"""

from __future__ import annotations

import builtins
import functools
import inspect
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, ParamSpec, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, SkipValidation, TypeAdapter, ValidationError, validate_call
from sqlalchemy.orm import Session

from dust.ask.query import AskAnswer
from dust.core.config import Settings
from dust.core.errors import invalid_input
from dust.engine import (
    alerts,
    analysis,
    anomalies,
    audit,
    caches,
    entities,
    firing,
    insights,
    kinds,
    relations,
    schemas,
    supply_chain,
    tensors,
    triggers,
    users,
    webhooks,
    weights,
)
from dust.engine.alerts import AlertList, AlertPublic, AlertUpdate, Severity
from dust.engine.analysis import Analysis
from dust.engine.anomalies import (
    DEFAULT_THRESHOLD,
    AnomalyList,
    RuleList,
    RulePublic,
    RuleSet,
    ScanRequest,
    ScanResult,
)
from dust.engine.audit import AuditList
from dust.engine.caches import for_settings as caches_for
from dust.engine.entities import KIND, EntityCreate, EntityList, EntityPublic, EntityUpdate
from dust.engine.fields import Timestamp
from dust.engine.kinds import KindPolicy, KindPublic
from dust.engine.paging import MAX_CURSOR, MAX_OFFSET
from dust.engine.relations import (
    TYPE,
    Direction,
    Interaction,
    MasterTensor,
    Neighbourhood,
    RelationCreate,
    RelationDetail,
    RelationList,
    RelationPublic,
    RelationUpdate,
)
from dust.engine.schemas import MAX_VERSION, NAME, SchemaCreate, SchemaPublic, SchemaUpdate
from dust.engine.supply_chain import Bottlenecks as SupplyChainBottlenecks
from dust.engine.supply_chain import WhatIf, WhatIfResult
from dust.engine.tensors import EraseResult, HistoryPage, TensorCreate, TensorPublic, TensorUpdate, WriteResult
from dust.engine.triggers import (
    FiringList,
    TriggerCreate,
    TriggerCreated,
    TriggerList,
    TriggerPublic,
    TriggerUpdate,
    TriggerVersionPublic,
)
from dust.engine.users import UserCreate, UserPublic, UserUpdate
from dust.engine.views import TensorView
from dust.engine.webhooks import DeliveryList, DeliveryPublic
from dust.engine.weights import PolicyPublic, PolicySet
from dust.jobs import JobList, JobPublic, attach, queue_for, records
from dust.jobs.records import State
from dust.models import cache as model_cache
from dust.models import registry as model_registry
from dust.models.schemas import NAME as MODEL_NAME
from dust.models.schemas import ModelCreate, ModelList, ModelPublic, PredictRequest, PredictResult, candidate_bodies
from dust.plugins import registry
from dust.plugins.registry import Plugin
from dust.storage.db import make_engine, make_sessionmaker, unit_of_work, upgrade

P = ParamSpec("P")
R = TypeVar("R")
M = TypeVar("M", bound=BaseModel)
PATIENT = "patient"  # the kind of the /patients routes and of the *_patient methods

# Arguments are checked as REST checks its path and query parameters, with the same bounds. What REST takes in a
# body is marked SkipValidation: the engine's model it goes into checks it, in the same words as for REST.
Limit = Annotated[int, Field(ge=1, le=500)]
AuditLimit = Annotated[int, Field(ge=1, le=1000)]
HistoryLimit = Annotated[int, Field(ge=1, le=tensors.MAX_HISTORY_LIMIT)]
Cursor = Annotated[str, Field(max_length=MAX_CURSOR)] | None
Search = Annotated[str, Field(max_length=256)] | None
KindFilter = Annotated[str, Field(max_length=64)] | None
KindName = Annotated[str, Field(pattern=KIND)]
SchemaName = Annotated[str, Field(pattern=NAME)]
LabelName = Annotated[str, Field(min_length=1, max_length=128)]
Version = Annotated[int, Field(ge=1, le=MAX_VERSION)] | None
Depth = Annotated[int, Field(ge=1, le=3)]
Username = Annotated[str, Field(max_length=64)] | None
RelationType = Annotated[str, Field(pattern=TYPE)]
Types = SkipValidation[str | Sequence[str] | None]  # a type, a comma list or a list: relations.type_names checks it
TimeArg = SkipValidation[int | str | datetime | None]  # an index or a timestamp: the tensor's time grid checks it
Horizon = Annotated[int, Field(ge=1, le=analysis.MAX_HORIZON)]
AlertId = Annotated[int, Field(ge=1, le=MAX_OFFSET)]
DeliveryId = Annotated[int, Field(ge=1, le=MAX_OFFSET)]
Choices = SkipValidation[str | Sequence[str] | None]  # one, a comma list or a list: the engine checks each
_ENTITIES = TypeAdapter(list[EntityCreate])
_TENSORS = TypeAdapter(list[TensorCreate])


def _checked(method: Callable[P, R]) -> Callable[P, R]:
    """``method``, raising ``InvalidInput`` for bad input in the words of the REST 422s, never pydantic's
    ``ValidationError``: its arguments are checked against their annotations, as FastAPI checks a request's
    parameters, and the errors of the engine's models built from them are converted too."""
    validated = validate_call(config=ConfigDict(arbitrary_types_allowed=True))(method)
    names = list(inspect.signature(method).parameters)

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return validated(*args, **kwargs)
        except ValidationError as problem:
            errors = problem.errors()
            if problem.title == method.__qualname__:  # about the arguments: a positional one is named by its index
                errors = [{**e, "loc": _named(e["loc"], names)} for e in errors]
            raise invalid_input(errors) from None

    return call


def _named(loc: tuple[int | str, ...], names: list[str]) -> tuple[int | str, ...]:
    first = loc[0] if loc else None
    return (names[first], *loc[1:]) if isinstance(first, int) and first < len(names) else loc


def _each(adapter: TypeAdapter[list[M]], items: Iterable[Any]) -> list[M]:
    """``items`` as the adapter's models; a bad one is named by its position (``items.3.name``)."""
    try:
        return adapter.validate_python(list(items))
    except ValidationError as problem:
        raise invalid_input([{**e, "loc": ("items", *e["loc"])} for e in problem.errors()]) from None


class Dust:
    """A DUST database opened in this process."""

    def __init__(self, url: str | None = None, *, migrate: bool = True) -> None:
        self.settings = Settings() if url is None else Settings(database_url=url)
        self.engine = make_engine(self.settings.database_url)
        if migrate:
            upgrade(self.engine)
        self._sessions = make_sessionmaker(self.engine)
        # Work deferred here (a webhook to call) goes to the database's queue, for `dust serve` or `dust worker`.
        attach(self._sessions, queue_for(self.settings))
        firing.bound(self._sessions, self.settings)
        model_cache.configure(self.settings.model_cache_size, self.settings.model_cache_mb)  # the process's
        # Schema definitions and the rules a write scores and fires by, kept between transactions while no process
        # changes them: a transaction checks them all with one query (dust.engine.caches).
        self._caches = caches_for(self.settings)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction for many engine calls (``dust.engine.*`` functions take it first)."""
        with unit_of_work(self._sessions) as session:
            caches.attach(session, self._caches)
            yield session

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Dust:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # entities: /entities
    @_checked
    def create_entity(self, kind: SkipValidation[str], name: SkipValidation[str], **fields: Any) -> EntityPublic:
        """A new entity with a new UUID; ``external_id=``, ``attributes=``. POST /entities."""
        with self.session() as s:
            return entities.create(s, EntityCreate(kind=kind, name=name, **fields))

    @_checked
    def create_entities(
        self, items: SkipValidation[Iterable[EntityCreate | Mapping[str, Any]]]
    ) -> builtins.list[EntityPublic]:
        """Many entities in one transaction and a few statements (for importers), in the order given."""
        with self.session() as s:
            return entities.create_many(s, _each(_ENTITIES, items))

    @_checked
    def get_entity(self, entity_id: uuid.UUID) -> EntityPublic:
        """One entity. GET /entities/{entity_id}."""
        with self.session() as s:
            return entities.get(s, entity_id)

    @_checked
    def update_entity(self, entity_id: uuid.UUID, **changes: Any) -> EntityPublic:
        """``name=``, ``external_id=``, ``attributes=`` (merged; a key set to None is removed). PATCH /entities/…"""
        with self.session() as s:
            return entities.update(s, entity_id, EntityUpdate(**changes))

    @_checked
    def delete_entity(self, entity_id: uuid.UUID) -> None:
        """Delete it with its tensors and relations. DELETE /entities/{entity_id}."""
        with self.session() as s:
            entities.delete(s, entity_id)

    @_checked
    def entities(
        self,
        kind: KindFilter = None,
        q: Search = None,
        limit: Limit = 50,
        cursor: Cursor = None,
        **attributes: Any,
    ) -> EntityList:
        """A page in creation order (with ``q``, best matches first); ``gender="F"`` filters on attributes."""
        with self.session() as s:
            return entities.list_(s, kind=kind, q=q, attributes=attributes, limit=self._page(limit), cursor=cursor)

    @_checked
    def entity_tensors(self, entity_id: uuid.UUID) -> builtins.list[TensorPublic]:
        """Metadata of the entity's tensors. GET /entities/{entity_id}/tensors."""
        with self.session() as s:
            return tensors.of_entity(s, entity_id)

    # patients: /patients, the entity methods fixed to kind "patient"
    @_checked
    def create_patient(self, name: SkipValidation[str], **fields: Any) -> EntityPublic:
        """``create_entity("patient", name, …)``. POST /patients."""
        with self.session() as s:
            return entities.create(s, EntityCreate(kind=PATIENT, name=name, **fields))

    @_checked
    def patients(self, q: Search = None, limit: Limit = 50, cursor: Cursor = None, **attributes: Any) -> EntityList:
        """``entities(kind="patient", …)``. GET /patients."""
        with self.session() as s:
            return entities.list_(s, kind=PATIENT, q=q, attributes=attributes, limit=self._page(limit), cursor=cursor)

    @_checked
    def get_patient(self, entity_id: uuid.UUID) -> EntityPublic:
        """A patient; NotFound for an entity of another kind. GET /patients/{entity_id}."""
        with self.session() as s:
            return entities.get(s, entity_id, PATIENT)

    @_checked
    def update_patient(self, entity_id: uuid.UUID, **changes: Any) -> EntityPublic:
        """``update_entity`` of a patient. PATCH /patients/{entity_id}."""
        with self.session() as s:
            return entities.update(s, entity_id, EntityUpdate(**changes), PATIENT)

    @_checked
    def delete_patient(self, entity_id: uuid.UUID) -> None:
        """``delete_entity`` of a patient. DELETE /patients/{entity_id}."""
        with self.session() as s:
            entities.delete(s, entity_id, PATIENT)

    # kinds: /kinds
    @_checked
    def kinds(self) -> builtins.list[KindPublic]:
        """Every kind with a field policy of its own. GET /kinds."""
        with self.session() as s:
            return kinds.list_(s)

    @_checked
    def get_kind(self, kind: KindName) -> KindPublic:
        """One kind's policy; NotFound if it has none (the defaults apply). GET /kinds/{kind}."""
        with self.session() as s:
            return kinds.get(s, kind)

    @_checked
    def set_kind(
        self,
        kind: KindName,
        description: SkipValidation[str | None] = None,
        sensitive: SkipValidation[Sequence[str]] = (),
        public: SkipValidation[Sequence[str]] = (),
    ) -> KindPublic:
        """Replace the kind's policy: fields hidden from de-identified readers. PUT /kinds/{kind}."""
        with self.session() as s:
            policy = KindPolicy.model_validate({"description": description, "sensitive": sensitive, "public": public})
            return kinds.put(s, kind, policy)

    # schemas: /schemas
    @_checked
    def create_schema(self, definition: SkipValidation[Mapping[str, Any] | SchemaCreate]) -> SchemaPublic:
        """Version 1 of a schema; Conflict if the name exists. POST /schemas."""
        with self.session() as s:
            return schemas.create(s, SchemaCreate.model_validate(definition))

    @_checked
    def schemas(self) -> builtins.list[SchemaPublic]:
        """The latest version of each schema. GET /schemas."""
        with self.session() as s:
            return schemas.list_(s)

    @_checked
    def get_schema(self, name: SchemaName, version: Version = None) -> SchemaPublic:
        """A schema's latest version, or ``version``. GET /schemas/{name}?version=."""
        with self.session() as s:
            return schemas.get(s, name, version)

    @_checked
    def update_schema(
        self, name: SchemaName, definition: SkipValidation[Mapping[str, Any] | SchemaUpdate]
    ) -> SchemaPublic:
        """Publish a new version (``axes``, ``time``, ``description``, ``sensitive``; no ``name``): labels only
        appended, units and ranges may change; Conflict otherwise. PUT /schemas/{name}."""
        with self.session() as s:
            return schemas.publish(s, name, SchemaUpdate.model_validate(definition))

    @_checked
    def delete_schema(self, name: SchemaName) -> None:
        """Delete every version; Conflict while tensors use it. DELETE /schemas/{name}."""
        with self.session() as s:
            schemas.delete(s, name)

    # tensors: /tensors
    @_checked
    def create_tensor(
        self,
        entity_id: SkipValidation[uuid.UUID],
        schema: SkipValidation[str],
        origin: SkipValidation[datetime | str | None] = None,
    ) -> TensorPublic:
        """The entity's tensor under the latest version of ``schema``. POST /tensors."""
        with self.session() as s:
            return tensors.create(
                s, TensorCreate.model_validate({"entity_id": entity_id, "schema": schema, "origin": origin})
            )

    @_checked
    def create_tensors(
        self, items: SkipValidation[Iterable[TensorCreate | Mapping[str, Any]]]
    ) -> builtins.list[TensorPublic]:
        """Many tensors, ``{entity_id, schema, origin}`` each, in one transaction and a few statements."""
        with self.session() as s:
            return tensors.create_many(s, _each(_TENSORS, items))

    @_checked
    def get_tensor(self, tensor_id: uuid.UUID) -> TensorPublic:
        """A tensor's metadata (``read_tensor`` for its values). GET /tensors/{tensor_id}/meta."""
        with self.session() as s:
            return tensors.get(s, tensor_id)

    @_checked
    def update_tensor(self, tensor_id: uuid.UUID, schema_version: SkipValidation[int]) -> TensorPublic:
        """Move to a later version of its schema; new labels read as NaN until written. PATCH /tensors/{tensor_id}."""
        with self.session() as s:
            return tensors.update(s, tensor_id, TensorUpdate(schema_version=schema_version))

    @_checked
    def write_values(self, tensor_id: uuid.UUID, values: SkipValidation[Sequence[Mapping[str, Any]]]) -> WriteResult:
        """``[{time, <axis>: label, …, value}]``, all or nothing. POST /tensors/{tensor_id}/values."""
        with self.session() as s:
            return tensors.write_values(s, tensor_id, values, max_batch=self.settings.max_batch_values)

    @_checked
    def write_array(self, tensor_id: uuid.UUID, array: SkipValidation[np.ndarray], start: int = 0) -> WriteResult:
        """Bulk: ``array`` of shape (*labels per axis, time) from time index ``start``; NaN cells are left alone."""
        with self.session() as s:
            return tensors.write_array(s, tensor_id, array, start)

    @_checked
    def write_arrays(
        self, arrays: SkipValidation[Mapping[uuid.UUID, np.ndarray]], start: int = 0
    ) -> dict[uuid.UUID, int]:
        """``write_array`` for many tensors in one transaction and a few statements; values written per tensor."""
        with self.session() as s:
            return tensors.write_arrays(s, arrays, start)

    def read_tensor(self, tensor_id: uuid.UUID, **selection: Any) -> TensorView:
        """``time=``, ``start=``/``end=`` (inclusive at both ends, as REST's ``from``/``to``; clipped to the
        recorded range), ``labels={axis: label}``, ``as_of=``, ``latest=True``; see ``dust.engine.tensors.read``.
        ``view.selection`` says what was read."""
        if "stop" in selection:
            raise TypeError("read_tensor() takes end= in place of stop=; it is inclusive: start=2, end=5 reads 4 steps")
        with self.session() as s:
            return tensors.read(s, tensor_id, max_cells=self.settings.max_read_cells, **selection)

    @_checked
    def delete_tensor(self, tensor_id: uuid.UUID) -> None:
        """Delete the tensor and its values. DELETE /tensors/{tensor_id}."""
        with self.session() as s:
            tensors.delete(s, tensor_id)

    @_checked
    def erase_values(self, tensor_id: uuid.UUID, cells: SkipValidation[Sequence[Mapping[str, Any]]]) -> EraseResult:
        """Erase ``[{time, <axis>: label, …}]``, all or nothing; the values stay in the history and in "as of"
        reads before now. DELETE /tensors/{tensor_id}/values."""
        with self.session() as s:
            return tensors.erase_values(s, tensor_id, cells, max_batch=self.settings.max_batch_values)

    @_checked
    def tensor_history(
        self,
        tensor_id: uuid.UUID,
        start: TimeArg = None,
        end: TimeArg = None,
        limit: HistoryLimit = tensors.HISTORY_LIMIT,
        cursor: Cursor = None,
    ) -> HistoryPage:
        """A page of the values later writes replaced or erased, at times ``start``..``end`` (inclusive), by time;
        ``cursor=page.next_cursor`` for the next. GET /tensors/{tensor_id}/history?from=&to=&limit=&cursor=."""
        with self.session() as s:
            return tensors.history(s, tensor_id, start, end, limit=limit, cursor=cursor)

    # insights
    @_checked
    def aggregate(
        self,
        schema: SchemaName,
        label: str,
        agg: str = "mean",
        kind: KindFilter = None,
        axis: str | None = None,
        bucket: str | None = None,
        start: Timestamp | None = None,
        end: Timestamp | None = None,
        related_to: uuid.UUID | None = None,
        relation: Types = None,
        **attributes: Any,
    ) -> builtins.list[dict[str, Any]]:
        """``[{time, value, count}]``: ``agg`` (mean|min|max|sum|count|p50|p95) of ``label`` across tensors, per
        step or ``bucket`` ("week"…), from ``start`` to ``end`` (inclusive); ``related_to=``/``relation=`` and
        attributes (``ward="A"``) pick the entities. GET /insights/aggregate."""
        with self.session() as s:
            return insights.aggregate_by_step(
                s,
                schema,
                label,
                agg,
                kind,
                axis,
                bucket=bucket,
                start=start,
                end=end,
                attributes=attributes,
                related_to=related_to,
                relation=relation,
            )

    @_checked
    def analysis(
        self,
        tensor_id: uuid.UUID,
        label: str,
        horizon: Horizon = analysis.HORIZON,
        start: TimeArg = None,
        end: TimeArg = None,
        **selection: str,
    ) -> Analysis:
        """Trend, seasonality and a ``horizon``-step forecast of one series of a tensor (``position="sitting"``
        picks the label of another axis), over ``start``..``end``. GET /tensors/{tensor_id}/analysis."""
        with self.session() as s:
            return analysis.analyse(
                s,
                tensor_id,
                label,
                horizon=horizon,
                start=start,
                end=end,
                selection=selection,
                max_cells=self.settings.max_read_cells,
            )

    # anomalies: /anomalies
    @_checked
    def anomalies(
        self,
        entity_id: uuid.UUID | None = None,
        tensor_id: uuid.UUID | None = None,
        schema: SchemaName | None = None,
        label: LabelName | None = None,
        start: Timestamp | None = None,
        end: Timestamp | None = None,
        min_score: Annotated[float, Field(ge=0, le=1)] | None = None,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> AnomalyList:
        """A page of flagged values, newest first; ``cursor=page.next_cursor`` for the next. GET /anomalies."""
        with self.session() as s:
            return anomalies.list_anomalies(
                s,
                entity_id=entity_id,
                tensor_id=tensor_id,
                schema=schema,
                label=label,
                start=start,
                end=end,
                min_score=min_score,
                limit=self._page(limit),
                cursor=cursor,
            )

    @_checked
    def anomaly_rules(self) -> RuleList:
        """Which labels are scored as they are written, by which detector. GET /anomalies/rules."""
        with self.session() as s:
            return anomalies.get_rules(s)

    @_checked
    def put_anomaly_rule(
        self,
        schema: SchemaName,
        label: LabelName,
        detector: SkipValidation[str],
        settings: SkipValidation[Mapping[str, Any] | None] = None,
        threshold: SkipValidation[float] = DEFAULT_THRESHOLD,
    ) -> RulePublic:
        """Score ``label``'s values as they are written with ``detector`` (its keyword ``settings``), flagging those
        scoring at least ``threshold``. PUT /anomalies/rules/{schema}/{label}."""
        rule = RuleSet.model_validate({"detector": detector, "settings": settings or {}, "threshold": threshold})
        with self.session() as s:
            return anomalies.put_rule(s, schema, label, rule)

    @_checked
    def delete_anomaly_rule(self, schema: SchemaName, label: LabelName) -> None:
        """Stop scoring ``label``; what was flagged stays. DELETE /anomalies/rules/{schema}/{label}."""
        with self.session() as s:
            anomalies.delete_rule(s, schema, label)

    @_checked
    def scan_anomalies(
        self,
        label: SkipValidation[str | None] = None,
        tensor_id: SkipValidation[uuid.UUID | None] = None,
        schema: SkipValidation[str | None] = None,
        start: TimeArg = None,
        end: TimeArg = None,
        **joint: Any,
    ) -> ScanResult:
        """Score the stored values of ``label`` of one tensor or of every tensor of ``schema`` again, from
        ``start`` to ``end``, replacing what was flagged there (backfills, corrections); or, with
        ``detector="multivariate"`` or ``"relational"`` (and its ``relation``, ``direction``, ``via``,
        ``settings``, ``threshold``), score them with a detector over many series at once. POST /anomalies/scan."""
        given = {"label": label, "tensor_id": tensor_id, "schema": schema, "from": start, "to": end}
        request = ScanRequest.model_validate({k: v for k, v in (given | joint).items() if v is not None})
        with self.session() as s:
            return anomalies.scan(s, request)

    # jobs: /jobs
    @_checked
    def get_job(self, job_id: uuid.UUID) -> JobPublic:
        """A background job's state, progress and result (a server's or a worker's: ``dust.jobs``). GET
        /jobs/{job_id}."""
        with self.session() as s:
            return records.get(s, job_id)

    @_checked
    def jobs(
        self,
        state: State | None = None,
        kind: Annotated[str, Field(max_length=64)] | None = None,
        created_by: uuid.UUID | None = None,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> JobList:
        """A page of background jobs, newest first. GET /jobs."""
        who = str(created_by) if created_by else None
        with self.session() as s:
            return records.list_(s, state=state, kind=kind, created_by=who, limit=self._page(limit), cursor=cursor)

    # models: /models
    @_checked
    def train_model(self, request: SkipValidation[Mapping[str, Any] | ModelCreate], wait: bool = True) -> ModelPublic:
        """The next version of a model: ``{task, name, kind, target, types?, as_of?, settings?}`` as POST /models
        takes it. With ``wait`` it trains here and now (unless a server's worker took its job first) and the answer
        has its metrics; without, a server or ``dust worker`` trains it."""
        data = ModelCreate.model_validate(request)
        with self.session() as s:
            submitted = model_registry.submit(s, data)
        if wait and submitted.job_id is not None:
            model_registry.train_here(self._sessions, self.settings, submitted.job_id)
        with self.session() as s:
            return model_registry.get(s, submitted.id)

    @_checked
    def models(
        self, name: Annotated[str, Field(pattern=MODEL_NAME)] | None = None, limit: Limit = 50, cursor: Cursor = None
    ) -> ModelList:
        """Models newest first (``name``: its versions). GET /models."""
        with self.session() as s:
            return model_registry.list_(s, name=name, limit=self._page(limit), cursor=cursor)

    @_checked
    def get_model(self, model_id: uuid.UUID) -> ModelPublic:
        """A model's status, progress, metrics, version and data version. GET /models/{model_id}."""
        with self.session() as s:
            return model_registry.get(s, model_id)

    @_checked
    def predict(
        self,
        model_id: uuid.UUID,
        entity_ids: SkipValidation[Sequence[uuid.UUID | str] | None] = None,
        kind: SkipValidation[str | None] = None,
        write_back: SkipValidation[str | Mapping[str, Any] | None] = None,
        explain: SkipValidation[bool] = False,
        top: SkipValidation[int] = 10,
        candidates: SkipValidation[Sequence[Mapping[str, Any] | Sequence[Any]] | None] = None,
        source: SkipValidation[uuid.UUID | str | None] = None,
        type: SkipValidation[str | None] = None,
        as_of: SkipValidation[datetime | str | None] = None,
    ) -> PredictResult:
        """A trained model's predictions for ``entity_ids`` (or every entity of ``kind``, default the model's);
        ``write_back="attr"`` sets each predicted class as that attribute; ``explain=True`` says why.
        A link-prediction model scores ``candidates`` ((source, type, target) or {source, type, target}), or
        gives the ``top`` likeliest targets of ``source`` by ``type`` (of ``kind``); ``write_back={"relation_type":
        "predicted_x", "min_score": 0.9}`` writes those as relations. A model with node features reads them as of
        ``as_of`` (default now); ``write_back={"tensor": {...}}`` writes probabilities into tensors at that moment.
        POST /models/{model_id}/predict."""
        given: dict[str, Any] = {"entity_ids": entity_ids, "kind": kind, "explain": explain, "top": top}
        given |= {"candidates": candidate_bodies(candidates), "source": source, "type": type, "as_of": as_of}
        if write_back is not None:
            given["write_back"] = {"attribute": write_back} if isinstance(write_back, str) else write_back
        data = PredictRequest.model_validate({k: v for k, v in given.items() if v is not None})
        with self.session() as s:
            return model_registry.predict(s, model_id, data)

    # alerts: /alerts
    @_checked
    def alerts(
        self,
        entity_id: uuid.UUID | None = None,
        subject_id: uuid.UUID | None = None,
        trigger_id: uuid.UUID | None = None,
        severity: Choices = None,
        min_severity: Severity | None = None,
        state: Choices = None,
        start: Timestamp | None = None,
        end: Timestamp | None = None,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> AlertList:
        """A page of what trigger rules raised, newest first; ``start``/``end`` bound when. GET /alerts."""
        with self.session() as s:
            return alerts.list_alerts(
                s,
                entity_id=entity_id,
                subject_id=subject_id,
                trigger_id=trigger_id,
                severity=severity,
                min_severity=min_severity,
                state=state,
                start=start,
                end=end,
                limit=self._page(limit),
                cursor=cursor,
            )

    @_checked
    def get_alert(self, alert_id: AlertId) -> AlertPublic:
        """One alert. GET /alerts/{alert_id}."""
        with self.session() as s:
            return alerts.get_alert(s, alert_id)

    @_checked
    def update_alert(
        self, alert_id: AlertId, state: SkipValidation[str], note: SkipValidation[str | None] = None
    ) -> AlertPublic:
        """Acknowledge or resolve an alert (``state``), with an optional ``note``. PATCH /alerts/{alert_id}."""
        data = AlertUpdate.model_validate({"state": state, "note": note})
        with self.session() as s:
            return alerts.update_alert(s, alert_id, data)

    # triggers: /triggers
    @_checked
    def create_trigger(self, rule: SkipValidation[Mapping[str, Any]]) -> TriggerCreated:
        """A rule that acts on writes: ``{name, when, for?, then}`` as POST /triggers takes it; the answer carries
        the secret that signs its webhooks."""
        data = TriggerCreate.model_validate(rule)
        with self.session() as s:
            return triggers.create(s, data, allow_private=self.settings.webhook_allow_private)

    @_checked
    def triggers(self) -> TriggerList:
        """Every rule, by name. GET /triggers."""
        with self.session() as s:
            return triggers.list_(s)

    @_checked
    def trigger(self, trigger_id: uuid.UUID) -> TriggerPublic:
        """GET /triggers/{id}."""
        with self.session() as s:
            return triggers.get(s, trigger_id)

    @_checked
    def update_trigger(self, trigger_id: uuid.UUID, **changes: Any) -> TriggerPublic:
        """Change a rule (``enabled=False`` disables it; ``for_=`` sets ``for``); a changed rule gets a new version.
        PATCH /triggers/{id}."""
        data = TriggerUpdate.model_validate({("for" if k == "for_" else k): v for k, v in changes.items()})
        with self.session() as s:
            return triggers.update(s, trigger_id, data, allow_private=self.settings.webhook_allow_private)

    @_checked
    def delete_trigger(self, trigger_id: uuid.UUID) -> None:
        """DELETE /triggers/{id}."""
        with self.session() as s:
            triggers.delete(s, trigger_id)

    @_checked
    def trigger_versions(self, trigger_id: uuid.UUID) -> builtins.list[TriggerVersionPublic]:
        """GET /triggers/{id}/versions."""
        with self.session() as s:
            return triggers.versions(s, trigger_id)

    @_checked
    def firings(self, trigger_id: uuid.UUID, limit: Limit = 50, cursor: Cursor = None) -> FiringList:
        """What a rule fired on and did, newest first. GET /triggers/{id}/firings."""
        with self.session() as s:
            return triggers.firings(s, trigger_id, limit=limit, cursor=cursor)

    # webhooks: /webhooks
    @_checked
    def webhook_deliveries(
        self,
        state: webhooks.State | None = None,
        trigger_id: uuid.UUID | None = None,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> DeliveryList:
        """The webhook outbox, newest first (``state="dead"``: the dead letters). GET /webhooks/deliveries."""
        with self.session() as s:
            return webhooks.list_deliveries(
                s, state=state, trigger_id=trigger_id, limit=self._page(limit), cursor=cursor
            )

    @_checked
    def retry_webhook_delivery(self, delivery_id: DeliveryId) -> DeliveryPublic:
        """Send a dead or pending delivery again now (by ``dust serve`` or ``dust worker``).
        POST /webhooks/deliveries/{delivery_id}/retry."""
        with self.session() as s:
            return webhooks.retry(s, delivery_id)

    # relations: /relations and /query_master
    @_checked
    def relate(
        self,
        source_id: SkipValidation[uuid.UUID],
        target_id: SkipValidation[uuid.UUID],
        type: SkipValidation[str],
        weight: SkipValidation[float] = 1.0,
        **fields: Any,
    ) -> RelationPublic:
        """A typed, weighted edge; ``attributes=``, ``valid_from=``, ``valid_to=``. Conflict if that (source,
        target, type) exists: ``update_relation`` changes it. POST /relations."""
        with self.session() as s:
            return relations.create(
                s, RelationCreate(source_id=source_id, target_id=target_id, type=type, weight=weight, **fields)
            )

    @_checked
    def relations(
        self, entity_id: uuid.UUID | None = None, type: Types = None, limit: Limit = 50, cursor: Cursor = None
    ) -> RelationList:
        """A page of relations touching an entity and/or of some types, in creation order. GET /relations."""
        with self.session() as s:
            return relations.list_(
                s, entity_id=entity_id, types=relations.type_names(type), limit=self._page(limit), cursor=cursor
            )

    @_checked
    def get_relation(self, relation_id: uuid.UUID) -> RelationDetail:
        """One relation with ``history``, every weight it has had. GET /relations/{relation_id}."""
        with self.session() as s:
            return relations.get(s, relation_id)

    @_checked
    def update_relation(self, relation_id: uuid.UUID, **changes: Any) -> RelationDetail:
        """``weight=`` (appended to the history), ``attributes=`` (merged), ``valid_from=``, ``valid_to=`` (None
        removes a bound). PATCH /relations/{relation_id}."""
        with self.session() as s:
            return relations.update(s, relation_id, RelationUpdate(**changes))

    @_checked
    def delete_relation(self, relation_id: uuid.UUID) -> None:
        """Delete a relation. DELETE /relations/{relation_id}."""
        with self.session() as s:
            relations.delete(s, relation_id)

    @_checked
    def query_master(
        self,
        entity_id: uuid.UUID,
        type: Types = None,
        direction: Direction = "both",
        depth: Depth = 1,
        min_weight: float | None = None,
        at: Timestamp | None = None,
    ) -> Neighbourhood:
        """Entities (with their ``depth`` in hops) and edges around an entity: by type and direction, 1..3 hops,
        at least ``min_weight``, as of ``at``. GET /query_master."""
        with self.session() as s:
            return relations.neighbourhood(
                s,
                entity_id,
                types=relations.type_names(type),
                direction=direction,
                depth=depth,
                min_weight=min_weight,
                at=at,
            )

    @_checked
    def master_tensor(self, type: Types = None, at: Timestamp | None = None) -> MasterTensor:
        """R[type, source, target] = weight as sparse COO, of some types, as of ``at``. GET /query_master/tensor."""
        with self.session() as s:
            return relations.master_tensor(s, types=relations.type_names(type), at=at)

    # domain packs: /domains
    @_checked
    def supply_chain_bottlenecks(
        self,
        limit: Annotated[int, Field(ge=1, le=100)] = 10,
        horizon_days: Annotated[float, Field(gt=0, le=365)] = 14,
        window: Annotated[int, Field(ge=5, le=365)] = 14,
    ) -> SupplyChainBottlenecks:
        """Where flow concentrates (betweenness, max-flow/min-cut) and which stocks run out within
        ``horizon_days``. GET /domains/supply-chain/bottlenecks."""
        with self.session() as s:
            return supply_chain.bottlenecks(s, limit=limit, horizon_days=horizon_days, window=window)

    @_checked
    def supply_chain_what_if(self, remove: SkipValidation[Sequence[uuid.UUID | str]]) -> WhatIfResult:
        """Take sites away (nothing is changed): the retailers that starve of a product, and the maximum flow
        before and after. POST /domains/supply-chain/what-if."""
        data = WhatIf.model_validate({"remove": list(remove)})
        with self.session() as s:
            return supply_chain.what_if(s, data)

    # questions: /ask
    @_checked
    def ask(self, question: SkipValidation[str]) -> AskAnswer:
        """A question in plain English answered: ``{question, query, answer, result, candidates}``. POST /ask."""
        from dust.ask import ask

        with self.session() as s:
            return ask(s, question)

    @_checked
    def interact(
        self,
        relation_id: uuid.UUID,
        at: SkipValidation[str | datetime | None] = None,
        amount: SkipValidation[float | None] = None,
    ) -> RelationDetail:
        """An interaction at ``at`` (default now): the weight grows by its type's reinforce (or ``amount``), up to
        the cap. POST /relations/{relation_id}/interactions."""
        data = Interaction.model_validate({k: v for k, v in (("at", at), ("amount", amount)) if v is not None})
        with self.session() as s:
            return relations.interact(s, relation_id, data)

    # weight policies: /weight-policies
    @_checked
    def weight_policies(self) -> builtins.list[PolicyPublic]:
        """Every relation type's weight policy. GET /weight-policies."""
        with self.session() as s:
            return weights.list_policies(s)

    @_checked
    def get_weight_policy(self, type: RelationType) -> PolicyPublic:
        """One type's weight policy; NotFound if it has none. GET /weight-policies/{type}."""
        with self.session() as s:
            return weights.get_policy(s, type)

    @_checked
    def set_weight_policy(
        self,
        type: RelationType,
        reinforce: SkipValidation[float] = 0.0,
        half_life: SkipValidation[str | None] = None,
        cap: SkipValidation[float | None] = None,
        floor: SkipValidation[float] = 0.0,
    ) -> PolicyPublic:
        """Replace the type's weight policy: ``half_life`` an ISO 8601 duration ("P30D"; None: no decay), each
        interaction adds ``reinforce``, changes stay within [``floor``, ``cap``]. PUT /weight-policies/{type}."""
        policy = PolicySet.model_validate({"reinforce": reinforce, "half_life": half_life, "cap": cap, "floor": floor})
        with self.session() as s:
            return weights.put_policy(s, type, policy)

    @_checked
    def delete_weight_policy(self, type: RelationType) -> None:
        """Remove the type's weight policy: its weights read as recorded again. DELETE /weight-policies/{type}."""
        with self.session() as s:
            weights.delete_policy(s, type)

    # users and the audit trail: /users and /audit (sign-in, tokens and API keys are HTTP's: docs/python.md)
    @_checked
    def create_user(
        self,
        username: SkipValidation[str],
        role: SkipValidation[str],
        password: SkipValidation[str | None] = None,
        entity_id: SkipValidation[uuid.UUID | None] = None,
    ) -> UserPublic:
        """A user who signs in to the REST API; without a password, one for API keys only. POST /users."""
        data = UserCreate.model_validate(
            {"username": username, "role": role, "password": password, "entity_id": entity_id}
        )
        with self.session() as s:
            return users.create(s, data)

    @_checked
    def users(self) -> builtins.list[UserPublic]:
        """Every user. GET /users."""
        with self.session() as s:
            return users.list_(s)

    @_checked
    def get_user(self, user_id: uuid.UUID) -> UserPublic:
        """One user. GET /users/{user_id}."""
        with self.session() as s:
            return users.get(s, user_id)

    @_checked
    def update_user(self, user_id: uuid.UUID, **changes: Any) -> UserPublic:
        """``role=``, ``disabled=``, ``entity_id=`` (None unlinks), ``password=``; a change of role, password or
        status revokes the user's tokens and API keys. PATCH /users/{user_id}."""
        with self.session() as s:
            return users.update(s, user_id, UserUpdate(**changes))

    @_checked
    def audit(
        self,
        entity_id: uuid.UUID | None = None,
        user: Username = None,
        start: Timestamp | None = None,
        end: Timestamp | None = None,
        limit: AuditLimit = 100,
        cursor: Cursor = None,
    ) -> AuditList:
        """Who read or changed what over REST, newest first, from ``start`` to ``end``. GET /audit?from=&to=."""
        with self.session() as s:
            return audit.search(s, entity_id=entity_id, username=user, start=start, end=end, limit=limit, cursor=cursor)

    # plugins: /plugins
    @_checked
    def plugins(self) -> builtins.list[Plugin]:
        """Every installed plugin, DUST's own first, and what each adds. GET /plugins."""
        return registry.plugins()

    def _page(self, limit: int) -> int:
        return min(limit, self.settings.page_size_max)


def open(url: str | None = None, *, migrate: bool = True) -> Dust:
    """Open (and migrate) the DUST database at ``url`` (default: ``DUST_DATABASE_URL`` or ./dust.db)."""
    return Dust(url, migrate=migrate)
