"""The other methods of ``dust.Client`` that are more than one REST call: bulk creation, training a model."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from dust.client.http import Call, Pause, Plan
from dust.client.plans import decode, jsonable, segment
from dust.core.errors import invalid_input
from dust.engine.entities import EntityCreate, EntityPublic
from dust.models.schemas import ModelPublic, PredictResult, candidate_bodies

_ENTITIES = TypeAdapter(list[EntityCreate])
FINISHED = {"succeeded", "failed"}
POLL_SECONDS = 0.5


def create_entities(client: Any, items: Iterable[EntityCreate | Mapping[str, Any]]) -> Plan[list[EntityPublic]]:
    # Checked whole first, as the embedded call checks them: a bad item makes nothing. Then one request each.
    try:
        checked = _ENTITIES.validate_python(list(items))
    except ValidationError as problem:
        raise invalid_input([{**e, "loc": ("items", *e["loc"])} for e in problem.errors()]) from None
    made = []
    for item in checked:
        body = yield Call("POST", "/entities", json=jsonable(item))
        made.append(decode(EntityPublic, body))
    return made


def train_model(client: Any, request: Any, wait: bool = True) -> Plan[ModelPublic]:
    body = yield Call("POST", "/models", json=jsonable(request))
    model: ModelPublic = decode(ModelPublic, body)
    while wait and model.status not in FINISHED:  # the server's worker trains it: wait for the outcome
        yield Pause(POLL_SECONDS)
        model = decode(ModelPublic, (yield Call("GET", f"/models/{segment(model.id)}")))
    return model


def predict(
    client: Any,
    model_id: uuid.UUID | str,
    entity_ids: Sequence[uuid.UUID | str] | None = None,
    kind: str | None = None,
    write_back: str | Mapping[str, Any] | None = None,
    explain: bool = False,
    top: int = 10,
    candidates: Sequence[Mapping[str, Any] | Sequence[Any]] | None = None,
    source: uuid.UUID | str | None = None,
    type: str | None = None,
    as_of: datetime | str | None = None,
) -> Plan[PredictResult]:
    given: dict[str, Any] = {"entity_ids": entity_ids, "kind": kind, "explain": explain, "top": top}
    given |= {"candidates": candidate_bodies(candidates), "source": source, "type": type, "as_of": as_of}
    if write_back is not None:
        given["write_back"] = {"attribute": write_back} if isinstance(write_back, str) else write_back
    data = {k: v for k, v in given.items() if v is not None}
    body = yield Call("POST", f"/models/{segment(model_id)}/predict", json=jsonable(data))
    return decode(PredictResult, body)
