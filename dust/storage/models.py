"""The tables. One class per table; the engine reaches them only through ``dust.storage.repositories``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.schema import FetchedValue
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite itself keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    @property
    def python_type(self) -> type[datetime]:
        return datetime  # a TypeDecorator says ``object`` unless told (dust.storage.db's remembered conversions ask)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def inserted_by() -> Any:
    """``txid``: the transaction that inserted a row of a paged list (entities, relations, audit_log).

    On PostgreSQL its pg_current_xact_id(), set by the column's default (migration 0008); NULL on SQLite, which
    needs none. A page remembers the transactions in progress when it was read, and the next page returns their
    rows that fell behind its cursor (dust.engine.paging). Never exported: imported rows belong to the import.
    """
    return mapped_column(BigInteger, server_default=FetchedValue())


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class Entity(Base):
    __tablename__ = "entities"
    __table_args__ = (
        UniqueConstraint("kind", "external_id", name="uq_entities_kind_external_id"),
        Index("ix_entities_kind_created", "kind", "created_at", "id"),
        Index("ix_entities_created", "created_at", "id"),
        Index("ix_entities_txid", "txid"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(512))
    external_id: Mapped[str | None] = mapped_column(String(256))
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The user who created it: a member sees what they created even before relating it to themselves.
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    txid: Mapped[int | None] = inserted_by()


class EntityKind(Base):
    """Policy for one kind of entity: which of its fields are sensitive (hidden from de-identified readers)."""

    __tablename__ = "entity_kinds"

    kind: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str | None] = mapped_column(String(2000))
    sensitive: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Default-sensitive fields (Settings.sensitive_fields) this kind releases.
    public: Mapped[list[str]] = mapped_column(JSON, default=list)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Schema(Base):
    """One version of a tensor schema; ``definition`` holds its axes and time axis as validated JSON."""

    __tablename__ = "schemas"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_schemas_name_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    definition: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Tensor(Base):
    __tablename__ = "tensors"
    __table_args__ = (
        UniqueConstraint("entity_id", "schema_name", name="uq_tensors_entity_schema"),
        Index("ix_tensors_schema", "schema_name"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    entity_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("entities.id", ondelete="CASCADE"))
    schema_name: Mapped[str] = mapped_column(String(128))
    schema_version: Mapped[int] = mapped_column(Integer)
    origin: Mapped[datetime]
    # The recorded time range (first and last time index holding any value), kept on write.
    time_min: Mapped[int | None] = mapped_column(BigInteger)
    time_max: Mapped[int | None] = mapped_column(BigInteger)
    # The write stamp (µs) of the last write, taken under the tensor's lock: the next write stamps later, even if
    # the clock stepped back, and an "as of" read before it need not wait for writes in flight (0 = not known).
    stamped_us: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Time steps per block, set at creation from the schema's cell count (dust.engine.blocks.steps_for) and fixed
    # once the tensor has blocks. The default, 64, is what every block held before migration 0011: a row
    # imported from an export made before it comes with such blocks.
    block_steps: Mapped[int] = mapped_column(Integer, default=64, server_default="64")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class TensorBlock(Base):
    """``tensors.block_steps`` consecutive time steps × all cells of one tensor (encoding: ``dust.engine.blocks``);
    block ``n`` holds time indices ``n × block_steps`` to ``(n + 1) × block_steps - 1``.

    ``data`` holds little-endian float64 values, cell by cell (NaN = not recorded), or a mostly empty block's
    sparse form (``shape`` ends in ``blocks.SPARSE``); ``stamps`` the int64 write time of each cell in
    microseconds since the epoch (0 = never written), zlib-compressed, which answers "as of" reads. ``shape`` is
    the cell shape the block was written with, so a block written before a schema gained labels still reads.
    """

    __tablename__ = "tensor_blocks"

    tensor_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tensors.id", ondelete="CASCADE"), primary_key=True)
    block: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    shape: Mapped[str] = mapped_column(String(128))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    stamps: Mapped[bytes] = mapped_column(LargeBinary)


class TensorHistory(Base):
    """A value that a later write replaced (or an erase removed: ``new_value`` null): what it was, since when,
    and when it was replaced."""

    __tablename__ = "tensor_history"
    __table_args__ = (Index("ix_tensor_history_cell", "tensor_id", "time_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tensor_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tensors.id", ondelete="CASCADE"))
    time_index: Mapped[int] = mapped_column(BigInteger)
    labels: Mapped[list[str]] = mapped_column(JSON)
    value: Mapped[float] = mapped_column(Float)
    written_us: Mapped[int] = mapped_column(BigInteger)
    replaced_us: Mapped[int] = mapped_column(BigInteger)
    new_value: Mapped[float | None] = mapped_column(Float)


class AnomalyRule(Base):
    """Which detector scores the values of a label of a schema as they are written, with what settings, and the
    score from which a value is flagged. Scoring is opt-in per label: a label without a rule costs nothing."""

    __tablename__ = "anomaly_rules"

    schema_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    label: Mapped[str] = mapped_column(String(128), primary_key=True)
    detector: Mapped[str] = mapped_column(String(64))
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    threshold: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AnomalyState(Base):
    """A detector's state for one series (one cell of one tensor) and the last time index it scored, so scoring
    carries on after a restart from here, never by reading the series' history again."""

    __tablename__ = "anomaly_states"

    tensor_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tensors.id", ondelete="CASCADE"), primary_key=True)
    cell: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    detector: Mapped[str] = mapped_column(String(64), primary_key=True)
    label: Mapped[str] = mapped_column(String(128))  # the rule's: a changed or deleted rule drops its states
    # The rule's detector and settings that made the state (a digest): a state made under others is not carried on
    # from, even if a write that read the rules before they changed stored it after they were.
    rule: Mapped[str] = mapped_column(String(32))
    state: Mapped[dict[str, Any]]
    last_time: Mapped[int] = mapped_column(BigInteger)


