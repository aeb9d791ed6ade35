"""/schemas: tensor schemas and their versions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Query, Response, status

from dust.api.deps import Router, SessionDep, allow
from dust.core.security import Permission
from dust.engine import schemas
from dust.engine.schemas import MAX_VERSION, NAME, SchemaCreate, SchemaPublic, SchemaUpdate

router = Router(prefix="/schemas", tags=["schemas"])
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such schema (or version)."}}
SchemaName = Annotated[str, Path(pattern=NAME, description="Schema name.")]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SchemaPublic,
    responses={409: {"description": "The name is taken: PUT /schemas/{name} publishes a new version."}},
    **allow(Permission.admin),
)
def create(data: SchemaCreate, session: SessionDep) -> SchemaPublic:
    """Create version 1 of a schema; 409 if the name exists."""
    return schemas.create(session, data)


@router.get("", response_model=list[SchemaPublic], **allow(Permission.read))
def list_(session: SessionDep) -> list[SchemaPublic]:
    """The latest version of every schema."""
    return schemas.list_(session)


@router.get("/{name}", response_model=SchemaPublic, responses=NOT_FOUND, **allow(Permission.read))
def get(
    name: SchemaName,
    session: SessionDep,
    version: Annotated[
        int | None, Query(ge=1, le=MAX_VERSION, description="A past version; default the latest.")
    ] = None,
) -> SchemaPublic:
    """One schema, its latest version unless ``version`` is given."""
    return schemas.get(session, name, version)


@router.put(
    "/{name}",
    status_code=status.HTTP_201_CREATED,
    response_model=SchemaPublic,
    responses={
        **NOT_FOUND,
        200: {"description": "The same as the current version: that version, and no new one.", "model": SchemaPublic},
        201: {"description": "A new version."},
        409: {"description": "Not a compatible change, or another version was just published."},
        422: {"description": "Invalid input, or read-only fields (name, version, created_at) unlike the current's."},
    },
    **allow(Permission.admin),
)
def publish(name: SchemaName, data: SchemaUpdate, session: SessionDep, response: Response) -> SchemaPublic:
    """A new version (201) with labels appended, units or ranges changed; the current one (200) if unchanged."""
    published, made = schemas.put(session, name, data)
    if not made:
        response.status_code = status.HTTP_200_OK
    return published


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**NOT_FOUND, 409: {"description": "Tensors use the schema."}},
    **allow(Permission.admin),
)
def delete(name: SchemaName, session: SessionDep) -> Response:
    """Delete every version; 409 while tensors use the schema."""
    schemas.delete(session, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
