"""Anomaly scans as jobs (``POST /anomalies/scan?background=true``): the same scan, run by a worker under the
access of the user who asked for it, never more.

The job keeps the user's id, not their access: at run time the user is read again, so a user disabled or demoted
meanwhile gets what they may do now (a disabled user's job fails). Their principal is rebuilt as a request's is
(``dust.api.deps``), with the settings of the worker, which must be the server's (the same ``DUST_SECRET_KEY``
keys pseudonyms; the same access settings bound what they see).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from dust.core.config import Settings
from dust.core.errors import Forbidden
from dust.core.security import Permission
from dust.engine import access, anomalies
from dust.engine.anomalies import ScanRequest, ScanResult
from dust.jobs import records, registry
from dust.jobs.records import JobRun
from dust.storage.repositories import users as user_repo

KIND = "anomalies.scan"


def submit(session: Session, request: ScanRequest) -> uuid.UUID:
    """Run ``request`` as a job for the session's principal (who must be a user: the process itself needs none)."""
    who = access.principal(session)
    payload: dict[str, Any] = {"scan": request.model_dump(mode="json", by_alias=True, exclude_unset=True)}
    if who is not None:
        payload["request_id"] = who.request_id
    return records.submit(session, KIND, payload, created_by=str(who.user_id) if who is not None else None)


@registry.kind(KIND)
def run(job: JobRun, payload: dict[str, Any]) -> ScanResult:
    request = ScanRequest.model_validate(payload["scan"])
    job.progress(0.0, "scanning")
    with job.session() as session:
        if job.created_by is not None:
            access.act_as(session, principal(session, job.settings, uuid.UUID(job.created_by), job.id, payload))
        access.require(session, Permission.write)
        return anomalies.scan(session, request)


def principal(
    session: Session, settings: Settings, user_id: uuid.UUID, job_id: uuid.UUID, payload: dict[str, Any]
) -> access.Principal:
    """The principal of the user who submitted the job, as they are now."""
    user = user_repo.get(session, user_id)
    if user is None or user.disabled:
        raise Forbidden("the user who submitted this job no longer exists or is disabled")
    if settings.secret_key is None:
        raise Forbidden("this worker has no DUST_SECRET_KEY: give it the server's, which keys what users see")
    return access.principal_for(
        user, settings, request_id=payload.get("request_id"), method="JOB", path=f"/api/v1/jobs/{job_id}"
    )
