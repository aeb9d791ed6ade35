"""/tensors (and /tensor/{id}): tensors over time, their values and history."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import Query, Request, Response, status
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
    model_validator,
)

from dust.api.deps import Router, SessionDep, SettingsDep, allow, on_the_loop, reads_first
from dust.api.jsonbody import OrjsonRoute
from dust.api.query import QueryModel, documented
from dust.core.errors import InvalidInput
from dust.core.security import Permission
from dust.engine import schemas, tensors
from dust.engine.fields import Timestamp
from dust.engine.tensors import (
    HISTORY_LIMIT,
    MAX_HISTORY_LIMIT,
    EraseResult,
    HistoryPage,
    TensorCreate,
    TensorPublic,
    TensorUpdate,
    WriteResult,
)
from dust.engine.timegrid import MAX_TIME_INDEX, MIN_TIME_INDEX

router = Router(tags=["tensors"])
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such tensor, or not yours to see."}}
SENSITIVE: dict[int | str, dict[str, Any]] = {
    403: {"description": "The schema is sensitive: de-identified readers get aggregates only."}
}
INDEX_TEXT = r"^\s*-?[0-9]+\s*$"  # an index as text; eight digits that name a day are refused (timegrid)


class ReadQuery(QueryModel):
    """What a read selects, besides its labels (``<axis>=<label>``, every other name in the query)."""

    time: str | None = Field(
        None,
        max_length=64,
        description="A time index, an ISO 8601 timestamp or latest (8 digits that name a day: 422).",
    )
    start: str | None = Field(None, alias="from", max_length=64, description="First time (inclusive).")
    end: str | None = Field(None, alias="to", max_length=64, description="Last time (inclusive).")
    as_of: Timestamp | None = Field(None, description="Values as they stood at this write time.")


READ_PARAMS = ReadQuery.names()


class Cell(BaseModel):
    """One cell to write: its time, its label on each axis of the schema (``"metric": "heart_rate"``), its value."""

    # The axis labels are the other properties: strings, under keys that are axis names.
    model_config = ConfigDict(extra="allow", json_schema_extra={"propertyNames": {"pattern": schemas.NAME}})
    __pydantic_extra__: dict[str, str] = Field(init=False)

    time: (
        Annotated[int, Field(ge=MIN_TIME_INDEX, le=MAX_TIME_INDEX)]
        | datetime
        | Annotated[str, Field(pattern=INDEX_TEXT)]
    ) = Field(
        description="A time index (negative before the origin), an ISO 8601 timestamp (floored onto the grid), or "
        "an index as text (but not 8 digits that also name a day, such as 20260105: 422)."
    )
    value: float = Field(description="A finite number inside the label's valid range.")


def _address_schema() -> dict[str, Any]:
    """A Cell without its value, documented: a cell to erase."""
    schema = Cell.model_json_schema()
    schema["title"] = "CellAddress"
    schema["description"] = "One cell to erase: its time and its label on each axis of the schema, as in a write."
    schema["properties"] = {name: p for name, p in schema["properties"].items() if name != "value"}
    schema["required"] = [name for name in schema.get("required", []) if name != "value"]
    return schema


def _as_decoded(value: Any, validate: ValidatorFunctionWrapHandler) -> Any:
    """A list of dicts with string keys, as JSON decodes cells, taken as it is: validating it would copy each dict
    to the same effect (a third of the cost of decoding a batch). Anything else is validated as declared."""
    if type(value) is list and set(map(type, value)) == {dict} and set(map(type, set().union(*value))) == {str}:
        return value
    return validate(value)


def _as_decoded_columns(value: Any, validate: ValidatorFunctionWrapHandler) -> Any:
    """A dict of lists with string keys, as JSON decodes columns, taken as it is (as ``_as_decoded``)."""
    if type(value) is dict and set(map(type, value)) <= {str} and set(map(type, value.values())) <= {list}:
        return value
    return validate(value)


class ValuesWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Documented as Cells but taken as they come: the engine checks each and names every bad one in `errors`.
    values: Annotated[
        list[dict[str, Any]] | None,
        WrapValidator(_as_decoded),
        WithJsonSchema({"type": "array", "minItems": 1, "items": Cell.model_json_schema()}),
    ] = Field(
        None, description='Cells to write: [{"time": 3, "<axis>": "<label>", "value": 128.0}, …]; all or nothing.'
    )
    columns: Annotated[
        dict[str, list[Any]] | None,
        WrapValidator(_as_decoded_columns),
        WithJsonSchema(
            {
                "type": "object",
                "additionalProperties": {"type": "array", "minItems": 1, "items": {}},
                "example": {"time": [3, 3], "metric": ["heart_rate", "temperature"], "value": [128.0, 37.2]},
            }
        ),
    ] = Field(
        None,
        description="The same cells as columns instead: a list per field (time, each axis, value), all of one "
        "length; a third of the JSON. Give values or columns, not both.",
    )

    @model_validator(mode="after")
    def _one_form(self) -> ValuesWrite:
        if (self.values is None) == (self.columns is None):
            raise ValueError("give the cells as values or as columns, exactly one of them")
        return self


@router.post(
    "/tensors",
    status_code=status.HTTP_201_CREATED,
    response_model=TensorPublic,
    response_model_by_alias=True,
    responses={
        404: {"description": "No such entity (or not yours to see), or no such schema."},
        409: {"description": "The entity already has a tensor of this schema."},
    },
    **allow(Permission.write),
)
def create(data: TensorCreate, session: SessionDep) -> TensorPublic:
    """Create an entity's tensor under a schema (one per entity and schema)."""
    return tensors.create(session, data)


