"""The shapes of the models' routes: a training request, a stored model, a prediction request and its answer.

Shared by the registry (``dust.models.registry``) and the tasks it runs; the REST API, the embedded API and the
CLI hand these over unchanged.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from dust.engine.entities import KIND
from dust.engine.fields import FieldName, ShortText, Timestamp
from dust.engine.relations import TYPE
from dust.engine.schemas import NAME as SCHEMA

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
MAX_LABELS = 100_000
MAX_PREDICT = 10_000  # entity ids one prediction request may name
MAX_EXPLAIN = 20  # predictions one request may explain: one backward pass each
Status = Literal["queued", "running", "succeeded", "failed"]
RelationType = Annotated[str, Field(pattern=TYPE)]
MAX_FEATURE_TENSORS = 20  # schemas a model reads features from
MAX_FEATURE_ATTRIBUTES = 100
Labels = dict[Annotated[str, Field(max_length=64)], ShortText | list[ShortText]]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Target(_Strict):
    """What to learn. Entity classification: where the classes come from, an attribute of the entities of ``kind``
    or a map of external ids. Link prediction: the relation types to predict."""

    attribute: FieldName | None = Field(
        None, description="Each entity of the kind holding a value (text, number or boolean) is labelled by it."
    )
    labels: dict[ShortText, ShortText] | None = Field(
        None, max_length=MAX_LABELS, description="External id (of an entity of the kind) → class."
    )
    test_labels: dict[ShortText, ShortText] | None = Field(
        None, max_length=MAX_LABELS, description="With labels: the test set (otherwise a seeded split)."
    )
    relations: list[RelationType] | None = Field(
        None,
        min_length=1,
        max_length=1000,
        description="Link prediction: the relation types to predict (a share of them held out to test).",
    )

    @model_validator(mode="after")
    def _one(self) -> Target:
        if self.relations is not None:
            if self.attribute is not None or self.labels is not None:
                raise ValueError("relations (link prediction) go alone, without attribute or labels")
            return self
        if (self.attribute is None) == (self.labels is None):
            raise ValueError("give attribute or labels, not both (or relations, for link prediction)")
        if self.test_labels is not None and self.labels is None:
            raise ValueError("test_labels go with labels")
        return self


class _Schema(_Strict):
    """A part naming a tensor schema by ``schema`` (a pydantic model cannot have a field of that name)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_name: str = Field(alias="schema", pattern=SCHEMA, description="A tensor schema's name.")

    @model_serializer(mode="wrap")
    def _as_sent(self, handler: Any) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {"schema": data.pop("schema_name"), **data}


class TensorFeatures(_Schema):
    labels: Labels | None = Field(
        None,
        max_length=8,
        description="The cells to read, as a tensor read picks them: axis → a label or a list (default every cell).",
    )


class Features(_Strict):
    """Node features (dust.models.features): summaries of the entities' tensors and their attributes, as of the
    model's date, standardised with the training entities' statistics."""

    tensors: list[TensorFeatures] | Literal["all"] = Field(
        default_factory=list,
        description="Schemas whose tensors give features (latest value, mean, min, max, std, missing), or "
        "\"all\": every schema of the graph's entities' tensors.",
    )
    window: int | None = Field(
        None, ge=1, le=100_000_000, description="Summaries over the last N time steps (default every step)."
    )
    attributes: list[FieldName] = Field(
        default_factory=list,
        max_length=MAX_FEATURE_ATTRIBUTES,
        description="Attributes as features: numbers and booleans as values, dates as years before the model's "
        "date, texts one-hot (the most common).",
    )
    embeddings: bool = Field(
        True,
        description="Keep the learnt vector per node beside the features (the paper's featureless input); false: "
        "the first layer sees the features alone.",
    )

    @model_validator(mode="after")
    def _some(self) -> Features:
        if self.tensors != "all":
            if not self.tensors and not self.attributes:
                raise ValueError('give tensors (a list of {schema, labels?}, or "all") or attributes, or both')
            if len(self.tensors) > MAX_FEATURE_TENSORS:
                raise ValueError(f"at most {MAX_FEATURE_TENSORS} tensor schemas")
            names = [t.schema_name for t in self.tensors]
            if len(set(names)) != len(names):
                raise ValueError("each schema once: name its cells in one labels map")
        if len(set(self.attributes)) != len(self.attributes):
            raise ValueError("each attribute once")
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
    features: Features | None = Field(
        None, description="Entity classification: node features from tensors and attributes (default none)."
    )
    # Link prediction only (dust.models.link.Settings); its defaults, and its own for the fields above, are the
    # task's (dust.models.link_prediction.DEFAULTS), filled in when the request is taken.
    layers: int | None = Field(None, ge=0, le=4, description="Link prediction: R-GCN layers (0: DistMult alone).")
    negatives: int | None = Field(None, ge=1, le=100, description="Link prediction: corruptions per triple.")
    edge_dropout: float | None = Field(
        None, ge=0, lt=1, allow_inf_nan=False, description="Link prediction: share of edges dropped each epoch."
    )