class Anomaly(Base):
    """A value a detector flagged. ``reason`` has ``{label}`` filled in and keeps ``{entity}``, filled in as each
    reader may see the entity (a pseudonym for de-identified readers)."""

    __tablename__ = "anomalies"
    __table_args__ = (
        Index("ix_anomalies_entity", "entity_id", "id"),
        Index("ix_anomalies_series", "tensor_id", "cell", "time_index"),
        Index("ix_anomalies_schema", "schema_name", "label", "id"),
        Index("ix_anomalies_txid", "txid"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)  # as the audit log's: paged by it
    tensor_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tensors.id", ondelete="CASCADE"))
    entity_id: Mapped[uuid.UUID] = mapped_column(Uuid)  # the tensor's; kept here to filter and check access
    schema_name: Mapped[str] = mapped_column(String(128))
    label: Mapped[str] = mapped_column(String(128))
    cell: Mapped[int] = mapped_column(BigInteger)
    time_index: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime]  # the start of the time step
    value: Mapped[float] = mapped_column(Float)
    score: Mapped[float] = mapped_column(Float)
    detector: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    txid: Mapped[int | None] = inserted_by()


class Trigger(Base):
    """A rule that acts on writes: when a written value, an anomaly score or an attribute meets its condition,
    it raises alerts, writes values, sets attributes, changes weights or calls webhooks (dust.engine.triggers).
    ``document`` is the rule as given; the scope columns repeat its ``when`` so that a write finds the rules
    that may fire on it by (event, schema, label) without reading every rule."""

    __tablename__ = "triggers"
    __table_args__ = (UniqueConstraint("name", name="uq_triggers_name"), Index("ix_triggers_scope", "schema_name"))

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer, default=1)
    enabled: Mapped[bool] = mapped_column(default=True)
    event: Mapped[str] = mapped_column(String(16))  # value | anomaly | attribute
    kind: Mapped[str | None] = mapped_column(String(64))
    schema_name: Mapped[str | None] = mapped_column(String(128))
    label: Mapped[str | None] = mapped_column(String(128))
    document: Mapped[dict[str, Any]]
    secret: Mapped[str] = mapped_column(String(128))  # signs its webhook bodies (HMAC-SHA256)
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class TriggerVersion(Base):
    """Every version of a rule's document, the current one included: what a firing ran is always readable."""

    __tablename__ = "trigger_versions"

    trigger_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("triggers.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    document: Mapped[dict[str, Any]]
    enabled: Mapped[bool] = mapped_column(default=True)
    changed_by: Mapped[str | None] = mapped_column(String(64))
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)


