"""/anomalies: values flagged as they were written, the rules that say which labels are scored, and scans."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Path, Query, Response, status
from fastapi.responses import JSONResponse

from dust.api.deps import Router, SessionDep, SettingsDep, allow
from dust.core.security import Permission
from dust.engine import anomalies
from dust.engine.anomalies import AnomalyList, RuleList, RulePublic, RuleSet, ScanRequest, ScanResult
from dust.engine.fields import Timestamp
from dust.engine.paging import MAX_CURSOR
from dust.engine.schemas import NAME
from dust.jobs import JobAccepted, scans

router = Router(prefix="/anomalies", tags=["anomalies"])
SchemaName = Annotated[str, Path(pattern=NAME, description="The schema's name.")]
Label = Annotated[str, Path(min_length=1, max_length=128, description="A label of one of its axes.")]
NO_RULE: dict[int | str, dict[str, Any]] = {404: {"description": "No such schema, or no rule for the label."}}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such entity or tensor, or not yours to see."}}
SENSITIVE: dict[int | str, dict[str, Any]] = {
    403: {"description": "The schema is sensitive: de-identified readers get aggregates only."}
}


@router.get("", response_model=AnomalyList, responses={**NOT_FOUND, **SENSITIVE}, **allow(Permission.read))
def list_(
    session: SessionDep,
    settings: SettingsDep,
    entity_id: uuid.UUID | None = None,
    tensor_id: uuid.UUID | None = None,
    schema: Annotated[str | None, Query(pattern=NAME)] = None,
    label: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    start: Annotated[Timestamp | None, Query(alias="from", description="Values at or after this time.")] = None,
    end: Annotated[Timestamp | None, Query(alias="to", description="Values at or before this time.")] = None,
    min_score: Annotated[float | None, Query(ge=0, le=1)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR)] = None,
) -> AnomalyList:
    """Flagged values, newest first, of the entities you may see."""
    return anomalies.list_anomalies(
        session,
        entity_id=entity_id,
        tensor_id=tensor_id,
        schema=schema,
        label=label,
        start=start,
        end=end,
        min_score=min_score,
        limit=min(limit, settings.page_size_max),
        cursor=cursor,
    )


@router.get("/rules", response_model=RuleList, **allow(Permission.read))
def rules(session: SessionDep) -> RuleList:
    """Which labels are scored as they are written, by which detector."""
    return anomalies.get_rules(session)


@router.put("/rules/{schema}/{label}", response_model=RulePublic, responses=NO_RULE, **allow(Permission.admin))
def put_rule(schema: SchemaName, label: Label, data: RuleSet, session: SessionDep) -> RulePublic:
    """Score a label's values as they are written; a new detector or settings start its series afresh."""
    return anomalies.put_rule(session, schema, label, data)


@router.delete(
    "/rules/{schema}/{label}", status_code=status.HTTP_204_NO_CONTENT, responses=NO_RULE, **allow(Permission.admin)
)
def delete_rule(schema: SchemaName, label: Label, session: SessionDep) -> Response:
    """Stop scoring a label; what was flagged stays."""
    anomalies.delete_rule(session, schema, label)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


BACKGROUND: dict[int | str, dict[str, Any]] = {
    202: {"model": JobAccepted, "description": "With background=true: the scan runs as a job; Location is its URL."}
}


@router.post("/scan", response_model=ScanResult, responses={**NOT_FOUND, **BACKGROUND}, **allow(Permission.write))
def scan(
    data: ScanRequest,
    session: SessionDep,
    background: Annotated[
        bool, Query(description="Run as a background job: 202 with the job's id; GET /jobs/{id} has the result.")
    ] = False,
) -> ScanResult | JSONResponse:
    """Score stored values again with a fresh detector, or with a multivariate or relational one (``detector``)."""
    if background:
        job_id = scans.submit(session, data)
        accepted = JobAccepted(job_id=job_id, kind=scans.KIND)
        return JSONResponse(accepted.model_dump(mode="json"), 202, headers={"Location": f"/api/v1/jobs/{job_id}"})
    return anomalies.scan(session, data)
