"""/entities, and /patients: the same resource fixed to kind ``patient``."""

import uuid
from typing import Annotated, Any

from fastapi import Query, Request, Response, status

from dust.api.deps import Router, SessionDep, SettingsDep, allow, on_the_loop, reads_first
from dust.core.security import Permission
from dust.engine import entities, tensors
from dust.engine.entities import EntityCreate, EntityList, EntityPublic, EntityUpdate
from dust.engine.paging import MAX_CURSOR
from dust.engine.tensors import TensorPublic

Limit = Annotated[int, Query(ge=1, le=500, description="Page size.")]
Cursor = Annotated[str | None, Query(max_length=MAX_CURSOR, description="next_cursor of the previous page.")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such entity (of this kind), or not yours to see."}
}
TAKEN = "The external_id is taken within the kind."
Search = Annotated[
    str | None, Query(max_length=256, description="Fuzzy, case-insensitive match on names and external ids.")
]


def entity_router(prefix: str, kind: str | None) -> Router:
    """CRUD + list for entities; with ``kind``, a route family fixed to that kind (kind need not be sent)."""
    what = kind or "entity"
    router = Router(prefix=prefix, tags=[f"{what}s" if kind else "entities"])
    Body = EntityCreate if kind is None else _fixed_kind_body(kind)

    @router.post(
        "",
        status_code=status.HTTP_201_CREATED,
        response_model=EntityPublic,
        summary=f"Create a {what}",
        responses={409: {"description": TAKEN}},
        **allow(Permission.write),
    )
    def create(data: Body, session: SessionDep) -> EntityPublic:  # type: ignore[valid-type]
        """Create with a new UUID; 409 if ``external_id`` is taken within the kind."""
        payload = data.model_dump()  # type: ignore[attr-defined]
        if kind is not None:
            payload["kind"] = kind
        return entities.create(session, EntityCreate(**payload))

    @router.get(
        "",
        response_model=EntityList,
        summary=f"List or search {what}s",
        responses={403: {"description": "De-identified readers may not search, nor filter by a sensitive field."}},
        **allow(Permission.read),
    )
    def list_(
        request: Request,
        session: SessionDep,
        settings: SettingsDep,
        q: Search = None,
        limit: Limit = 50,
        cursor: Cursor = None,
        kind_filter: Annotated[str | None, Query(alias="kind", max_length=64)] = None,
    ) -> EntityList:
        """Pages in creation order; with ``q``, best matches first. ``attr.<key>=<value>`` filters attributes."""
        filters = entities.parse_attribute_filters(request.query_params)
        return entities.list_(
            session,
            kind=kind or kind_filter,
            q=q,
            attributes=filters,
            limit=min(limit, settings.page_size_max),
            cursor=cursor,
        )

    @router.get(
        "/{entity_id}",
        response_model=EntityPublic,
        summary=f"Get a {what}",
        responses=NOT_FOUND,
        **allow(Permission.read),
    )
    @on_the_loop()
    @reads_first(entities.read_first, "entity_id")
    def get(entity_id: uuid.UUID, session: SessionDep) -> EntityPublic:
        """One by id."""
        return entities.get(session, entity_id, kind)

    @router.patch(
        "/{entity_id}",
        response_model=EntityPublic,
        summary=f"Update a {what}",
        responses={**NOT_FOUND, 409: {"description": TAKEN}},
        **allow(Permission.write),
    )
    def update(entity_id: uuid.UUID, data: EntityUpdate, session: SessionDep) -> EntityPublic:
        """Change name, external id or attributes (merged; a null removes a key)."""
        return entities.update(session, entity_id, data, kind)

    @router.delete(
        "/{entity_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        summary=f"Delete a {what}",
        responses={
            **NOT_FOUND,
            409: {"description": "A user is linked to it, or it has relations the caller may not remove."},
        },
        **allow(Permission.write),
    )
    def delete(entity_id: uuid.UUID, session: SessionDep) -> Response:
        """Delete it with its tensors and relations."""
        entities.delete(session, entity_id, kind)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    if kind is None:

        @router.get(
            "/{entity_id}/tensors",
            response_model=list[TensorPublic],
            summary="An entity's tensors",
            response_model_by_alias=True,
            responses=NOT_FOUND,
            **allow(Permission.read),
        )
        def entity_tensors(entity_id: uuid.UUID, session: SessionDep) -> list[TensorPublic]:
            """Metadata of every tensor the entity owns."""
            return tensors.of_entity(session, entity_id)

    return router


def _fixed_kind_body(kind: str) -> type:
    """EntityCreate without ``kind`` (it is fixed by the route); a ``kind`` that is sent must match."""
    from pydantic import Field, create_model, field_validator

    def _same_kind(cls: type, value: str | None) -> str | None:
        if value is not None and value != kind:
            raise ValueError(f"this route creates {kind} entities; kind must be '{kind}' or omitted")
        return None

    fields = {name: (f.annotation, f) for name, f in EntityCreate.model_fields.items() if name != "kind"}
    return create_model(  # type: ignore[call-overload]
        f"{kind.title()}Create",
        __config__=EntityCreate.model_config,
        __validators__={"same_kind": field_validator("kind")(_same_kind)},
        kind=(str | None, Field(None, json_schema_extra={"anyOf": [{"const": kind}, {"type": "null"}]})),
        **fields,
    )


router = entity_router("/entities", None)
patients_router = entity_router("/patients", "patient")