class TriggerFiring(Base):
    """One time a rule fired: on which entity and value, caused by what (``cause``: the chain of firings whose
    effects led here, empty for a direct write), and what it did (``effects``)."""

    __tablename__ = "trigger_firings"
    __table_args__ = (Index("ix_trigger_firings_trigger", "trigger_id", "id"), Index("ix_trigger_firings_txid", "txid"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trigger_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("triggers.id", ondelete="CASCADE"))
    trigger_version: Mapped[int] = mapped_column(Integer)
    entity_id: Mapped[uuid.UUID] = mapped_column(Uuid)  # no foreign key: the record outlives the entity
    tensor_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    schema_name: Mapped[str | None] = mapped_column(String(128))
    label: Mapped[str | None] = mapped_column(String(128))
    time_index: Mapped[int | None] = mapped_column(BigInteger)
    value: Mapped[float | None] = mapped_column(Float)
    depth: Mapped[int] = mapped_column(Integer, default=0)
    cause: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    effects: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    txid: Mapped[int | None] = inserted_by()


class Alert(Base):
    """What a rule raised on an entity: the patient whose value fired it, or a member of their care team reached
    over relations. Open until acknowledged or resolved; every change of state is audited."""

    __tablename__ = "alerts"
    __table_args__ = (
        Index("ix_alerts_entity", "entity_id", "id"),
        Index("ix_alerts_state", "state", "id"),
        Index("ix_alerts_txid", "txid"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entity_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("entities.id", ondelete="CASCADE"))
    subject_id: Mapped[uuid.UUID] = mapped_column(Uuid)  # the entity whose value (or attribute) fired the rule
    trigger_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("triggers.id", ondelete="SET NULL"))
    firing_id: Mapped[int | None] = mapped_column(Integer)
    severity: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(String(1000))
    state: Mapped[str] = mapped_column(String(16), default="open")  # open | acknowledged | resolved
    schema_name: Mapped[str | None] = mapped_column(String(128))
    label: Mapped[str | None] = mapped_column(String(128))
    value: Mapped[float | None] = mapped_column(Float)
    time_index: Mapped[int | None] = mapped_column(BigInteger)
    at: Mapped[datetime | None]  # the start of the time step of the value
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(String(1000))  # said with the last change of state
    txid: Mapped[int | None] = inserted_by()


class WebhookDelivery(Base):
    """The outbox: a webhook call written in the transaction of the write that caused it, delivered after commit
    by the job layer, at least once, and dead-lettered after too many failures."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
        Index("ix_webhook_deliveries_trigger", "trigger_id", "id"),
        Index("ix_webhook_deliveries_txid", "txid"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trigger_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("triggers.id", ondelete="SET NULL"))
    firing_id: Mapped[int | None] = mapped_column(Integer)
    url: Mapped[str] = mapped_column(String(2048))
    body: Mapped[str] = mapped_column(String)  # the exact bytes signed and sent, as UTF-8 JSON
    idempotency_key: Mapped[str] = mapped_column(String(64))
    secret: Mapped[str] = mapped_column(String(128))  # the rule's at the time of the firing
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending | delivered | dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]
    txid: Mapped[int | None] = inserted_by()  # a paged list (GET /webhooks/deliveries)


class Job(Base):
    """A background job's state, the record of truth: the queue (huey) only carries its id to a worker, which
    claims it here, so a job runs once even if its message is delivered twice or enqueued again after a restart."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state", "state", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(16), default="queued")  # queued | running | succeeded | failed
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str | None] = mapped_column(String(1000))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(String(2000))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # Who runs it ("host:pid") and when it last said it still does: a job left running by a dead process is
    # told from one still running by these (dust.jobs.records.sweep).
    worker: Mapped[str | None] = mapped_column(String(128))
    heartbeat_at: Mapped[datetime | None]


