"""/models: relational models trained as background jobs, their versions and metrics, and their predictions."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Query, Response, status

from dust.api.deps import Router, SessionDep, SettingsDep, allow
from dust.core.security import Permission
from dust.engine.paging import MAX_CURSOR
from dust.models import registry
from dust.models.schemas import NAME, ModelCreate, ModelList, ModelPublic, PredictRequest, PredictResult

router = Router(prefix="/models", tags=["models"])
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such model, or not yours to see."}}
CLASH: dict[int | str, dict[str, Any]] = {409: {"description": "Another training of the name took its version."}}
UNTRAINED: dict[int | str, dict[str, Any]] = {409: {"description": "The model has not (or not yet) trained."}}


@router.post(
    "",
    response_model=ModelPublic,
    status_code=status.HTTP_202_ACCEPTED,
    responses=CLASH,
    **allow(Permission.write),
)
def train(data: ModelCreate, session: SessionDep, response: Response) -> ModelPublic:
    """Train a model as a background job: the next version of its name, queued; Location is its URL."""
    model = registry.submit(session, data)
    response.headers["Location"] = f"/api/v1/models/{model.id}"
    return model


@router.get("", response_model=ModelList, **allow(Permission.read))
def list_(
    session: SessionDep,
    settings: SettingsDep,
    name: Annotated[str | None, Query(pattern=NAME, description="Every version of this name.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR)] = None,
) -> ModelList:
    """The models you may see, newest first: yours, and those admins trained."""
    return registry.list_(session, name=name, limit=min(limit, settings.page_size_max), cursor=cursor)


@router.get("/{model_id}", response_model=ModelPublic, responses=NOT_FOUND, **allow(Permission.read))
def get(model_id: uuid.UUID, session: SessionDep) -> ModelPublic:
    """A model's status, progress, metrics, version and data version."""
    return registry.get(session, model_id)


@router.post(
    "/{model_id}/predict",
    response_model=PredictResult,
    responses={**NOT_FOUND, **UNTRAINED},
    **allow(Permission.read),
)
def predict(model_id: uuid.UUID, data: PredictRequest, session: SessionDep) -> PredictResult:
    """Predictions for entities you may see, optionally explained, or written back as an attribute (write); for
    a link-prediction model, candidate relations scored or an entity's likeliest targets, written back as
    relations (write)."""
    return registry.predict(session, model_id, data)