@router.get(
    "/tensors/{tensor_id}",
    summary="Read a tensor",
    response_model=dict[str, Any],
    responses={**NOT_FOUND, **SENSITIVE},
    **documented(ReadQuery, allow(Permission.read)),
)
@router.get(
    "/tensor/{tensor_id}",
    summary="Read a tensor (alias)",
    response_model=dict[str, Any],
    responses={**NOT_FOUND, **SENSITIVE},
    **documented(ReadQuery, allow(Permission.read)),
)
# One time step is at most MAX_CELLS cells; an "as of" read may wait for a write in flight (tensors._settled).
@on_the_loop(when=lambda request: "time" in request.query_params and "as_of" not in request.query_params)
@reads_first(tensors.read_first, "tensor_id")
def read(tensor_id: uuid.UUID, request: Request, session: SessionDep) -> Response:
    """Metadata and values. ``time`` (an index, a timestamp or ``latest``), ``from``/``to`` (inclusive, clipped
    to the recorded range: ``selection`` says what was read), and ``<axis>=<label>`` (one label drops the axis;
    a comma list keeps it) select slices."""
    query = ReadQuery.of(request)
    latest = query.time == "latest"
    view = tensors.read(
        session,
        tensor_id,
        time=None if latest else query.time,
        start=query.start,
        end=query.end,
        labels=_label_params(request),
        as_of=query.as_of,
        latest=latest,
        max_cells=request.app.state.settings.max_read_cells,
    )
    return Response(view.to_json_bytes(), media_type="application/json")


@router.get(
    "/tensors/{tensor_id}/meta",
    summary="A tensor's metadata",
    response_model=TensorPublic,
    response_model_by_alias=True,
    responses=NOT_FOUND,
    **allow(Permission.read),
)
def meta(tensor_id: uuid.UUID, session: SessionDep) -> TensorPublic:
    """What a read says of the tensor, without its values: schema and version, shape, axes with their labels and
    units, and the time grid with the recorded range (``time.start``..``end``, null when nothing is recorded).
    Whose tensors one may see is as for a read (404 otherwise); the metadata of a sensitive schema's tensor is
    given to de-identified readers too, as ``GET /entities/{entity_id}/tensors`` gives it."""
    return tensors.get(session, tensor_id)


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
    "/tensors/{tensor_id}",
    response_model=TensorPublic,
    response_model_by_alias=True,
    responses={**NOT_FOUND, 409: {"description": "Versions only move forward."}},
    **allow(Permission.write),
)
def update(tensor_id: uuid.UUID, data: TensorUpdate, session: SessionDep) -> TensorPublic:
    """Move the tensor to a later version of its schema (new labels read as not recorded)."""
    return tensors.update(session, tensor_id, data)


@router.delete(
    "/tensors/{tensor_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND, **allow(Permission.write)
)
def delete(tensor_id: uuid.UUID, session: SessionDep) -> Response:
    """Delete a tensor and all its values."""
    tensors.delete(session, tensor_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def write(tensor_id: uuid.UUID, data: ValuesWrite, session: SessionDep, settings: SettingsDep) -> Response:
    """Write a batch of cells, all or nothing; replaced values go to the history."""
    limits = {"max_batch": settings.max_batch_values, "max_blocks": settings.max_batch_blocks}
    if data.columns is not None:
        result = tensors.write_columns(session, tensor_id, data.columns, **limits)
    else:
        result = tensors.write_values(session, tensor_id, data.values or [], **limits)
    # The JSON as FastAPI would send it for the response model, without checking and dumping it twice more.
    return Response(result.model_dump_json(), media_type="application/json")


# Registered here rather than by decorator to give this one route orjson for its body (batches of thousands of
# cells); the position among the routes, and so in /openapi.json, is the decorator's.
router.add_api_route(
    "/tensors/{tensor_id}/values",
    write,
    methods=["POST"],
    response_model=WriteResult,
    responses={
        **NOT_FOUND,
        413: {
            "description": "Over DUST_MAX_REQUEST_BYTES, DUST_MAX_BATCH_VALUES values or DUST_MAX_BATCH_BLOCKS blocks."
        },
    },
    route_class_override=OrjsonRoute,
    **allow(Permission.write),
)


class CellsErase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    values: Annotated[
        list[dict[str, Any]],
        WrapValidator(_as_decoded),
        WithJsonSchema({"type": "array", "minItems": 1, "items": _address_schema()}),
    ] = Field(description='Cells to erase: [{"time": 3, "<axis>": "<label>"}, …]; all or nothing.')


@router.delete(
    "/tensors/{tensor_id}/values",
    response_model=EraseResult,
    responses={
        **NOT_FOUND,
        413: {"description": "Over DUST_MAX_BATCH_VALUES cells or DUST_MAX_BATCH_BLOCKS blocks."},
    },
    **allow(Permission.write),
)
def erase(tensor_id: uuid.UUID, data: CellsErase, session: SessionDep, settings: SettingsDep) -> EraseResult:
    """Erase recorded values, all or nothing: they read as null from now on and stay in the history and "as of"."""
    return tensors.erase_values(
        session, tensor_id, data.values, max_batch=settings.max_batch_values, max_blocks=settings.max_batch_blocks
    )


@router.get(
    "/tensors/{tensor_id}/history",
    response_model=HistoryPage,
    responses={**NOT_FOUND, **SENSITIVE},
    **allow(Permission.read),
)
def history(
    tensor_id: uuid.UUID,
    session: SessionDep,
    start: Annotated[str | None, Query(alias="from", max_length=64)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_HISTORY_LIMIT)] = HISTORY_LIMIT,
    cursor: Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page.")] = None,
) -> HistoryPage:
    """Values that later writes replaced or erased, with when each was written and replaced, a page at a time."""
    return tensors.history(session, tensor_id, start, end, limit=limit, cursor=cursor)
