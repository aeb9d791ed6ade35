"""The shapes of the models' routes: a training request, a stored model, a prediction request and its answer.

Shared by the registry (``dust.models.registry``) and the tasks it runs; the REST API, the embedded API and the
CLI hand these over unchanged.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dust.engine.entities import KIND
from dust.engine.fields import FieldName, ShortText, Timestamp
from dust.engine.relations import TYPE

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
MAX_LABELS = 100_000
MAX_PREDICT = 10_000  # entity ids one prediction request may name
MAX_EXPLAIN = 20  # predictions one request may explain: one backward pass each
Status = Literal["queued", "running", "succeeded", "failed"]
RelationType = Annotated[str, Field(pattern=TYPE)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Target(_Strict):
    """Where the classes come from: an attribute of the entities of ``kind``, or a map of external ids."""

    attribute: FieldName | None = Field(
        None, description="Each entity of the kind holding a value (text, number or boolean) is labelled by it."
    )
    labels: dict[ShortText, ShortText] | None = Field(
        None, max_length=MAX_LABELS, description="External id (of an entity of the kind) → class."
    )
    test_labels: dict[ShortText, ShortText] | None = Field(
        None, max_length=MAX_LABELS, description="With labels: the test set (otherwise a seeded split)."
    )

    @model_validator(mode="after")
    def _one(self) -> Target:
        if (self.attribute is None) == (self.labels is None):
            raise ValueError("give attribute or labels, not both")
        if self.test_labels is not None and self.labels is None:
            raise ValueError("test_labels go with labels")
        return self


class TrainSettings(_Strict):
    """Hyper-parameters (dust.models.rgcn.Settings: the paper's AIFB settings by default) and the split."""

    epochs: int = Field(50, ge=1, le=10_000)
    hidden: int = Field(16, ge=1, le=1024)
    lr: float = Field(0.01, gt=0, le=10, allow_inf_nan=False)
    l2: float = Field(0.0, ge=0, le=1, allow_inf_nan=False, description="L2 on the first layer's weights.")
    bases: int | None = Field(None, ge=1, le=1000, description="Basis decomposition with this many bases.")
    blocks: int | None = Field(None, ge=1, le=1024, description="Block-diagonal decomposition (second layer).")
    dropout: float = Field(0.0, ge=0, lt=1, allow_inf_nan=False)
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seeds the model and the split.")
    literals: bool = Field(True, description="Attribute values as nodes (the target attribute never).")
    test_fraction: float = Field(
        0.2, ge=0, lt=1, allow_inf_nan=False, description="Share of each class held out to test, without test_labels."
    )


class ModelCreate(_Strict):
    task: str = Field(max_length=64, description="What to train: entity-classification.")
    name: str = Field(pattern=NAME, description="Training a name again makes its next version.")
    kind: str | None = Field(None, pattern=KIND, description="The kind of the entities to classify (default any).")
    target: Target
    types: list[RelationType] | None = Field(None, max_length=1000, description="Relation types (default all).")
    as_of: Timestamp | None = Field(None, description="Train on the graph as it was then.")
    settings: TrainSettings = Field(default_factory=TrainSettings)


class ModelPublic(BaseModel):
    id: uuid.UUID
    task: str
    name: str
    version: int = Field(description="1, 2, … per name.")
    kind: str | None
    target: dict[str, Any] = Field(description="{attribute} or {labels: count, test_labels: count}.")
    types: list[str] | None
    as_of: datetime | None
    settings: dict[str, Any]
    status: Status
    progress: float = Field(description="0..1, from the training job.")
    message: str | None = Field(description="What the training is doing (epoch k of n).")
    error: str | None
    job_id: uuid.UUID | None
    metrics: dict[str, Any] | None = Field(description="Once succeeded: accuracies, sizes, classes, the split.")
    data_version: datetime | None = Field(description="The instant the graph was read at: as_of, or the read's time.")
    artefact_bytes: int | None
    shared: bool = Field(description="Trained by an admin: every signed-in user may see it and predict with it.")
    created_by: str | None
    created_at: datetime
    finished_at: datetime | None


class ModelList(BaseModel):
    items: list[ModelPublic]
    next_cursor: str | None = None


class WriteBack(_Strict):
    attribute: FieldName = Field(description="Set to the predicted class on each entity predicted.")


class PredictRequest(_Strict):
    entity_ids: list[uuid.UUID] | None = Field(None, min_length=1, max_length=MAX_PREDICT)
    kind: str | None = Field(None, pattern=KIND, description="Every entity of this kind in the model's graph.")
    write_back: WriteBack | None = None
    explain: bool = Field(False, description=f"Explain each prediction (at most {MAX_EXPLAIN}).")
    top: int = Field(10, ge=1, le=100, description="Relations, neighbours and edges an explanation lists.")

    @model_validator(mode="after")
    def _one(self) -> PredictRequest:
        if self.entity_ids is not None and self.kind is not None:
            raise ValueError("give entity_ids or kind, not both")
        return self


class Node(BaseModel):
    """An end of an edge: an entity (as the caller may see it), or an attribute value (a literal node)."""

    entity_id: uuid.UUID | None = None
    name: str | None = None
    kind: str | None = None
    value: Any = Field(None, description="A literal node: the attribute's value.")


class Neighbour(Node):
    importance: float


class EdgeImportance(BaseModel):
    source: Node
    type: str
    target: Node
    importance: float


class RelationImportance(BaseModel):
    type: str
    importance: float


class Explanation(BaseModel):
    method: str = "gradient × input on edge masks"
    relations: list[RelationImportance]
    neighbours: list[Neighbour]
    edges: list[EdgeImportance]


class Prediction(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    entity_id: uuid.UUID
    name: str
    predicted: str = Field(alias="class", description="The most probable class.")
    probability: float
    probabilities: dict[str, float]
    explanation: Explanation | None = None


class PredictResult(BaseModel):
    model_id: uuid.UUID
    name: str
    version: int
    data_version: datetime | None
    predictions: list[Prediction]
    written: int = Field(0, description="Entities given the write_back attribute.")