class Model(Base):
    """One version of a named relational model (dust.models.registry): what it was asked to learn, its training
    job, its metrics and the instant of the graph it learnt from (``data_version``). ``artefact`` is torch.save's
    bytes of its weights and the graph they fit, read only to predict (deferred: lists never load it)."""

    __tablename__ = "models"
    __table_args__ = (
        UniqueConstraint("name", "version", name="uq_models_name_version"),
        Index("ix_models_created", "created_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    task: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str | None] = mapped_column(String(64))
    target: Mapped[dict[str, Any]]
    settings: Mapped[dict[str, Any]]  # hyper-parameters, relation types, as_of
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued | running | succeeded | failed
    error: Mapped[str | None] = mapped_column(String(2000))
    job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)  # no foreign key: jobs are not exported
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    data_version: Mapped[datetime | None]
    artefact: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    artefact_bytes: Mapped[int | None] = mapped_column(BigInteger)
    shared: Mapped[bool] = mapped_column(default=False)  # trained by an admin: every user may use it
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class WeightPolicy(Base):
    """How the weights of one relation type change with time: each interaction adds ``reinforce`` (up to
    ``cap``), and a weight decays with ``half_life_seconds`` from its last recorded change. Decay is computed
    when a weight is read, never written per tick."""

    __tablename__ = "weight_policies"

    type: Mapped[str] = mapped_column(String(64), primary_key=True)
    reinforce: Mapped[float] = mapped_column(Float, default=0.0)
    half_life_seconds: Mapped[float | None] = mapped_column(Float)
    cap: Mapped[float | None] = mapped_column(Float)
    floor: Mapped[float] = mapped_column(Float, default=0.0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Relation(Base):
    __tablename__ = "relations"
    __table_args__ = (
        UniqueConstraint("source_id", "target_id", "type", name="uq_relations_edge"),
        Index("ix_relations_source", "source_id", "type"),
        Index("ix_relations_target", "target_id", "type"),
        Index("ix_relations_txid", "txid"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    source_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("entities.id", ondelete="CASCADE"))
    target_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("entities.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(64))
    weight: Mapped[float] = mapped_column(Float)
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    valid_from: Mapped[datetime | None]
    valid_to: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    txid: Mapped[int | None] = inserted_by()


class RelationWeight(Base):
    """The weight history of a relation: each weight and when it took effect (the first is the creation)."""

    __tablename__ = "relation_weights"
    __table_args__ = (Index("ix_relation_weights_relation", "relation_id", "changed_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    relation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("relations.id", ondelete="CASCADE"))
    weight: Mapped[float] = mapped_column(Float)
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)


class IdempotencyKey(Base):
    """A POST made with an ``Idempotency-Key``: its request fingerprint and, once done, its response."""

    __tablename__ = "idempotency_keys"

    scope: Mapped[str] = mapped_column(String(300), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[int | None] = mapped_column(Integer)
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The process running the request (dust.api.idempotency), and until when its claim holds unless renewed.
    owner: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[datetime | None]
    # Set by the request's own transaction as it commits: its work is done, and must never run again.
    committed_at: Mapped[datetime | None]


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("entities.id", ondelete="SET NULL"))
    disabled: Mapped[bool] = mapped_column(default=False)
    # Bumped on logout-everywhere, disable and role change: every token issued before stops working.
    token_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class RefreshToken(Base):
    """One refresh token (only its SHA-256 is kept). Tokens of one login form a family; reuse revokes it."""

    __tablename__ = "refresh_tokens"
    __table_args__ = (Index("ix_refresh_tokens_family", "family_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    family_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """A key for a machine client, acting as its user. Shown once; only its SHA-256 is kept."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    # Every key expires: a key minted from a stolen token must not outlive the theft indefinitely.
    expires_at: Mapped[datetime]


class RevokedToken(Base):
    """An access token revoked before its expiry (logout), kept until it would have expired."""

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime]


class LoginFailure(Base):
    __tablename__ = "login_failures"
    __table_args__ = (
        Index("ix_login_failures_user", "username", "at"),
        Index("ix_login_failures_client", "client", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64))
    client: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditRecord(Base):
    """Who read or changed what, when, from where. Append-only: no route updates or deletes it."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_entity", "entity_id", "at"),
        Index("ix_audit_user", "username", "at"),
        Index("ix_audit_at", "at"),
        Index("ix_audit_txid", "txid"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    username: Mapped[str | None] = mapped_column(String(64))
    role: Mapped[str | None] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(16))
    resource: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[str | None] = mapped_column(String(64))
    # No foreign key: the record outlives the entity it speaks of.
    entity_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    request_id: Mapped[str | None] = mapped_column(String(128))
    client: Mapped[str | None] = mapped_column(String(64))
    method: Mapped[str | None] = mapped_column(String(8))
    path: Mapped[str | None] = mapped_column(String(512))
    txid: Mapped[int | None] = inserted_by()


class CacheEpoch(Base):
    """A counter per cached kind of thing (credentials, schemas), raised by every change that makes a cached copy
    wrong. Each request reads them all in one query and uses a copy only if it was made under the current value,
    so a change committed by any process is seen by the very next request of every process."""

    __tablename__ = "cache_epochs"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)
