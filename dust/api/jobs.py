"""/jobs: the state of background jobs (an anomaly scan with ``background=true``, and later imports and training)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Query

from dust.api.deps import Router, SessionDep, SettingsDep, allow
from dust.core.security import Permission
from dust.engine.paging import MAX_CURSOR
from dust.jobs import JobList, JobPublic, records
from dust.jobs.records import State

router = Router(prefix="/jobs", tags=["jobs"])
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such job, or not yours to see."}}


@router.get("/{job_id}", response_model=JobPublic, responses=NOT_FOUND, **allow(Permission.self))
def get(job_id: uuid.UUID, session: SessionDep) -> JobPublic:
    """A job's state, progress and result: for the user who submitted it, and for admins."""
    return records.get(session, job_id)


@router.get("", response_model=JobList, **allow(Permission.admin))
def list_(
    session: SessionDep,
    settings: SettingsDep,
    state: State | None = None,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    created_by: Annotated[uuid.UUID | None, Query(description="Only the jobs of this user.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR)] = None,
) -> JobList:
    """Admins: jobs, newest first."""
    return records.list_(
        session,
        state=state,
        kind=kind,
        created_by=str(created_by) if created_by else None,
        limit=min(limit, settings.page_size_max),
        cursor=cursor,
    )
