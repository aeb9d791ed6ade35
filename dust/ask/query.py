"""The structured query a question becomes, and the answer it gets: what ``POST /ask`` returns.

A query holds names as the asker wrote them (an entity's name, a relation phrase already mapped to its type):
the executor resolves them under the asker's access policy, so the same query asked by two people may find
different entities. Setting ``entity.id`` (as a candidate of an ambiguous answer gives it) pins the entity.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Intent = Literal[
    "value",
    "series",
    "stat",
    "aggregate",
    "trend",
    "compare",
    "related",
    "anomalies",
    "alerts",
    "list",
    "count",
    "rank",
]
Aggregate = Literal["mean", "min", "max", "sum", "count", "p50"]
Direction = Literal["in", "out", "both"]
# A time: a time index ("day 3") or text: "first" (the first recorded step: "at admission"), "latest", an ISO 8601
# date or timestamp, or a moment relative to now: "today", "today-3d", "now-24h", "today-2w" (UTC).
TimeRef = int | str
MAX_QUESTION = 500  # characters: a question is a sentence, not a document


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class EntityRef(Strict):
    name: str | None = Field(None, max_length=256, description="As written in the question; matched fuzzily.")
    kind: str | None = Field(None, max_length=64, description="The kind the question names, if any.")
    id: uuid.UUID | None = Field(None, description="Pins the entity: no name matching.")


class When(Strict):
    at: TimeRef | None = None
    start: TimeRef | None = Field(None, alias="from")
    end: TimeRef | None = Field(None, alias="to")


class Condition(Strict):
    """A comparison on an attribute, on ``age`` (years since an attribute holding a birth date), or, with
    ``schema``, on a label's value: the latest one, or at ``when`` (a range: any value in it)."""

    field: str = Field(max_length=128, description="An attribute, 'age', or a label of the schema.")
    op: Literal[">", ">=", "<", "<=", "==", "!="]
    value: float | str | bool
    schema_name: str | None = Field(None, alias="schema", max_length=64)
    axis: str | None = Field(None, max_length=64)
    select: dict[str, str] = Field(default_factory=dict, description="A label of each other axis.")
    when: When | None = None


class Cohort(Strict):
    kind: str | None = Field(None, max_length=64)
    attributes: dict[str, Any] = Field(default_factory=dict, description="Equal to these values.")
    conditions: list[Condition] = Field(default_factory=list, max_length=8)
    related_to: EntityRef | None = None
    relation: list[str] = Field(default_factory=list, max_length=8, description="Relation types; none: any.")
    direction: Direction = Field("both", description="out: related_to is the relation's source; in: its target.")


class Query(Strict):
    intent: Intent
    entity: EntityRef | None = None
    other: EntityRef | None = Field(None, description="The second entity of a comparison.")
    schema_name: str | None = Field(None, alias="schema", max_length=64)
    labels: list[str] = Field(default_factory=list, max_length=16, description="Labels of the schema's axis.")
    axis: str | None = Field(None, max_length=64)
    select: dict[str, str] = Field(default_factory=dict, description="A label of each other axis.")
    when: When = Field(default_factory=When)
    agg: Aggregate | None = None
    cohort: Cohort | None = None
    per: Cohort | None = Field(
        None, description="rank: what is counted around each ranked entity (related_to is that entity)."
    )
    limit: int | None = Field(None, ge=1, le=100, description="rank: how many to give (default 10).")

    def dumped(self) -> dict[str, Any]:
        """As JSON, with what is unset left out: the form the question set's gold queries are written in."""
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=True)


class Candidate(BaseModel):
    id: uuid.UUID
    kind: str
    name: str
    external_id: str | None
    attributes: dict[str, Any] = Field(description="Those that tell the candidates apart.")


class AskRequest(Strict):
    question: str | None = Field(None, max_length=MAX_QUESTION, description="In plain English.")
    query: Query | None = Field(None, description="A structured query an earlier answer gave, to run again.")


class AskAnswer(BaseModel):
    question: str | None
    query: Query
    answer: str = Field(description="A sentence, with units.")
    result: Any = Field(description="The data: a value, a series, entities, anomalies or alerts.")
    candidates: list[Candidate] | None = Field(None, description="When a name fits several entities: which one?")
