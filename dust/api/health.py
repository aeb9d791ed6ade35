"""/healthz (the process answers) and /readyz (the database answers)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from dust.api.problems import problem
from dust.core.errors import ProblemType

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: the process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "The database does not answer."}})
def readyz(request: Request) -> JSONResponse:
    """Readiness: the database answers a query."""
    try:
        with request.app.state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means not ready; say which
        detail = f"database is not reachable: {type(exc).__name__}"
        return problem(503, detail, type_=ProblemType.unavailable, title="Not ready")
    return JSONResponse({"status": "ready", "database": request.app.state.engine.dialect.name})
