"""/tensors (and /tensor/{id}): tensors over time, their values and history."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from dust.api.deps import SessionDep, SettingsDep, allow
from dust.core.errors import InvalidInput
from dust.core.security import Permission
from dust.engine import tensors
from dust.engine.tensors import HistoryEntry, TensorCreate, TensorPublic, TensorUpdate, WriteResult

router = APIRouter(tags=["tensors"])
READ_PARAMS = {"time", "from", "to", "as_of"}
TimeParam = Annotated[str | None, Query(max_length=64, description="A time index or an ISO 8601 timestamp.")]


class ValuesWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    values: list[dict[str, Any]] = Field(
        description='Cells to write: [{"time": 3, "<axis>": "<label>", "value": 128.0}, …]; all or nothing.'
    )


@router.post(
    "/tensors",
    status_code=status.HTTP_201_CREATED,
    response_model=TensorPublic,
    response_model_by_alias=True,
    **allow(Permission.write),
)
def create(data: TensorCreate, session: SessionDep) -> TensorPublic:
    """Create an entity's tensor under a schema (one per entity and schema)."""
    return tensors.create(session, data)


@router.get("/tensors/{tensor_id}", summary="Read a tensor", **allow(Permission.read))
@router.get("/tensor/{tensor_id}", summary="Read a tensor (alias)", **allow(Permission.read))
def read(
    tensor_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    time: TimeParam = None,
    start: Annotated[str | None, Query(alias="from", max_length=64, description="First time (inclusive).")] = None,
    stop: Annotated[str | None, Query(alias="to", max_length=64, description="Last time (inclusive).")] = None,
    as_of: Annotated[datetime | None, Query(description="Values as they stood at this write time.")] = None,
) -> dict[str, Any]:
    """Metadata and values. ``time`` (an index, a timestamp or ``latest``), ``from``/``to``, and
    ``<axis>=<label>`` (one label drops the axis; a comma list keeps it) select slices."""
    labels = _label_params(request)
    latest = time == "latest"
    view = tensors.read(
        session,
        tensor_id,
        time=None if latest else time,
        start=start,
        stop=stop,
        labels=labels,
        as_of=as_of,
        latest=latest,
        max_cells=settings.max_read_cells,
    )
    return view.to_json()


def _label_params(request: Request) -> dict[str, str | list[str]]:
    labels: dict[str, str | list[str]] = {}
    for name, value in request.query_params.multi_items():
        if name in READ_PARAMS:
            continue
        if name in labels:
            raise InvalidInput(f"axis '{name}' is given twice; use a comma list: {name}=a,b")
        labels[name] = value.split(",") if "," in value else value
    return labels


@router.patch(
    "/tensors/{tensor_id}", response_model=TensorPublic, response_model_by_alias=True, **allow(Permission.write)
)
def update(tensor_id: uuid.UUID, data: TensorUpdate, session: SessionDep) -> TensorPublic:
    """Move the tensor to a later version of its schema (new labels read as not recorded)."""
    return tensors.update(session, tensor_id, data)


@router.delete("/tensors/{tensor_id}", status_code=status.HTTP_204_NO_CONTENT, **allow(Permission.write))
def delete(tensor_id: uuid.UUID, session: SessionDep) -> Response:
    """Delete a tensor and all its values."""
    tensors.delete(session, tensor_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/tensors/{tensor_id}/values", response_model=WriteResult, **allow(Permission.write))
def write(tensor_id: uuid.UUID, data: ValuesWrite, session: SessionDep, settings: SettingsDep) -> WriteResult:
    """Write a batch of cells, all or nothing; replaced values go to the history."""
    return tensors.write_values(
        session, tensor_id, data.values, max_batch=settings.max_batch_values, max_blocks=settings.max_batch_blocks
    )


@router.get("/tensors/{tensor_id}/history", response_model=list[HistoryEntry], **allow(Permission.read))
def history(
    tensor_id: uuid.UUID,
    session: SessionDep,
    start: Annotated[str | None, Query(alias="from", max_length=64)] = None,
    stop: Annotated[str | None, Query(alias="to", max_length=64)] = None,
) -> list[HistoryEntry]:
    """Values that later writes replaced, with when each was written and replaced."""
    return tensors.history(session, tensor_id, start, stop)
