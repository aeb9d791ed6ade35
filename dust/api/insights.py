"""/insights and /tensors/{id}/analysis: aggregates across tensors, and one series analysed."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import Query, Request
from pydantic import BaseModel, Field

from dust.api.deps import Router, SessionDep, SettingsDep, allow
from dust.core.errors import InvalidInput
from dust.core.security import Permission
from dust.engine import analysis, entities, insights
from dust.engine.analysis import Analysis
from dust.engine.fields import Timestamp
from dust.engine.schemas import NAME

router = Router(tags=["insights"])
ANALYSIS_PARAMS = {"label", "horizon", "from", "to"}
AGGREGATE_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"description": "A de-identified reader may not filter by a sensitive attribute."},
    404: {"description": "No such schema, or a related_to entity that does not exist or is not yours to see."},
}
ANALYSIS_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"description": "The schema is sensitive: de-identified readers get aggregates only."},
    404: {"description": "No such tensor, or not yours to see."},
}


class AggregatePoint(BaseModel):
    time: datetime
    value: float | None = Field(description="None in a gap (count 0) and where suppressed.")
    count: int
    suppressed: bool = Field(
        False,
        description="For de-identified readers: fewer than DUST_MIN_COHORT entities have a value here, so the value "
        "is withheld.",
    )


class AggregateSeries(BaseModel):
    series: list[AggregatePoint]


def _choice(names: Any, text: str) -> Any:
    """A query parameter documented as one of ``names`` but taken as text: the engine words a wrong one."""
    return Query(max_length=16, description=text, json_schema_extra={"enum": list(names)})


@router.get(
    "/insights/aggregate",
    response_model=AggregateSeries,
    responses=AGGREGATE_ERRORS,
    **allow(Permission.read),
)
def aggregate(
    request: Request,
    session: SessionDep,
    schema: Annotated[str, Query(pattern=NAME, description="The schema whose tensors are aggregated.")],
    label: Annotated[str, Query(max_length=128, description="The label aggregated.")],
    agg: Annotated[str, _choice(insights.AGGREGATES, "The aggregate; p50 and p95 interpolate linearly.")] = "mean",
    kind: Annotated[str | None, Query(max_length=64, description="Only entities of this kind.")] = None,
    axis: Annotated[str | None, Query(max_length=64, description="The label's axis, if on several.")] = None,
    bucket: Annotated[str | None, _choice(insights.BUCKETS, "Default: the schema's steps.")] = None,
    start: Annotated[Timestamp | None, Query(alias="from", description="First bucket: the one holding it.")] = None,
    end: Annotated[Timestamp | None, Query(alias="to", description="Last bucket: the one holding it.")] = None,
    related_to: Annotated[uuid.UUID | None, Query(description="Only entities related to this one.")] = None,
    relation: Annotated[str | None, Query(max_length=1000, description="…by relations of this type.")] = None,
) -> AggregateSeries:
    """An aggregate of one label across tensors, per step or bucket; ``attr.<key>=<value>`` filters entities."""
    series = insights.aggregate_by_step(
        session,
        schema,
        label,
        agg,
        kind,
        axis,
        bucket=bucket,
        start=start,
        end=end,
        attributes=entities.parse_attribute_filters(request.query_params),
        related_to=related_to,
        relation=relation,
    )
    return AggregateSeries.model_validate({"series": series})


@router.get(
    "/tensors/{tensor_id}/analysis",
    response_model=Analysis,
    responses=ANALYSIS_ERRORS,
    **allow(Permission.read),
)
def analyse(
    tensor_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    label: Annotated[str, Query(max_length=128, description="The label whose series is analysed.")],
    horizon: Annotated[int, Query(ge=1, le=analysis.MAX_HORIZON, description="Steps forecast.")] = analysis.HORIZON,
    start: Annotated[str | None, Query(alias="from", max_length=64, description="First time (inclusive).")] = None,
    end: Annotated[str | None, Query(alias="to", max_length=64, description="Last time (inclusive).")] = None,
) -> Analysis:
    """Trend, seasonality and a forecast of one series; ``<axis>=<label>`` picks the labels of other axes."""
    return analysis.analyse(
        session,
        tensor_id,
        label,
        horizon=horizon,
        start=start,
        end=end,
        selection=_selection(request),
        max_cells=settings.max_read_cells,
    )


def _selection(request: Request) -> dict[str, str]:
    picked: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name in ANALYSIS_PARAMS:
            continue
        if name in picked:
            raise InvalidInput(f"axis '{name}' is given twice; a series has one label of each axis")
        picked[name] = value
    return picked
