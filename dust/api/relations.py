"""/relations and /query_master: the master tensor of typed, weighted relations."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Query, Response, status

from dust.api.deps import Router, SessionDep, SettingsDep, allow
from dust.core.security import Permission
from dust.engine import relations
from dust.engine.fields import Timestamp
from dust.engine.paging import MAX_CURSOR
from dust.engine.relations import (
    Direction,
    Interaction,
    MasterTensor,
    Neighbourhood,
    RelationCreate,
    RelationDetail,
    RelationList,
    RelationPublic,
    RelationUpdate,
)

router = Router(tags=["relations"])
Types = Annotated[str | None, Query(max_length=1000, description="Relation type, or a comma list of types.")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such relation, or one whose ends are not both yours to see."}
}
GRANTING: dict[int | str, dict[str, Any]] = {
    403: {"description": "Relations of the access-granting types are for DUST_GRANTING_ROLES only."}
}
At = Annotated[
    Timestamp | None,
    Query(
        description="As of this time: only relations valid then (valid_from <= at < valid_to, a null bound being "
        "open), with the weight they had then. Default now: relations not valid now are left out."
    ),
]
Hops = Annotated[int, Query(ge=1, le=3, description="Hops from the entity, 1..3; default 1.")]
Towards = Annotated[
    Direction,
    Query(description="out: relations from the entity; in: relations to it; both (the default): either way."),
]
MinWeight = Annotated[
    float | None, Query(description="Only relations of at least this weight (the weight then, with at); default any.")
]


@router.post(
    "/relations",
    status_code=status.HTTP_201_CREATED,
    response_model=RelationPublic,
    responses={**GRANTING, 409: {"description": "That (source, target, type) exists: PATCH its weight instead."}},
    **allow(Permission.write),
)
def create(data: RelationCreate, session: SessionDep) -> RelationPublic:
    """Relate two entities; 409 if that typed edge exists (PATCH its weight instead)."""
    return relations.create(session, data)


@router.get("/relations", response_model=RelationList, **allow(Permission.read))
def list_(
    session: SessionDep,
    settings: SettingsDep,
    entity_id: uuid.UUID | None = None,
    type: Types = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR)] = None,
) -> RelationList:
    """Relations touching an entity and/or of some types, in creation order."""
    return relations.list_(
        session,
        entity_id=entity_id,
        types=relations.type_names(type),
        limit=min(limit, settings.page_size_max),
        cursor=cursor,
    )


@router.get("/relations/{relation_id}", response_model=RelationDetail, responses=NOT_FOUND, **allow(Permission.read))
def get(relation_id: uuid.UUID, session: SessionDep) -> RelationDetail:
    """One relation with its weight history."""
    return relations.get(session, relation_id)


@router.patch(
    "/relations/{relation_id}",
    response_model=RelationDetail,
    responses={**NOT_FOUND, **GRANTING},
    **allow(Permission.write),
)
def update(relation_id: uuid.UUID, data: RelationUpdate, session: SessionDep) -> RelationDetail:
    """Change weight (kept in the history), attributes or validity."""
    return relations.update(session, relation_id, data)


@router.post(
    "/relations/{relation_id}/interactions",
    response_model=RelationDetail,
    responses={
        **NOT_FOUND,
        **GRANTING,
        409: {"description": "at is before the relation's last weight change: changes are recorded in time order."},
    },
    **allow(Permission.write),
)
def interact(relation_id: uuid.UUID, session: SessionDep, data: Interaction | None = None) -> RelationDetail:
    """Record an interaction: the weight grows by the type's reinforce (or amount), up to its cap."""
    return relations.interact(session, relation_id, data)


@router.delete(
    "/relations/{relation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**NOT_FOUND, **GRANTING},
    **allow(Permission.write),
)
def delete(relation_id: uuid.UUID, session: SessionDep) -> Response:
    """Delete a relation."""
    relations.delete(session, relation_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/query_master",
    response_model=Neighbourhood,
    responses={404: {"description": "No such entity, or not yours to see."}},
    **allow(Permission.read),
)
def query_master(
    entity_id: Annotated[uuid.UUID, Query(description="The entity to start from.")],
    session: SessionDep,
    type: Types = None,
    direction: Towards = "both",
    depth: Hops = 1,
    min_weight: MinWeight = None,
    at: At = None,
) -> Neighbourhood:
    """Entities and edges around an entity: by type and direction, 1..3 hops, above a weight, as of a time."""
    return relations.neighbourhood(
        session,
        entity_id,
        types=relations.type_names(type),
        direction=direction,
        depth=depth,
        min_weight=min_weight,
        at=at,
    )


@router.get("/query_master/tensor", response_model=MasterTensor, **allow(Permission.read))
def master_tensor(session: SessionDep, type: Types = None, at: At = None) -> MasterTensor:
    """The master tensor R[type, source, target] = weight as sparse COO."""
    return relations.master_tensor(session, types=relations.type_names(type), at=at)