class ModelCreate(_Strict):
    task: str = Field(max_length=64, description="What to train: entity-classification or link-prediction.")
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
    target: dict[str, Any] = Field(
        description="{attribute}, {labels: count, test_labels: count} or {relations: [types]}."
    )
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


class TensorWriteBack(_Schema):
    """Probabilities written into each predicted entity's tensor of ``schema`` (made if it has none), at the time
    step holding the prediction's moment: one class's into one cell, or each class's into its own."""

    labels: dict[Annotated[str, Field(max_length=64)], ShortText] = Field(
        default_factory=dict, max_length=8, description="The cell: a label of each axis (but ``axis``)."
    )
    class_: ShortText | None = Field(None, alias="class", description="Write this class's probability.")
    axis: str | None = Field(
        None, max_length=64, description="Write each class's probability at the label of its name on this axis."
    )

    @model_validator(mode="after")
    def _one(self) -> TensorWriteBack:
        if (self.class_ is None) == (self.axis is None):
            raise ValueError("give class (its probability into one cell) or axis (each class's at its label), not both")
        return self


class WriteBack(_Strict):
    attribute: FieldName | None = Field(None, description="Set to the predicted class on each entity predicted.")
    tensor: TensorWriteBack | None = Field(None, description="Class probabilities into a tensor, at a time step.")
    relation_type: RelationType | None = Field(
        None,
        description="Link prediction: each predicted relation scoring min_score or more made a relation of this "
        "type, its weight the score (an existing one's weight set).",
    )
    min_score: float = Field(0.5, ge=0, le=1, allow_inf_nan=False, description="Link prediction: with relation_type.")

    @model_validator(mode="after")
    def _some(self) -> WriteBack:
        if self.attribute is None and self.tensor is None and self.relation_type is None:
            raise ValueError("give attribute, tensor, or both (or relation_type, for link prediction)")
        return self


class Candidate(_Strict):
    source: uuid.UUID
    type: RelationType
    target: uuid.UUID


def candidate_bodies(candidates: Any) -> Any:
    """Candidates as a request takes them: each (source, type, target) as {source, type, target}; anything else
    as it is, for the request's check to name."""
    if not isinstance(candidates, list | tuple):
        return candidates
    keys = ("source", "type", "target")
    return [dict(zip(keys, c, strict=False)) if isinstance(c, list | tuple) else c for c in candidates]


class PredictRequest(_Strict):
    entity_ids: list[uuid.UUID] | None = Field(None, min_length=1, max_length=MAX_PREDICT)
    kind: str | None = Field(
        None, pattern=KIND, description="Every entity of this kind in the model's graph; with source: the targets'."
    )
    write_back: WriteBack | None = None
    explain: bool = Field(False, description=f"Explain each prediction (at most {MAX_EXPLAIN}).")
    top: int = Field(
        10, ge=1, le=100, description="Relations, neighbours and edges an explanation lists; with source: targets."
    )
    candidates: list[Candidate] | None = Field(
        None, min_length=1, max_length=MAX_PREDICT, description="Link prediction: relations to score."
    )
    source: uuid.UUID | None = Field(None, description="Link prediction: with type, its top most likely targets.")
    type: RelationType | None = Field(None, description="Link prediction: the relation type of source's targets.")
    as_of: Timestamp | None = Field(
        None,
        description="Entity classification: node features as of then (default now; the graph is the model's); a "
        "tensor write-back goes to the time step holding it.",
    )

    @model_validator(mode="after")
    def _one(self) -> PredictRequest:
        if self.entity_ids is not None and self.kind is not None:
            raise ValueError("give entity_ids or kind, not both")
        if self.candidates is not None and (self.source is not None or self.type is not None):
            raise ValueError("give candidates, or source and type, not both")
        if (self.source is None) != (self.type is None):
            raise ValueError("source and type go together: the top targets of source by a relation of type")
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


class LinkPrediction(BaseModel):
    source_id: uuid.UUID
    source_name: str
    type: str
    target_id: uuid.UUID
    target_name: str
    score: float = Field(description="σ(f(s, r, o)): the model's probability that the relation holds, its strength.")
    exists: bool = Field(description="A relation of the type from source to target is stored.")


class PredictResult(BaseModel):
    model_id: uuid.UUID
    name: str
    version: int
    data_version: datetime | None
    predictions: list[Prediction]
    links: list[LinkPrediction] = Field(default_factory=list, description="Link prediction: scored relations.")
    written: int = Field(0, description="Entities given the write_back attribute, or relations written.")
